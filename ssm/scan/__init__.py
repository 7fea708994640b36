"""Mamba's selective scan (S6): three scan methods and a one-step update.

Notation: ``b`` batch, ``l`` length, ``d`` dim (channels), ``n`` state size,
``g`` groups of B/C, ``k = d/g`` channels per group, ``t`` chunk length.

Semantics are those of ``selective_scan_ref`` in state-spaces/mamba
(``mamba_ssm/ops/selective_scan_interface.py``), channel-last. Per channel c,
state index i and position t, all in float32 (or float64 if an input is float64):

    delta_t  <- softplus(delta_t + delta_bias)      (softplus optional)
    dA_t     =  exp(delta_t[c] A[c, i])             (zero-order hold of A)
    dBu_t    =  delta_t[c] B_t[i] u_t[c]            ("simplified Euler" for B)
    h_t      =  dA_t h_{t-1} + dBu_t                (h_{-1} = initial_state or 0)
    y_t[c]   =  sum_i h_t[c, i] C_t[i] + D[c] u_t[c]
    y_t      *= silu(z_t)

Methods (:func:`resolve_method` picks one for ``"auto"``):

- ``"sequential"``: one ``lax.scan`` over positions, the (b, d, n) state as the
  carry and y_t emitted in the body. Forward memory O(b l d); JAX's autodiff of
  the scan stores the state of every step, so its backward holds O(b l d n).
- ``"chunked"``: the same forward, cut into chunks of t positions; only the state
  entering each chunk is kept for the backward pass, which recomputes a chunk's
  states and runs the adjoint recurrence ``g_t = dA_{t+1} g_{t+1} + dy_t C_t``
  through it (Mamba's CUDA kernel does the same with chunks of 2048). Written as a
  ``jax.custom_vjp``: the same memory as ``jax.checkpoint`` around each chunk, and
  1.8-1.9x faster on CPU than JAX's autodiff through that (ssm/bench/scan.py).
  Memory O(b l d + b d n l / t). Reverse-mode only (``jax.jvp`` through it raises;
  use ``"sequential"`` for forward mode).
- ``"associative"``: ``lax.associative_scan`` over (dA, dBu), materialized as
  (l, b, d, n): O(log l) depth, O(b l d n) memory.

Resets: ``reset[b, t] = True`` marks position t as the start of a new sequence;
the state entering it is dropped (taken as zero, *not* as ``initial_state``), so
sequences packed along the length give the same outputs as separate runs. With
``reverse=True`` the scan runs from the last position to the first and the same
``reset`` mask (still marking sequence starts) drops the state flowing from t+1
into t wherever t+1 starts a sequence, so packed reverse runs equal separate
reverse runs too.
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp
from jax import lax

METHODS: tuple[str, ...] = ("auto", "sequential", "chunked", "associative")
# Positions per chunk of the "chunked" method: the fastest forward+backward on a 2-core CPU
# (b4 L4096 d512 n16: 894 / 765 / 746 / 837 / 878 ms for 16 / 32 / 64 / 128 / 256;
# ssm/bench/scan.py), with boundary states 1/64 of a (b, l, d, n) buffer.
CHUNK = 64
# What "auto" runs per platform: measured on "cpu"; elsewhere the default, "chunked",
# unmeasured (see resolve_method).
_AUTO = {"cpu": "chunked"}
SOFTPLUS_THRESHOLD = 20.0  # softplus(x) = x above this, as torch's softplus and Mamba's CUDA kernel


def resolve_method(method: str = "auto", platform: str | None = None) -> str:
    """The scan method to run for ``method`` on ``platform`` (default: JAX's backend).

    ``"auto"`` resolves to ``"chunked"`` everywhere. On CPU that is measured
    (ssm/bench/scan.py, BENCHMARKS.md; b4 d512 n16, L 1024 and 4096): its forward is the
    fastest (6-17% ahead of "sequential", 10-12x the associative scan) and its
    forward+backward the fastest and smallest by far (2.1-2.2x faster than "sequential"
    with 1/7 of its memory, 4.5-6x faster than "associative" with 1/27). On GPU and TPU it is a
    choice made without a measurement: the chunked scan keeps training memory at
    O(b l d), where the associative scan needs O(b l d n); a per-step loop may be
    launch-bound there, so measure before relying on it.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r}; expected one of {METHODS}")
    if method != "auto":
        return method
    return _AUTO.get(platform or jax.default_backend(), "chunked")


