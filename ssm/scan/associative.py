"""The ``"associative"`` method: ``lax.associative_scan`` over the pairs (dA_t, dBu_t).

The recurrence ``h_t = dA_t h_{t-1} + dBu_t`` composes associatively:
``(a1, b1)`` then ``(a2, b2)`` is ``(a2 a1, a2 b1 + b2)``. Every pair is materialized,
(b, l, [g,] h/g, n): O(log l) depth, O(b l h n) memory, forward and backward by JAX's
autodiff.
"""

from __future__ import annotations

from jax import lax

from ssm.scan.recurrence import decay, drive, readout


def scan_associative(delta, x, A, B, C, h0, keep):
    """The recurrence as a parallel prefix scan: ``(y, h)`` from the inputs in the methods'
    layout (:mod:`ssm.scan.recurrence`), y (b, l, [g,] h/g) and the last state h (b, [g,] h/g, n)."""
    a = decay(delta, A, keep)  # (b, l, [g,] h/g, n)
    bx = drive(x, B)
    bx = bx.at[:, 0].add(a[:, 0] * h0)  # fold the initial state into the first element

    def combine(first, second):  # (a1, b1) then (a2, b2): h -> a2 (a1 h + b1) + b2
        return second[0] * first[0], second[0] * first[1] + second[1]

    _, h = lax.associative_scan(combine, (a, bx), axis=1)
    return readout(h, C), h[:, -1]
