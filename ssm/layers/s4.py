"""S4: the diagonal-plus-low-rank state-space layer (Gu, Goel, Re, 2022)."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from ssm import hippo, kernels
from ssm.checks import check_choice, check_positive_int
from ssm.groups import ssm_param_dtype
from ssm.layers.conv_ssm import ConvSSM, lambda_params, pair_from_complex

DPLR_MEASURES: tuple[str, ...] = ("legs", "legt", "lagt", "fout")
#: The ``step_mode`` options of :class:`S4`: how :meth:`~S4.step` applies the bilinear system.
STEP_MODES: tuple[str, ...] = ("linear", "dense")


class S4(ConvSSM):
    """DPLR SSM layer from a HiPPO measure: ``x`` (batch, length, d_model) or (length,
    d_model) -> same shape.

    Each channel runs the bilinear system with state matrix
    ``diag(Lambda, conj Lambda) - p p^*`` (the conjugate-completed DPLR form of
    :func:`ssm.hippo.dplr`), trained through the Cauchy/Woodbury kernel
    (:func:`ssm.kernels.dplr_kernel`) and run as a recurrence in :meth:`step` on
    the same bilinear system, so the two agree to rounding.

    As in S4, the output matrix is stored truncated, ``C~ = C (I - Abar^l_max)``,
    so the kernel needs no matrix power in training: shorter inputs use the first
    taps of the length-``l_max`` kernel; longer ones (evaluation beyond the
    training length) re-truncate ``C`` at their length, which is exact but costs
    a dense solve and matrix powers per call. ``C`` is drawn at random and
    converted to ``C~`` at init.

    Args:
      d_model: channels H.
      d_state: full state size N (even).
      l_max: the training length, for which ``C~`` is stored.
      measure: ``"legs"`` (default), ``"legt"``, ``"lagt"`` or ``"fout"``.
      rank: low-rank correction rank (default: the measure's smallest).
      b_clip: clip ``Im B`` of the DPLR form to ``[-b_clip, b_clip]``, or None for no
        clip (the exact HiPPO ``B``, :func:`ssm.hippo.dplr`'s default). The default 2.0
        is the S4 reference's, whose ``nplr`` clips for every measure.
      dt_min, dt_max: log-uniform range of the initial step sizes.
      step_mode: how the recurrent step applies the bilinear system: ``"linear"``
        (default; S4's "linear" mode) through the Woodbury identity, O(H N rank) per
        token, or ``"dense"``, the precomputed dense ``Abar``, O(H N^2). Equal to
        rounding; linear decodes about 7x faster at width 256, N = 64 on CPU
        (BENCHMARKS.md, "S4 decode").
      bidirectional, reverse_lag0, dropout, dtype, param_dtype: as :class:`S4D`.

    Parameters: ``log_A_real``, ``A_imag`` (H, N/2), ``P`` (H, rank, N/2, 2),
    ``B`` (H, N/2, 2), ``log_dt`` (H,): group ``ssm``; ``C`` (= C~, (H, N/2, 2)),
    ``D`` (H,): group ``adamw``.

    Gu, Goel & Re (2022), "Efficiently Modeling Long Sequences with Structured State
    Spaces".

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from flax import nnx
      >>> x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 4)), jnp.float32)  # (batch, length, d_model)
      >>> from ssm.layers import S4
      >>> layer = S4(4, d_state=8, l_max=16, rngs=nnx.Rngs(0))
      >>> y = layer(x)
      >>> y.shape, y.dtype
      ((2, 16, 4), dtype('float32'))
    """

    def __init__(
        self,
        d_model: int,
        *,
        d_state: int = 64,
        l_max: int = 1024,
        measure: str = "legs",
        rank: int | None = None,
        b_clip: float | None = 2.0,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        step_mode: str = "linear",
        bidirectional: bool = False,
        reverse_lag0: bool = False,
        dropout: float = 0.0,
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        super().__init__(d_model, d_state=d_state, dt_min=dt_min, dt_max=dt_max,
                         bidirectional=bidirectional, reverse_lag0=reverse_lag0, dropout=dropout,
                         dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        if measure not in DPLR_MEASURES:
            raise ValueError(f"measure={measure!r} has no DPLR form; expected one of {DPLR_MEASURES}")
        self.l_max = check_positive_int("l_max", l_max)
        self.step_mode = check_choice("step_mode", step_mode, STEP_MODES)
        self.state_size = d_state // 2  # the top half of the conjugate-symmetric state
        Lambda, P, B, _ = hippo.dplr(measure, d_state, rank=rank, b_clip=b_clip)
        H = d_model
        self.log_A_real, self.A_imag = lambda_params(Lambda, H, param_dtype)
        dynamics = ssm_param_dtype(param_dtype)
        self.P = nnx.Param(pair_from_complex(jnp.broadcast_to(P, (H, *P.shape)), dynamics), group="ssm")
        self.B = nnx.Param(pair_from_complex(jnp.broadcast_to(B, (H, B.shape[-1])), dynamics), group="ssm")
        Lambda, P, B, dt = self._system()
        truncate = lambda C: pair_from_complex(  # noqa: E731
            kernels.truncate_output(Lambda, P, B, C, dt, self.l_max), param_dtype)
        self.C = nnx.Param(truncate(self.init_C(rngs)), group="adamw")
        if bidirectional:
            self.C_reverse = nnx.Param(truncate(self.init_C(rngs)), group="adamw")

    def _system(self):
        return self.Lambda(), self.complex(self.P), self.complex(self.B), self.dt()

    def kernel(self, length: int):
        """The first ``length`` taps of the kernel of length ``l_max``; for a longer
        input (a model evaluated beyond its training length) the stored ``C~`` is
        converted to ``C`` and re-truncated at ``length``, so the kernel is exactly
        the system's, ``C Abar^l Bbar`` for every l < length (O(H N^3 log L) once).

        Args:
          length: L, a static int.

        Returns:
          ``(K, K_reverse)``: real (H, L) each; ``K_reverse`` None unless bidirectional.
        """
        Lambda, P, B, dt = self._system()
        n = max(length, self.l_max)

        def k(C_tilde):
            C_tilde = self.complex(C_tilde)
            if n > self.l_max:
                C = kernels.untruncate_output(Lambda, P, B, C_tilde, dt, self.l_max)
                C_tilde = kernels.truncate_output(Lambda, P, B, C, dt, n)
            return kernels.dplr_kernel(Lambda, P, B, C_tilde, dt, n, c_tilde=True)[:, :length]

        return k(self.C), (k(self.C_reverse) if self.bidirectional else None)

    def _output(self):
        """The plain output matrix ``C = C~ (I - Abar^l_max)^{-1}`` (H, N/2)."""
        Lambda, P, B, dt = self._system()
        return kernels.untruncate_output(Lambda, P, B, self.complex(self.C), dt, self.l_max)

    def discrete_system(self):
        """The conjugate-completed bilinear system, densely: ``Abar`` (H, N, N),
        ``Bbar`` and ``C_out = [C, conj C]`` (H, N), with ``C`` untruncated from ``C~``.
        O(H N^3 log l_max); :meth:`step` uses :meth:`setup_step`'s form of it."""
        Lambda, P, B, dt = self._system()
        Abar, Bbar = kernels.discretize_dplr(Lambda, P, B, dt)
        C = self._output()
        return Abar, Bbar, jnp.concatenate([C, C.conj()], -1)

    def setup_step(self):
        """The system :meth:`step` runs on, once per parameter set (O(H N^3 log l_max),
        for ``C``): on the top half x of the conjugate-symmetric state, ``y = Re(C . x)``
        with ``C`` = 2 C (H, N/2) and

        - ``step_mode="linear"``: the Woodbury factors of
          :func:`ssm.kernels.woodbury_step_factors` (H, N/2) and (H, rank, N/2);
        - ``step_mode="dense"``: ``Abar`` (H, N/2, N), the top rows of
          :func:`ssm.kernels.discretize_dplr`'s, acting on ``[x, conj x]``, and ``Bbar``
          (H, N/2).

        Returns:
          dict of complex arrays without a batch axis.
        """
        Lambda, P, B, dt = self._system()
        C = 2 * self._output()
        if self.step_mode == "linear":
            return {**kernels.woodbury_step_factors(Lambda, P, B, dt), "C": C}
        Abar, Bbar = kernels.discretize_dplr(Lambda, P, B, dt)
        half = self.state_size
        return {"Abar": Abar[:, :half], "Bbar": Bbar[:, :half], "C": C}

    def advance(self, system, x, u):
        """``x' = Abar x + Bbar u`` on the top half ``x`` (batch, H, N/2) of the state,
        ``u`` (batch, H) real, by :meth:`setup_step`'s ``system``."""
        if self.step_mode == "linear":
            return kernels.woodbury_step(system, x, u)
        full = jnp.concatenate([x, x.conj()], -1)
        return jnp.einsum("hmn,bhn->bhm", system["Abar"], full) + system["Bbar"] * u[..., None]
