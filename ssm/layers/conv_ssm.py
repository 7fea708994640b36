"""The shell shared by S4 and S4D: a linear time-invariant SSM per channel that
trains as a long FFT convolution and runs as a recurrence for inference.

A subclass supplies two things:
  - ``kernel(length)``: the real convolution kernel (H, length), and the reverse
    kernel when bidirectional;
  - ``discrete_system()``: ``(Abar, Bbar, C_out)`` of the recurrence
    ``x_t = Abar x_{t-1} + Bbar u_t``, ``y_t = Re(C_out . x_t) + D u_t``, with
    ``Abar`` diagonal (H, M) or dense (H, M, M), ``Bbar`` and ``C_out`` (H, M).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ssm import hippo, kernels
from ssm.checks import check_positive_int, check_sequence, check_token
from ssm.groups import ssm_param_dtype
from ssm.layers.unbatched import accepts_unbatched


def complex_from_pair(p):
    """(..., 2) real pairs -> (...) complex."""
    return jax.lax.complex(p[..., 0], p[..., 1])


def pair_from_complex(z, dtype=jnp.float32):
    """(...) complex -> (..., 2) real pairs, stored as ``dtype``."""
    return jnp.stack([jnp.real(z), jnp.imag(z)], -1).astype(dtype)


# Re(Lambda) is stored as log(-Re Lambda), so it stays negative while training;
# measures with Re Lambda = 0 (LegT, FouT) start just inside the stable half-plane.
MIN_DECAY = 1e-4


def lambda_params(Lambda, H: int, param_dtype):
    """``(log_A_real, A_imag)`` parameters, (H, N/2) each, for ``Lambda`` (N/2,)."""
    Lambda = jnp.broadcast_to(jnp.asarray(Lambda), (H, Lambda.shape[-1]))
    log_A_real = jnp.log(jnp.maximum(-Lambda.real, MIN_DECAY))
    dtype = ssm_param_dtype(param_dtype)
    return (nnx.Param(log_A_real.astype(dtype), group="ssm"), nnx.Param(Lambda.imag.astype(dtype), group="ssm"))


def make_dropout(rate: float, rngs: nnx.Rngs) -> nnx.Dropout:
    """Dropout at ``rate`` in [0, 1), drawing its masks from the ``dropout`` stream of
    ``rngs`` (or its ``default``) when ``rate > 0``.

    ``rngs`` with neither stream (a Linen ``init`` given only a ``params`` rng) builds
    a Dropout without one: it runs in evaluation mode, and training mode raises."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout={rate!r} must be in [0, 1)")
    has_stream = "dropout" in rngs or "default" in rngs
    return nnx.Dropout(rate, rngs=rngs if rate > 0 and has_stream else None)


