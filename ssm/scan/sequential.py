"""The ``"sequential"`` method: one ``lax.scan`` over positions, the state as the carry
and y_t emitted in the body.

Forward memory O(b l h); JAX's autodiff of the scan stores the state of every step,
so its backward holds O(b l h n). Unlike the chunked method it also runs in forward
mode (``jax.jvp``).

The scan runs on time-major copies of the inputs: loops that write into a batch-major
buffer in place were 15-20% slower here, and JAX's autodiff of such a loop 2.6x slower
(measured on CPU).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from ssm.scan.recurrence import decay, drive, readout, time_major


def scan_sequential(delta, x, A, B, C, h0, keep):
    """The recurrence position by position: ``(y, h)`` from the inputs in the methods'
    layout (:mod:`ssm.scan.recurrence`), y (b, l, [g,] h/g) and the last state h (b, [g,] h/g, n)."""
    def step(h, s):
        delta_t, x_t, B_t, C_t, keep_t = s
        h = decay(delta_t, A, keep_t) * h + drive(x_t, B_t)
        return h, readout(h, C_t)

    h, y = lax.scan(step, h0, time_major(delta, x, B, C, keep))
    return jnp.swapaxes(y, 0, 1), h
