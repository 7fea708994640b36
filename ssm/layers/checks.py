"""Argument checks shared by the layers: each error names the argument, its value
or shape, and what was expected."""

from __future__ import annotations


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a positive integer")
    return value


def check_sequence(x, mask, d_model: int) -> None:
    """``x`` (batch, length, d_model) and ``mask`` None or (batch, length)."""
    if x.ndim != 3 or x.shape[-1] != d_model:
        raise ValueError(f"x has shape {x.shape}; expected (batch, length, {d_model})")
    if mask is not None and mask.shape != x.shape[:2]:
        raise ValueError(f"mask has shape {mask.shape}; expected {x.shape[:2]} (batch, length)")


def check_token(x_t, d_model: int) -> None:
    """``x_t`` (batch, d_model), one position for ``step``."""
    if x_t.ndim != 2 or x_t.shape[-1] != d_model:
        raise ValueError(f"x_t has shape {x_t.shape}; expected (batch, {d_model})")
