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
import inspect
from typing import Any, ClassVar

from flax import linen as nn
from flax.core import FrozenDict
from flax.nnx import bridge

from ssm import layers

__all__ = ["Attention", "GatedMLP", "LSTM", "LinenLayer", "Mamba", "Mamba2", "MonarchLinear", "MonarchMixer", "S4",
           "S4D", "SequenceModel"]

# Linen fields of a layer, given by keyword beside the NNX layer's own arguments.
_LINEN_FIELDS: tuple[str, ...] = ("deterministic", "name", "parent")


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
    """Base of the Linen layers: ``flax.nnx.bridge.ToLinen`` plus the ``deterministic``
    flag and a constructor that reads like the NNX layer's (see the module docstring).

    A subclass names its NNX class in ``layer``; it is then built with that class's
    arguments (without ``rngs``) and called like its ``__call__``.

    Args:
      *args: the positional arguments of the NNX class ``layer``.
      **kwargs: its keyword arguments, without ``rngs``.
      deterministic: no dropout when True, dropout when False; None (default): dropout
        exactly when ``apply`` is given a ``dropout`` rng. A call argument wins.
      name, parent: Linen's own fields.

    Example:
      >>> import numpy as np, jax, jax.numpy as jnp
      >>> from ssm import layers, linen
      >>> class MyMLP(linen.LinenLayer):  # any NNX module, for Linen
      ...     layer = layers.GatedMLP
      >>> x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 4)), jnp.float32)
      >>> mlp = MyMLP(4, expand=2)
      >>> variables = mlp.init(jax.random.key(0), x)
      >>> sorted(variables["params"]), mlp.apply(variables, x).shape
      (['down', 'up'], (2, 16, 4))
    """

    layer: ClassVar[type]
    deterministic: bool | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)  # Linen makes the class a dataclass here
        dataclass_init = cls.__init__

        def __init__(self, *args, **kwargs):
            if "nnx_class" not in kwargs:  # a user's call, ``S4D(64, d_state=32)``; else Linen's clone
                linen = {name: kwargs.pop(name) for name in _LINEN_FIELDS if name in kwargs}
                kwargs = dict(nnx_class=cls.layer, args=args, kwargs=FrozenDict(kwargs), **linen)
                args = ()
            dataclass_init(self, *args, **kwargs)

        cls.__init__ = __init__

    def __call__(self, *args, deterministic: bool | None = None, nnx_method=None, **kwargs) -> Any:
        """The NNX layer's method (``__call__`` unless ``nnx_method``) on ``args``:
        the NNX layer's inputs and outputs (a sequence layer: ``x`` (batch, length,
        d_model) -> (batch, length, d_model)); ``deterministic`` as the module docstring
        says (a ``dropout`` rng is needed when False)."""
        has_rng = self.has_rng("dropout")
        if deterministic is None:
            deterministic = not has_rng if self.deterministic is None else self.deterministic
        if not deterministic and not has_rng:
            raise ValueError(f"{type(self).__name__} with deterministic=False applies dropout, which needs a "
                             "'dropout' rng: pass rngs={'dropout': key} to init/apply")
        return super().__call__(*args, nnx_method=functools.partial(_in_mode, nnx_method, deterministic),
                                **kwargs)


_SEQUENCE = ('x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 4)), jnp.float32)  '
             '# (batch, length, d_model)')


def _doc(nnx_cls: type, construct: str, data: str, shape: str) -> str:
    """The docstring of the Linen class of ``nnx_cls``: the NNX class's summary, how the
    Linen class is built and called, and an example that builds it as ``construct``,
    runs it on the input that ``data`` makes and prints the output's ``shape``."""
    name = nnx_cls.__name__
    summary = " ".join(inspect.cleandoc(nnx_cls.__doc__ or "").split("\n\n")[0].split())
    return f"""Linen version of :class:`ssm.layers.{name}`: {summary}

    Built with the arguments of :class:`ssm.layers.{name}` (its ``Args:`` say what each
    does) minus ``rngs``, and called as its ``__call__`` is; the parameters live in the
    ``params`` collection. See :class:`LinenLayer` for ``deterministic``.

    Args:
      *args: the positional arguments of :class:`ssm.layers.{name}`.
      **kwargs: its keyword arguments, without ``rngs``.
      deterministic: no dropout when True; None: dropout exactly when a ``dropout`` rng
        is given to ``apply``.

    Example:
      >>> import numpy as np, jax, jax.numpy as jnp
      >>> import ssm.linen
      >>> {data}
      >>> layer = ssm.linen.{construct}
      >>> variables = layer.init(jax.random.key(0), x)  # a params rng is enough
      >>> layer.apply(variables, x).shape
      {shape}
    """


def _linen(nnx_cls: type, construct: str, data: str = _SEQUENCE, shape: str = "(2, 16, 4)") -> type[LinenLayer]:
    """The Linen class of ``nnx_cls``: same name; its docstring from :func:`_doc`."""
    return type(nnx_cls.__name__, (LinenLayer,), {
        "layer": nnx_cls, "__module__": __name__, "__qualname__": nnx_cls.__name__,
        "__doc__": _doc(nnx_cls, construct, data, shape),
    })


S4 = _linen(layers.S4, "S4(4, d_state=8, l_max=16)")
Attention = _linen(layers.Attention, "Attention(4, n_heads=2)")
LSTM = _linen(layers.LSTM, "LSTM(4)")
S4D = _linen(layers.S4D, "S4D(4, d_state=8, dropout=0.1)")
Mamba = _linen(layers.Mamba, "Mamba(4, d_state=8)")
Mamba2 = _linen(layers.Mamba2, "Mamba2(4, d_state=8, headdim=4, chunk_size=8)")
MonarchMixer = _linen(layers.MonarchMixer, "MonarchMixer(4, l_max=16)")
MonarchLinear = _linen(layers.MonarchLinear, "MonarchLinear(16, 16)",
                       "x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16)), jnp.float32)", "(2, 16)")
GatedMLP = _linen(layers.GatedMLP, "GatedMLP(4, expand=2)")
SequenceModel = _linen(layers.SequenceModel,
                       "SequenceModel(d_model=4, n_layers=2, d_output=10, vocab_size=10, layer_kwargs=dict(d_state=8))",
                       "x = jnp.arange(32).reshape(2, 16) % 10  # (batch, length) token ids", "(2, 16, 10)")

__all__ = ["Attention", "GatedMLP", "LSTM", "LinenLayer", "Mamba", "Mamba2", "MonarchLinear", "MonarchMixer", "S4",
           "S4D", "SequenceModel"]
