"""Flax NNX sequence layers: thin shells over the functions in ``ssm.kernels``,
``ssm.scan`` and ``ssm.ssd``.

Every sequence layer is built as ``Layer(d_model, *, <options>, dtype=None,
param_dtype=jnp.float32, rngs=nnx.Rngs(...))`` and called as ``layer(x, mask=None)``
on ``x`` (batch, length, d_model), or on one example (length, d_model) (with ``mask``
(length,)), so ``jax.vmap`` over examples works too (:mod:`ssm.layers.unbatched`).
Causal layers also offer ``init_state``, ``step`` and ``prefill`` for recurrent
inference, which keep the batch axis.
"""

from ssm.layers import backbone
from ssm.layers.attention import Attention
from ssm.layers.backbone import SequenceModel
from ssm.layers.block import ResidualBlock
from ssm.layers.conv1d import CausalConv1d
from ssm.layers.mamba import Mamba
from ssm.layers.hyena import ExplicitFilter, HyenaFilter
from ssm.layers.lstm import LSTM
from ssm.layers.m2_block import M2Block
from ssm.layers.mamba2 import Mamba2
from ssm.layers.mlp import GatedMLP
from ssm.layers.monarch_linear import MonarchLinear, from_linear
from ssm.layers.monarch_mixer import MonarchMixer
from ssm.layers.s4 import S4
from ssm.layers.s4d import S4D

__all__ = ["LAYERS", "Attention", "CausalConv1d", "ExplicitFilter", "GatedMLP", "HyenaFilter",
           "LSTM", "M2Block", "Mamba", "Mamba2", "MonarchLinear", "MonarchMixer", "ResidualBlock", "S4", "S4D",
           "SequenceModel", "from_linear"]

#: The sequence layers a config can name (``model.layer``), a dict from names (``"s4d"``,
#: ``"m2"``, ...) to classes; each is built as ``cls(d_model, **layer_kwargs, rngs=...)``.
#:
#: :meta hide-value:
LAYERS = backbone.LAYERS
