"""Causal depthwise 1-d convolution with a rolling state for recurrent inference
(the short convolution of Mamba, Mamba-2 and the M2 mixer)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from ssm.checks import check_positive_int
from ssm.layers.segments import last_real, same_segment


class CausalConv1d(nnx.Module):
    """``y[t] = bias + sum_k kernel[k] * x[t - (width - 1) + k]`` per channel, with
    zeros before the start (PyTorch's ``Conv1d(groups=channels, padding=width-1)``
    truncated to the input length, as in Mamba).

    Args:
      channels: h, the channels (Mamba's ``d_inner``).
      width: w, the taps (Mamba's ``d_conv``).
      use_bias: add a bias.

    Parameters: ``kernel`` (w, h), group ``adamw`` (a depthwise kernel, never Muon);
    ``bias`` (h,). Both drawn U(+-1/sqrt(w)), PyTorch's default for this layer.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from flax import nnx
      >>> x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 4)), jnp.float32)  # (batch, length, d_model)
      >>> from ssm.layers import CausalConv1d
      >>> conv = CausalConv1d(4, 3, rngs=nnx.Rngs(0))
      >>> y = conv(x)
      >>> y.shape
      (2, 16, 4)
      >>> bool(jnp.allclose(conv(x[:, :5])[:, -1], y[:, 4], atol=1e-6))  # causal: no future input
      True
    """

    def __init__(self, channels: int, width: int = 4, *, use_bias: bool = True, dtype=None,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.channels = check_positive_int("channels", channels)
        self.width = check_positive_int("width", width)
        self.dtype = dtype
        bound = 1 / math.sqrt(width)
        uniform = lambda shape: jax.random.uniform(rngs.params(), shape, param_dtype, -bound, bound)  # noqa: E731
        self.kernel = nnx.Param(uniform((width, channels)), group="adamw")
        self.bias = nnx.Param(uniform((channels,))) if use_bias else None

    def _taps(self, window, dtype):
        """Sum over the last ``width`` positions: window (..., w, h) -> (..., h)."""
        y = jnp.einsum("...wh,wh->...h", window.astype(dtype), self.kernel[...].astype(dtype))
        return y if self.bias is None else y + self.bias[...].astype(dtype)

    def __call__(self, x, *, segment_ids=None, mask=None, initial_state=None, return_state=False,
                 state_dtype=jnp.float32):
        """Convolve every channel with its taps.

        Args:
          x: (batch, length, h).
          segment_ids: (batch, length) int, or None: a tap never reaches an input of
            another segment (module :mod:`ssm.layers.segments`).
          mask: (batch, length) bool marking real positions, or None; used only to find
            the last real position for ``return_state`` (the caller zeroes padded
            inputs; padding belongs at the ends).
          initial_state: (batch, width - 1, h), the inputs before position 0 (as
            :meth:`init_state`, :meth:`step` and :meth:`prefill` keep them), or None
            (zeros); they belong to the first position's segment.
          return_state: also return the state after the last real position.
          state_dtype: the returned state's dtype.

        Returns:
          y (batch, length, h) in ``dtype`` (by default ``x``'s); with
          ``return_state``, ``(y, state)``, state (batch, width - 1, h): the last
          ``width - 1`` inputs of the last segment (zeros before its start).
        """
        if x.ndim != 3 or x.shape[-1] != self.channels:
            raise ValueError(f"x has shape {x.shape}; expected (batch, length, {self.channels})")
        dtype = self.dtype or x.dtype
        b, L, _ = x.shape
        keep = self.width - 1
        head = (jnp.zeros((b, keep, self.channels), dtype) if initial_state is None
                else self._check_state(initial_state, b).astype(dtype))
        inputs = jnp.concatenate([head, x.astype(dtype)], axis=1)  # (b, keep + l, h)
        same = None if segment_ids is None else same_segment(segment_ids, self.width)
        kernel = self.kernel[...].astype(dtype)
        y = 0
        for k in range(self.width):
            tap = inputs[:, k : k + L] * kernel[k]
            y = y + (tap if same is None else jnp.where(same[..., k, None], tap, 0))
        if self.bias is not None:
            y = y + self.bias[...].astype(dtype)
        if not return_state:
            return y
        if mask is None and segment_ids is None:
            return y, inputs[:, L:].astype(state_dtype)
        last = (jnp.full((b,), L - 1) if mask is None
                else jnp.where(mask.any(1), last_real(mask), -1))  # no real position: the head
        window = last[:, None] + 1 + jnp.arange(keep)  # indices into ``inputs`` of the last ``keep`` inputs
        state = jnp.take_along_axis(inputs, window[..., None], axis=1)
        if segment_ids is not None:
            ids = jnp.pad(segment_ids, ((0, 0), (keep, 0)), mode="edge")
            own = jnp.take_along_axis(ids, window, axis=1) == jnp.take_along_axis(ids, last[:, None] + keep, axis=1)
            state = jnp.where(own[..., None], state, 0)
        return y, state.astype(state_dtype)

    def _check_state(self, state, batch_size: int):
        expected = (batch_size, self.width - 1, self.channels)
        if jnp.shape(state) != expected:
            raise ValueError(f"initial_state has shape {jnp.shape(state)}; expected {expected} "
                             "(batch, width - 1, channels): the convolution's inputs before position 0")
        return jnp.asarray(state)

    def init_state(self, batch_size: int, dtype=jnp.float32):
        """The last ``width - 1`` inputs, zeros: (batch_size, width - 1, h) in ``dtype``."""
        return jnp.zeros((batch_size, self.width - 1, self.channels), dtype)

    def step(self, x_t, state):
        """One position: ``x_t`` (batch, h) and the state (batch, width - 1, h) ->
        ``(y_t (batch, h), state)``, y_t in ``dtype`` (default ``x_t``'s), the state in
        its own dtype."""
        window = jnp.concatenate([state, x_t[:, None].astype(state.dtype)], axis=1)
        return self._taps(window, self.dtype or x_t.dtype), window[:, 1:]

    def prefill(self, x, dtype=jnp.float32):
        """``x`` (batch, length, h) -> ``(y, state)``: y as ``conv(x)`` and the last
        ``width - 1`` inputs (batch, width - 1, h) in ``dtype``; works for any length,
        also shorter than the width (the state is then left-padded with zeros)."""
        return self(x, return_state=True, state_dtype=dtype)