# ------------------------------------------------------------------------------ checks


def _as_arrays(*xs):
    """Each argument as a JAX array (NumPy arrays and lists too); None stays None."""
    return tuple(None if x is None else jnp.asarray(x) for x in xs)


def _shape_error(name, x, expected):
    return ValueError(f"{name} has shape {tuple(jnp.shape(x))}; expected {expected}")


def _check_params(A, D, delta_bias, d):
    """A (d, n) real, D and delta_bias (d,); returns n."""
    if jnp.iscomplexobj(A):
        raise ValueError(f"A has complex dtype {jnp.asarray(A).dtype}; only real A (Mamba's "
                         "A = -exp(A_log)) is supported")
    if jnp.ndim(A) != 2 or jnp.shape(A)[0] != d:
        raise _shape_error("A", A, f"(dim, N) = ({d}, N)")
    for name, v in (("D", D), ("delta_bias", delta_bias)):
        if v is not None and jnp.shape(v) != (d,):
            raise _shape_error(name, v, f"(dim,) = ({d},)")
    return jnp.shape(A)[1]


def _check_BC(B, C, lead: tuple, lead_names: str, d: int, n: int, suffix: str = "") -> int:
    """B and C: lead + (n,) or lead + (g, n) with g dividing d; returns g."""
    names = ("B" + suffix, "C" + suffix)
    for name, v in zip(names, (B, C)):
        shape = tuple(jnp.shape(v))
        if len(shape) not in (len(lead) + 1, len(lead) + 2) or shape[:len(lead)] != lead \
                or shape[-1] != n:
            raise _shape_error(name, v, f"({lead_names}, N) or ({lead_names}, groups, N) "
                               f"with {lead_names} = {lead} and N = {n} (from A)")
    if jnp.shape(B) != jnp.shape(C):
        raise ValueError(f"{names[0]} has shape {jnp.shape(B)} and {names[1]} {jnp.shape(C)}; "
                         "expected the same")
    g = jnp.shape(B)[-2] if jnp.ndim(B) == len(lead) + 2 else 1
    if g < 1 or d % g:
        raise ValueError(f"{names[0]} and {names[1]} have {g} groups, which does not divide "
                         f"dim = {d}")
    return g


def _compute_dtype(*xs):
    """float32, or float64 if an input is float64 (so x64 tests check the algebra)."""
    return jnp.result_type(jnp.float32, *(jnp.asarray(x).dtype for x in xs if x is not None))


