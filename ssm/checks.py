"""Argument checks shared by the whole package: each error names the argument, its
value (or shape) and what was expected.

Plain Python, no JAX: the math modules (``linalg``, ``scan``), the optimizer, the layers
and the config schema all check their arguments here, so a message reads the same
wherever it comes from.
"""

from __future__ import annotations

import numbers


def check_choice(name: str, value, choices, *, error: type[Exception] = ValueError):
    """``value`` if it is one of ``choices``; else ``error`` naming the argument, the
    value and the choices: ``form='x'; expected one of ('a', 'b')``.

    ``name`` is how the caller knows the argument: a parameter name, or a config key's
    path (``model.layer``; the config passes ``error=ConfigError``).
    """
    if value not in choices:
        raise error(f"{name}={value!r}; expected one of {tuple(choices)}")
    return value


def check_positive_int(name: str, value) -> int:
    """``value`` as an ``int`` if it is a positive integer (a Python or NumPy integer, not
    a bool, not traced); else a ``ValueError`` naming the argument and the value."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name}={value!r}; expected a positive integer")
    return int(value)


def check_sequence(x, mask, d_model: int) -> None:
    """A sequence layer's input: ``x`` (batch, length, d_model) and ``mask`` None or
    (batch, length)."""
    if x.ndim != 3 or x.shape[-1] != d_model:
        raise ValueError(f"x has shape {x.shape}; expected (batch, length, {d_model})")
    if mask is not None and mask.shape != x.shape[:2]:
        raise ValueError(f"mask has shape {mask.shape}; expected {x.shape[:2]} (batch, length)")


def check_token(x_t, d_model: int) -> None:
    """A sequence layer's input to ``step``: ``x_t`` (batch, d_model), one position."""
    if x_t.ndim != 2 or x_t.shape[-1] != d_model:
        raise ValueError(f"x_t has shape {x_t.shape}; expected (batch, {d_model})")
