"""Packed sequences and state passing: what every causal layer shares.

Packing puts several documents in one row, each marked by its ``segment_ids``
(batch, length) int: positions with different ids never see each other. A layer
cuts its sequence at each *boundary*, a real position whose id differs from the
position before it (:func:`boundaries`): a recurrence drops the state entering it,
a short convolution does not reach across it, attention does not attend across it.

State passing continues a sequence from an ``initial_state`` (the state type of the
layer's ``step``): it flows into the row's first segment only, as a boundary at
position 0 would drop it; ``return_state`` gives the state after the last real
position, that of the row's last segment.

Padding (``mask`` False) is held, not cut: a padded position takes no step, so the
state passes through it unchanged, and it is never a boundary. Pad at the ends of a row;
with an ``initial_state``, on the right only (a short convolution reads padded inputs
as zeros, and an attention cache counts them as positions).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["check_segment_ids", "boundaries", "same_segment", "last_real", "recurrent_scan", "check_state"]


def check_segment_ids(segment_ids, shape: tuple[int, int]):
    """``segment_ids`` as an int32 array of ``shape`` (batch, length), or None; else a
    ``ValueError`` naming its shape or dtype.

    Args:
      segment_ids: (batch, length) integers (NumPy or JAX), or None.
      shape: the expected (batch, length).

    Returns:
      (batch, length) int32, or None.

    Example:
      >>> import numpy as np
      >>> from ssm.layers.segments import check_segment_ids
      >>> check_segment_ids(np.array([[1, 1, 2]]), (1, 3)).dtype
      dtype('int32')
      >>> check_segment_ids(np.ones((1, 2), int), (1, 3))
      Traceback (most recent call last):
      ...
      ValueError: segment_ids has shape (1, 2); expected (1, 3) (batch, length)
    """
    if segment_ids is None:
        return None
    segment_ids = jnp.asarray(segment_ids)
    if segment_ids.shape != tuple(shape):
        raise ValueError(f"segment_ids has shape {segment_ids.shape}; expected {tuple(shape)} (batch, length)")
    if not jnp.issubdtype(segment_ids.dtype, jnp.integer):
        raise ValueError(f"segment_ids has dtype {segment_ids.dtype}; expected integers (one id per document)")
    return segment_ids.astype(jnp.int32)


def check_state(layer, state, batch_size: int, **init_kwargs):
    """``state`` if it has the structure and shapes of ``layer.init_state(batch_size,
    **init_kwargs)`` (compared abstractly, without computing it); else a ``ValueError``
    showing both.

    Args:
      layer: a module with ``init_state``.
      state: the state passed in (a pytree).
      batch_size: the batch of the input it goes with.
      init_kwargs: more arguments of ``init_state`` (an attention cache's ``max_len``).

    Returns:
      ``state``, unchanged.

    Example:
      >>> from flax import nnx
      >>> from ssm.layers import LSTM
      >>> from ssm.layers.segments import check_state
      >>> lstm = LSTM(4, rngs=nnx.Rngs(0))
      >>> check_state(lstm, lstm.init_state(3), 2)
      Traceback (most recent call last):
      ...
      ValueError: initial_state has shapes ((3, 4), (3, 4)); expected ((2, 4), (2, 4)) (as LSTM.init_state(2) makes it)
    """
    expected = jax.tree.map(jnp.shape, jax.eval_shape(lambda: layer.init_state(batch_size, **init_kwargs)))
    try:
        got = jax.tree.map(jnp.shape, state)
    except TypeError:
        got = type(state).__name__
    if got != expected:
        raise ValueError(f"initial_state has shapes {got}; expected {expected} (as "
                         f"{type(layer).__name__}.init_state({batch_size}) makes it)")
    return state


def boundaries(segment_ids, mask=None):
    """Where a new segment starts: (batch, length) bool, True at a real position
    ``t > 0`` whose id differs from position ``t - 1``'s. Position 0 is never a
    boundary (it continues an initial state), nor is a padded position.

    Args:
      segment_ids: (batch, length) int.
      mask: (batch, length) bool marking real positions, or None (all real).

    Returns:
      (batch, length) bool.

    Example:
      >>> import jax.numpy as jnp
      >>> from ssm.layers.segments import boundaries
      >>> boundaries(jnp.array([[1, 1, 2, 2, 2, 3, 0, 0]]))
      Array([[False, False,  True, False, False,  True,  True, False]], dtype=bool)
    """
    change = jnp.concatenate([jnp.zeros_like(segment_ids[:, :1], bool), segment_ids[:, 1:] != segment_ids[:, :-1]],
                             axis=1)
    return change if mask is None else change & mask


def same_segment(segment_ids, width: int):
    """For a causal window of ``width`` taps: (batch, length, width) bool, True where
    tap ``k`` of position ``t`` (the input at ``t - width + 1 + k``) is in ``t``'s
    segment. Taps before position 0 count as the first position's segment (they hold
    the initial state, or zeros).

    Args:
      segment_ids: (batch, length) int.
      width: taps K.

    Returns:
      (batch, length, width) bool.

    Example:
      >>> import jax.numpy as jnp
      >>> from ssm.layers.segments import same_segment
      >>> same_segment(jnp.array([[1, 1, 2]]), 2)[0]  # taps (t - 1, t) of each position t
      Array([[ True,  True],
             [ True,  True],
             [False,  True]], dtype=bool)
    """
    padded = jnp.pad(segment_ids, ((0, 0), (width - 1, 0)), mode="edge")
    L = segment_ids.shape[1]
    taps = jnp.stack([padded[:, k : k + L] for k in range(width)], axis=-1)
    return taps == segment_ids[..., None]


def last_real(mask):
    """Each row's last real position: (batch,) int, ``length - 1`` for a row without one
    (where a caller needs another answer, it tests ``mask.any(1)``).

    Args:
      mask: (batch, length) bool marking real positions.

    Returns:
      (batch,) int32.

    Example:
      >>> import jax.numpy as jnp
      >>> from ssm.layers.segments import last_real
      >>> last_real(jnp.array([[True, True, False], [True, True, True]]))
      Array([1, 2], dtype=int32)
    """
    return (mask.shape[1] - 1 - jnp.argmax(mask[:, ::-1], axis=1)).astype(jnp.int32)


def _where_rows(rows, a, b):
    """``a`` where ``rows`` (batch,) else ``b``, for leaves (batch, ...)."""
    return jax.tree.map(lambda x, y: jnp.where(rows.reshape(rows.shape + (1,) * (x.ndim - 1)), x, y), a, b)


def recurrent_scan(cell, carry, xs, *, reset=None, keep=None, chunk: int | None = None, unroll: int = 1):
    """Run ``cell`` over time, dropping the carry at resets and holding it where not kept.

    At each position t: the carry entering t is zeros where ``reset[:, t]``, then
    ``carry, y_t = cell(carry, x_t)``, and the carry stays as it was (before the
    reset) where not ``keep[:, t]``.

    With ``chunk``, time runs as chunks of that many positions, each under
    ``jax.checkpoint``: the backward pass stores the carry at chunk boundaries only
    and recomputes the rest (memory O(length / chunk + chunk) carries instead of
    O(length), for one more forward pass). The length is padded to a multiple of
    ``chunk`` with held positions, which change nothing.

    Args:
      cell: ``(carry, x_t) -> (carry, y_t)``; leaves of ``carry`` (batch, ...), of
        ``x_t`` and ``y_t`` (batch, ...).
      carry: the initial carry (a pytree).
      xs: pytree of (batch, length, ...).
      reset, keep: (batch, length) bool, or None.
      chunk: positions per checkpointed chunk, or None (one plain scan).
      unroll: time steps per loop iteration.

    Returns:
      ``(ys, carry)``: ys (batch, length, ...) and the carry after the last position.

    Example:
      >>> import jax.numpy as jnp
      >>> from ssm.layers.segments import recurrent_scan
      >>> xs = jnp.ones((1, 6))
      >>> reset = jnp.array([[False, False, True, False, False, False]])
      >>> cumsum = lambda c, x: (c + x, c + x)
      >>> recurrent_scan(cumsum, jnp.zeros(1), xs, reset=reset)[0]
      Array([[1., 2., 1., 2., 3., 4.]], dtype=float32)
    """
    b, length = jax.tree.leaves(xs)[0].shape[:2]
    reset = jnp.zeros((b, length), bool) if reset is None else reset
    keep = jnp.ones((b, length), bool) if keep is None else keep
    inputs = (xs, reset, keep)
    if chunk is not None:
        pad = -length % chunk
        if pad:
            padding = lambda x, value=0: jnp.pad(  # noqa: E731
                x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2), constant_values=value)
            inputs = (jax.tree.map(padding, xs), padding(reset, False), padding(keep, False))
    time_major = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), inputs)

    def body(carry, inp):
        x_t, reset_t, keep_t = inp
        entering = _where_rows(reset_t, jax.tree.map(jnp.zeros_like, carry), carry)
        new, y_t = cell(entering, x_t)
        return _where_rows(keep_t, new, carry), y_t

    if chunk is None:
        carry, ys = jax.lax.scan(body, carry, time_major, unroll=unroll)
    else:
        chunks = jax.tree.map(lambda x: x.reshape(-1, chunk, *x.shape[1:]), time_major)

        @jax.checkpoint
        def one_chunk(carry, inp):
            return jax.lax.scan(body, carry, inp, unroll=unroll)

        carry, ys = jax.lax.scan(one_chunk, carry, chunks)
        ys = jax.tree.map(lambda y: y.reshape(-1, *y.shape[2:])[:length], ys)
    return jax.tree.map(lambda y: jnp.swapaxes(y, 0, 1), ys), carry
