"""S4D: the diagonal state-space layer (Gu, Gupta, Goel, Re, 2022)."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from ssm import hippo, kernels
from ssm.checks import check_choice
from ssm.groups import ssm_param_dtype
from ssm.layers.conv_ssm import ConvSSM, lambda_params, pair_from_complex

class S4D(ConvSSM):
    """Diagonal SSM layer: ``x`` (batch, length, d_model) or (length, d_model) -> same shape.

    Each of the H = d_model channels is an independent SSM with N/2 complex
    modes ``Lambda`` and kernel ``K[l] = 2 Re sum_n C_n Abar_n^l Bbar_n``
    (:func:`ssm.kernels.diagonal_kernel`), plus a skip ``D u``.

    Args:
      d_model: channels H.
      d_state: full state size N (even); N/2 complex modes per channel.
      init: ``"legs"`` (S4D-LegS, default), ``"inv"``, ``"lin"`` or ``"real"``
        (:func:`ssm.hippo.s4d_init`).
      b_clip: clip ``Im B`` of the LegS init to ``[-b_clip, b_clip]``, or None for no
        clip. The default 2.0 is the S4 reference's (its S4D-LegS takes ``B`` from
        ``nplr("legs")`` with ``B_clip=2.0``). The other inits have ``B = 1`` and ignore it.
      dt_min, dt_max: log-uniform range of the initial step sizes.
      discretization: ``"zoh"`` (default) or ``"bilinear"``.
      bidirectional: add an anti-causal kernel with its own ``C`` (no recurrence).
      reverse_lag0: the reverse kernel's first tap acts at lag 0 (S5) instead of
        lag -1 (S4's convention).
      dropout: dropout rate on the output.
      dtype: output dtype (default: the input's); the kernel and FFTs run in float32
        (float64 with ``param_dtype=float64``), whatever the input's dtype.
      param_dtype: parameter dtype.

    Parameters (groups of :mod:`ssm.groups`): ``log_A_real``, ``A_imag`` (H, N/2),
    ``B`` (H, N/2, 2), ``log_dt`` (H,): ``ssm``; ``C`` (H, N/2, 2), ``D`` (H,):
    ``adamw``. Complex values are stored as real pairs.

    Gu, Gupta, Goel & Re (2022), "On the Parameterization and Initialization of
    Diagonal State Space Models".

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from flax import nnx
      >>> x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 4)), jnp.float32)  # (batch, length, d_model)
      >>> from ssm.layers import S4D
      >>> layer = S4D(4, d_state=8, rngs=nnx.Rngs(0))
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
        d_state: int = 64,
        init: str = "legs",
        b_clip: float | None = 2.0,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        discretization: kernels.Discretization = "zoh",
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
        self.discretization = check_choice("discretization", discretization, kernels.DISCRETIZATIONS)
        self.state_size = d_state // 2
        Lambda, B = hippo.s4d_init(init, d_state, b_clip=b_clip)
        self.log_A_real, self.A_imag = lambda_params(Lambda, d_model, param_dtype)
        self.B = nnx.Param(pair_from_complex(jnp.broadcast_to(B, (d_model, d_state // 2)), ssm_param_dtype(param_dtype)),
                           group="ssm")
        self.C = nnx.Param(pair_from_complex(self.init_C(rngs), param_dtype), group="adamw")
        if bidirectional:
            self.C_reverse = nnx.Param(pair_from_complex(self.init_C(rngs), param_dtype), group="adamw")

    def _system(self):
        return self.Lambda(), self.complex(self.B), self.dt()

    def kernel(self, length: int):
        Lambda, B, dt = self._system()

        def k(C):
            return kernels.diagonal_kernel(Lambda, B, self.complex(C), dt, length, self.discretization)

        return k(self.C), (k(self.C_reverse) if self.bidirectional else None)

    def discrete_system(self):
        Lambda, B, dt = self._system()
        Abar, Bbar = kernels.discretize(Lambda, B, dt, self.discretization)
        return Abar, Bbar, 2 * self.complex(self.C)
