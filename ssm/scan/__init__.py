"""Mamba's selective scan (S6): three scan methods and a one-step update.

Shapes in the notation of :mod:`ssm.typing`: ``b`` batch, ``l`` length, ``h`` channels
(Mamba's d_inner), ``n`` state size, ``g`` groups of B/C (``h/g`` channels each),
``q`` positions per chunk.

Semantics are those of ``selective_scan_ref`` in state-spaces/mamba
(``mamba_ssm/ops/selective_scan_interface.py``), channel-last. Per channel c,
state index i and position t, all in float32 (or float64 if an input is float64)::

    delta_t  <- softplus(delta_t + delta_bias)      (softplus optional)
    dA_t     =  exp(delta_t[c] A[c, i])             (zero-order hold of A)
    dBu_t    =  delta_t[c] B_t[i] u_t[c]            ("simplified Euler" for B)
    h_t      =  dA_t h_{t-1} + dBu_t                (h_{-1} = initial_state or 0)
    y_t[c]   =  sum_i h_t[c, i] C_t[i] + D[c] u_t[c]
    y_t      *= silu(z_t)

Methods (:func:`resolve_method` picks one for ``"auto"``), one module each:

- ``"sequential"`` (:mod:`ssm.scan.sequential`): one ``lax.scan`` over positions.
  Forward memory O(b l h); its autodiff backward holds O(b l h n).
- ``"chunked"`` (:mod:`ssm.scan.chunked`): the same forward in chunks of q positions
  and a hand-written backward that recomputes each chunk from the state entering it.
  Memory O(b l h + b h n l / q). Reverse-mode only.
- ``"associative"`` (:mod:`ssm.scan.associative`): ``lax.associative_scan`` over
  (dA, dBu), materialized as (b, l, h, n): O(log l) depth, O(b l h n) memory.

The step math they share (decay, drive, readout, softplus, gate, a float32 exp) is in
:mod:`ssm.scan.recurrence`; the argument checks in :mod:`ssm.scan.inputs`. This module
checks the arguments, lays them out for the methods and runs one.

Resets: ``reset[b, t] = True`` marks position t as the start of a new sequence;
the state entering it is dropped (taken as zero, *not* as ``initial_state``), so
sequences packed along the length give the same outputs as separate runs. With
``reverse=True`` the scan runs from the last position to the first and the same
``reset`` mask (still marking sequence starts) drops the state flowing from t+1
into t wherever t+1 starts a sequence, so packed reverse runs equal separate
reverse runs too.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ssm.checks import as_arrays, check_choice
from ssm.scan import chunked, recurrence
from ssm.scan.associative import scan_associative
from ssm.scan.chunked import scan_in_chunks
from ssm.scan.inputs import check_scan_inputs, check_stable, check_step_inputs, compute_dtype, output_dtype
from ssm.scan.recurrence import decay, drive, readout, skip_and_gate, time_step
from ssm.scan.recurrence import exp_float32 as _exp_float32  # noqa: F401  (its tests reach it here)
from ssm.scan.sequential import scan_sequential
from ssm.typing import Array, ArrayLike, Bool, Float, Real

__all__ = ["CHUNK", "METHODS", "SOFTPLUS_THRESHOLD", "resolve_method", "selective_scan",
           "selective_state_update"]

#: Positions per chunk of the ``"chunked"`` method when ``chunk_size`` is None.
CHUNK: int = chunked.CHUNK
#: ``softplus(x) = x`` above this (as torch's softplus and Mamba's CUDA kernel).
SOFTPLUS_THRESHOLD: float = recurrence.SOFTPLUS_THRESHOLD
#: The ``method`` options of :func:`selective_scan`.
METHODS: tuple[str, ...] = ("auto", "sequential", "chunked", "associative")
# What "auto" runs per platform: measured on "cpu"; elsewhere the default, "chunked",
# unmeasured (see resolve_method).
_AUTO = {"cpu": "chunked"}


def resolve_method(method: str = "auto", platform: str | None = None) -> str:
    """The scan method to run for ``method`` on ``platform`` (default: JAX's backend).

    ``"auto"`` resolves to ``"chunked"`` everywhere. On CPU that is measured
    (ssm/bench/scan.py, BENCHMARKS.md; b4 d512 n16, L 1024 and 4096): its forward is the
    fastest (6-17% ahead of "sequential", 10-12x the associative scan) and its
    forward+backward the fastest and smallest by far (2.1-2.2x faster than "sequential"
    with 1/7 of its memory, 4.5-6x faster than "associative" with 1/27). On GPU and TPU it is a
    choice made without a measurement: the chunked scan keeps training memory at
    O(b l h), where the associative scan needs O(b l h n); a per-step loop may be
    launch-bound there, so measure before relying on it.

    Args:
      method: one of :data:`METHODS`.
      platform: ``"cpu"``, ``"gpu"``, ``"tpu"``, ...; None: ``jax.default_backend()``.

    Returns:
      The method's name: ``"sequential"``, ``"chunked"`` or ``"associative"``.

    Example:
      >>> from ssm.scan import resolve_method
      >>> resolve_method("auto", "cpu"), resolve_method("associative")
      ('chunked', 'associative')
    """
    check_choice("method", method, METHODS)
    if method != "auto":
        return method
    return _AUTO.get(platform or jax.default_backend(), "chunked")


def selective_scan(u: Real[ArrayLike, "batch length channels"], delta: Float[ArrayLike, "batch length channels"],
                   A: Float[ArrayLike, "channels state"], B: Float[ArrayLike, "batch length *groups state"],
                   C: Float[ArrayLike, "batch length *groups state"], D: Float[ArrayLike, "channels"] | None = None,
                   z: Float[ArrayLike, "batch length channels"] | None = None,
                   delta_bias: Float[ArrayLike, "channels"] | None = None, delta_softplus: bool = False, *,
                   initial_state: Float[ArrayLike, "batch channels state"] | None = None,
                   return_last_state: bool = False, reset: Bool[ArrayLike, "batch length"] | None = None,
                   reverse: bool = False, method: str = "auto", chunk_size: int | None = None):
    """Mamba's selective scan (S6), channel-last; semantics of ``selective_scan_ref``.

    Gu & Dao (2023), "Mamba: Linear-Time Sequence Modeling with Selective State
    Spaces", Algorithm 2. See the module docstring for the equations and methods.

    Args:
      u: (b, l, h) input.
      delta: (b, l, h) time steps (before ``delta_bias`` and softplus).
      A: (h, n) real state matrix (diagonal per channel; Mamba's ``-exp(A_log)``).
      B, C: (b, l, n), or (b, l, g, n) where group j serves channels [j h/g, (j+1) h/g).
      D: (h,) skip, optional.
      z: (b, l, h) gate, optional: the output is multiplied by ``silu(z)``.
      delta_bias: (h,) added to ``delta`` before the softplus, optional.
      delta_softplus: apply softplus to ``delta + delta_bias``.
      initial_state: (b, h, n) state before position 0 (before the last position when
        ``reverse``); zero if None.
      return_last_state: also return the state after the last scanned position.
      reset: (b, l) bool; True marks the start of a new sequence, whose entering
        state is zero (see the module docstring; with ``reverse`` too).
      reverse: scan from the last position to the first (y_t depends on positions >= t).
      method: ``"auto"``, ``"sequential"``, ``"chunked"`` or ``"associative"``.
      chunk_size: positions per chunk for ``"chunked"`` (default ``CHUNK`` = 64);
        chunks are made equal, so the length is padded by less than one per chunk.

    Returns:
      ``y`` (b, l, h) in u's dtype (float32 for integer u); with ``return_last_state``, ``(y, last_state)``
      with last_state (b, h, n) float32 (float64 for float64 inputs).

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm.scan import selective_scan, selective_state_update
      >>> rng = np.random.default_rng(0)
      >>> u, delta = (jnp.asarray(rng.normal(size=(2, 16, 8)), jnp.float32) for _ in range(2))  # (b, l, h)
      >>> A = -jnp.exp(jnp.asarray(rng.normal(size=(8, 8)), jnp.float32))  # (h, n)
      >>> B, C = (jnp.asarray(rng.normal(size=(2, 16, 8)), jnp.float32) for _ in range(2))  # (b, l, n)
      >>> y, h = selective_scan(u, delta, A, B, C, delta_softplus=True, return_last_state=True)
      >>> y.shape, y.dtype, h.shape
      ((2, 16, 8), dtype('float32'), (2, 8, 8))
      >>> y_seq = selective_scan(u, delta, A, B, C, delta_softplus=True, method="sequential")
      >>> bool(jnp.allclose(y, y_seq, atol=1e-5))  # every method computes the same scan
      True
    """
    method = resolve_method(method)
    u, delta, A, B, C, D, z, delta_bias, initial_state, reset = as_arrays(
        u, delta, A, B, C, D, z, delta_bias, initial_state, reset)
    b, l, d, n, g = check_scan_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state, reset,
                                      chunk_size)
    check_stable(A, delta, delta_bias, delta_softplus)

    # The methods' layout (ssm.scan.recurrence): batch-major, in scan order (flipped if
    # reverse), channels and B/C grouped as (g, h/g) and (g, n) when g > 1.
    dtype = compute_dtype(u, delta, A, B, C, D, z, delta_bias, initial_state)
    channels, states = ((g, d // g), (g, n)) if g > 1 else ((d,), (n,))
    delta_t = time_step(delta, delta_bias, delta_softplus, dtype)
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
        y, h = scan_sequential(*inputs)
    elif method == "associative":
        y, h = scan_associative(*inputs)
    else:
        y, h = scan_in_chunks(*inputs, chunk_size=chunk_size)
    if reverse:
        y = jnp.flip(y, 1)
    y = skip_and_gate(y.reshape(b, l, d), u, D, z, dtype).astype(output_dtype(u, dtype))
    return (y, h.reshape(b, d, n)) if return_last_state else y


def selective_state_update(state: Float[ArrayLike, "batch channels state"], u_t: Real[ArrayLike, "batch channels"],
                           delta_t: Float[ArrayLike, "batch channels"], A: Float[ArrayLike, "channels state"],
                           B_t: Float[ArrayLike, "batch *groups state"], C_t: Float[ArrayLike, "batch *groups state"],
                           D: Float[ArrayLike, "channels"] | None = None,
                           z_t: Float[ArrayLike, "batch channels"] | None = None,
                           delta_bias: Float[ArrayLike, "channels"] | None = None, delta_softplus: bool = False,
                           ) -> tuple[Float[Array, "batch channels"], Float[Array, "batch channels state"]]:
    """One step of :func:`selective_scan` for recurrent inference (Mamba's ``step``).

    ``h' = exp(delta A) h + delta u B``, ``y = <h', C> + D u``, ``y *= silu(z)``, with
    ``delta <- softplus(delta + delta_bias)`` as in the scan. Feeding a sequence one
    position at a time gives the scan's outputs and states.

    Args:
      state: (b, h, n) state before this step.
      u_t, delta_t, z_t: (b, h); z_t optional.
      A: (h, n) real.
      B_t, C_t: (b, n) or (b, g, n).
      D, delta_bias: (h,), optional.
      delta_softplus: as in :func:`selective_scan`.

    Returns:
      ``(y_t, new_state)``: y_t (b, h) in u_t's dtype (float32 for integer u_t), new_state (b, h, n) float32
      (float64 for float64 inputs).

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm.scan import selective_scan, selective_state_update
      >>> rng = np.random.default_rng(0)
      >>> u, delta = (jnp.asarray(rng.normal(size=(2, 16, 8)), jnp.float32) for _ in range(2))  # (b, l, h)
      >>> A = -jnp.exp(jnp.asarray(rng.normal(size=(8, 8)), jnp.float32))  # (h, n)
      >>> B, C = (jnp.asarray(rng.normal(size=(2, 16, 8)), jnp.float32) for _ in range(2))  # (b, l, n)
      >>> y, h = selective_scan(u, delta, A, B, C, delta_softplus=True, return_last_state=True)
      >>> state, steps = jnp.zeros((2, 8, 8)), []
      >>> for t in range(16):
      ...     y_t, state = selective_state_update(state, u[:, t], delta[:, t], A, B[:, t], C[:, t],
      ...                                         delta_softplus=True)
      ...     steps.append(y_t)
      >>> bool(jnp.allclose(jnp.stack(steps, 1), y, atol=1e-5)), bool(jnp.allclose(state, h, atol=1e-5))
      (True, True)
    """
    state, u_t, delta_t, A, B_t, C_t, D, z_t, delta_bias = as_arrays(
        state, u_t, delta_t, A, B_t, C_t, D, z_t, delta_bias)
    b, d, n, g = check_step_inputs(state, u_t, delta_t, A, B_t, C_t, D, z_t, delta_bias)
    check_stable(A, delta_t, delta_bias, delta_softplus, "delta_t")
    dtype = compute_dtype(state, u_t, delta_t, A, B_t, C_t, D, z_t, delta_bias)
    k = d // g
    dt = time_step(delta_t, delta_bias, delta_softplus, dtype)
    grouped = lambda v: v.reshape(b, g, k)  # noqa: E731
    h = (decay(grouped(dt), A.astype(dtype).reshape(g, k, n), None)
         * state.astype(dtype).reshape(b, g, k, n)
         + drive(grouped(dt * u_t.astype(dtype)), B_t.astype(dtype).reshape(b, g, n)))
    y = readout(h, C_t.astype(dtype).reshape(b, g, n)).reshape(b, d)
    return skip_and_gate(y, u_t, D, z_t, dtype).astype(output_dtype(u_t, dtype)), h.reshape(b, d, n)
