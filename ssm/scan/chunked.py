"""The ``"chunked"`` method: the sequential forward cut into chunks of q positions, with a
hand-written backward that keeps only the state entering each chunk.

The backward recomputes a chunk's states from the state entering it and runs the
adjoint recurrence ``g_t = dA_{t+1} g_{t+1} + dy_t C_t`` through it (Mamba's CUDA
kernel does the same with chunks of 2048). Written as a ``jax.custom_vjp``: the same
memory as ``jax.checkpoint`` around each chunk, and 1.8-1.9x faster on CPU than JAX's
autodiff through that (ssm/bench/scan.py). Memory O(b l h + b h n l / q).
Reverse-mode only (``jax.jvp`` through it raises; use ``"sequential"`` for forward mode).

Layouts (measured on CPU): the forward reads position t along axis 1 of the batch-major
inputs and writes y in place (at L = 4096, time-major copies for lax.scan cost 98 MiB
of temp and 12% of its time); the backward runs lax.scan on time-major copies, because
backward loops that write gradients in place were 15-20% slower.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from ssm.scan.recurrence import decay, drive, readout, time_major

# Positions per chunk: the fastest forward+backward on a 2-core CPU (b4 L4096 d512 n16:
# 894 / 765 / 746 / 837 / 878 ms for 16 / 32 / 64 / 128 / 256; ssm/bench/scan.py), with
# boundary states 1/64 of a (b, l, h, n) buffer.
CHUNK = 64


def scan_in_chunks(delta, x, A, B, C, h0, keep, chunk_size=None):
    """The recurrence in equal chunks of about ``chunk_size`` (None: :data:`CHUNK`)
    positions: ``(y, h)`` from the inputs in the methods' layout
    (:mod:`ssm.scan.recurrence`), y (b, l, [g,] h/g) and the last state h (b, [g,] h/g, n).

    The length is cut into ``ceil(l / chunk_size)`` chunks of equal length q, so it is
    padded by less than one position per chunk; padded positions have delta = x = 0 and
    keep = 1, which leave the state unchanged (dA = 1, dBu = 0).
    """
    l = delta.shape[1]
    chunks = -(-l // (chunk_size or CHUNK))
    q = -(-l // chunks)  # equal chunks
    pad = chunks * q - l
    if pad:
        tail = lambda v, value=0: jnp.pad(  # noqa: E731
            v, [(0, 0), (0, pad)] + [(0, 0)] * (v.ndim - 2), constant_values=value)
        delta, x, B, C = tail(delta), tail(x), tail(B), tail(C)
        keep = None if keep is None else tail(keep, 1)
    y, h = scan_chunked(q, delta, x, A, B, C, h0, keep)
    return y[:, :l], h


# ------------------------------------------------------------------------------ forward


def at_position(t, *arrays):
    """Each (b, l, ...) array at position t of axis 1, (b, ...) (None stays None)."""
    return tuple(None if a is None else lax.dynamic_index_in_dim(a, t, 1, keepdims=False)
                 for a in arrays)


def write_position(buffer, t, value):
    """``buffer[:, t] = value``, in place: buffer (b, l, ...), value (b, ...)."""
    return lax.dynamic_update_index_in_dim(buffer, value, t, 1)


def state_after(h, t, delta, x, A, B, keep):
    """The state after position t, ``dA_t h + dBu_t``, from h (b, [g,] h/g, n) before it."""
    delta_t, x_t, B_t, keep_t = at_position(t, delta, x, B, keep)
    return decay(delta_t, A, keep_t) * h + drive(x_t, B_t)


def scan_span(start, count: int, h, y, delta, x, A, B, C, keep):
    """Positions start .. start + count - 1 from state h (b, [g,] h/g, n), writing y_t into
    y (b, l, [g,] h/g) in place; returns the state after the span and y."""
    def body(i, carry):
        h, y = carry
        h = state_after(h, start + i, delta, x, A, B, keep)
        return h, write_position(y, start + i, readout(h, *at_position(start + i, C)))

    return lax.fori_loop(0, count, body, (h, y))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def scan_chunked(q, delta, x, A, B, C, h0, keep):
    """:func:`scan_in_chunks` on a length that chunks of q positions divide; returns ``(y, h)``.
    Its forward runs the whole length in one span: chunks matter to its backward only."""
    h, y = scan_span(0, delta.shape[1], h0, jnp.zeros(delta.shape, h0.dtype), delta, x, A, B, C, keep)
    return y, h


def scan_chunked_forward(q, delta, x, A, B, C, h0, keep):
    """The forward of :func:`scan_chunked` that also keeps the state entering each chunk,
    (c, b, [g,] h/g, n) for c = l/q chunks, for the backward."""
    def chunk(c, carry):
        h, y, starts = carry
        return (*scan_span(c * q, q, h, y, delta, x, A, B, C, keep), starts.at[c].set(h))

    chunks = delta.shape[1] // q
    init = (h0, jnp.zeros(delta.shape, h0.dtype), jnp.zeros((chunks, *h0.shape), h0.dtype))
    h, y, starts = lax.fori_loop(0, chunks, chunk, init)
    return (y, h), (delta, x, A, B, C, keep, starts)


# ----------------------------------------------------------------------------- backward


def split_into_chunks(q: int, *arrays):
    """(l, ...) -> (c, q, ...) for each array: c = l/q chunks of q positions (None stays None)."""
    return tuple(None if a is None else a.reshape(a.shape[0] // q, q, *a.shape[1:])
                 for a in arrays)


def scan_chunked_backward(q, residuals, cotangents):
    """Adjoint of h_t = dA_t h_{t-1} + dBu_t, y_t = <h_t, C_t>, chunk by chunk from the end.

    With g_t = dL/dh_t = dA_{t+1} g_{t+1} + dy_t C_t (+ dL/dh_last at the end):
    dL/dC_t = h_t dy_t and dL/dB_t = g_t x_t summed over the channels, dL/dx_t = sum_n g_t B_t,
    dL/ddelta_t = sum_n w_t A and dL/dA = sum_{b,t} w_t delta_t with
    w_t = g_t h_{t-1} dA_t, and dL/dh0 = dA_0 g_0.
    """
    delta, x, A, B, C, keep, starts = residuals
    dy, dh_last = cotangents
    delta, x, B, C, keep, dy = time_major(delta, x, B, C, keep, dy)

    def chunk(carry, s):
        delta_c, x_c, B_c, C_c, keep_c, dy_c, h_start = s

        def forward(h, s):  # recompute the chunk's states; dL/dC_t needs h_t
            delta_t, x_t, B_t, keep_t, dy_t = s
            h_next = decay(delta_t, A, keep_t) * h + drive(x_t, B_t)
            return h_next, (h, jnp.einsum("...hn,...h->...n", h_next, dy_t))

        _, (h_prev, d_C) = lax.scan(forward, h_start, (delta_c, x_c, B_c, keep_c, dy_c))

        def backward(carry, s):
            g_next, dA = carry  # g_next = dA_{t+1} g_{t+1}
            delta_t, x_t, B_t, C_t, keep_t, dy_t, h_before = s
            a = decay(delta_t, A, keep_t)
            g = g_next + dy_t[..., None] * C_t[..., None, :]
            w = g * h_before * a
            grads = (jnp.sum(w * A, -1),  # d delta
                     jnp.sum(g * B_t[..., None, :], -1),  # d x
                     jnp.einsum("...hn,...h->...n", g, x_t))  # d B
            return (a * g, dA + w * delta_t[..., None]), grads

        carry, grads = lax.scan(backward, carry, (delta_c, x_c, B_c, C_c, keep_c, dy_c, h_prev),
                                reverse=True)
        return carry, (*grads, d_C)

    xs = (*split_into_chunks(q, delta, x, B, C, keep, dy), starts)
    (dh0, dA), grads = lax.scan(chunk, (dh_last, jnp.zeros_like(dh_last)), xs, reverse=True)
    d_delta, d_x, d_B, d_C = (jnp.swapaxes(g.reshape(-1, *g.shape[2:]), 0, 1) for g in grads)
    d_keep = None if keep is None else jnp.zeros_like(keep.T)
    return d_delta, d_x, dA.sum(0), d_B, d_C, dh0, d_keep


scan_chunked.defvjp(scan_chunked_forward, scan_chunked_backward)
