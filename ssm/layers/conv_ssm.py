"""The shell shared by S4 and S4D: a linear time-invariant SSM per channel that
trains as a long FFT convolution and runs as a recurrence for inference.

A subclass supplies:
  - ``kernel(length)``: the real convolution kernel (H, length), and the reverse
    kernel when bidirectional;
  - ``discrete_system()``: ``(Abar, Bbar, C_out)`` of the recurrence
    ``x_t = Abar x_{t-1} + Bbar u_t``, ``y_t = Re(C_out . x_t) + D u_t``, with
    ``Abar`` diagonal (H, N/2) or dense (H, N, N), ``Bbar`` and ``C_out`` (H, N/2) or (H, N);
  - optionally ``setup_step()`` and ``advance(system, x, u)``, when its step runs on
    another form of that system than ``discrete_system()``'s (S4's conjugate half).

Recurrent state. The discrete system depends on the parameters only, and for S4 it
costs a dense solve and matrix powers (O(H N^3 log L)) against O(H N^2) or less for
a step, so it is computed once, by :meth:`ConvSSM.setup_step`, when a state is made
(:meth:`ConvSSM.init_state`, :meth:`ConvSSM.prefill`), and the state carries it:
``{"x": (batch, H, N/2) complex, "system": {name: array without a batch axis}}``.
Carrying it, rather than caching it on the module (annotated-s4's cache, S4's
``_setup_step``), keeps ``step(x_t, state) -> (y_t, state)`` a pure function of its
arguments: no hidden mutable state to invalidate when the parameters change, and
it passes through ``jit`` and ``lax.scan`` carries as any pytree. The price: a state
belongs to the parameters that made it; after a parameter update make a new one.
Only ``"x"`` is per-example; ``"system"`` is shared by the batch
(:func:`ssm.bench.generation.state_floats` counts ``"x"`` alone).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ssm import hippo, kernels
from ssm.checks import check_positive_int, check_sequence, check_token
from ssm.groups import ssm_param_dtype
from ssm.layers.parts import make_dropout
from ssm.layers.segments import boundaries, check_segment_ids, recurrent_scan
from ssm.layers.unbatched import accepts_unbatched


def complex_from_pair(p):
    """(..., 2) real pairs -> (...) complex."""
    return jax.lax.complex(p[..., 0], p[..., 1])


def pair_from_complex(z, dtype=jnp.float32):
    """(...) complex -> (..., 2) real pairs, stored as ``dtype``."""
    return jnp.stack([jnp.real(z), jnp.imag(z)], -1).astype(dtype)


#: Positions per checkpointed chunk of the recurrence that runs when segments or an
#: initial state are given (:func:`ssm.layers.segments.recurrent_scan`).
RECURRENCE_CHUNK = 64

# Re(Lambda) is stored as log(-Re Lambda), so it stays negative while training;
# measures with Re Lambda = 0 (LegT, FouT) start just inside the stable half-plane.
MIN_DECAY = 1e-4


def lambda_params(Lambda, H: int, param_dtype):
    """``(log_A_real, A_imag)`` parameters, (H, N/2) each, for ``Lambda`` (N/2,)."""
    Lambda = jnp.broadcast_to(jnp.asarray(Lambda), (H, Lambda.shape[-1]))
    log_A_real = jnp.log(jnp.maximum(-Lambda.real, MIN_DECAY))
    dtype = ssm_param_dtype(param_dtype)
    return (nnx.Param(log_A_real.astype(dtype), group="ssm"), nnx.Param(Lambda.imag.astype(dtype), group="ssm"))


class ConvSSM(nnx.Module):
    """Base of :class:`~ssm.layers.S4D` and :class:`~ssm.layers.S4`; not used alone.

    Owns the per-channel step sizes ``log_dt`` (H,), the skip ``D`` (H,), dropout,
    padding masks, the bidirectional combination and recurrent inference.
    """

    state_size: int  # the recurrent state's last dimension: N/2, the conjugate half

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
        ``Abar`` diagonal (H, N/2) or dense (H, N, N), ``Bbar`` and ``C_out`` (H, N/2) or (H, N)."""
        raise NotImplementedError

    def setup_step(self):
        """The system :meth:`step` runs on, computed once per parameter set (states
        carry it; module :mod:`ssm.layers.conv_ssm`).

        Returns:
          dict of complex arrays without a batch axis; here the diagonal system
          ``{"Abar", "Bbar", "C"}`` (H, N/2) each, with ``y = Re(C . x)``.
        """
        Abar, Bbar, C = self.discrete_system()
        return {"Abar": Abar, "Bbar": Bbar, "C": C}

    def advance(self, system, x, u):
        """``x' = Abar x + Bbar u`` for ``x`` (batch, H, N/2) complex and ``u`` (batch, H)
        real, with the ``system`` of :meth:`setup_step` (here diagonal)."""
        return system["Abar"] * x + system["Bbar"] * u[..., None]

    # The parallel pass ---------------------------------------------------------------
    @accepts_unbatched()
    def __call__(self, x, mask=None, *, segment_ids=None, initial_state=None, return_state=False):
        """The layer over a whole sequence: ``y = K * x + D x`` per channel, then dropout.

        Without ``segment_ids`` and ``initial_state`` this is the convolution mode, by
        FFT (:func:`ssm.kernels.fft_conv`). A convolution cannot restart at a segment
        boundary nor start from a state, so with either the layer runs its recurrence
        instead (:meth:`setup_step`'s system, time by time, in checkpointed chunks of
        :data:`RECURRENCE_CHUNK`; O(L H N) work, not parallel over time): the same
        outputs up to rounding, at a cost ``BENCHMARKS.md`` measures.

        ``mask`` (batch, length) (or (length,)) marks real tokens: padded inputs are
        zeroed, so they never reach real outputs, padded outputs are zero, and the
        returned state is the one after the last real position (pad at the ends).

        Args:
          x: (batch, length, d_model), or one example (length, d_model); integer
            inputs are taken as float32.
          mask: (batch, length) (or (length,)) bool, or None.
          segment_ids: (batch, length) (or (length,)) int, or None: packed documents
            (module :mod:`ssm.layers.segments`), the state reset at each boundary.
          initial_state: the state before position 0, as :meth:`init_state`,
            :meth:`step` or :meth:`prefill` make it (batch axis required), or None.
            Its ``"x"`` is used; the system is recomputed from the parameters, so the
            output is differentiable with respect to both.
          return_state: also return the state after the last real position.

        Returns:
          ``x``'s shape, in ``dtype`` (by default ``x``'s float dtype); with
          ``return_state``, ``(y, state)``, the state of :meth:`step`'s type.
        """
        x = check_sequence(x, mask, self.d_model)
        segment_ids = check_segment_ids(segment_ids, x.shape[:2])
        dtype = self.dtype or x.dtype
        if mask is not None:
            x = jnp.where(mask[..., None], x, 0)
        if segment_ids is None and initial_state is None:
            K, K_reverse = self.kernel(x.shape[1])
            real = jnp.promote_types(self.real_dtype, x.dtype)
            y = kernels.fft_conv(x, K, K_reverse, reverse_lag0=self.reverse_lag0).astype(real)
            y = y + x.astype(real) * self.real(self.D)
            state = None
            if return_state:  # the outputs by FFT, the last state by the recurrence
                self._check_causal("return_state")
                state = self._recurrence(x, mask, None, None)[1]
        else:
            self._check_causal("segment_ids" if initial_state is None else "initial_state")
            y, state = self._recurrence(x, mask, segment_ids, initial_state)
        y = self.dropout(y)
        if mask is not None:
            y = jnp.where(mask[..., None], y, 0)
        return (y.astype(dtype), state) if return_state else y.astype(dtype)

    def _initial_x(self, state, batch_size: int):
        """The ``"x"`` of a passed state, checked: (batch, H, N/2)."""
        expected = (batch_size, self.d_model, self.state_size)
        x = state.get("x") if isinstance(state, dict) else None
        if x is None or jnp.shape(x) != expected:
            got = jax.tree.map(jnp.shape, state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"initial_state is {got}; expected a state of init_state({batch_size}) "
                             f"with x {expected} (batch, H, N/2)")
        return jnp.asarray(x)

    def _recurrence(self, x, mask, segment_ids, initial_state):
        """The recurrence over ``x`` (batch, length, H): ``(y (batch, length, H), state)``."""
        system = self.setup_step()
        b = x.shape[0]
        dtype = jnp.promote_types(self.real_dtype, jnp.complex64)
        x0 = (jnp.zeros((b, self.d_model, self.state_size), dtype) if initial_state is None
              else self._initial_x(initial_state, b).astype(dtype))
        D = self.real(self.D)

        def cell(s, u_t):
            s = self.advance(system, s, u_t)
            return s, jnp.einsum("hm,bhm->bh", system["C"], s).real + D * u_t

        reset = None if segment_ids is None else boundaries(segment_ids, mask)
        y, last = recurrent_scan(cell, x0, x.astype(self.real_dtype), reset=reset, keep=mask,
                                 chunk=RECURRENCE_CHUNK)
        return y, {"x": last, "system": system}

    # Recurrent mode ---------------------------------------------------------------
    def _check_causal(self, what: str = "recurrent inference"):
        if self.bidirectional:
            raise ValueError(
                f"{type(self).__name__}(bidirectional=True) has no recurrent mode, which {what} needs: "
                "its output at t depends on inputs after t; use the layer's convolution mode"
            )

    def init_state(self, batch_size: int):
        """The zero state, with the discrete system of the current parameters.

        The system is computed here, once (:meth:`setup_step`; for S4 a dense solve and
        matrix powers), and every :meth:`step` reuses it: the state belongs to the
        parameters that made it (module :mod:`ssm.layers.conv_ssm`).

        Args:
          batch_size: sequences, a positive int.

        Returns:
          ``{"x": (batch_size, H, N/2), "system": dict}``: ``x`` zeros, complex64
          (complex128 with float64 parameters), the top half of the conjugate-symmetric
          state; ``system`` as :meth:`setup_step` returns it (no batch axis).
        """
        self._check_causal()
        check_positive_int("batch_size", batch_size)
        dtype = jnp.promote_types(self.real_dtype, jnp.complex64)
        return {"x": jnp.zeros((batch_size, self.d_model, self.state_size), dtype), "system": self.setup_step()}

    def step(self, x_t, state):
        """One step of the recurrence ``x_t = Abar x_{t-1} + Bbar u_t``,
        ``y_t = Re(C_out . x_t) + D u_t``.

        Equals ``layer(x)[:, t]`` when fed ``x[:, 0..t]`` from ``init_state`` (in
        evaluation mode: no dropout). The batch axis is required, as the state's
        (batch, H, N/2): one example is a batch of one. The discrete system comes from
        the state (made once by :meth:`init_state` or :meth:`prefill`), not from the
        parameters: this step costs O(H N^2) or less and no solve.

        Args:
          x_t: (batch, d_model), one position.
          state: as :meth:`init_state` or :meth:`prefill` makes it, for these parameters.

        Returns:
          ``(y_t, state)``: y_t (batch, d_model) in ``dtype`` (default ``x_t``'s), and
          the new state (the same system, the new ``x``).
        """
        self._check_causal()
        x_t = check_token(x_t, self.d_model)
        system = state["system"]
        u = x_t.astype(self.real_dtype)
        x = self.advance(system, state["x"], u)
        y = jnp.einsum("hm,bhm->bh", system["C"], x).real + self.real(self.D) * u
        return y.astype(self.dtype or x_t.dtype), {"x": x, "system": system}

    def prefill(self, x):
        """Run a prompt ``x`` (batch, length, d_model) from the zero state:
        ``layer(x, return_state=True)``.

        Args:
          x: (batch, length, d_model); the batch axis is required, as in :meth:`step`.

        Returns:
          ``(y, state)``: the outputs (batch, length, d_model) (as ``layer(x)``, by
          convolution) and the state after the last position (by a scan of the
          recurrence, on the system computed once), ready for :meth:`step`; the state
          is :meth:`init_state`'s type.
        """
        self._check_causal()
        return self(check_sequence(x, None, self.d_model), return_state=True)