def _time_step(delta, delta_bias, delta_softplus: bool, dtype):
    """``softplus(delta + delta_bias)`` (softplus optional) in ``dtype``.

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


def _gate(y, u, D, z, dtype):
    """``(y + D u) * silu(z)``, each term optional."""
    if D is not None:
        y = y + D.astype(dtype) * u.astype(dtype)
    if z is not None:
        y = y * jax.nn.silu(z.astype(dtype))
    return y


# ------------------------------------------------------------------------- float32 exp
_LOG2E, _LN2_HI, _LN2_LO = 1.4426950408889634, 0.693145751953125, 1.428606765330187e-06


def _exp_by_polynomial(x):
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
def _exp_float32(x):
    return lax.platform_dependent(x, cpu=_exp_by_polynomial, default=jnp.exp)


@_exp_float32.defjvp
def _exp_float32_jvp(primals, tangents):
    y = _exp_float32(primals[0])
    return y, y * tangents[0]


def _exp(x):
    """``exp``: :func:`_exp_by_polynomial` for float32 on CPU, ``jnp.exp`` otherwise."""
    return _exp_float32(x) if x.dtype == jnp.float32 else jnp.exp(x)


# --------------------------------------------------------------------- one step, grouped
# Inside the scans the state is (b, g, k, n) (channel c = group * k + j), or (b, d, n)
# when g = 1: a size-1 group axis makes XLA:CPU pick transposed layouts for the
# per-chunk arrays, which made the backward 2.5x slower (measured).


def _decay(delta_t, A, keep_t):
    """``dA_t = exp(delta_t A)``, zeroed where the state is dropped (keep_t = 0).
    delta_t (b, [g,] k), A ([g,] k, n), keep_t (b,) or None -> (b, [g,] k, n)."""
    a = _exp(delta_t[..., None] * A)
    return a if keep_t is None else a * keep_t.reshape(keep_t.shape + (1,) * (a.ndim - 1))


def _drive(x_t, B_t):
    """``dBu_t = (delta_t u_t) B_t``: x_t (b, [g,] k), B_t (b, [g,] n) -> (b, [g,] k, n)."""
    return x_t[..., None] * B_t[..., None, :]


def _readout(h, C_t):
    """``sum_i h[.., i] C_t[i]``: h (b, [g,] k, n), C_t (b, [g,] n) -> (b, [g,] k)."""
    return jnp.einsum("...kn,...n->...k", h, C_t)


# ------------------------------------------------------------------------------ methods
# All take batch-major, grouped inputs: delta, x = delta u (b, l, [g,] k); A ([g,] k, n);
# B, C (b, l, [g,] n); h0 (b, [g,] k, n); keep (b, l) or None. They return
# y (b, l, [g,] k) without the D and z terms, and the last state (b, [g,] k, n).
# The chunked forward reads position t along axis 1 and writes y in place (at L = 4096,
# time-major copies for lax.scan cost 98 MiB of temp and 12% of its time); the chunked
# backward and the sequential scan run lax.scan on time-major copies, because backward
# loops that write gradients in place were 15-20% slower, and JAX's autodiff of such a
# loop 2.6x slower (all measured on CPU).


def _at(t, *arrays):
    """Each array at position t of axis 1 (None stays None)."""
    return tuple(None if a is None else lax.dynamic_index_in_dim(a, t, 1, keepdims=False)
                 for a in arrays)


def _time_major(*arrays):
    """(b, l, ...) -> (l, b, ...) copies, for lax.scan (None stays None)."""
    return tuple(None if a is None else jnp.swapaxes(a, 0, 1) for a in arrays)


def _in_chunks(t: int, *arrays):
    """(l, ...) -> (l/t, t, ...) for each array (None stays None)."""
    return tuple(None if a is None else a.reshape(a.shape[0] // t, t, *a.shape[1:])
                 for a in arrays)


def _put(buffer, t, value):
    """``buffer[:, t] = value``, in place."""
    return lax.dynamic_update_index_in_dim(buffer, value, t, 1)


def _update(h, t, delta, x, A, B, keep):
    """The state after position t: ``dA_t h + dBu_t``."""
    delta_t, x_t, B_t, keep_t = _at(t, delta, x, B, keep)
    return _decay(delta_t, A, keep_t) * h + _drive(x_t, B_t)


def _run(start, count: int, h, y, delta, x, A, B, C, keep):
    """Positions start .. start + count - 1 from state h, writing y_t into y."""
    def body(i, carry):
        h, y = carry
        h = _update(h, start + i, delta, x, A, B, keep)
        return h, _put(y, start + i, _readout(h, *_at(start + i, C)))

    return lax.fori_loop(0, count, body, (h, y))


def _scan_sequential(delta, x, A, B, C, h0, keep):
    def step(h, s):
        delta_t, x_t, B_t, C_t, keep_t = s
        h = _decay(delta_t, A, keep_t) * h + _drive(x_t, B_t)
        return h, _readout(h, C_t)

    h, y = lax.scan(step, h0, _time_major(delta, x, B, C, keep))
    return jnp.swapaxes(y, 0, 1), h


def _scan_associative(delta, x, A, B, C, h0, keep):
    a = _exp(delta[..., None] * A)  # (b, l, [g,] k, n)
    if keep is not None:
        a = a * keep.reshape(keep.shape + (1,) * (a.ndim - 2))
    bx = x[..., None] * B[..., None, :]
    bx = bx.at[:, 0].add(a[:, 0] * h0)  # fold the initial state into the first element

    def combine(first, second):  # (a1, b1) then (a2, b2): h -> a2 (a1 h + b1) + b2
        return second[0] * first[0], second[0] * first[1] + second[1]

    _, h = lax.associative_scan(combine, (a, bx), axis=1)
    return jnp.einsum("...kn,...n->...k", h, C), h[:, -1]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _scan_chunked(t, delta, x, A, B, C, h0, keep):
    h, y = _run(0, delta.shape[1], h0, jnp.zeros(delta.shape, h0.dtype), delta, x, A, B, C, keep)
    return y, h


def _chunked_fwd(t, delta, x, A, B, C, h0, keep):
    def chunk(c, carry):
        h, y, starts = carry
        return (*_run(c * t, t, h, y, delta, x, A, B, C, keep), starts.at[c].set(h))

    chunks = delta.shape[1] // t
    init = (h0, jnp.zeros(delta.shape, h0.dtype), jnp.zeros((chunks, *h0.shape), h0.dtype))
    h, y, starts = lax.fori_loop(0, chunks, chunk, init)
    return (y, h), (delta, x, A, B, C, keep, starts)


def _chunked_bwd(t, residuals, cotangents):
    """Adjoint of h_t = dA_t h_{t-1} + dBu_t, y_t = <h_t, C_t>, chunk by chunk from the end.

    With g_t = dL/dh_t = dA_{t+1} g_{t+1} + dy_t C_t (+ dL/dh_last at the end):
    dL/dC_t = sum_k h_t dy_t, dL/dx_t = sum_n g_t B_t, dL/dB_t = sum_k g_t x_t,
    dL/ddelta_t = sum_n w_t A and dL/dA = sum_{b,t} w_t delta_t with
    w_t = g_t h_{t-1} dA_t, and dL/dh0 = dA_0 g_0.
    """
    delta, x, A, B, C, keep, starts = residuals
    dy, dh_last = cotangents
    delta, x, B, C, keep, dy = _time_major(delta, x, B, C, keep, dy)

    def chunk(carry, s):
        delta_c, x_c, B_c, C_c, keep_c, dy_c, h_start = s

        def forward(h, s):  # recompute the chunk's states; dL/dC_t needs h_t
            delta_t, x_t, B_t, keep_t, dy_t = s
            h_next = _decay(delta_t, A, keep_t) * h + _drive(x_t, B_t)
            return h_next, (h, jnp.einsum("...kn,...k->...n", h_next, dy_t))

        _, (h_prev, d_C) = lax.scan(forward, h_start, (delta_c, x_c, B_c, keep_c, dy_c))

        def backward(carry, s):
            g_next, dA = carry  # g_next = dA_{t+1} g_{t+1}
            delta_t, x_t, B_t, C_t, keep_t, dy_t, h_before = s
            a = _decay(delta_t, A, keep_t)
            g = g_next + dy_t[..., None] * C_t[..., None, :]
            w = g * h_before * a
            grads = (jnp.sum(w * A, -1),  # d delta
                     jnp.sum(g * B_t[..., None, :], -1),  # d x
                     jnp.einsum("...kn,...k->...n", g, x_t))  # d B
            return (a * g, dA + w * delta_t[..., None]), grads

        carry, grads = lax.scan(backward, carry, (delta_c, x_c, B_c, C_c, keep_c, dy_c, h_prev),
                                reverse=True)
        return carry, (*grads, d_C)

    xs = (*_in_chunks(t, delta, x, B, C, keep, dy), starts)
    (dh0, dA), grads = lax.scan(chunk, (dh_last, jnp.zeros_like(dh_last)), xs, reverse=True)
    d_delta, d_x, d_B, d_C = (jnp.swapaxes(g.reshape(-1, *g.shape[2:]), 0, 1) for g in grads)
    d_keep = None if keep is None else jnp.zeros_like(keep.T)
    return d_delta, d_x, dA.sum(0), d_B, d_C, dh0, d_keep


_scan_chunked.defvjp(_chunked_fwd, _chunked_bwd)


# ------------------------------------------------------------------------------ public


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, *,
                   initial_state=None, return_last_state=False, reset=None, reverse=False,
                   method="auto", chunk_size=None):
    """Mamba's selective scan (S6), channel-last; semantics of ``selective_scan_ref``.

    Gu & Dao (2023), "Mamba: Linear-Time Sequence Modeling with Selective State
    Spaces", Algorithm 2. See the module docstring for the equations and methods.

    Args:
      u: (b, l, d) input.
      delta: (b, l, d) time steps (before ``delta_bias`` and softplus).
      A: (d, n) real state matrix (diagonal per channel; Mamba's ``-exp(A_log)``).
      B, C: (b, l, n), or (b, l, g, n) where group j serves channels [j d/g, (j+1) d/g).
      D: (d,) skip, optional.
      z: (b, l, d) gate, optional: the output is multiplied by ``silu(z)``.
      delta_bias: (d,) added to ``delta`` before the softplus, optional.
      delta_softplus: apply softplus to ``delta + delta_bias``.
      initial_state: (b, d, n) state before position 0 (before the last position when
        ``reverse``); zero if None.
      return_last_state: also return the state after the last scanned position.
      reset: (b, l) bool; True marks the start of a new sequence, whose entering
        state is zero (see the module docstring; with ``reverse`` too).
      reverse: scan from the last position to the first (y_t depends on positions >= t).
      method: ``"auto"``, ``"sequential"``, ``"chunked"`` or ``"associative"``.
      chunk_size: positions per chunk for ``"chunked"`` (default ``CHUNK`` = 64);
        chunks are made equal, so the length is padded by less than one per chunk.

    Returns:
      ``y`` (b, l, d) in u's dtype; with ``return_last_state``, ``(y, last_state)``
      with last_state (b, d, n) float32 (float64 for float64 inputs).
    """
    method = resolve_method(method)
    u, delta, A, B, C, D, z, delta_bias, initial_state, reset = _as_arrays(
        u, delta, A, B, C, D, z, delta_bias, initial_state, reset)
    if jnp.ndim(u) != 3:
        raise _shape_error("u", u, "(batch, length, dim)")
    b, l, d = jnp.shape(u)
    for name, v in (("delta", delta), ("z", z)):
        if v is not None and jnp.shape(v) != (b, l, d):
            raise _shape_error(name, v, f"(batch, length, dim) = {(b, l, d)} like u")
    n = _check_params(A, D, delta_bias, d)
    g = _check_BC(B, C, (b, l), "batch, length", d, n)
    if initial_state is not None and jnp.shape(initial_state) != (b, d, n):
        raise _shape_error("initial_state", initial_state, f"(batch, dim, N) = {(b, d, n)}")
    if reset is not None:
        if jnp.shape(reset) != (b, l):
            raise _shape_error("reset", reset, f"(batch, length) = {(b, l)}")
        if jnp.asarray(reset).dtype != jnp.bool_:
            raise ValueError(f"reset has dtype {jnp.asarray(reset).dtype}; expected bool")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(
            chunk_size, numbers.Integral) or chunk_size < 1):
        raise ValueError(f"chunk_size={chunk_size!r}; expected a positive integer (static)")

    dtype = _compute_dtype(u, delta, A, B, C, D, z, delta_bias, initial_state)
    channels, states = ((g, d // g), (g, n)) if g > 1 else ((d,), (n,))
    delta_t = _time_step(delta, delta_bias, delta_softplus, dtype)
    x = delta_t * u.astype(dtype)

    def scan_order(v, trailing=()):  # (b, l, ...) -> (b, l, *trailing), flipped if reverse
        v = v.reshape(b, l, *trailing)
        return jnp.flip(v, 1) if reverse else v

    keep = None
    if reset is not None:
        drop = reset
        if reverse:  # going backwards, the state from t+1 is dropped where t+1 starts a sequence
            drop = jnp.concatenate([reset[:, 1:], jnp.zeros((b, 1), bool)], axis=1)
        keep = scan_order(jnp.logical_not(drop).astype(dtype))
    h0 = (jnp.zeros((b, *channels, n), dtype) if initial_state is None
          else initial_state.astype(dtype).reshape(b, *channels, n))
    inputs = (scan_order(delta_t, channels), scan_order(x, channels),
              A.astype(dtype).reshape(*channels, n), scan_order(B.astype(dtype), states),
              scan_order(C.astype(dtype), states), h0, keep)

    if method == "sequential":
        y, h = _scan_sequential(*inputs)
    elif method == "associative":
        y, h = _scan_associative(*inputs)
    else:
        chunks = -(-l // (chunk_size or CHUNK))
        t = -(-l // chunks)  # equal chunks
        pad = chunks * t - l
        if pad:  # delta = x = 0, keep = 1 leave the state unchanged (dA = 1, dBu = 0)
            delta_, x_, A_, B_, C_, h0, keep = inputs
            tail = lambda v, value=0: jnp.pad(  # noqa: E731
                v, [(0, 0), (0, pad)] + [(0, 0)] * (v.ndim - 2), constant_values=value)
            inputs = (tail(delta_), tail(x_), A_, tail(B_), tail(C_), h0,
                      None if keep is None else tail(keep, 1))
        y, h = _scan_chunked(t, *inputs)
        y = y[:, :l]
    if reverse:
        y = jnp.flip(y, 1)
    y = _gate(y.reshape(b, l, d), u, D, z, dtype).astype(u.dtype)
    return (y, h.reshape(b, d, n)) if return_last_state else y


def selective_state_update(state, u_t, delta_t, A, B_t, C_t, D=None, z_t=None, delta_bias=None,
                           delta_softplus=False):
    """One step of :func:`selective_scan` for recurrent inference (Mamba's ``step``).

    ``h' = exp(delta A) h + delta u B``, ``y = <h', C> + D u``, ``y *= silu(z)``, with
    ``delta <- softplus(delta + delta_bias)`` as in the scan. Feeding a sequence one
    position at a time gives the scan's outputs and states.

    Args:
      state: (b, d, n) state before this step.
      u_t, delta_t, z_t: (b, d); z_t optional.
      A: (d, n) real.
      B_t, C_t: (b, n) or (b, g, n).
      D, delta_bias: (d,), optional.
      delta_softplus: as in :func:`selective_scan`.

    Returns:
      ``(y_t, new_state)``: y_t (b, d) in u_t's dtype, new_state (b, d, n) float32
      (float64 for float64 inputs).
    """
    state, u_t, delta_t, A, B_t, C_t, D, z_t, delta_bias = _as_arrays(
        state, u_t, delta_t, A, B_t, C_t, D, z_t, delta_bias)
    if jnp.ndim(u_t) != 2:
        raise _shape_error("u_t", u_t, "(batch, dim)")
    b, d = jnp.shape(u_t)
    for name, v in (("delta_t", delta_t), ("z_t", z_t)):
        if v is not None and jnp.shape(v) != (b, d):
            raise _shape_error(name, v, f"(batch, dim) = {(b, d)} like u_t")
    n = _check_params(A, D, delta_bias, d)
    g = _check_BC(B_t, C_t, (b,), "batch", d, n, suffix="_t")
    if jnp.shape(state) != (b, d, n):
        raise _shape_error("state", state, f"(batch, dim, N) = {(b, d, n)}")
    dtype = _compute_dtype(state, u_t, delta_t, A, B_t, C_t, D, z_t, delta_bias)
    k = d // g
    dt = _time_step(delta_t, delta_bias, delta_softplus, dtype)
    grouped = lambda v: v.reshape(b, g, k)  # noqa: E731
    h = (_decay(grouped(dt), A.astype(dtype).reshape(g, k, n), None)
         * state.astype(dtype).reshape(b, g, k, n)
         + _drive(grouped(dt * u_t.astype(dtype)), B_t.astype(dtype).reshape(b, g, n)))
    y = _readout(h, C_t.astype(dtype).reshape(b, g, n)).reshape(b, d)
    return _gate(y, u_t, D, z_t, dtype).astype(u_t.dtype), h.reshape(b, d, n)