class ConvSSM(nnx.Module):
    """Base of :class:`~ssm.layers.S4D` and :class:`~ssm.layers.S4`; not used alone.

    Owns the per-channel step sizes ``log_dt`` (H,), the skip ``D`` (H,), dropout,
    padding masks, the bidirectional combination and recurrent inference.
    """

    state_size: int  # M, the recurrent state's last dimension

    def __init__(
        self,
        d_model: int,
        *,
        d_state: int,
        dt_min: float,
        dt_max: float,
        bidirectional: bool,
        reverse_lag0: bool,
        dropout: float,
        dtype,
        param_dtype,
        rngs: nnx.Rngs,
    ):
        self.d_model = check_positive_int("d_model", d_model)
        self.d_state = check_positive_int("d_state", d_state)
        if d_state % 2:
            raise ValueError(f"d_state={d_state} must be even: the state is kept as d_state/2 conjugate pairs")
        self.bidirectional = bool(bidirectional)
        self.reverse_lag0 = bool(reverse_lag0)
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.log_dt = nnx.Param(
            hippo.log_dt_init(rngs.params(), (d_model,), dt_min, dt_max).astype(ssm_param_dtype(param_dtype)),
            group="ssm",
        )
        self.D = nnx.Param(jax.random.normal(rngs.params(), (d_model,), param_dtype), group="adamw")
        self.dropout = make_dropout(dropout, rngs)

    @property
    def real_dtype(self):
        """The dtype parameters are computed in: float32 at least, float64 when
        ``param_dtype`` is."""
        return jnp.promote_types(self.param_dtype, jnp.float32)

    def real(self, param):
        """A parameter's value in :attr:`real_dtype`."""
        return param[...].astype(self.real_dtype)

    def complex(self, param):
        """A real-pair parameter (..., 2) as complex (...) (complex64, or complex128 for
        float64 parameters)."""
        return complex_from_pair(self.real(param))

    def dt(self):
        """Step sizes ``exp(log_dt)``: (H,) in :attr:`real_dtype`."""
        return jnp.exp(self.real(self.log_dt))

    def Lambda(self):
        """``Lambda = -exp(log_A_real) + i A_imag`` (H, N/2) complex: Re < 0 by construction."""
        return jax.lax.complex(-jnp.exp(self.real(self.log_A_real)), self.real(self.A_imag))

    def init_C(self, rngs: nnx.Rngs):
        """Random complex output matrix (H, N/2), unit variance, as S4 (drawn from
        ``rngs.params``)."""
        shape = (self.d_model, self.d_state // 2, 2)
        return complex_from_pair(jax.random.normal(rngs.params(), shape, self.real_dtype) * 0.5**0.5)

    # Subclass hooks --------------------------------------------------------------
    def kernel(self, length: int):
        """The convolution kernels for inputs of ``length`` positions.

        Args:
          length: L, a static int.

        Returns:
          ``(K, K_reverse)``: real (H, L) each, in :attr:`real_dtype`; ``K_reverse``
          (lags 1, 2, ... into the future) is None unless bidirectional.
        """
        raise NotImplementedError

    def discrete_system(self):
        """``(Abar, Bbar, C_out)`` of the recurrence ``x_t = Abar x_{t-1} + Bbar u_t``,
        ``y_t = Re(C_out . x_t) + D u_t`` (module :mod:`ssm.layers.conv_ssm`): complex,
        ``Abar`` diagonal (H, M) or dense (H, M, M), ``Bbar`` and ``C_out`` (H, M)."""
        raise NotImplementedError

    # Convolution mode ------------------------------------------------------------
    @accepts_unbatched()
    def __call__(self, x, mask=None):
        """The convolution mode: ``y = K * x + D x`` per channel, by FFT
        (:func:`ssm.kernels.fft_conv`), then dropout.

        ``mask`` (batch, length) (or (length,)) marks real tokens: padded inputs are
        zeroed before the convolution, so they never reach real outputs, and padded
        outputs are zero.

        Args:
          x: (batch, length, d_model), or one example (length, d_model); integer
            inputs are taken as float32.
          mask: (batch, length) (or (length,)) bool, or None.

        Returns:
          ``x``'s shape, in ``dtype`` (by default ``x``'s float dtype).
        """
        x = check_sequence(x, mask, self.d_model)
        dtype = self.dtype or x.dtype
        if mask is not None:
            x = jnp.where(mask[..., None], x, 0)
        K, K_reverse = self.kernel(x.shape[1])
        real = jnp.promote_types(self.real_dtype, x.dtype)
        y = kernels.fft_conv(x, K, K_reverse, reverse_lag0=self.reverse_lag0).astype(real)
        y = y + x.astype(real) * self.real(self.D)
        y = self.dropout(y)
        if mask is not None:
            y = jnp.where(mask[..., None], y, 0)
        return y.astype(dtype)

    # Recurrent mode ---------------------------------------------------------------
    def _check_causal(self):
        if self.bidirectional:
            raise ValueError(
                f"{type(self).__name__}(bidirectional=True) has no recurrent mode: its output "
                "at t depends on inputs after t; use the layer's convolution mode"
            )

    def init_state(self, batch_size: int):
        """The zero state: complex64 (batch_size, H, M) (complex128 with float64
        parameters); M = N/2 for S4D, N for S4."""
        self._check_causal()
        check_positive_int("batch_size", batch_size)
        dtype = jnp.promote_types(self.real_dtype, jnp.complex64)
        return jnp.zeros((batch_size, self.d_model, self.state_size), dtype)

    @staticmethod
    def _advance(Abar, Bbar, state, u):
        """``Abar x + Bbar u`` for state (batch, H, M) and inputs u (batch, H)."""
        if Abar.ndim == 2:
            moved = Abar * state
        else:
            moved = jnp.einsum("hmn,bhn->bhm", Abar, state)
        return moved + Bbar * u[..., None]

    def step(self, x_t, state):
        """One step of the recurrence ``x_t = Abar x_{t-1} + Bbar u_t``,
        ``y_t = Re(C_out . x_t) + D u_t``.

        Equals ``layer(x)[:, t]`` when fed ``x[:, 0..t]`` from ``init_state`` (in
        evaluation mode: no dropout). The batch axis is required, as the state's
        (batch, H, M): one example is a batch of one.

        Args:
          x_t: (batch, d_model), one position.
          state: as :meth:`init_state` makes it.

        Returns:
          ``(y_t, state)``: y_t (batch, d_model) in ``dtype`` (default ``x_t``'s), and
          the new state.
        """
        self._check_causal()
        x_t = check_token(x_t, self.d_model)
        Abar, Bbar, C_out = self.discrete_system()
        u = x_t.astype(self.real_dtype)
        state = self._advance(Abar, Bbar, state, u)
        y = jnp.einsum("hm,bhm->bh", C_out, state).real + self.real(self.D) * u
        return y.astype(self.dtype or x_t.dtype), state

    def prefill(self, x):
        """Run a prompt ``x`` (batch, length, d_model) from the zero state.

        Args:
          x: (batch, length, d_model); the batch axis is required, as in :meth:`step`.

        Returns:
          ``(y, state)``: the outputs (batch, length, d_model) (as ``layer(x)``, by
          convolution) and the state after the last position (by a scan of the
          recurrence), ready for :meth:`step`.
        """
        self._check_causal()
        x = check_sequence(x, None, self.d_model)
        y = self(x)
        Abar, Bbar, _ = self.discrete_system()
        state = self.init_state(x.shape[0])
        state, _ = jax.lax.scan(
            lambda s, u: (self._advance(Abar, Bbar, s, u), None),
            state,
            jnp.swapaxes(x.astype(self.real_dtype), 0, 1),
        )
        return y, state
