"""The step math every scan method shares (notation and equations in :mod:`ssm.scan`).

Per position t of the recurrence ``h_t = dA_t h_{t-1} + dBu_t``:

- :func:`time_step`: ``delta_t <- softplus(delta_t + delta_bias)``;
- :func:`decay`: ``dA_t = exp(delta_t A)`` (zero-order hold of A), zeroed where a reset
  drops the state;
- :func:`drive`: ``dBu_t = (delta_t u_t) B_t`` ("simplified Euler" for B);
- :func:`readout`: ``y_t = sum_i h_t[.., i] C_t[i]``;
- :func:`skip_and_gate`: ``(y_t + D u_t) * silu(z_t)``.

:func:`exp` is ``exp`` as the scans' loop bodies need it: a polynomial for float32 on CPU
(XLA:CPU's own exp is slow there), ``jnp.exp`` otherwise.

The methods' layout: each method (``scan_sequential``, ``scan_in_chunks``,
``scan_associative``) takes ``(delta, x, A, B, C, h0, keep)``, batch-major and in scan
order (already flipped for a reverse scan), and returns ``(y, h)``:

- delta, x: (b, l, [g,] h/g), the time steps and ``x = delta u``;
- A: ([g,] h/g, n);
- B, C: (b, l, [g,] n);
- h0: (b, [g,] h/g, n), the state before position 0;
- keep: (b, l), 0 where a reset drops the state entering the position; or None;
- y: (b, l, [g,] h/g), without the D and z terms; h: (b, [g,] h/g, n), the last state.

Inside the scans the state is (b, g, h/g, n) (channel c = group * h/g + j), or (b, h, n)
when g = 1: a size-1 group axis makes XLA:CPU pick transposed layouts for the
per-chunk arrays, which made the backward 2.5x slower (measured). The functions below
take either, written ``[g,]``, and any leading axes (one position (b, ...), or all of
them (b, l, ...)). :func:`time_major` makes the (l, b, ...) copies ``lax.scan`` runs over.
Shapes are in the notation of :mod:`ssm.typing`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

SOFTPLUS_THRESHOLD = 20.0  # softplus(x) = x above this, as torch's softplus and Mamba's CUDA kernel


def time_step(delta, delta_bias, delta_softplus: bool, dtype):
    """``softplus(delta + delta_bias)`` (softplus optional) in ``dtype``; delta (..., h),
    delta_bias (h,) or None.

    softplus(x) = x for x > 20 (torch's threshold, used by Mamba's reference and CUDA
    kernel), else log1p(exp(x)); in float32 the two branches agree to rounding at 20.
    """
    delta = delta.astype(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.astype(dtype)
    if delta_softplus:
        safe = jnp.minimum(delta, SOFTPLUS_THRESHOLD)  # no inf (or nan gradient) on the x branch
        delta = jnp.where(delta > SOFTPLUS_THRESHOLD, delta, jnp.log1p(jnp.exp(safe)))
    return delta


def skip_and_gate(y, u, D, z, dtype):
    """``(y + D u) * silu(z)``, each term optional: y, u, z (..., h), D (h,)."""
    if D is not None:
        y = y + D.astype(dtype) * u.astype(dtype)
    if z is not None:
        y = y * jax.nn.silu(z.astype(dtype))
    return y


def decay(delta, A, keep):
    """``dA = exp(delta A)``, zeroed where the state is dropped (keep = 0).

    delta (b, [l,] [g,] h/g), A ([g,] h/g, n), keep (b, [l]) or None -> (b, [l,] [g,] h/g, n).
    """
    a = exp(delta[..., None] * A)
    return a if keep is None else a * keep.reshape(keep.shape + (1,) * (a.ndim - keep.ndim))


def drive(x, B):
    """``dBu = (delta u) B``: x = delta u (..., [g,] h/g), B (..., [g,] n) -> (..., [g,] h/g, n)."""
    return x[..., None] * B[..., None, :]


def readout(h, C):
    """``sum_i h[.., i] C[i]``: h (..., [g,] h/g, n), C (..., [g,] n) -> (..., [g,] h/g)."""
    return jnp.einsum("...hn,...n->...h", h, C)


def time_major(*arrays):
    """(b, l, ...) -> (l, b, ...) copies, for lax.scan (None stays None)."""
    return tuple(None if a is None else jnp.swapaxes(a, 0, 1) for a in arrays)


# ------------------------------------------------------------------------- float32 exp
_LOG2E, _LN2_HI, _LN2_LO = 1.4426950408889634, 0.693145751953125, 1.428606765330187e-06


def exp_by_polynomial(x):
    """float32 ``exp`` from multiplies and adds: x = k ln2 + r (Cody-Waite, |r| <= ln2/2),
    e^r by its degree-7 Taylor polynomial, 2^k by two exponent-field bitcasts (so
    that k in [-150, 128] neither overflows nor underflows early).

    Within 0.92 ulp of the true exp over the normal range (XLA:CPU's own is within
    5.2 ulp; measured on 3M points), inf above 88.73, 0 below -104; subnormal results
    (-104 < x < -87.3) are flushed to 0 on XLA:CPU. XLA:CPU's own exp is slow inside the
    scans' loop bodies: there 33.5M exps took 16.8 ms, these 5.5 ms (b4 d512 n16, 1024
    steps; measured).
    """
    x = jnp.clip(x, -104.0, 89.0)
    k = jnp.round(x * _LOG2E)
    r = (x - k * _LN2_HI) - k * _LN2_LO
    p = 1 + r * (1 + r * (1 / 2 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120 + r * (
        1 / 720 + r / 5040))))))
    k = k.astype(jnp.int32)
    half = k >> 1
    two_to = lambda e: lax.bitcast_convert_type((e + 127) << 23, jnp.float32)  # noqa: E731
    return p * two_to(half) * two_to(k - half)


@jax.custom_jvp
def exp_float32(x):
    """float32 ``exp``: :func:`exp_by_polynomial` on CPU, ``jnp.exp`` elsewhere; its
    derivative is its own value, as exp's."""
    return lax.platform_dependent(x, cpu=exp_by_polynomial, default=jnp.exp)


@exp_float32.defjvp
def _exp_float32_jvp(primals, tangents):
    y = exp_float32(primals[0])
    return y, y * tangents[0]


def exp(x):
    """``exp``: :func:`exp_float32` for float32, ``jnp.exp`` otherwise."""
    return exp_float32(x) if x.dtype == jnp.float32 else jnp.exp(x)
