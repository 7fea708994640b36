"""Mamba-2: the selective SSM with a scalar decay per head, run as the state-space
dual (Dao & Gu, 2024, "Transformers are SSMs"; state-spaces/mamba
``modules/mamba2.py``, the simple non-fused path)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import nnx

from ssm.checks import check_choice, check_positive_int, check_sequence, check_token
from ssm.groups import ssm_param_dtype
from ssm.layers.parts import ACTIVATIONS
from ssm.layers.conv1d import CausalConv1d
from ssm.layers.segments import boundaries, check_segment_ids, check_state
from ssm.layers.init import dt_bias_init, torch_linear
from ssm.layers.unbatched import accepts_unbatched
from ssm.ssd import ssd_chunked, ssd_step

class RMSNormGated(nnx.Module):
    """``rmsnorm(y * silu(z)) * scale``, normalized over groups of ``group_size``
    channels (state-spaces/mamba ``RMSNormGated`` with ``norm_before_gate=False``).

    Computes in float32 (float64 for float64 parameters). ``scale`` (d,), ones,
    group ``no_decay``.
    """

    def __init__(self, d: int, *, group_size: int, eps: float = 1e-5, param_dtype=jnp.float32):
        self.group_size = group_size
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((d,), param_dtype), group="no_decay")

    def __call__(self, y, z):
        """``y``, ``z`` (..., d) -> (..., d) in float32 (float64 with float64 inputs)."""
        dtype = jnp.promote_types(jnp.result_type(y, z, self.scale[...]), jnp.float32)
        gated = y.astype(dtype) * jax.nn.silu(z.astype(dtype))
        groups = rearrange(gated, "... (g k) -> ... g k", k=self.group_size)
        rms = jax.lax.rsqrt(jnp.mean(groups**2, axis=-1, keepdims=True) + self.eps)
        return rearrange(groups * rms, "... g k -> ... (g k)") * self.scale[...].astype(dtype)


class Mamba2(nnx.Module):
    """Mamba-2 mixer: ``x`` (batch, length, d_model) or (length, d_model) -> same shape.

    ``in_proj`` maps d_model to ``[z, x, B, C, dt]`` (d_inner, d_inner, G N, G N and
    one per head, in that order); a causal depthwise convolution and SiLU act on
    ``xBC``; ``dt = softplus(dt + dt_bias)`` (clipped to ``dt_limit``); ``A = -exp(A_log)``;
    the SSD (:func:`ssm.ssd.ssd_chunked`) with ``d_inner / headdim`` heads of
    ``headdim`` channels, B and C shared by the heads of each of G groups; ``y += D x``;
    a gated RMSNorm ``norm(y * silu(z))``; ``out_proj`` back to d_model.

    Args:
      d_model: width d.
      d_state: N.
      d_conv: convolution width.
      expand: d_inner = expand * d_model.
      headdim: P, channels per head.
      ngroups: G, groups of heads sharing B and C (and normalized together).
      chunk_size: SSD chunk length Q.
      dt_min, dt_max, dt_init_floor: ``softplus(dt_bias)`` starts log-uniform in
        [dt_min, dt_max], at least dt_init_floor.
      A_init_range: ``-A`` starts uniform in this range (0 < lo <= hi).
      dt_limit: ``(lo, hi)``, clip of the step sizes; the default (0, inf) is off.
      conv_bias: bias in the convolution.
      bias: biases in the two projections.
      activation: after the convolution, a name in :data:`ssm.layers.parts.ACTIVATIONS`
        (``"silu"``, the reference's; Hugging Face's ``hidden_act``); the gate of
        the norm is ``silu(z)`` whatever it is, as in both references.
      norm_eps: epsilon of the gated RMSNorm.
      out_init_scale: multiplies out_proj's initial kernel (the backbone passes
        1/sqrt(n_residuals * n_layers), the reference LM's prenorm-residual rescaling).
      dtype: activation dtype (default: the input's); the SSD, the norm and the
        recurrent state run in float32 (float64 with ``param_dtype=float64``).
      param_dtype: parameter dtype.

    Parameters (groups of :mod:`ssm.groups`): ``A_log``, ``D``, ``dt_bias`` (H,):
    ``ssm``; ``conv1d.kernel`` (d_conv, d_inner + 2 G N): ``adamw``;
    ``in_proj.kernel``, ``out_proj.kernel``: ``matrix`` (untagged); ``norm.scale``
    and biases: ``no_decay``. Projections are drawn U(+-1/sqrt(fan_in)) (PyTorch's
    ``nn.Linear`` default, as the reference), biases zero.

    Dao & Gu (2024), "Transformers are SSMs: Generalized Models and Efficient
    Algorithms Through Structured State Space Duality".

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from flax import nnx
      >>> x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 4)), jnp.float32)  # (batch, length, d_model)
      >>> from ssm.layers import Mamba2
      >>> layer = Mamba2(4, d_state=8, headdim=4, chunk_size=8, rngs=nnx.Rngs(0))  # d_inner 8: 2 heads
      >>> y = layer(x)
      >>> y.shape, y.dtype
      ((2, 16, 4), dtype('float32'))
    """

    def __init__(
        self,
        d_model: int,
        *,
        d_state: int = 128,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 64,
        ngroups: int = 1,
        chunk_size: int = 256,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        A_init_range: tuple[float, float] = (1, 16),
        dt_limit: tuple[float, float] = (0.0, float("inf")),
        conv_bias: bool = True,
        bias: bool = False,
        activation: str = "silu",
        norm_eps: float = 1e-5,
        out_init_scale: float = 1.0,
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.d_model = check_positive_int("d_model", d_model)
        self.d_state = check_positive_int("d_state", d_state)
        self.d_conv = check_positive_int("d_conv", d_conv)
        self.headdim = check_positive_int("headdim", headdim)
        self.ngroups = check_positive_int("ngroups", ngroups)
        self.chunk_size = check_positive_int("chunk_size", chunk_size)
        if isinstance(expand, bool) or not isinstance(expand, (int, float)) or expand <= 0 \
                or not float(expand * d_model).is_integer():
            raise ValueError(f"expand={expand!r} must be a positive number with expand * d_model "
                             f"(d_model={d_model}) a whole number")
        self.d_inner = int(expand * d_model)
        if self.d_inner % headdim:
            raise ValueError(f"d_inner = expand * d_model = {self.d_inner} must be a multiple of "
                             f"headdim={headdim}")
        self.nheads = self.d_inner // headdim
        if self.nheads % ngroups:
            raise ValueError(f"nheads = d_inner / headdim = {self.nheads} must be a multiple of "
                             f"ngroups={ngroups}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"dt range ({dt_min!r}, {dt_max!r}) must satisfy 0 < dt_min <= dt_max")
        if not dt_init_floor >= 0:
            raise ValueError(f"dt_init_floor={dt_init_floor!r} must be >= 0")
        lo, hi = A_init_range
        if not 0 < lo <= hi:
            raise ValueError(f"A_init_range={A_init_range!r} must satisfy 0 < lo <= hi")
        self.dt_limit = (float(dt_limit[0]), float(dt_limit[1]))
        if not 0 <= self.dt_limit[0] <= self.dt_limit[1]:
            raise ValueError(f"dt_limit={dt_limit!r} must satisfy 0 <= lo <= hi")
        self.activation = check_choice("activation", activation, tuple(ACTIVATIONS))
        if not norm_eps > 0:
            raise ValueError(f"norm_eps={norm_eps!r} must be > 0")
        self.dtype = dtype
        self.param_dtype = param_dtype

        H, GN = self.nheads, ngroups * d_state
        self.conv_dim = self.d_inner + 2 * GN
        linear = dict(use_bias=bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.in_proj = torch_linear(d_model, 2 * self.d_inner + 2 * GN + H, **linear)
        self.conv1d = CausalConv1d(self.conv_dim, d_conv, use_bias=conv_bias, dtype=dtype,
                                   param_dtype=param_dtype, rngs=rngs)
        dynamics = ssm_param_dtype(param_dtype)
        self.dt_bias = nnx.Param(dt_bias_init(rngs.params(), (H,), dt_min, dt_max, dt_init_floor, dynamics),
                                 group="ssm")
        A = jax.random.uniform(rngs.params(), (H,), minval=lo, maxval=hi)
        self.A_log = nnx.Param(jnp.log(A).astype(dynamics), group="ssm")
        self.D = nnx.Param(jnp.ones((H,), dynamics), group="ssm")
        self.norm = RMSNormGated(self.d_inner, group_size=self.d_inner // ngroups, eps=norm_eps,
                                 param_dtype=param_dtype)
        self.out_proj = torch_linear(self.d_inner, d_model, scale=out_init_scale, **linear)

    @property
    def real_dtype(self):
        """The dtype of the SSD, the norm and the state: float32 at least, float64 when
        ``param_dtype`` is."""
        return jnp.promote_types(self.param_dtype, jnp.float32)

    def _real(self, param):
        return param[...].astype(self.real_dtype)

    def _split_heads(self, xBC):
        """xBC (..., conv_dim) -> x (..., heads, headdim), B and C (..., G, N)."""
        x, B, C = jnp.split(xBC, [self.d_inner, self.d_inner + self.ngroups * self.d_state], axis=-1)
        return (rearrange(x, "... (h p) -> ... h p", p=self.headdim),
                rearrange(B, "... (g n) -> ... g n", n=self.d_state),
                rearrange(C, "... (g n) -> ... g n", n=self.d_state))

    def _step_sizes(self, dt):
        """Raw dt (..., heads) -> ``softplus(dt + dt_bias)``, clipped to ``dt_limit``."""
        dt = jax.nn.softplus(dt.astype(self.real_dtype) + self._real(self.dt_bias))
        if self.dt_limit != (0.0, math.inf):
            dt = jnp.clip(dt, *self.dt_limit)
        return dt

    def _A(self):
        return -jnp.exp(self._real(self.A_log))

    def _readout(self, y, x, z):
        """SSD output y and its input x (..., heads, headdim), gate z (..., d_inner) -> (..., d_model)."""
        y = y + self._real(self.D)[:, None] * x.astype(y.dtype)
        return self.out_proj(self.norm(rearrange(y, "... h p -> ... (h p)"), z))

    def _forward(self, x, mask, segment_ids, initial_state, return_state: bool):
        x = check_sequence(x, mask, self.d_model)
        segment_ids = check_segment_ids(segment_ids, x.shape[:2])
        if initial_state is not None:
            initial_state = check_state(self, initial_state, x.shape[0])
        dtype = self.dtype or x.dtype
        z, xBC, dt = jnp.split(self.in_proj(x), [self.d_inner, self.d_inner + self.conv_dim], axis=-1)
        if mask is not None:  # padded positions never reach the convolution ...
            xBC = jnp.where(mask[..., None], xBC, 0)
        conv = self.conv1d(xBC, segment_ids=segment_ids, mask=mask, return_state=return_state,
                           initial_state=None if initial_state is None else initial_state["conv"],
                           state_dtype=self.real_dtype)
        xBC, conv_state = conv if return_state else (conv, None)
        xs, B, C = self._split_heads(ACTIVATIONS[self.activation](xBC))
        dt = self._step_sizes(dt)
        if mask is not None:  # ... and leave the SSM state as it was (dt = 0: no decay, no input)
            dt = jnp.where(mask[..., None], dt, 0)
        y, ssm_state = ssd_chunked(xs, dt, self._A(), B, C, self.chunk_size, return_last_state=True,
                                   initial_state=None if initial_state is None else initial_state["ssm"],
                                   reset=None if segment_ids is None else boundaries(segment_ids, mask))
        out = self._readout(y, xs, z)
        if mask is not None:
            out = jnp.where(mask[..., None], out, 0)
        return out.astype(dtype), {"conv": conv_state, "ssm": ssm_state}

    @accepts_unbatched()
    def __call__(self, x, mask=None, *, segment_ids=None, initial_state=None, return_state=False):
        """The parallel pass: the chunked SSD over the whole sequence.

        ``mask`` marks real tokens: padded positions are zeroed before the convolution
        and get ``dt = 0``, so the SSM state passes through them unchanged; padding on
        either side leaves real outputs as they are. Padded outputs are zero.

        Args:
          x: (batch, length, d_model), or one example (length, d_model).
          mask: (batch, length) (or (length,)) bool, or None.
          segment_ids: (batch, length) (or (length,)) int, or None: packed documents
            (module :mod:`ssm.layers.segments`); the convolution stops and the SSD's
            state resets at each boundary.
          initial_state: the state before position 0, as :meth:`init_state`,
            :meth:`step` or :meth:`prefill` make it (batch axis required), or None.
          return_state: also return the state after the last real position.

        Returns:
          ``x``'s shape, in ``dtype`` (by default ``x``'s float dtype); with
          ``return_state``, ``(y, state)``, the state of :meth:`step`'s type.
          Differentiable with respect to the parameters and ``initial_state``.
        """
        y, state = self._forward(x, mask, segment_ids, initial_state, return_state)
        return (y, state) if return_state else y

    # Recurrent mode ---------------------------------------------------------------
    def init_state(self, batch_size: int):
        """Zero state: ``{"conv": (batch, d_conv - 1, d_inner + 2 G N),
        "ssm": (batch, heads, headdim, N)}``, float32 (float64 with float64 parameters)."""
        check_positive_int("batch_size", batch_size)
        return {"conv": self.conv1d.init_state(batch_size, self.real_dtype),
                "ssm": jnp.zeros((batch_size, self.nheads, self.headdim, self.d_state), self.real_dtype)}

    def step(self, x_t, state):
        """One token (:func:`ssm.ssd.ssd_step`).

        Equals ``layer(x)[:, t]`` when fed ``x[:, 0..t]`` from :meth:`init_state`.

        Args:
          x_t: (batch, d_model); the batch axis is required, as the state's (one example
            is a batch of one).
          state: as :meth:`init_state` or :meth:`prefill` makes it.

        Returns:
          ``(y_t, state)``: y_t (batch, d_model) in ``dtype`` (default ``x_t``'s), and
          the new state.
        """
        x_t = check_token(x_t, self.d_model)
        dtype = self.dtype or x_t.dtype
        z, xBC, dt = jnp.split(self.in_proj(x_t), [self.d_inner, self.d_inner + self.conv_dim], axis=-1)
        xBC, conv_state = self.conv1d.step(xBC, state["conv"])
        xs, B, C = self._split_heads(ACTIVATIONS[self.activation](xBC))
        y, ssm_state = ssd_step(state["ssm"], xs, self._step_sizes(dt), self._A(), B, C)
        return self._readout(y, xs, z).astype(dtype), {"conv": conv_state, "ssm": ssm_state}

    def prefill(self, x):
        """Run a prompt ``x`` (batch, length, d_model) from the zero state.

        Args:
          x: (batch, length, d_model), any length (also shorter than ``d_conv``); the
            batch axis is required, as in :meth:`step`.

        Returns:
          ``(y, state)``: the outputs (batch, length, d_model) (as ``layer(x)``, by the
          chunked SSD) and the state after the last position, ready for :meth:`step`.
        """
        return self._forward(x, None, None, None, return_state=True)
