"""Mamba (Gu & Dao, 2023): the selective state-space block of state-spaces/mamba
``modules/mamba_simple.py``, on :func:`ssm.scan.selective_scan`."""

from __future__ import annotations

import math

import jax.numpy as jnp
from flax import nnx

from ssm import scan
from ssm.checks import check_choice, check_positive_int, check_sequence, check_token
from ssm.groups import ssm_param_dtype
from ssm.layers.conv1d import CausalConv1d
from ssm.layers.init import dt_bias_init, symmetric_uniform, torch_linear
from ssm.layers.parts import ACTIVATIONS
from ssm.layers.segments import boundaries, check_segment_ids, check_state
from ssm.layers.unbatched import accepts_unbatched
from ssm.scan.recurrence import time_step


class Mamba(nnx.Module):
    """Mamba block: ``x`` (batch, length, d_model) or (length, d_model) -> same shape.

    in_proj (d -> 2 d_inner: x, z) -> causal depthwise conv + SiLU -> x_proj (dt, B, C)
    -> delta = softplus(dt_proj(dt)), its bias added in float32 -> selective scan with
    ``A = -exp(A_log)`` and skip ``D`` -> gate ``silu(z)`` -> out_proj.

    Args:
      d_model: width d.
      d_state: N (16).
      d_conv: convolution width (4).
      expand: d_inner = expand * d.
      dt_rank: rank of the dt projection; ``None`` is ceil(d / 16).
      dt_min, dt_max, dt_init_floor: step-size initialization (softplus of dt_proj's bias).
      conv_bias, bias: biases of the convolution and of in/out projections.
      activation: after the convolution, a name in :data:`ssm.layers.parts.ACTIVATIONS`
        (``"silu"``, the reference's; Hugging Face's ``hidden_act``). The gate is
        ``silu(z)`` whatever it is, as in both references.
      out_init_scale: multiplies out_proj's initial kernel (the backbone passes
        1/sqrt(n_residuals * n_layers), the reference LM's prenorm-residual rescaling).
      scan_method: :func:`ssm.scan.selective_scan` method ("auto": fastest here).

    Parameters: ``A_log`` (d_inner, N), ``D`` (d_inner,), ``dt_proj.bias``: group
    ``ssm`` (AdamW, no weight decay); the conv kernel ``adamw``; projections ``matrix``.
    ``A_log``, ``D`` and ``dt_proj`` are stored in float32 whatever ``param_dtype``
    says (:func:`ssm.groups.ssm_param_dtype`; the reference keeps A_log and D in fp32),
    and the scan runs in float32.

    Gu & Dao (2023), "Mamba: Linear-Time Sequence Modeling with Selective State Spaces".

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from flax import nnx
      >>> x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 4)), jnp.float32)  # (batch, length, d_model)
      >>> from ssm.layers import Mamba
      >>> layer = Mamba(4, d_state=8, rngs=nnx.Rngs(0))
      >>> y = layer(x)
      >>> y.shape, y.dtype
      ((2, 16, 4), dtype('float32'))
      >>> y_head, state = layer.prefill(x[:, :8])  # recurrent inference: a prompt, then one step
      >>> y_t, state = layer.step(x[:, 8], state)
      >>> bool(jnp.allclose(y_t, y[:, 8], atol=1e-4))
      True
    """

    def __init__(
        self,
        d_model: int,
        *,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        activation: str = "silu",
        out_init_scale: float = 1.0,
        scan_method: str = "auto",
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.d_model = check_positive_int("d_model", d_model)
        self.d_state = check_positive_int("d_state", d_state)
        self.d_inner = check_positive_int("expand", expand) * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank is None else check_positive_int("dt_rank", dt_rank)
        scan.resolve_method(scan_method)  # validates the name
        self.activation = check_choice("activation", activation, tuple(ACTIVATIONS))
        self.scan_method = scan_method
        self.dtype = dtype
        self.real_dtype = jnp.promote_types(param_dtype, jnp.float32)  # the scan's: float32 at least
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        d_inner, R = self.d_inner, self.dt_rank
        self.in_proj = torch_linear(d_model, 2 * d_inner, use_bias=bias, **kw)
        self.conv1d = CausalConv1d(d_inner, d_conv, use_bias=conv_bias, **kw)
        self.x_proj = torch_linear(d_inner, R + 2 * d_state, use_bias=False, **kw)
        self.dt_proj = nnx.Linear(  # kernel U(+-dt_rank^-1/2): the reference's "random" dt init
            R, d_inner, kernel_init=symmetric_uniform(R**-0.5), **{**kw, "param_dtype": ssm_param_dtype(param_dtype)},
            bias_init=lambda key, shape, dtype: dt_bias_init(key, shape, dt_min, dt_max, dt_init_floor, dtype),
            bias_metadata={"group": "ssm"},
        )
        A = jnp.broadcast_to(jnp.arange(1, d_state + 1, dtype=jnp.float32), (d_inner, d_state))
        self.A_log = nnx.Param(jnp.log(A).astype(ssm_param_dtype(param_dtype)), group="ssm")
        self.D = nnx.Param(jnp.ones((d_inner,), ssm_param_dtype(param_dtype)), group="ssm")
        self.out_proj = torch_linear(d_inner, d_model, use_bias=bias, scale=out_init_scale, **kw)

    # -------------------------------------------------------------------- pieces
    def _act(self, x):
        return ACTIVATIONS[self.activation](x)

    def _A(self):
        return -jnp.exp(self.A_log[...].astype(self.real_dtype))

    def _ssm_inputs(self, u):
        """Conv output u (..., d_inner) -> (delta, B, C), delta (..., d_inner) float32
        (float64 with float64 parameters).

        ``delta = softplus(W dt + b)`` with dt_proj's matmul ``W dt`` in the activation
        dtype and its bias ``b`` added in float32, as the reference does (its scan takes
        the bias as a float32 ``delta_bias``): added in bf16, a bias of -2.3 to -6.9
        rounds by up to 0.4% and delta by 1-3%. The sum and softplus are the scan's own
        (:func:`ssm.scan.recurrence.time_step`), done here rather than in the scan so
        that padded positions can take a zero step after the softplus.
        """
        dt, B, C = jnp.split(self.x_proj(u), [self.dt_rank, self.dt_rank + self.d_state], axis=-1)
        kernel = self.dt_proj.kernel[...]
        dtype = self.dtype or jnp.result_type(dt, kernel)  # nnx.Linear's rule
        delta = time_step(dt.astype(dtype) @ kernel.astype(dtype), self.dt_proj.bias[...], True, self.real_dtype)
        return delta, B, C

    def _forward(self, x, mask, segment_ids, initial_state, return_state: bool):
        x = check_sequence(x, mask, self.d_model)
        segment_ids = check_segment_ids(segment_ids, x.shape[:2])
        if initial_state is not None:
            initial_state = check_state(self, initial_state, x.shape[0])
        dtype = self.dtype or x.dtype
        if mask is not None:
            x = jnp.where(mask[..., None], x, 0)
        xs, z = jnp.split(self.in_proj(x), 2, axis=-1)
        if mask is not None:  # in_proj's bias must not enter the convolution window
            xs = jnp.where(mask[..., None], xs, 0)
        conv = self.conv1d(xs, segment_ids=segment_ids, mask=mask, return_state=return_state,
                           initial_state=None if initial_state is None else initial_state["conv"],
                           state_dtype=self.real_dtype)
        conv_out, conv_state = conv if return_state else (conv, None)
        u = self._act(conv_out)
        delta, B, C = self._ssm_inputs(u)
        if mask is not None:  # a zero step leaves the state untouched: padding is invisible
            delta = jnp.where(mask[..., None], delta, 0)
        out = scan.selective_scan(u, delta, self._A(), B, C, self.D[...], z=z,
                                  initial_state=None if initial_state is None else initial_state["ssm"],
                                  reset=None if segment_ids is None else boundaries(segment_ids, mask),
                                  return_last_state=return_state, method=self.scan_method)
        y, ssm_state = out if return_state else (out, None)
        y = self.out_proj(y.astype(dtype)).astype(dtype)
        return y, {"conv": conv_state, "ssm": ssm_state}

    # -------------------------------------------------------------------- modes
    @accepts_unbatched()
    def __call__(self, x, mask=None, *, segment_ids=None, initial_state=None, return_state=False):
        """The parallel pass: the selective scan over the whole sequence.

        Args:
          x: (batch, length, d_model), or one example (length, d_model).
          mask: (batch, length) (or (length,)) bool marking real tokens, or None: padded
            inputs are zeroed and take a zero step, so they change neither real outputs
            nor the state (pad at the ends).
          segment_ids: (batch, length) (or (length,)) int, or None: packed documents
            (module :mod:`ssm.layers.segments`); the convolution stops and the scan's
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

    def init_state(self, batch_size: int):
        """The zero state for ``batch_size`` sequences: ``{"conv": (batch, d_conv - 1,
        d_inner), "ssm": (batch, d_inner, N)}``, float32 (float64 with float64 parameters)."""
        check_positive_int("batch_size", batch_size)
        return {"conv": self.conv1d.init_state(batch_size, self.real_dtype),
                "ssm": jnp.zeros((batch_size, self.d_inner, self.d_state), self.real_dtype)}

    def step(self, x_t, state):
        """One token: the convolution's window and :func:`ssm.scan.selective_state_update`.

        Args:
          x_t: (batch, d_model); the batch axis is required, as the state's (one example
            is a batch of one).
          state: as :meth:`init_state` or :meth:`prefill` makes it.

        Returns:
          ``(y_t, state)``: y_t (batch, d_model), equal to ``layer(x)[:, t]``, and the
          new state.
        """
        x_t = check_token(x_t, self.d_model)
        xs, z = jnp.split(self.in_proj(x_t), 2, axis=-1)
        conv_out, conv_state = self.conv1d.step(xs, state["conv"])
        u = self._act(conv_out)
        delta, B, C = self._ssm_inputs(u)
        y, ssm_state = scan.selective_state_update(state["ssm"], u, delta, self._A(), B, C, self.D[...], z_t=z)
        dtype = self.dtype or x_t.dtype
        return self.out_proj(y.astype(dtype)).astype(dtype), {"conv": conv_state, "ssm": ssm_state}

    def prefill(self, x):
        """Run a prompt from the zero state.

        Args:
          x: (batch, length, d_model), any length (also shorter than ``d_conv``); the
            batch axis is required, as in :meth:`step`.

        Returns:
          ``(y, state)``: y (batch, length, d_model) as ``layer(x)``, and the state
          after the last position, for :meth:`step`.
        """
        return self._forward(x, None, None, None, return_state=True)
