"""ssm: state-space sequence models in JAX.

Submodules load on first use, so ``import ssm`` stays light:

- ``ssm.typing``   the notation table (one letter, one name per dimension) and the array types of annotations
- ``ssm.checks``   argument checks shared by the package (one choice of several, counts, shapes)
- ``ssm.hippo``    HiPPO matrices, DPLR form, S4D initializations (NumPy float64)
- ``ssm.hippo_online`` HiPPO as an online memory: recurrence, reconstruction, test signal
- ``ssm.kernels``  discretization, S4D/S4 convolution kernels, FFT convolution
- ``ssm.scan``     the selective scan of Mamba, and its one-step update
- ``ssm.ssd``      the state-space dual of Mamba-2
- ``ssm.attention`` softmax attention (blocked, online softmax) and rotary embeddings
- ``ssm.monarch``  Monarch matrices: factors, matmul, to_dense, exact projection
- ``ssm.linalg``   msign by Newton-Schulz, mclip, polar/SVD references, low-rank tools
- ``ssm.solve``    dense linear solves in plain jnp (Gauss-Jordan), for the S4 kernels
- ``ssm.optim``    Optax transforms: scale_by_msign, muon, clip_spectral
- ``ssm.layers``   Flax NNX layers: S4, S4D, Mamba, Mamba2, MonarchMixer (M2), MonarchLinear,
                   GatedMLP, and the baselines Attention and LSTM; ResidualBlock, SequenceModel
- ``ssm.linen``    the same layers for Linen
- ``ssm.groups``   parameter groups for optimizers
- ``ssm.pretrained`` Hugging Face Mamba / Mamba-2 checkpoints: load and save (safetensors, no torch)
- ``ssm.generate`` text generation: one compiled prefill, then the decode loop in ``lax.scan``
- ``ssm.data``     generated tasks as Hugging Face datasets, and their batches
- ``ssm.train``    configs, trainer, checkpoints, metrics
- ``ssm.bench``    the memory benchmark suite and the speed benchmarks
- ``ssm.extras``   optional dependencies, and the ``pip install`` that brings each
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = ("attention", "bench", "checks", "data", "extras", "generate", "groups", "hippo", "hippo_online",
               "kernels", "layers", "linalg", "linen", "monarch", "optim", "pretrained", "scan", "solve", "ssd",
               "train", "typing")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"ssm.{name}")
    raise AttributeError(f"module 'ssm' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_SUBMODULES})  # an imported submodule is in globals() too
