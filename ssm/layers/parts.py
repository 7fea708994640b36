"""The small modules every layer is built from, chosen by name: activations, norms,
dropout, and dense or Monarch projections.

The layers and :class:`~ssm.layers.SequenceModel` take these names as options (a
config's ``model.activation``, ``model.norm``, ``model.mlp``), so each choice is
defined once, here.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from ssm.checks import check_choice, check_positive
from ssm.layers.monarch_linear import MonarchLinear

__all__ = ["ACTIVATIONS", "LINEARS", "NORMS", "make_dropout", "make_linear", "make_norm"]

#: Activations by name, elementwise functions of an array: ``"gelu"`` (exact, x Phi(x)
#: by erf: S4's, M2's, PyTorch's ``nn.GELU()``), ``"gelu_tanh"`` (its tanh approximation,
#: ``jax.nn.gelu``'s default), ``"silu"``, ``"relu"``, ``"tanh"``, ``"identity"``.
#:
#: :meta hide-value:
ACTIVATIONS: dict[str, Callable] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": jax.nn.gelu,
    "silu": jax.nn.silu,
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "identity": lambda x: x,
}
#: Norms by name: ``"layer"`` (LayerNorm) and ``"rms"`` (RMSNorm), over the last axis.
NORMS: tuple[str, ...] = ("layer", "rms")
#: Projections by name: ``"dense"`` (``nnx.Linear``) and ``"monarch"`` (:class:`~ssm.layers.MonarchLinear`).
LINEARS: tuple[str, ...] = ("dense", "monarch")


def make_norm(kind: str, d_model: int, *, eps: float = 1e-6, dtype, param_dtype, rngs: nnx.Rngs) -> nnx.Module:
    """A norm of :data:`NORMS` over the last axis (width ``d_model``), with ``eps`` added
    to the variance (Flax's default 1e-6; Mamba's references use 1e-5).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from ssm.layers.parts import make_norm
      >>> norm = make_norm("rms", 4, eps=1e-5, dtype=None, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
      >>> x = jnp.array([[3.0, -3.0, 3.0, -3.0]])  # (batch, d)
      >>> norm(x).round(4).tolist()
      [[1.0, -1.0, 1.0, -1.0]]
    """
    check_choice("norm", kind, NORMS)
    eps = check_positive("norm_eps", eps)
    cls = nnx.LayerNorm if kind == "layer" else nnx.RMSNorm
    return cls(d_model, epsilon=eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs)


def make_dropout(rate: float, rngs: nnx.Rngs) -> nnx.Dropout:
    """Dropout at ``rate`` in [0, 1), drawing its masks from the ``dropout`` stream of
    ``rngs`` (or its ``default``) when ``rate > 0``.

    ``rngs`` with neither stream (a Linen ``init`` given only a ``params`` rng) builds
    a Dropout without one: it runs in evaluation mode, and training mode raises.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from ssm.layers.parts import make_dropout
      >>> dropout = make_dropout(0.5, nnx.Rngs(dropout=0))
      >>> kept = dropout(jnp.ones(1000))  # each entry 0 or 1 / (1 - rate)
      >>> sorted(set(kept.tolist()))
      [0.0, 2.0]
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout={rate!r} must be in [0, 1)")
    has_stream = "dropout" in rngs or "default" in rngs
    return nnx.Dropout(rate, rngs=rngs if rate > 0 and has_stream else None)


def make_linear(kind: str, in_features: int, out_features: int, *, nblocks: int | None = None,
                use_bias: bool = True, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs) -> nnx.Module:
    """A projection of :data:`LINEARS`, ``in_features -> out_features``: ``nnx.Linear``
    (``kind="dense"``) or :class:`~ssm.layers.MonarchLinear` (``"monarch"``, with
    ``nblocks``), with the arguments both take.

    Example:
      >>> from flax import nnx
      >>> from ssm.layers.parts import make_linear
      >>> dense, monarch = (make_linear(kind, 8, 8, nblocks=2, rngs=nnx.Rngs(0)) for kind in ("dense", "monarch"))
      >>> type(dense).__name__, type(monarch).__name__
      ('Linear', 'MonarchLinear')
    """
    check_choice("linear", kind, LINEARS)
    kw = dict(use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    if kind == "dense":
        return nnx.Linear(in_features, out_features, **kw)
    return MonarchLinear(in_features, out_features, nblocks=nblocks, **kw)
