"""Discretization, S4D (Vandermonde) and S4 (Cauchy + Woodbury) convolution
kernels, and the FFT convolution that applies them.

Shapes in the notation of :mod:`ssm.typing`: ``h`` channels (H), ``m`` the N/2 complex
modes a diagonal or DPLR system keeps of its conjugate pairs, ``n`` the full state (N),
``r`` rank of the low-rank correction, ``l`` length. All kernels are real, shape
(H, length), with ``y[t] = sum_{l <= t} K[l] u[t - l]``. Complex inputs are complex64
(complex128 when an input is float64/complex128 with x64 enabled); kernels come back in
the matching real dtype.

The examples use one small diagonal system, H = 4 channels of N/2 = 4 modes, made as::

    >>> import numpy as np, jax.numpy as jnp
    >>> from ssm import hippo, kernels
    >>> Lambda = jnp.asarray(np.broadcast_to(hippo.s4d_init("lin", 8)[0], (4, 4)), jnp.complex64)
    >>> B = jnp.ones((4, 4), jnp.complex64)
    >>> dt = jnp.array([0.1, 0.05, 0.02, 0.01])

Memory: the naive kernels materialize (H, N/2, L) tensors (s4#51, annotated-s4
PR#59). Here the Cauchy sums run over chunks of frequencies under
``jax.checkpoint``, so forward and backward hold O(H (N + L)); the Vandermonde sum
is blocked into (H, N/2, sqrt L) factors, O(H (L + N sqrt L)), which is O(H L) once
L >= N^2/4 (L >= 1024 at N = 64). The exception is :func:`dplr_kernel` given the plain ``C``:
truncating it costs O(H N^2 log L) (dense powers of Abar, kept for the backward
pass), which is why the S4 layer stores the truncated ``C~`` instead, as S4 does.
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import jax
import jax.numpy as jnp

from ssm.checks import check_choice, check_positive_int, concrete
from ssm.solve import solve  # not jnp.linalg.solve: see ssm.solve
from ssm.typing import Array, ArrayLike, Bool, Complex, Float

__all__ = ["DISCRETIZATIONS", "CHUNK", "discretize_zoh", "discretize_bilinear", "discretize",
           "dplr_conjugate_completed", "discretize_dplr", "woodbury_step_factors", "woodbury_step",
           "truncate_output", "untruncate_output",
           "vandermonde_kernel", "diagonal_kernel", "cauchy_woodbury", "dplr_kernel", "fft_length", "fft_conv"]

Discretization = Literal["zoh", "bilinear"]
#: The ``discretization`` options of :func:`discretize` and :func:`diagonal_kernel`.
DISCRETIZATIONS: tuple[str, ...] = ("zoh", "bilinear")
CHUNK = 256  #: Positions (or frequencies) evaluated at once in the kernel sums (``chunk``'s default).

# The shapes the signatures repeat (names of ssm.typing).
_Modes = Complex[ArrayLike, "channels modes"]  # Lambda, B, C: the conjugate half, (H, N/2)
_LowRank = Complex[ArrayLike, "*channels rank modes"]  # P: (rank, N/2) shared, or (H, rank, N/2)
_Steps = Float[ArrayLike, "channels"]  # dt: one step size per channel
_Kernel = Float[Array, "channels length"]
_ModesOut = Complex[Array, "channels modes"]


# ----------------------------------------------------------------------------- checks


def _check_length(length) -> int:
    return check_positive_int("length", length)  # static: a traced length is not an integer


def _check_channels(**arrays) -> int:
    """All arrays must be (H, N/2) with the same shape; returns H."""
    shapes = {k: jnp.shape(v) for k, v in arrays.items()}
    first_name, first = next(iter(shapes.items()))
    if len(first) != 2:
        raise ValueError(f"{first_name} has shape {first}; expected (H, N/2)")
    for name, shape in shapes.items():
        if shape != first:
            raise ValueError(f"{name} has shape {shape}; expected {first} like {first_name}")
    return first[0]


def _check_dt(dt, H: int) -> None:
    if jnp.shape(dt) != (H,):
        raise ValueError(f"dt has shape {jnp.shape(dt)}; expected ({H},) (one step size per channel)")
    values = concrete(dt)
    if values is not None and not (values > 0).all():
        raise ValueError(f"dt has {int((values <= 0).sum())} entries <= 0 (e.g. {values[values <= 0][0]!r}); "
                         "step sizes must be positive (a negative step runs the system backwards in time)")


def _check_stable(Lambda) -> None:
    """Re Λ <= 0 where the values are known: a mode with Re Λ > 0 grows as exp(Re Λ t),
    and its kernel overflows at long lengths."""
    values = concrete(Lambda)
    if values is not None and (values.real > 0).any():
        raise ValueError(f"Lambda has {int((values.real > 0).sum())} modes with Re Lambda > 0 "
                         f"(e.g. {values[values.real > 0][0]!r}): the system is unstable, expected Re Lambda <= 0")


def _complex_dtype(*xs):
    return jnp.result_type(jnp.complex64, *[jnp.asarray(x).dtype for x in xs])


# ------------------------------------------------------------------------ discretization


def discretize_zoh(Lambda: _Modes, B: _Modes, dt: _Steps) -> tuple[_ModesOut, _ModesOut]:
    """Zero-order hold for a diagonal system: ``Abar = exp(dt Lambda)``,
    ``Bbar = B (exp(dt Lambda) - 1) / Lambda`` (S4D's default; Gu, Gupta, Goel & Re,
    2022, "On the Parameterization and Initialization of Diagonal State Space Models").

    Args:
      Lambda: complex (H, N/2), nonzero.
      B: complex (H, N/2).
      dt: real (H,), one step size per channel.

    Returns:
      ``(Abar, Bbar)``: complex (H, N/2) each, in the promoted dtype of the inputs.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm import hippo, kernels
      >>> Lambda = jnp.asarray(np.broadcast_to(hippo.s4d_init("lin", 8)[0], (4, 4)), jnp.complex64)
      >>> B = jnp.ones((4, 4), jnp.complex64)
      >>> dt = jnp.array([0.1, 0.05, 0.02, 0.01])
      >>> Abar, Bbar = kernels.discretize_zoh(Lambda, B, dt)
      >>> Abar.shape, Bbar.dtype
      ((4, 4), dtype('complex64'))
      >>> bool(jnp.all(jnp.abs(Abar) < 1))  # Re Lambda < 0: every mode decays
      True
    """
    dtL = dt[:, None] * Lambda
    Abar = jnp.exp(dtL)
    return Abar, B * jnp.expm1(dtL) / Lambda


def discretize_bilinear(Lambda: _Modes, B: _Modes, dt: _Steps) -> tuple[_ModesOut, _ModesOut]:
    """Bilinear (Tustin) transform for a diagonal system:
    ``Abar = (1 + dt Lambda/2) / (1 - dt Lambda/2)``, ``Bbar = dt B / (1 - dt Lambda/2)``
    (the discretization of S4; Gu, Goel & Re, 2022, eq. (3)).

    Args:
      Lambda: complex (H, N/2).
      B: complex (H, N/2).
      dt: real (H,), one step size per channel.

    Returns:
      ``(Abar, Bbar)``: complex (H, N/2) each, in the promoted dtype of the inputs.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm import hippo, kernels
      >>> Lambda = jnp.asarray(np.broadcast_to(hippo.s4d_init("lin", 8)[0], (4, 4)), jnp.complex64)
      >>> B = jnp.ones((4, 4), jnp.complex64)
      >>> dt = jnp.array([0.1, 0.05, 0.02, 0.01])
      >>> Abar, Bbar = kernels.discretize_bilinear(Lambda, B, dt)
      >>> zoh, _ = kernels.discretize_zoh(Lambda, B, dt)
      >>> bool(jnp.allclose(Abar, zoh, atol=0.1))  # the two agree to second order in dt Lambda
      True
    """
    half = dt[:, None] * Lambda / 2
    return (1 + half) / (1 - half), dt[:, None] * B / (1 - half)


def discretize(Lambda: _Modes, B: _Modes, dt: _Steps,
               discretization: Discretization = "zoh") -> tuple[_ModesOut, _ModesOut]:
    """:func:`discretize_zoh` or :func:`discretize_bilinear`, by name.

    Args:
      Lambda, B: complex (H, N/2).
      dt: real (H,).
      discretization: ``"zoh"`` or ``"bilinear"`` (:data:`DISCRETIZATIONS`).

    Returns:
      ``(Abar, Bbar)``: complex (H, N/2) each.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm import hippo, kernels
      >>> Lambda = jnp.asarray(np.broadcast_to(hippo.s4d_init("lin", 8)[0], (4, 4)), jnp.complex64)
      >>> B = jnp.ones((4, 4), jnp.complex64)
      >>> dt = jnp.array([0.1, 0.05, 0.02, 0.01])
      >>> Abar, _ = kernels.discretize(Lambda, B, dt, "bilinear")
      >>> bool(jnp.array_equal(Abar, kernels.discretize_bilinear(Lambda, B, dt)[0]))
      True
    """
    check_choice("discretization", discretization, DISCRETIZATIONS)
    fn = discretize_zoh if discretization == "zoh" else discretize_bilinear
    return fn(Lambda, B, dt)


def dplr_conjugate_completed(Lambda: _Modes, P: _LowRank, B: _Modes, C: _Modes | None = None):
    """The full N-dimensional complex system behind a DPLR half (the state matrix of
    S4, Gu, Goel & Re, 2022, with its conjugate pairs written out).

    Args:
      Lambda, B: complex (H, N/2).
      P: complex (rank, N/2) shared by the channels, or (H, rank, N/2).
      C: complex (H, N/2), optional.

    Returns:
      ``(A, B)`` or, with ``C``, ``(A, B, C)``: ``A`` (H, N, N) ``= diag(Lambda, conj
      Lambda) - p p^*`` with ``p = [P; conj P]``, ``B`` (H, N) ``= [B, conj B]``, ``C``
      (H, N) ``= [C, conj C]``.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm import hippo, kernels
      >>> Lambda, P, B, _ = hippo.dplr("legs", 8)  # N = 8: N/2 = 4 modes; P per channel, rank 1
      >>> Lambda, B = (jnp.asarray(np.broadcast_to(x, (4, 4)), jnp.complex64) for x in (Lambda, B))
      >>> P, dt = jnp.asarray(np.broadcast_to(P, (4, 1, 4)), jnp.complex64), jnp.array([0.1, 0.05, 0.02, 0.01])
      >>> A, B_full = kernels.dplr_conjugate_completed(Lambda, P, B)
      >>> A.shape, B_full.shape
      ((4, 8, 8), (4, 8))
    """
    P = _broadcast_P(P, Lambda.shape[0])
    lam = jnp.concatenate([Lambda, Lambda.conj()], -1)
    p = jnp.concatenate([P, P.conj()], -1)  # (H, r, N)
    A = jax.vmap(jnp.diag)(lam) - jnp.einsum("hri,hrj->hij", p, p.conj())
    Bf = jnp.concatenate([B, B.conj()], -1)
    if C is None:
        return A, Bf
    return A, Bf, jnp.concatenate([C, C.conj()], -1)


def _dplr_increment(Lambda, P, B, dt):
    """``(Abar - I, Bbar)`` of the bilinear conjugate-completed DPLR system.

    ``Abar - I = (I - dt A/2)^{-1} dt A`` is formed directly, so it keeps full
    relative precision when dt is small (Abar itself would round it away).
    """
    A, Bf = dplr_conjugate_completed(Lambda, P, B)
    eye = jnp.eye(A.shape[-1], dtype=A.dtype)
    left = eye - dt[:, None, None] * A / 2
    rhs = jnp.concatenate([dt[:, None, None] * A, (dt[:, None] * Bf)[..., None]], -1)
    sol = solve(left, rhs)
    return sol[..., :-1], sol[..., -1]


def discretize_dplr(Lambda: _Modes, P: _LowRank, B: _Modes, dt: _Steps,
                    ) -> tuple[Complex[Array, "channels state state"], Complex[Array, "channels state"]]:
    """Bilinear discretization of the conjugate-completed DPLR system, densely.

    ``Abar = (I - dt A/2)^{-1} (I + dt A/2)``, ``Bbar = (I - dt A/2)^{-1} dt B``.
    Used for recurrent inference and for the output-matrix truncation; O(H N^3).

    Args:
      Lambda, B: complex (H, N/2).
      P: complex (rank, N/2) or (H, rank, N/2).
      dt: real (H,).

    Returns:
      ``(Abar, Bbar)``: complex ``Abar`` (H, N, N) and ``Bbar`` (H, N), over the
      conjugate-completed state of :func:`dplr_conjugate_completed`.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm import hippo, kernels
      >>> Lambda, P, B, _ = hippo.dplr("legs", 8)  # N = 8: N/2 = 4 modes; P per channel, rank 1
      >>> Lambda, B = (jnp.asarray(np.broadcast_to(x, (4, 4)), jnp.complex64) for x in (Lambda, B))
      >>> P, dt = jnp.asarray(np.broadcast_to(P, (4, 1, 4)), jnp.complex64), jnp.array([0.1, 0.05, 0.02, 0.01])
      >>> Abar, Bbar = kernels.discretize_dplr(Lambda, P, B, dt)
      >>> Abar.shape, Bbar.shape
      ((4, 8, 8), (4, 8))
      >>> bool(jnp.all(jnp.abs(jnp.linalg.eigvals(Abar)) < 1))  # stable: |eigenvalues| < 1
      True
    """
    E, Bbar = _dplr_increment(Lambda, P, B, dt)
    return E + jnp.eye(E.shape[-1], dtype=E.dtype), Bbar


def woodbury_step_factors(Lambda: _Modes, P: _LowRank, B: _Modes, dt: _Steps,
                          ) -> dict[str, Complex[Array, "channels *rank modes"]]:
    """The factors of S4's O(N) bilinear step of a DPLR system (Gu, Goel & Re, 2022,
    Appendix C.2: the bilinear matrices applied through the Woodbury identity instead of
    formed densely).

    With ``A = diag(Lambda) - p p^*`` (conjugate-completed, as
    :func:`dplr_conjugate_completed`), ``I + dt A/2 = (dt/2)(diag(E) - p p^*)`` with
    ``E = 2/dt + Lambda``, and ``(I - dt A/2)^{-1} = (2/dt)(diag(D) - D p R)`` with
    ``D = 1/(2/dt - Lambda)`` and ``R = (I_r + p^* D p)^{-1} p^* D`` (Woodbury). So
    ``Abar x + Bbar u = D (w - p (R w))`` with ``w = E x - p (p^* x) + 2 B u``:
    :func:`woodbury_step`. On a conjugate-symmetric state (``x = [x_half, conj
    x_half]``, as real inputs keep it) ``p^* x = 2 Re(P^* x_half)`` and ``R w = 2
    Re(R_half w_half)`` are real, so only the top half is stored and updated.

    Args:
      Lambda, B: complex (H, N/2).
      P: complex (rank, N/2) or (H, rank, N/2).
      dt: real (H,).

    Returns:
      dict of complex arrays: ``"D"``, ``"E"``, ``"B2"`` (= 2B) (H, N/2); ``"P"``,
      ``"R"`` (H, rank, N/2) (``R`` the top half of the Woodbury factor, with the real
      (rank, rank) inverse folded in).

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm import hippo, kernels
      >>> Lambda, P, B, _ = hippo.dplr("legs", 8)  # N = 8: N/2 = 4 modes; P per channel, rank 1
      >>> Lambda, B = (jnp.asarray(np.broadcast_to(x, (4, 4)), jnp.complex64) for x in (Lambda, B))
      >>> P, dt = jnp.asarray(np.broadcast_to(P, (4, 1, 4)), jnp.complex64), jnp.array([0.1, 0.05, 0.02, 0.01])
      >>> factors = kernels.woodbury_step_factors(Lambda, P, B, dt)
      >>> sorted(factors), factors["R"].shape
      (['B2', 'D', 'E', 'P', 'R'], (4, 1, 4))
    """
    P = _broadcast_P(P, Lambda.shape[0])
    two_dt = (2 / dt)[:, None]
    D = 1 / (two_dt - Lambda)
    PD = P.conj() * D[:, None]  # p^* D over the top half: (H, rank, N/2)
    M = 2 * jnp.einsum("him,hjm->hij", PD, P).real  # p^* D p (real: the halves are conjugate)
    eye = jnp.eye(M.shape[-1], dtype=M.dtype)
    R = solve((eye + M).astype(PD.dtype), PD)
    return {"D": D, "E": two_dt + Lambda, "B2": 2 * B, "P": P, "R": R}


def woodbury_step(factors: dict[str, Complex[ArrayLike, "channels *rank modes"]],
                  x: Complex[ArrayLike, "batch channels modes"],
                  u: Float[ArrayLike, "batch channels"]) -> Complex[Array, "batch channels modes"]:
    """One bilinear step ``x' = Abar x + Bbar u`` of a DPLR system in O(H N rank), from
    the factors of :func:`woodbury_step_factors` (S4's "linear" step mode).

    Args:
      factors: as :func:`woodbury_step_factors` returns them.
      x: complex (batch, H, N/2), the top half of the conjugate-symmetric state.
      u: real (batch, H).

    Returns:
      ``x'``: complex (batch, H, N/2), equal to the top half of
      ``Abar [x, conj x] + Bbar u`` with :func:`discretize_dplr`'s matrices.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm import hippo, kernels
      >>> Lambda, P, B, _ = hippo.dplr("legs", 8)  # N = 8: N/2 = 4 modes; P per channel, rank 1
      >>> Lambda, B = (jnp.asarray(np.broadcast_to(x, (4, 4)), jnp.complex64) for x in (Lambda, B))
      >>> P, dt = jnp.asarray(np.broadcast_to(P, (4, 1, 4)), jnp.complex64), jnp.array([0.1, 0.05, 0.02, 0.01])
      >>> x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 4)), jnp.complex64)
      >>> u = jnp.ones((2, 4))
      >>> Abar, Bbar = kernels.discretize_dplr(Lambda, P, B, dt)
      >>> dense = jnp.einsum("hij,bhj->bhi", Abar, jnp.concatenate([x, x.conj()], -1)) + Bbar * u[..., None]
      >>> linear = kernels.woodbury_step(kernels.woodbury_step_factors(Lambda, P, B, dt), x, u)
      >>> bool(jnp.allclose(linear, dense[..., :4], atol=1e-5))
      True
    """
    P = factors["P"]
    px = 2 * jnp.einsum("hrm,bhm->bhr", P.conj(), x).real  # p^* x
    w = factors["E"] * x - jnp.einsum("hrm,bhr->bhm", P, px) + factors["B2"] * u[..., None]
    rw = 2 * jnp.einsum("hrm,bhm->bhr", factors["R"], w).real  # R w
    return factors["D"] * (w - jnp.einsum("hrm,bhr->bhm", P, rw))


def _power_minus_identity(E, power: int):
    """``(I + E)^power - I`` by binary powering on the increments.

    ``(I + X)(I + Y) - I = X + Y + X Y`` keeps the small part exact where a plain
    power of ``Abar`` (eigenvalues near 1 when dt is small) would lose ~L ulps.
    """
    out = None
    while power:
        if power & 1:
            out = E if out is None else out + E + out @ E
        power >>= 1
        if power:
            E = 2 * E + E @ E
    return out


def truncate_output(Lambda: _Modes, P: _LowRank, B: _Modes, C: _Modes, dt: _Steps, length: int) -> _ModesOut:
    """S4's truncated output matrix ``C~ = C (I - Abar^L)`` (top half, (H, N/2)).

    With ``C~`` the generating function of the length-L kernel is exactly
    ``C~ (I - Abar w)^{-1} Bbar`` at the L-th roots of unity (Gu, Goel & Re, 2022,
    Lemma C.2). O(H N^3 log L).

    Args:
      Lambda, B, C: complex (H, N/2); ``C`` the plain output matrix's top half.
      P: complex (rank, N/2) or (H, rank, N/2).
      dt: real (H,).
      length: L, the kernel length the truncation is for (a static int).

    Returns:
      ``C~``: complex (H, N/2).

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm import hippo, kernels
      >>> Lambda, P, B, _ = hippo.dplr("legs", 8)  # N = 8: N/2 = 4 modes; P per channel, rank 1
      >>> Lambda, B = (jnp.asarray(np.broadcast_to(x, (4, 4)), jnp.complex64) for x in (Lambda, B))
      >>> P, dt = jnp.asarray(np.broadcast_to(P, (4, 1, 4)), jnp.complex64), jnp.array([0.1, 0.05, 0.02, 0.01])
      >>> C = jnp.asarray(np.random.default_rng(0).normal(size=(4, 4)), jnp.complex64)
      >>> C_tilde = kernels.truncate_output(Lambda, P, B, C, dt, 16)
      >>> C_tilde.shape
      (4, 4)
      >>> bool(jnp.allclose(kernels.untruncate_output(Lambda, P, B, C_tilde, dt, 16), C, atol=1e-4))
      True
    """
    E, _ = _dplr_increment(Lambda, P, B, dt)
    Cf = jnp.concatenate([C, C.conj()], -1)
    out = -jnp.einsum("hi,hij->hj", Cf, _power_minus_identity(E, _check_length(length)))
    return out[..., : C.shape[-1]]


def untruncate_output(Lambda: _Modes, P: _LowRank, B: _Modes, C_tilde: _Modes, dt: _Steps,
                      length: int) -> _ModesOut:
    """Inverse of :func:`truncate_output`: ``C = C~ (I - Abar^L)^{-1}``.

    Args:
      Lambda, B, C_tilde: complex (H, N/2).
      P: complex (rank, N/2) or (H, rank, N/2).
      dt: real (H,).
      length: the L that ``C_tilde`` was truncated at.

    Returns:
      ``C``: complex (H, N/2), the top half of the plain output matrix.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm import hippo, kernels
      >>> Lambda, P, B, _ = hippo.dplr("legs", 8)  # N = 8: N/2 = 4 modes; P per channel, rank 1
      >>> Lambda, B = (jnp.asarray(np.broadcast_to(x, (4, 4)), jnp.complex64) for x in (Lambda, B))
      >>> P, dt = jnp.asarray(np.broadcast_to(P, (4, 1, 4)), jnp.complex64), jnp.array([0.1, 0.05, 0.02, 0.01])
      >>> C_tilde = jnp.ones((4, 4), jnp.complex64)
      >>> C = kernels.untruncate_output(Lambda, P, B, C_tilde, dt, 16)
      >>> bool(jnp.allclose(kernels.truncate_output(Lambda, P, B, C, dt, 16), C_tilde, atol=1e-4))
      True
    """
    E, _ = _dplr_increment(Lambda, P, B, dt)
    M = -_power_minus_identity(E, _check_length(length))  # I - Abar^L
    Cf = jnp.concatenate([C_tilde, C_tilde.conj()], -1)
    # C (I - Abar^L) = C~  <=>  (I - Abar^L)^T C^T = C~^T
    C = solve(jnp.swapaxes(M, -1, -2), Cf)
    return C[..., : C_tilde.shape[-1]]


# ----------------------------------------------------------------------------- chunking


def _sum_in_chunks(term: Callable, count: int, chunk: int):
    """``jnp.concatenate([term(idx) for idx in chunks of arange(count)], -1)``.

    ``term`` maps positions (chunk,) int32 to (..., chunk). Each chunk is
    rematerialized in the backward pass, so only one chunk's intermediates are
    alive at a time. Chunks are of equal size, at most ``chunk``, so that padding
    wastes less than one position per chunk.
    """
    n_chunks = -(-count // chunk)
    chunk = -(-count // n_chunks)
    idx = jnp.arange(n_chunks * chunk, dtype=jnp.int32).reshape(n_chunks, chunk)
    out = jax.lax.map(jax.checkpoint(term), idx)  # (n_chunks, ..., chunk)
    out = jnp.moveaxis(out, 0, -2)
    return out.reshape(*out.shape[:-2], n_chunks * chunk)[..., :count]


# ---------------------------------------------------------------------- S4D (diagonal)


def vandermonde_kernel(log_Abar: _Modes, W: _Modes, length: int, *,
                       negate: Bool[ArrayLike, "channels modes"] | None = None) -> _Kernel:
    """``K[h, l] = 2 Re sum_n W[h, n] Abar[h, n]^l`` for l < length, where
    ``Abar = exp(log_Abar)``, negated where ``negate`` is True.

    Blocked: with l = j T + t and T ~ sqrt(L), ``Abar^l = Abar^{jT} Abar^t``, so the
    sum is one batched product of (H, L/T, N/2) and (H, N/2, T) matrices. That takes
    H N/2 (L/T + T) complex exponentials instead of H N/2 L (the whole cost of the
    plain form on CPU, where a complex exp costs ~1000 matmul flops of time) and
    O(H N sqrt(L)) memory instead of O(H N L).

    ``negate`` lets modes near the Nyquist frequency (Abar near -1) keep a small,
    precisely represented logarithm: ``(-e^a)^l = (-1)^l e^{l a}``.

    Args:
      log_Abar: complex (H, N/2), the logarithms of the discrete modes.
      W: complex (H, N/2), the weights (``C Bbar`` for an S4D kernel).
      length: L (a static int).
      negate: bool (H, N/2) or None: where True, the mode is ``-exp(log_Abar)``.

    Returns:
      Real (H, length), in the real dtype of ``log_Abar``.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm import hippo, kernels
      >>> Lambda = jnp.asarray(np.broadcast_to(hippo.s4d_init("lin", 8)[0], (4, 4)), jnp.complex64)
      >>> B = jnp.ones((4, 4), jnp.complex64)
      >>> dt = jnp.array([0.1, 0.05, 0.02, 0.01])
      >>> rng = np.random.default_rng(0)
      >>> C = jnp.asarray(rng.normal(size=(4, 4)) + 1j * rng.normal(size=(4, 4)), jnp.complex64)
      >>> Abar, Bbar = kernels.discretize_zoh(Lambda, B, dt)
      >>> K = kernels.vandermonde_kernel(dt[:, None] * Lambda, C * Bbar, 16)  # log Abar = dt Lambda
      >>> naive = 2 * jnp.einsum("hm,hml->hl", C * Bbar, Abar[..., None] ** jnp.arange(16)).real
      >>> K.shape, bool(jnp.allclose(K, naive, atol=1e-5))
      ((4, 16), True)
    """
    length = _check_length(length)
    T = max(1, math.isqrt(length - 1) + 1)  # ceil(sqrt(L))
    J = -(-length // T)
    real = log_Abar.real.dtype

    def powers(exponents):  # (h, m, len(exponents)): Abar^e
        out = jnp.exp(log_Abar[..., None] * exponents.astype(real))
        if negate is not None:
            out = jnp.where(negate[..., None] & (exponents % 2 == 1), -out, out)
        return out

    # The length as J chunks (c) of T positions (q): l = j T + t.
    outer = 2 * W[..., None] * powers(jnp.arange(J) * T)  # (h, m, c)
    inner = powers(jnp.arange(T))  # (h, m, q)
    # Re(outer^T inner) = [Re outer; -Im outer]^T [Re inner; Im inner]: one real
    # batched matmul contracting over the N = 2 (N/2) real parts, with one (h, c, q) output.
    a = jnp.concatenate([outer.real, -outer.imag], axis=1)  # (h, n, c)
    b = jnp.concatenate([inner.real, inner.imag], axis=1)  # (h, n, q)
    K = jnp.einsum("hnc,hnq->hcq", a, b)
    return K.reshape(K.shape[0], J * T)[:, :length]


def diagonal_kernel(Lambda: _Modes, B: _Modes, C: _Modes, dt: _Steps, length: int,
                    discretization: Discretization = "zoh") -> _Kernel:
    """S4D convolution kernel ``K[l] = 2 Re sum_n C_n Abar_n^l Bbar_n``.

    Gu, Gupta, Goel, Re (2022), "On the Parameterization and Initialization of
    Diagonal State Space Models", eq. (6) (Vandermonde form).

    Args:
      Lambda, B, C: complex (H, N/2), the conjugate half of the diagonal system;
        stable: Re Lambda <= 0.
      dt: (H,) positive step sizes.
      length: kernel length L.
      discretization: ``"zoh"`` (default, as S4D) or ``"bilinear"``.

    Returns:
      Real (H, L): float32 (float64 for float64/complex128 inputs under x64).

    Both conditions are checked where the values are concrete (an eager call); under
    ``jit`` a violation gives inf or NaN instead.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm import hippo, kernels
      >>> Lambda = jnp.asarray(np.broadcast_to(hippo.s4d_init("lin", 8)[0], (4, 4)), jnp.complex64)
      >>> B = jnp.ones((4, 4), jnp.complex64)
      >>> dt = jnp.array([0.1, 0.05, 0.02, 0.01])
      >>> rng = np.random.default_rng(0)
      >>> C = jnp.asarray(rng.normal(size=(4, 4)) + 1j * rng.normal(size=(4, 4)), jnp.complex64)
      >>> K = kernels.diagonal_kernel(Lambda, B, C, dt, 16)
      >>> K.shape, K.dtype
      ((4, 16), dtype('float32'))
      >>> Abar, Bbar = kernels.discretize_zoh(Lambda, B, dt)
      >>> naive = 2 * jnp.einsum("hm,hml->hl", C * Bbar, Abar[..., None] ** jnp.arange(16)).real
      >>> bool(jnp.allclose(K, naive, atol=1e-5))
      True
    """
    H = _check_channels(Lambda=Lambda, B=B, C=C)
    _check_dt(dt, H)
    _check_stable(Lambda)
    dtype = _complex_dtype(Lambda, B, C, dt)
    Lambda, B, C = (jnp.asarray(x, dtype) for x in (Lambda, B, C))
    dt = jnp.asarray(dt, jnp.finfo(dtype).dtype)
    Abar, Bbar = discretize(Lambda, B, dt, discretization)
    # exp(l log Abar) = Abar^l for integer l on any branch; ZOH's log is exact.
    dtL = dt[:, None] * Lambda
    if discretization == "zoh":
        return vandermonde_kernel(dtL, C * Bbar, length)
    # Bilinear: Abar = (1 + z)/(1 - z) = exp(2 atanh z) with z = dt Lambda / 2. For
    # |z| > 1 (Abar near -1), Abar = -exp(2 atanh(1/z)): the logarithm stays small
    # and exact instead of carrying a rounded +-i pi that l multiplies.
    z = dtL / 2
    far = jnp.abs(z) > 1
    log_Abar = 2 * jnp.arctanh(jnp.where(far, 1 / z, z))
    return vandermonde_kernel(log_Abar, C * Bbar, length, negate=far)


# --------------------------------------------------------------------------- S4 (DPLR)


def _broadcast_P(P, H: int):
    if P.ndim == 2:
        return jnp.broadcast_to(P, (H, *P.shape))
    return P


def cauchy_woodbury(Lambda: _Modes, P: _LowRank, B: _Modes, C_tilde: _Modes, dt: _Steps, length: int, *,
                    chunk: int = CHUNK) -> Complex[Array, "channels length//2+1"]:
    """The kernel's DFT ``sum_{l<L} K_l w^l`` at ``w_k = exp(-2 pi i k / L)``,
    k = 0..L/2, for the bilinear DPLR system with truncated output ``C~``.

    Gu, Goel, Re (2022), "Efficiently Modeling Long Sequences with Structured
    State Spaces", Lemma C.2-C.3. With theta_k = 2 pi k / L, s = sin(theta/2) and
    c = cos(theta/2), the bilinear resolvent reduces to Cauchy sums over
    ``e_n = i s - c dt lambda_n / 2`` (no pole at w = -1 and no cancellation at
    w = 1, unlike the textbook ``z = 2(1-w)/(1+w)``):

        G(w) = dt e^{i theta/2} / 2 * [h_CB - (c dt/2) h_Cp (I + (c dt/2) h_pp)^{-1} h_pB],
        h_xy = sum over the conjugate-completed set of x_n y_n / e_n.

    Args:
      Lambda, B, C_tilde: complex (H, N/2); ``C_tilde`` from :func:`truncate_output`.
      P: complex (rank, N/2) or (H, rank, N/2).
      dt: real (H,).
      length: L (a static int).
      chunk: frequencies evaluated at once (memory O(H N chunk)).

    Returns:
      Complex (H, L//2 + 1): ``jnp.fft.irfft(_, n=L)`` is the kernel.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm import hippo, kernels
      >>> Lambda, P, B, _ = hippo.dplr("legs", 8)  # N = 8: N/2 = 4 modes; P per channel, rank 1
      >>> Lambda, B = (jnp.asarray(np.broadcast_to(x, (4, 4)), jnp.complex64) for x in (Lambda, B))
      >>> P, dt = jnp.asarray(np.broadcast_to(P, (4, 1, 4)), jnp.complex64), jnp.array([0.1, 0.05, 0.02, 0.01])
      >>> C_tilde = jnp.ones((4, 4), jnp.complex64)
      >>> spectrum = kernels.cauchy_woodbury(Lambda, P, B, C_tilde, dt, 16)
      >>> spectrum.shape
      (4, 9)
      >>> K = kernels.dplr_kernel(Lambda, P, B, C_tilde, dt, 16, c_tilde=True)
      >>> bool(jnp.allclose(jnp.fft.irfft(spectrum, n=16), K, atol=1e-6))
      True
    """
    H, half = Lambda.shape
    P = _broadcast_P(P, H)
    rank = P.shape[-2]
    # Rows x in {C~, conj P_1..r} (i), columns y in {B, P_1..r} (j): numerators (h, r+1, r+1, m).
    X = jnp.concatenate([C_tilde[:, None], P.conj()], 1)
    Y = jnp.concatenate([B[:, None], P], 1)
    W = X[:, :, None] * Y[:, None, :]
    dtL = dt[:, None] * Lambda / 2
    real = dt.dtype

    def term(k):
        theta = (2 * math.pi / length) * k.astype(real)  # (q,): one chunk of the frequencies
        s, c = jnp.sin(theta / 2), jnp.cos(theta / 2)
        inv = 1 / (1j * s - c * dtL[..., None])  # (h, m, q)
        inv_conj = 1 / (1j * s - c * dtL.conj()[..., None])
        h = jnp.einsum("hijm,hmq->hijq", W, inv) + jnp.einsum("hijm,hmq->hijq", W.conj(), inv_conj)
        g = (c * dt[:, None] / 2)  # (h, q)
        h_CB, h_Cp, h_pB, h_pp = h[:, 0, 0], h[:, 0, 1:], h[:, 1:, 0], h[:, 1:, 1:]
        if rank == 1:
            corr = h_Cp[:, 0] * h_pB[:, 0] / (1 + g * h_pp[:, 0, 0])
        else:
            eye = jnp.eye(rank, dtype=h.dtype)
            M = eye + jnp.einsum("hq,hijq->hqij", g, h_pp)  # (h, q, r, r)
            sol = solve(M, jnp.moveaxis(h_pB, 1, -1))  # (h, q, r)
            corr = jnp.einsum("hrq,hqr->hq", h_Cp, sol)
        return dt[:, None] * jnp.exp(0.5j * theta) / 2 * (h_CB - g * corr)

    return _sum_in_chunks(term, length // 2 + 1, chunk)


def dplr_kernel(Lambda: _Modes, P: _LowRank, B: _Modes, C: _Modes, dt: _Steps, length: int, *,
                c_tilde: bool = False, chunk: int = CHUNK) -> _Kernel:
    """S4 convolution kernel of a bilinear DPLR system.

    The system is the conjugate-completed one: state matrix
    ``diag(Lambda, conj Lambda) - p p^*`` with ``p = [P, conj P]``, input
    ``[B, conj B]``, output ``[C, conj C]``; ``K[l] = C Abar^l Bbar``. With P = 0
    this equals :func:`diagonal_kernel` (bilinear); with ``hippo.dplr("legs", N)``
    it is the kernel of the real HiPPO-LegS system.

    Args:
      Lambda, B, C: complex (H, N/2).
      P: complex (rank, N/2) shared by all channels, or (H, rank, N/2).
      dt: (H,) step sizes.
      length: kernel length L.
      c_tilde: if True, ``C`` is already S4's truncated ``C~ = C (I - Abar^L)``
        (how the S4 layer stores it) and no matrix power is needed; otherwise
        ``C~`` is computed here in O(H N^3 log L).
      chunk: frequencies evaluated at once in :func:`cauchy_woodbury`.

    Returns:
      Real (H, L): float32 (float64 for 64-bit inputs under x64).

    Gu, Goel & Re (2022), "Efficiently Modeling Long Sequences with Structured State
    Spaces", Algorithm 1: truncated generating function at the roots of unity, Cauchy
    kernel and Woodbury identity (:func:`cauchy_woodbury`), inverse FFT.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm import hippo, kernels
      >>> Lambda, P, B, _ = hippo.dplr("legs", 8)  # N = 8: N/2 = 4 modes; P per channel, rank 1
      >>> Lambda, B = (jnp.asarray(np.broadcast_to(x, (4, 4)), jnp.complex64) for x in (Lambda, B))
      >>> P, dt = jnp.asarray(np.broadcast_to(P, (4, 1, 4)), jnp.complex64), jnp.array([0.1, 0.05, 0.02, 0.01])
      >>> rng = np.random.default_rng(0)
      >>> C = jnp.asarray(rng.normal(size=(4, 4)) + 1j * rng.normal(size=(4, 4)), jnp.complex64)
      >>> K = kernels.dplr_kernel(Lambda, P, B, C, dt, 16)
      >>> Abar, Bbar = kernels.discretize_dplr(Lambda, P, B, dt)  # dense: K[l] = C Abar^l Bbar
      >>> C_full = jnp.concatenate([C, C.conj()], -1)
      >>> x, naive = Bbar, []
      >>> for l in range(16):
      ...     naive.append(jnp.einsum("hn,hn->h", C_full, x).real)
      ...     x = jnp.einsum("hij,hj->hi", Abar, x)
      >>> K.shape, bool(jnp.allclose(K, jnp.stack(naive, -1), atol=1e-4))
      ((4, 16), True)
    """
    H = _check_channels(Lambda=Lambda, B=B, C=C)
    _check_dt(dt, H)
    if P.ndim not in (2, 3) or P.shape[-1] != Lambda.shape[-1] or (P.ndim == 3 and P.shape[0] != H):
        raise ValueError(f"P has shape {P.shape}; expected (rank, {Lambda.shape[-1]}) "
                         f"or ({H}, rank, {Lambda.shape[-1]})")
    length = _check_length(length)
    dtype = _complex_dtype(Lambda, P, B, C, dt)
    Lambda, P, B, C = (jnp.asarray(x, dtype) for x in (Lambda, P, B, C))
    dt = jnp.asarray(dt, jnp.finfo(dtype).dtype)
    if not c_tilde:
        C = truncate_output(Lambda, P, B, C, dt, length)
    spectrum = cauchy_woodbury(Lambda, P, B, C, dt, length, chunk=chunk)
    return jnp.fft.irfft(spectrum, n=length, axis=-1)


# ------------------------------------------------------------------------ convolution


def fft_length(n: int) -> int:
    """Smallest 5-smooth integer (2^a 3^b 5^c) >= n: FFT-friendly, at most ~1.2 n.

    A prime length is several times slower in the FFT (measured 58 ms at 8191 vs
    3.5-7 ms at 8000/8192 on CPU).

    Args:
      n: a positive int.

    Returns:
      An int ``m >= n`` of the form 2^a 3^b 5^c.

    Example:
      >>> from ssm.kernels import fft_length
      >>> fft_length(7), fft_length(1000), fft_length(8191)
      (8, 1000, 8192)
    """
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def fft_conv(u: Float[ArrayLike, "batch length channels"], K: Float[ArrayLike, "channels taps"],
             K_reverse: Float[ArrayLike, "channels taps"] | None = None, *,
             reverse_lag0: bool = False) -> Float[Array, "batch length channels"]:
    """Convolve each channel of ``u`` with its kernel by FFT, without wrap-around.

    ``y[t] = sum_{0 <= l <= t} K[l] u[t - l]`` and, if ``K_reverse`` is given, also
    ``+ sum_{m >= 1} K_reverse[m - 1] u[t + m]`` (S4's bidirectional convention,
    whose reverse kernel has no lag-0 tap; safari#7). With ``reverse_lag0=True``
    the reverse kernel starts at lag 0 instead (S5's reverse scan):
    ``+ sum_{m >= 0} K_reverse[m] u[t + m]``.

    The transform runs in float32 (or the input's wider type) on a 5-smooth
    length >= 2L; the output has ``u``'s dtype.

    Args:
      u: (batch, length, H) real.
      K, K_reverse: (H, length') real, length' >= length (longer kernels are cut);
        ``K_reverse`` optional.
      reverse_lag0: the reverse kernel's first tap acts at lag 0 (see above).

    Returns:
      (batch, length, H) in ``u``'s dtype.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm.kernels import fft_conv
      >>> rng = np.random.default_rng(0)
      >>> u = jnp.asarray(rng.normal(size=(2, 16, 4)), jnp.float32)
      >>> K = jnp.asarray(rng.normal(size=(4, 16)), jnp.float32)
      >>> y = fft_conv(u, K)
      >>> y.shape, y.dtype
      ((2, 16, 4), dtype('float32'))
      >>> t = 5  # y[t] = sum_{l <= t} K[l] u[t - l]
      >>> bool(jnp.allclose(y[:, t], sum(K[:, l] * u[:, t - l] for l in range(t + 1)), atol=1e-5))
      True
    """
    if u.ndim != 3:
        raise ValueError(f"u has shape {u.shape}; expected (batch, length, H)")
    L, H = u.shape[1], u.shape[2]
    for name, k in (("K", K), ("K_reverse", K_reverse)):
        if k is not None and (k.ndim != 2 or k.shape[0] != H or k.shape[1] < L):
            raise ValueError(f"{name} has shape {k.shape}; expected ({H}, >= {L})")
    n = fft_length(2 * L)
    real = jnp.promote_types(u.dtype, jnp.float32)
    taps = jnp.zeros((H, n), real).at[:, :L].set(K[:, :L].astype(real))
    if K_reverse is not None:
        rev = K_reverse[:, :L].astype(real)
        if reverse_lag0:
            taps = taps.at[:, 0].add(rev[:, 0])
            rev = rev[:, 1:]
        else:
            rev = rev[:, : L - 1]
        if L > 1:
            taps = taps.at[:, n - rev.shape[1]:].add(rev[:, ::-1])
    u_f = jnp.fft.rfft(u.astype(real), n=n, axis=1)
    k_f = jnp.fft.rfft(taps, n=n, axis=-1).T  # (n//2+1, h): n the FFT's length here
    return jnp.fft.irfft(u_f * k_f, n=n, axis=1)[:, :L].astype(u.dtype)
