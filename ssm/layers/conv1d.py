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
      channels: C. width: taps K (Mamba's ``d_conv``). use_bias: add a bias.

    Parameters: ``kernel`` (K, C), group ``adamw`` (a depthwise kernel, never Muon);
    ``bias`` (C,). Both drawn U(+-1/sqrt(K)), PyTorch's default for this layer.
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
        """``x`` (batch, length, C) -> (batch, length, C)."""
        if x.ndim != 3 or x.shape[-1] != self.channels:
            raise ValueError(f"x has shape {x.shape}; expected (batch, length, {self.channels})")
        dtype = self.dtype or x.dtype
        L = x.shape[1]
        padded = jnp.pad(x, ((0, 0), (self.width - 1, 0), (0, 0))).astype(dtype)
        kernel = self.kernel[...].astype(dtype)
        y = sum(padded[:, k : k + L] * kernel[k] for k in range(self.width))
        return y if self.bias is None else y + self.bias[...].astype(dtype)

    def init_state(self, batch_size: int, dtype=jnp.float32):
        """The last ``width - 1`` inputs, zeros: (batch_size, width - 1, C)."""
        return jnp.zeros((batch_size, self.width - 1, self.channels), dtype)

    def step(self, x_t, state):
        """``x_t`` (batch, C), state -> ``(y_t (batch, C), state)``."""
        window = jnp.concatenate([state, x_t[:, None].astype(state.dtype)], axis=1)
        return self._taps(window, self.dtype or x_t.dtype), window[:, 1:]

    def prefill(self, x, dtype=jnp.float32):
        """``x`` (batch, length, C) -> ``(y, state)``; works for any length, also
        shorter than the width (the state is then left-padded with zeros)."""
        y = self(x)
        keep = self.width - 1
        tail = jnp.pad(x, ((0, 0), (keep, 0), (0, 0)))[:, x.shape[1]:] if keep else x[:, :0]
        return y, tail.astype(dtype)
