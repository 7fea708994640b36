"""Causal depthwise 1-d convolution with a rolling state for recurrent inference
(the short convolution of Mamba, Mamba-2 and the M2 mixer)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from ssm.checks import check_positive_int


class CausalConv1d(nnx.Module):
    """``y[t] = bias + sum_k kernel[k] * x[t - (width - 1) + k]`` per channel, with
    zeros before the start (PyTorch's ``Conv1d(groups=channels, padding=width-1)``
    truncated to the input length, as in Mamba).

    Args:
      channels: C.
      width: taps K (Mamba's ``d_conv``).
      use_bias: add a bias.

    Parameters: ``kernel`` (K, C), group ``adamw`` (a depthwise kernel, never Muon);
    ``bias`` (C,). Both drawn U(+-1/sqrt(K)), PyTorch's default for this layer.

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
        """Sum over the last ``width`` positions: window (..., width, C) -> (..., C)."""
        y = jnp.einsum("...kc,kc->...c", window.astype(dtype), self.kernel[...].astype(dtype))
        return y if self.bias is None else y + self.bias[...].astype(dtype)

    def __call__(self, x):
        """Convolve every channel with its taps.

        Args:
          x: (batch, length, C).

        Returns:
          (batch, length, C) in ``dtype`` (by default ``x``'s).
        """
        if x.ndim != 3 or x.shape[-1] != self.channels:
            raise ValueError(f"x has shape {x.shape}; expected (batch, length, {self.channels})")
        dtype = self.dtype or x.dtype
        L = x.shape[1]
        padded = jnp.pad(x, ((0, 0), (self.width - 1, 0), (0, 0))).astype(dtype)
        kernel = self.kernel[...].astype(dtype)
        y = sum(padded[:, k : k + L] * kernel[k] for k in range(self.width))
        return y if self.bias is None else y + self.bias[...].astype(dtype)

    def init_state(self, batch_size: int, dtype=jnp.float32):
        """The last ``width - 1`` inputs, zeros: (batch_size, width - 1, C) in ``dtype``."""
        return jnp.zeros((batch_size, self.width - 1, self.channels), dtype)

    def step(self, x_t, state):
        """One position: ``x_t`` (batch, C) and the state (batch, width - 1, C) ->
        ``(y_t (batch, C), state)``, y_t in ``dtype`` (default ``x_t``'s), the state in
        its own dtype."""
        window = jnp.concatenate([state, x_t[:, None].astype(state.dtype)], axis=1)
        return self._taps(window, self.dtype or x_t.dtype), window[:, 1:]

    def prefill(self, x, dtype=jnp.float32):
        """``x`` (batch, length, C) -> ``(y, state)``: y as ``conv(x)`` and the last
        ``width - 1`` inputs (batch, width - 1, C) in ``dtype``; works for any length,
        also shorter than the width (the state is then left-padded with zeros)."""
        y = self(x)
        keep = self.width - 1
        tail = jnp.pad(x, ((0, 0), (keep, 0), (0, 0)))[:, x.shape[1]:] if keep else x[:, :0]
        return y, tail.astype(dtype)
