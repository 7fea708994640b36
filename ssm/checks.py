"""Argument checks shared by the whole package: each error names the argument, its
value (or shape) and what was expected.

Plain Python (JAX only for the dtype of a layer's input): the math modules (``linalg``,
``scan``), the optimizer, the layers and the config schema all check their arguments
here, so a message reads the same wherever it comes from.
"""

from __future__ import annotations

import numbers

__all__ = ["check_choice", "check_positive", "check_positive_int", "as_arrays", "concrete", "real_floating", "check_sequence",
           "check_token"]


def check_choice(name: str, value, choices, *, error: type[Exception] = ValueError):
    """``value`` if it is one of ``choices``; else ``error`` naming the argument, the
    value and the choices: ``form='x'; expected one of ('a', 'b')``.

    ``name`` is how the caller knows the argument: a parameter name, or a config key's
    path (``model.layer``; the config passes ``error=ConfigError``).

    Args:
      name: the argument's name in the message.
      value: the value given.
      choices: the allowed values (any container).
      error: the exception class to raise.

    Returns:
      ``value``, unchanged.
    """
    if value not in choices:
        raise error(f"{name}={value!r}; expected one of {tuple(choices)}")
    return value


def check_positive(name: str, value) -> float:
    """``value`` as a ``float`` if it is a number > 0 (an int or float, not a bool); else
    a ``ValueError`` naming the argument (``name``) and the value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name}={value!r}; expected a number > 0")
    return float(value)


def check_positive_int(name: str, value) -> int:
    """``value`` as an ``int`` if it is a positive integer (a Python or NumPy integer, not
    a bool, not traced); else a ``ValueError`` naming the argument (``name``) and the
    value."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name}={value!r}; expected a positive integer")
    return int(value)


def as_arrays(*xs):
    """Each argument as a JAX array (NumPy arrays and lists too, dtypes as
    ``jnp.asarray`` gives them); None stays None. Returns a tuple as long as ``xs``."""
    import jax.numpy as jnp

    return tuple(None if x is None else jnp.asarray(x) for x in xs)


def concrete(x):
    """``x`` as a NumPy array when its values are known now (an eager call), else None
    (traced under ``jit``, ``grad`` or ``vmap``: only its shape is known)."""
    import jax
    import numpy as np

    if x is None or isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x)


def real_floating(name: str, x):
    """``x`` as a real floating JAX array: integer and boolean inputs become float32
    (a sequence layer computes in floating point; an integer output would truncate it),
    complex ones are refused (the layers are real)."""
    import jax.numpy as jnp

    x = jnp.asarray(x)
    if jnp.iscomplexobj(x):
        raise ValueError(f"{name} has dtype {x.dtype}; expected a real floating array (this layer is real)")
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def check_sequence(x, mask, d_model: int):
    """A sequence layer's input: ``x`` (batch, length, d_model) with length >= 1 and
    ``mask`` None or (batch, length); else a ``ValueError`` naming the shape. Returns
    ``x`` as :func:`real_floating` makes it."""
    x = real_floating("x", x)
    if x.ndim != 3 or x.shape[-1] != d_model:
        raise ValueError(f"x has shape {x.shape}; expected (batch, length, {d_model})")
    if mask is not None and mask.shape != x.shape[:2]:
        raise ValueError(f"mask has shape {mask.shape}; expected {x.shape[:2]} (batch, length)")
    if x.shape[1] == 0:
        raise ValueError(f"x has shape {x.shape}: length 0; expected at least one position")
    return x


def check_token(x_t, d_model: int):
    """A sequence layer's input to ``step``: ``x_t`` (batch, d_model), one position; else
    a ``ValueError`` naming the shape. Returns ``x_t`` as :func:`real_floating` makes it."""
    x_t = real_floating("x_t", x_t)
    if x_t.ndim != 2 or x_t.shape[-1] != d_model:
        raise ValueError(f"x_t has shape {x_t.shape}; expected (batch, {d_model})")
    return x_t
