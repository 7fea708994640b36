"""The NNX layers of :mod:`ssm.layers`, for Linen models.

Each name here is a Linen module class around the NNX layer of the same name
(through ``flax.nnx.bridge.ToLinen``), built with the same arguments, minus
``rngs``::

    class Classifier(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            x = ssm.linen.S4D(64, d_state=32, dropout=0.1)(x, deterministic=not train)
            x = ssm.linen.S4D(64, d_state=32, dropout=0.1)(x, deterministic=not train)
            return nn.Dense(10)(x.mean(1))

    variables = Classifier().init(jax.random.key(0), x)       # a params rng is enough
    logits = Classifier().apply(variables, x)                 # evaluation: no dropout
    logits = Classifier().apply(variables, x, train=True, rngs={"dropout": key})

Names: a layer is named after its class, as native Linen modules are, so the
model above keeps its parameters under ``S4D_0``, ``S4D_1`` and ``Dense_0``.

Parameters live in the ``params`` collection under the NNX attribute names, so
``variables["params"]`` trains all of them; group tags ride along as metadata
(``NNXMeta`` boxes), which :func:`ssm.groups.param_labels` reads.

Dropout (the layers and :class:`SequenceModel` that take ``dropout``): the usual
Linen ``deterministic`` flag, as an attribute (``S4D(..., deterministic=True)``) or
a call argument (which wins). ``deterministic=True`` is evaluation: no dropout, the
output of the NNX layer in ``eval()`` mode with the same parameters.
``deterministic=False`` is training: dropout masks drawn from the ``dropout`` rng,
which ``apply`` must then be given (``rngs={"dropout": key}``; the same key gives
the same masks). Left unset (None), dropout is on exactly when a ``dropout`` rng is
given, so ``init`` and ``apply`` with no such rng run in evaluation mode.

Recurrent inference (``step``/``prefill``) is NNX-only.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

from flax import linen as nn
from flax.core import FrozenDict
from flax.nnx import bridge

from ssm import layers

# Linen fields of a layer, given by keyword beside the NNX layer's own arguments.
LINEN_FIELDS: tuple[str, ...] = ("deterministic", "name", "parent")


def _in_mode(method, deterministic: bool, module, *args, **kwargs):
    """Run ``method`` (None: ``__call__``; a name; or a function) of the freshly
    built NNX ``module`` in evaluation (``deterministic``) or training mode."""
    if deterministic:
        module.eval()
    else:
        module.train()
    if method is None or isinstance(method, str):
        method = getattr(type(module), method or "__call__")
    return method(module, *args, **kwargs)


class LinenLayer(bridge.ToLinen):
    """Base of the Linen layers: ``ToLinen`` plus the ``deterministic`` flag and a
    constructor that reads like the NNX layer's (see the module docstring).

    A subclass names its NNX class in ``layer``.
    """

    layer: ClassVar[type]
    deterministic: bool | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)  # Linen makes the class a dataclass here
        dataclass_init = cls.__init__

        def __init__(self, *args, **kwargs):
            if "nnx_class" not in kwargs:  # a user's call, ``S4D(64, d_state=32)``; else Linen's clone
                linen = {name: kwargs.pop(name) for name in LINEN_FIELDS if name in kwargs}
                kwargs = dict(nnx_class=cls.layer, args=args, kwargs=FrozenDict(kwargs), **linen)
                args = ()
            dataclass_init(self, *args, **kwargs)

        cls.__init__ = __init__

    def __call__(self, *args, deterministic: bool | None = None, nnx_method=None, **kwargs) -> Any:
        """The NNX layer's method (``__call__`` unless ``nnx_method``) on ``args``;
        ``deterministic`` as the module docstring says."""
        has_rng = self.has_rng("dropout")
        if deterministic is None:
            deterministic = not has_rng if self.deterministic is None else self.deterministic
        if not deterministic and not has_rng:
            raise ValueError(f"{type(self).__name__} with deterministic=False applies dropout, which needs a "
                             "'dropout' rng: pass rngs={'dropout': key} to init/apply")
        return super().__call__(*args, nnx_method=functools.partial(_in_mode, nnx_method, deterministic),
                                **kwargs)


def _linen(nnx_cls: type) -> type[LinenLayer]:
    """The Linen class of ``nnx_cls``: same name, and its docstring."""
    return type(nnx_cls.__name__, (LinenLayer,), {
        "layer": nnx_cls, "__module__": __name__, "__qualname__": nnx_cls.__name__, "__doc__": nnx_cls.__doc__,
    })


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

__all__ = ["Attention", "GatedMLP", "LSTM", "LinenLayer", "Mamba", "Mamba2", "MonarchLinear", "MonarchMixer", "S4",
           "S4D", "SequenceModel"]
