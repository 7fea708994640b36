"""The NNX layers of :mod:`ssm.layers`, for Linen models.

Each name here builds a Linen module around the NNX layer of the same name
(through ``flax.nnx.bridge.to_linen``) with the same arguments, minus ``rngs``::

    class Classifier(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = ssm.linen.S4D(64, d_state=32)(x)
            return nn.Dense(10)(x.mean(1))

Parameters live in the ``params`` collection under the NNX attribute names, so
``variables["params"]`` trains all of them; group tags ride along as metadata
(``NNXMeta`` boxes), which :func:`ssm.groups.param_labels` reads. Recurrent
inference (``step``/``prefill``) is NNX-only.
"""

from __future__ import annotations

import functools

from flax import linen as nn
from flax.nnx import bridge

from ssm import layers


def _linen(nnx_cls):
    @functools.wraps(nnx_cls, assigned=("__module__", "__qualname__", "__doc__"), updated=())
    def build(*args, name: str | None = None, **kwargs) -> nn.Module:
        return bridge.to_linen(nnx_cls, *args, name=name, **kwargs)

    build.__name__ = nnx_cls.__name__
    return build


S4 = _linen(layers.S4)
Attention = _linen(layers.Attention)
LSTM = _linen(layers.LSTM)
S4D = _linen(layers.S4D)
Mamba = _linen(layers.Mamba)
Mamba2 = _linen(layers.Mamba2)
MonarchMixer = _linen(layers.MonarchMixer)
MonarchLinear = _linen(layers.MonarchLinear)
GatedMLP = _linen(layers.GatedMLP)
SequenceModel = _linen(layers.SequenceModel)

__all__ = ["Attention", "GatedMLP", "LSTM", "Mamba", "Mamba2", "MonarchLinear", "MonarchMixer", "S4", "S4D", "SequenceModel"]
