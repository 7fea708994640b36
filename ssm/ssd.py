"""The state-space dual (SSD) of Mamba-2 (Dao & Gu, 2024, "Transformers are SSMs").

One recurrence per head, with a scalar decay per head and a matrix state:

    h_t = exp(dt_t A) h_{t-1} + (dt_t x_t) B_t^T        h_t: (headdim, N)
    y_t = h_t C_t

that is, inputs ``X = dt * x`` and log-decays ``a_t = dt_t A`` in the paper's
notation. Three ways to run it, which agree to rounding:

- :func:`ssd_chunked`: the paper's Listing 1 (``ssd_minimal.py`` of
  state-spaces/mamba): quadratic "attention" form inside chunks of length Q, a
  recurrence over chunk states between them. O(L Q) work in matrix products.
- :func:`ssd_sequential`: the recurrence one token at a time (``lax.scan``).
- :func:`ssd_step`: one token, for recurrent inference.

Shapes in the notation of :mod:`ssm.typing`: b batch, l length, e heads, p headdim,
g groups, n state size N, c chunks, q (and s, its source side) positions inside a
chunk. ``B`` and ``C`` are shared by the heads of a group: group j serves heads
``[j e/g, (j+1) e/g)``.

Computation runs in float32 (float64 when an input is float64); the outputs and
states come back in that dtype, whatever the inputs' dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from einops import rearrange

from ssm.checks import as_arrays, check_positive_int
from ssm.typing import Array, ArrayLike, Bool, Float

__all__ = ["segsum", "ssd_chunked", "ssd_step", "ssd_sequential"]


def _compute_dtype(*arrays):
    return jnp.promote_types(jnp.result_type(*arrays), jnp.float32)


def _as_arrays(*arrays):
    """:func:`ssm.checks.as_arrays`, complex refused."""
    out = as_arrays(*arrays)
    for a in out:
        if a is not None and jnp.iscomplexobj(a):
            raise ValueError(f"an input has dtype {a.dtype}; the SSD is real: expected real arrays")
    return out


def _check(x, dt, A, B, C, initial_state):
    """Shapes of the SSD inputs; returns (batch, length, heads, headdim, groups, N)."""
    if x.ndim != 4:
        raise ValueError(f"x has shape {x.shape}; expected (batch, length, heads, headdim)")
    b, l, e, p = x.shape
    if dt.shape != (b, l, e):
        raise ValueError(f"dt has shape {dt.shape}; expected {(b, l, e)} (batch, length, heads)")
    if A.shape != (e,):
        raise ValueError(f"A has shape {A.shape}; expected ({e},) (one scalar per head)")
    if B.ndim != 4 or B.shape[:2] != (b, l):
        raise ValueError(f"B has shape {B.shape}; expected ({b}, {l}, groups, N)")
    if C.shape != B.shape:
        raise ValueError(f"C has shape {C.shape}; expected B's shape {B.shape}")
    g, n = B.shape[2:]
    if e % g:
        raise ValueError(f"heads={e} must be a multiple of groups={g} (each group's B and C serve heads/groups heads)")
    if initial_state is not None and initial_state.shape != (b, e, p, n):
        raise ValueError(f"initial_state has shape {initial_state.shape}; expected {(b, e, p, n)}")
    return b, l, e, p, g, n


def segsum(a: Float[ArrayLike, "*batch length"]) -> Float[Array, "*batch length length"]:
    """Stable segment sums: (..., l) -> (..., l, l).

    ``out[..., i, j] = a[j+1] + ... + a[i]`` for ``i >= j`` (0 on the diagonal) and
    ``-inf`` above it, so ``exp(segsum(a))`` is the lower-triangular decay matrix
    ``L[i, j] = prod_{j < k <= i} exp(a_k)`` of the paper. Each entry is a masked
    cumulative sum of the terms it contains, never a difference of two prefix sums,
    which would cancel catastrophically once the prefix sums grow large.

    Args:
      a: (..., l) real log-decays.

    Returns:
      (..., l, l) in ``a``'s dtype.

    Example:
      >>> import jax.numpy as jnp
      >>> from ssm.ssd import segsum
      >>> segsum(jnp.array([1.0, 2.0, 3.0]))
      Array([[ 0., -inf, -inf],
             [ 2.,   0., -inf],
             [ 5.,   3.,   0.]], dtype=float32)
    """
    T = a.shape[-1]
    terms = jnp.broadcast_to(a[..., :, None], a.shape + (T,))  # terms[..., k, j] = a[k]
    strictly_below = jnp.tril(jnp.ones((T, T), bool), -1)
    sums = jnp.cumsum(jnp.where(strictly_below, terms, 0), axis=-2)
    return jnp.where(jnp.tril(jnp.ones((T, T), bool)), sums, -jnp.inf)


def ssd_chunked(x: Float[ArrayLike, "batch length heads headdim"], dt: Float[ArrayLike, "batch length heads"],
                A: Float[ArrayLike, "heads"], B: Float[ArrayLike, "batch length groups state"],
                C: Float[ArrayLike, "batch length groups state"], chunk_size: int, *,
                initial_state: Float[ArrayLike, "batch heads headdim state"] | None = None,
                return_last_state: bool = False, reset: Bool[ArrayLike, "batch length"] | None = None):
    """Mamba-2's SSD by chunks (Listing 1 of Dao & Gu, 2024).

    Args:
      x: (batch, length, heads, headdim) inputs.
      dt: (batch, length, heads) step sizes, already ``softplus(dt + dt_bias)``.
      A: (heads,) decay rates, negative.
      B, C: (batch, length, groups, N); group j serves heads [j e/g, (j+1) e/g).
      chunk_size: Q. A length that is not a multiple of Q is padded with
        ``dt = 0`` (which leaves the state unchanged); a length below Q is one chunk.
      initial_state: optional (batch, heads, headdim, N) state before position 0.
      return_last_state: also return the state after the last position.
      reset: (batch, length) bool, or None: True marks the start of a new sequence,
        whose entering state is dropped (its decay ``exp(dt A)`` taken as 0), as
        :func:`ssm.scan.selective_scan`'s ``reset``; at position 0 it drops
        ``initial_state``.

    Returns:
      ``y`` (batch, length, heads, headdim), and with ``return_last_state`` the
      final state (batch, heads, headdim, N); float32 (float64 for float64 inputs).

    With ``a = dt * A`` cumulated inside each chunk as ``s``:
      1. ``Y_diag[t] = sum_{s<=t} (C_t . B_s) exp(segsum(a))[t, s] X_s``;
      2. chunk states ``S_c = sum_s exp(s_Q - s_s) B_s (x) X_s``;
      3. states entering each chunk, ``h_c = sum_{c'<c} exp(totals between c' and c) S_c'``
         (plus the decayed initial state), by ``segsum`` over the chunk totals;
      4. ``Y_off[t] = exp(s_t) C_t . h_c``.

    B and C are never copied to the heads: the scores ``C_t . B_s`` of step 1 are
    computed once per group, (batch, chunks, G, Q, Q), and each of the group's e/g
    heads multiplies them by its own decay; steps 2 and 4 contract B and C per group
    likewise, as state-spaces/mamba's Triton path does (``_bmm_chunk_fwd`` over ``ngroups``).

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm.ssd import ssd_chunked, ssd_sequential, ssd_step
      >>> rng = np.random.default_rng(0)
      >>> x = jnp.asarray(rng.normal(size=(2, 16, 2, 4)), jnp.float32)  # (b, l, e, p)
      >>> dt = jnp.asarray(rng.uniform(0.01, 0.1, size=(2, 16, 2)), jnp.float32)  # (b, l, e)
      >>> A = jnp.array([-1.0, -4.0])  # (e,)
      >>> B, C = (jnp.asarray(rng.normal(size=(2, 16, 1, 8)), jnp.float32) for _ in range(2))  # (b, l, g, n)
      >>> y, h = ssd_chunked(x, dt, A, B, C, chunk_size=4, return_last_state=True)
      >>> y.shape, h.shape, y.dtype
      ((2, 16, 2, 4), (2, 2, 4, 8), dtype('float32'))
      >>> bool(jnp.allclose(y, ssd_sequential(x, dt, A, B, C), atol=1e-5))
      True
    """
    x, dt, A, B, C, initial_state = _as_arrays(x, dt, A, B, C, initial_state)
    b, length, e, p, g, n = _check(x, dt, A, B, C, initial_state)
    check_positive_int("chunk_size", chunk_size)
    if reset is not None and (jnp.shape(reset) != (b, length) or jnp.asarray(reset).dtype != jnp.bool_):
        raise ValueError(f"reset has shape {jnp.shape(reset)} and dtype {jnp.asarray(reset).dtype}; "
                         f"expected bool {(b, length)} (batch, length)")
    if length == 0:
        raise ValueError("x has length 0; expected at least one position")
    dtype = _compute_dtype(x, dt, A, B, C)
    x, dt, A, B, C = (v.astype(dtype) for v in (x, dt, A, B, C))

    Q = min(chunk_size, length)  # the result does not depend on Q; skip needless padding
    pad = -length % Q
    X = x * dt[..., None]
    a = dt * A
    if reset is not None:  # exp(-inf) = 0: nothing decays into a reset position (exact, and no NaN:
        a = jnp.where(jnp.asarray(reset)[..., None], -jnp.inf, a)  # segsum only adds, never subtracts)
    if pad:
        X, a, B, C = (jnp.pad(v, [(0, 0), (0, pad)] + [(0, 0)] * (v.ndim - 2)) for v in (X, a, B, C))
    # Heads as (g e): the e/g heads of each group g. B and C stay one per group; every
    # product with them is contracted per group and broadcast over its heads afterwards.
    X = rearrange(X, "b (c q) (g e) p -> b c q g e p", q=Q, g=g)
    B, C = (rearrange(v, "b (c q) g n -> b c q g n", q=Q) for v in (B, C))
    a = rearrange(a, "b (c q) (g e) -> b c g e q", q=Q, g=g)
    a_cumsum = jnp.cumsum(a, axis=-1)  # (b, c, g, e/g, q)

    # 1. Inside each chunk (diagonal blocks): a masked attention with decay matrix L,
    #    its scores C_t . B_s computed once per group.
    L = jnp.exp(segsum(a))  # (b, c, g, e/g, q, s)
    CB = jnp.einsum("bcqgn,bcsgn->bcgqs", C, B)
    Y_diag = jnp.einsum("bcgeqs,bcsgep->bcqgep", CB[:, :, :, None] * L, X)

    # 2. Each chunk's own contribution to the state at its end. exp(s_Q - s_s) is
    #    the last row of L (the stable form of that difference); it weighs X, per
    #    head, before the contraction with its group's B.
    decay_to_end = rearrange(L[..., -1, :], "b c g e s -> b c s g e")
    states = jnp.einsum("bcsgn,bcsgep->bcgepn", B, decay_to_end[..., None] * X)

    # 3. Recurrence over chunks, per head: the state entering chunk c, and the final state.
    if initial_state is None:
        initial_state = jnp.zeros((b, e, p, n), dtype)
    states = rearrange(states, "b c g e p n -> b c (g e) p n")
    states = jnp.concatenate([initial_state.astype(dtype)[:, None], states], axis=1)  # (b, c+1, ...)
    totals = jnp.pad(rearrange(a_cumsum[..., -1], "b c g e -> b (g e) c"), [(0, 0), (0, 0), (1, 0)])
    decay_chunks = jnp.exp(segsum(totals))  # (b, e, c+1, c+1): from chunk boundary j to i
    states = jnp.einsum("beij,bjepn->biepn", decay_chunks, states)
    entering, last_state = states[:, :-1], states[:, -1]

    # 4. The entering state read out inside each chunk (off-diagonal blocks): C per
    #    group against the states of its heads, then each head's decay from the chunk start.
    entering = rearrange(entering, "b c (g e) p n -> b c g e p n", g=g)
    Y_off = jnp.einsum("bcqgn,bcgepn->bcqgep", C, entering)
    Y_off = Y_off * rearrange(jnp.exp(a_cumsum), "b c g e q -> b c q g e")[..., None]

    y = rearrange(Y_diag + Y_off, "b c q g e p -> b (c q) (g e) p")[:, :length]
    return (y, last_state) if return_last_state else y


def ssd_step(state: Float[ArrayLike, "batch heads headdim state"], x_t: Float[ArrayLike, "batch heads headdim"],
             dt_t: Float[ArrayLike, "batch heads"], A: Float[ArrayLike, "heads"],
             B_t: Float[ArrayLike, "batch groups state"], C_t: Float[ArrayLike, "batch groups state"],
             ) -> tuple[Float[Array, "batch heads headdim"], Float[Array, "batch heads headdim state"]]:
    """One token of the SSD recurrence.

    Args:
      state: (batch, heads, headdim, N). x_t: (batch, heads, headdim).
      dt_t: (batch, heads). A: (heads,). B_t, C_t: (batch, groups, N).

    Returns:
      ``(y_t, state)``: (batch, heads, headdim) and the new state, with
      ``state = exp(dt_t A) state + (dt_t x_t) (x) B_t`` and ``y_t = state . C_t``;
      float32 (float64 for float64 inputs).

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm.ssd import ssd_chunked, ssd_sequential, ssd_step
      >>> rng = np.random.default_rng(0)
      >>> x = jnp.asarray(rng.normal(size=(2, 16, 2, 4)), jnp.float32)  # (b, l, e, p)
      >>> dt = jnp.asarray(rng.uniform(0.01, 0.1, size=(2, 16, 2)), jnp.float32)  # (b, l, e)
      >>> A = jnp.array([-1.0, -4.0])  # (e,)
      >>> B, C = (jnp.asarray(rng.normal(size=(2, 16, 1, 8)), jnp.float32) for _ in range(2))  # (b, l, g, n)
      >>> y, h = ssd_chunked(x, dt, A, B, C, chunk_size=4, return_last_state=True)
      >>> state = jnp.zeros((2, 2, 4, 8))
      >>> for t in range(16):
      ...     y_t, state = ssd_step(state, x[:, t], dt[:, t], A, B[:, t], C[:, t])
      >>> bool(jnp.allclose(y_t, y[:, -1], atol=1e-5)), bool(jnp.allclose(state, h, atol=1e-5))
      (True, True)
    """
    state, x_t, dt_t, A, B_t, C_t = _as_arrays(state, x_t, dt_t, A, B_t, C_t)
    dtype = _compute_dtype(state, x_t, dt_t, A, B_t, C_t)
    g = B_t.shape[1]
    x_t, dt_t, A, state, B_t, C_t = (v.astype(dtype) for v in (x_t, dt_t, A, state, B_t, C_t))
    X_t = rearrange(x_t * dt_t[..., None], "b (g e) p -> b g e p", g=g)  # the heads of each group
    decay = rearrange(jnp.exp(dt_t * A), "b (g e) -> b g e", g=g)[..., None, None]
    state = decay * rearrange(state, "b (g e) p n -> b g e p n", g=g) + jnp.einsum("bgep,bgn->bgepn", X_t, B_t)
    y_t = jnp.einsum("bgepn,bgn->bgep", state, C_t)
    return rearrange(y_t, "b g e p -> b (g e) p"), rearrange(state, "b g e p n -> b (g e) p n")


def ssd_sequential(x: Float[ArrayLike, "batch length heads headdim"], dt: Float[ArrayLike, "batch length heads"],
                   A: Float[ArrayLike, "heads"], B: Float[ArrayLike, "batch length groups state"],
                   C: Float[ArrayLike, "batch length groups state"], *,
                   initial_state: Float[ArrayLike, "batch heads headdim state"] | None = None,
                   return_last_state: bool = False):
    """The SSD recurrence token by token (``lax.scan`` of :func:`ssd_step`).

    Same arguments and results as :func:`ssd_chunked` (without ``chunk_size``).

    Args:
      x: (batch, length, heads, headdim).
      dt: (batch, length, heads), already positive.
      A: (heads,).
      B, C: (batch, length, groups, N).
      initial_state: optional (batch, heads, headdim, N).
      return_last_state: also return the state after the last position.

    Returns:
      ``y`` (batch, length, heads, headdim), and with ``return_last_state`` the final
      state (batch, heads, headdim, N); float32 (float64 for float64 inputs).

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm.ssd import ssd_chunked, ssd_sequential, ssd_step
      >>> rng = np.random.default_rng(0)
      >>> x = jnp.asarray(rng.normal(size=(2, 16, 2, 4)), jnp.float32)  # (b, l, e, p)
      >>> dt = jnp.asarray(rng.uniform(0.01, 0.1, size=(2, 16, 2)), jnp.float32)  # (b, l, e)
      >>> A = jnp.array([-1.0, -4.0])  # (e,)
      >>> B, C = (jnp.asarray(rng.normal(size=(2, 16, 1, 8)), jnp.float32) for _ in range(2))  # (b, l, g, n)
      >>> y, h = ssd_sequential(x, dt, A, B, C, return_last_state=True)
      >>> y.shape, h.shape
      ((2, 16, 2, 4), (2, 2, 4, 8))
      >>> y1, h1 = ssd_sequential(x[:, :8], dt[:, :8], A, B[:, :8], C[:, :8], return_last_state=True)
      >>> y2 = ssd_sequential(x[:, 8:], dt[:, 8:], A, B[:, 8:], C[:, 8:], initial_state=h1)
      >>> bool(jnp.allclose(jnp.concatenate([y1, y2], 1), y, atol=1e-5))  # state carries across a split
      True
    """
    x, dt, A, B, C, initial_state = _as_arrays(x, dt, A, B, C, initial_state)
    b, length, e, p, _, n = _check(x, dt, A, B, C, initial_state)
    if length == 0:
        raise ValueError("x has length 0; expected at least one position")
    dtype = _compute_dtype(x, dt, A, B, C)
    state = jnp.zeros((b, e, p, n), dtype) if initial_state is None else initial_state.astype(dtype)

    def body(state, inputs):
        x_t, dt_t, B_t, C_t = inputs
        y_t, state = ssd_step(state, x_t, dt_t, A, B_t, C_t)
        return state, y_t

    time_major = [jnp.swapaxes(v, 0, 1) for v in (x, dt, B, C)]
    last_state, y = jax.lax.scan(body, state, time_major)
    y = jnp.swapaxes(y, 0, 1)
    return (y, last_state) if return_last_state else y
