"""``LSTM``: a long short-term memory layer on Flax NNX's own fused cell, the recurrent
baseline of the memory benchmarks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ssm.checks import check_positive_int, check_sequence, check_token
from ssm.layers.segments import boundaries, check_segment_ids, check_state, recurrent_scan
from ssm.layers.unbatched import accepts_unbatched


def orthogonal_in_float32(key, shape, dtype):
    """Flax's orthogonal initializer (the LSTM cell's default for its recurrent kernel),
    drawn in float32 and then cast: its QR has no bfloat16 kernel."""
    return nnx.initializers.orthogonal()(key, shape, jnp.promote_types(dtype, jnp.float32)).astype(dtype)


class LSTM(nnx.Module):
    """LSTM over the sequence: ``x`` (batch, length, d_model) or (length, d_model) -> hidden
    states, same shape.

    One :class:`flax.nnx.OptimizedLSTMCell` (the four gates of the input and of the
    hidden state as two fused matrix products; Hochreiter & Schmidhuber, 1997) run by
    ``jax.lax.scan``. It is not :class:`flax.nnx.RNN`, which handles right padding only
    (``seq_lengths``): here the carry is held unchanged at every padded position, so
    padding on either side leaves real outputs as they are.

    Args:
      d_model: width d (input and hidden size).
      forget_bias: initial bias of the forget gate (1.0, as Jozefowicz et al. 2015;
        0 is Flax's default).
      unroll: time steps per loop iteration of the scan.

    Parameters: ``cell.dense_i.kernel`` (d, 4d) and ``cell.dense_h.kernel`` (d, 4d):
    group ``matrix``; ``cell.dense_h.bias`` (4d,): ``no_decay``.
    The recurrent state is ``(c, h)``, float32 at least.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from flax import nnx
      >>> x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 4)), jnp.float32)  # (batch, length, d_model)
      >>> from ssm.layers import LSTM
      >>> layer = LSTM(4, rngs=nnx.Rngs(0))
      >>> y = layer(x)
      >>> y.shape, y.dtype
      ((2, 16, 4), dtype('float32'))
    """

    def __init__(
        self,
        d_model: int,
        *,
        forget_bias: float = 1.0,
        unroll: int = 1,
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.d_model = check_positive_int("d_model", d_model)
        self.unroll = check_positive_int("unroll", unroll)
        self.dtype = dtype
        self.real_dtype = jnp.promote_types(param_dtype, jnp.float32)
        self.cell = nnx.OptimizedLSTMCell(d_model, d_model, dtype=dtype, param_dtype=param_dtype,
                                          recurrent_kernel_init=orthogonal_in_float32, rngs=rngs)
        bias = self.cell.dense_h.bias  # gates in the order i, f, g, o
        bias[...] = bias[...].at[d_model : 2 * d_model].set(forget_bias)

    def _cell(self, carry, x_t):
        """One step from the float32 carry ``(c, h)`` (batch, d) each."""
        (c, h), _ = self.cell(carry, x_t)
        return c.astype(self.real_dtype), h.astype(self.real_dtype)

    @accepts_unbatched()
    def __call__(self, x, mask=None, *, segment_ids=None, initial_state=None, return_state=False):
        """The hidden states of the whole sequence, from the zero state (or
        ``initial_state``).

        Args:
          x: (batch, length, d_model), or one example (length, d_model).
          mask: (batch, length) (or (length,)) bool marking real tokens, or None:
            padded positions keep the carry and output zeros.
          segment_ids: (batch, length) (or (length,)) int, or None: packed documents
            (module :mod:`ssm.layers.segments`), the carry reset to zeros at each
            boundary.
          initial_state: the carry ``(c, h)`` before position 0, as :meth:`init_state`,
            :meth:`step` or :meth:`prefill` make it (batch axis required), or None.
          return_state: also return the carry after the last real position.

        Returns:
          ``x``'s shape, in ``dtype`` (by default ``x``'s float dtype); with
          ``return_state``, ``(y, (c, h))``.
        """
        x = check_sequence(x, mask, self.d_model)
        segment_ids = check_segment_ids(segment_ids, x.shape[:2])
        carry = (self.init_state(x.shape[0]) if initial_state is None
                 else tuple(check_state(self, tuple(initial_state), x.shape[0])))
        carry = tuple(c.astype(self.real_dtype) for c in carry)
        reset = None if segment_ids is None else boundaries(segment_ids, mask)

        def cell(carry, x_t):
            carry = self._cell(carry, x_t)
            return carry, carry[1]

        hs, carry = recurrent_scan(cell, carry, x, reset=reset, keep=mask, unroll=self.unroll)
        y = hs.astype(self.dtype or x.dtype)
        if mask is not None:
            y = jnp.where(mask[..., None], y, 0)
        return (y, carry) if return_state else y

    def init_state(self, batch_size: int):
        """``(c, h)``: zeros, (batch_size, d_model) each, float32 at least."""
        check_positive_int("batch_size", batch_size)
        zeros = jnp.zeros((batch_size, self.d_model), self.real_dtype)
        return zeros, zeros

    def step(self, x_t, state):
        """One token: ``x_t`` (batch, d_model) and the state ``(c, h)`` -> ``(h_t, state)``,
        h_t (batch, d_model) equal to ``layer(x)[:, t]``. The batch axis is required, as
        the state's: one example is a batch of one."""
        x_t = check_token(x_t, self.d_model)
        state = self._cell(state, x_t)
        return state[1].astype(self.dtype or x_t.dtype), state

    def prefill(self, x):
        """A prompt ``x`` (batch, length, d_model) -> ``(y, state)``: y as ``layer(x)``
        (batch, length, d_model) and the carry ``(c, h)`` after the last position, for
        :meth:`step` (the batch axis required, as in :meth:`step`)."""
        return self(check_sequence(x, None, self.d_model), return_state=True)
