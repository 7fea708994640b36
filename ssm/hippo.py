"""HiPPO transition matrices, their normal-plus-low-rank corrections, the DPLR
(diagonal plus low rank) form used by S4, and the S4D diagonal initializations.

Everything here runs on the host in NumPy float64: the eigendecompositions are
ill-conditioned in float32 and ``eig`` has no TPU kernel. The results are constants
that layers copy into their parameters at construction.

Conventions are those of the S4 reference implementation (state-spaces/s4,
``src/models/hippo/hippo.py``): ``A`` is the state matrix of ``x' = A x + B u``
(already negated, so stable measures have eigenvalues with negative real part),
indices are 0-based, and ``N`` is the full (real) state size.

=========  ==========================================  ============================
measure    paper                                       ``A + P P^T``
=========  ==========================================  ============================
legs       HiPPO-LegS (scaled Legendre)                ``-I/2`` + skew (rank 1)
legt       HiPPO-LegT (translated), halved as in S4    skew (rank 2)
lmu        Legendre Memory Unit                        (similar to un-halved legt)
lagt       translated Laguerre                         skew (rank 1)
fout       translated Fourier                          skew (rank 1, ``P = B``)
=========  ==========================================  ============================

HiPPO: Gu, Dao, Ermon, Rudra & Re (2020), "HiPPO: Recurrent Memory with Optimal
Polynomial Projections"; the DPLR form: Gu, Goel & Re (2022), "Efficiently Modeling Long
Sequences with Structured State Spaces" (S4); the diagonal initializations: Gu, Gupta,
Goel & Re (2022), "On the Parameterization and Initialization of Diagonal State Space
Models" (S4D).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from ssm.checks import check_choice, check_positive_int

__all__ = ["MEASURES", "S4D_INITS", "transition", "rank_correction", "dplr", "s4d_init", "log_dt_init"]

Measure = Literal["legs", "legt", "lmu", "lagt", "fout"]
#: The measures :func:`transition` knows (the table above).
MEASURES: tuple[str, ...] = ("legs", "legt", "lmu", "lagt", "fout")
#: The ``kind`` options of :func:`s4d_init`.
S4D_INITS: tuple[str, ...] = ("lin", "inv", "legs", "real")

# Smallest correction rank for which A + sum_r P_r P_r^T is normal.
_MIN_RANK = {"legs": 1, "legt": 2, "lagt": 1, "fout": 1}


def _check_measure(measure: str, allowed: tuple[str, ...] = MEASURES) -> None:
    check_choice("measure", measure, allowed)


def _check_size(N: int, *, even: bool = False, name: str = "N") -> None:
    check_positive_int(name, N)
    if even and N % 2:
        raise ValueError(f"{name}={N} must be even: the state is kept as N/2 conjugate pairs")


def transition(measure: Measure, N: int) -> tuple[np.ndarray, np.ndarray]:
    """HiPPO state matrices for ``x'(t) = A x(t) + B u(t)``.

    The continuous-time systems of Gu et al. (2020), "HiPPO: Recurrent Memory with
    Optimal Polynomial Projections" (LegS: ``A[n, k] = -sqrt(2n+1) sqrt(2k+1)``
    below the diagonal, ``-(n+1)`` on it, ``B[n] = sqrt(2n+1)``), in the conventions of S4's
    ``transition``. ``legt`` is halved as in S4 (its eigenvalues then match the time
    scale of the other measures); multiply both by 2 for the HiPPO paper's LegT.
    ``lmu`` is the Legendre Memory Unit of Voelker et al. (2019), a similarity transform
    of the un-halved LegT by ``T = diag((-1)^n sqrt(2n+1))``.

    Args:
      measure: one of ``"legs"``, ``"legt"``, ``"lmu"``, ``"lagt"``, ``"fout"``.
      N: state size (even for ``"fout"``).

    Returns:
      ``(A, B)``: float64 NumPy arrays of shape (N, N) and (N,).

    Example:
      >>> from ssm import hippo
      >>> A, B = hippo.transition("legs", 4)
      >>> A.shape, B.shape, A.dtype
      ((4, 4), (4,), dtype('float64'))
      >>> A[:, 0].round(3), B.round(3)
      (array([-1.   , -1.732, -2.236, -2.646]), array([1.   , 1.732, 2.236, 2.646]))
    """
    _check_measure(measure)
    _check_size(N, even=(measure == "fout"))
    n = np.arange(N, dtype=np.float64)
    row, col = n[:, None], n[None, :]
    r = np.sqrt(2 * n + 1)
    if measure == "legs":
        A = -np.where(row > col, r[:, None] * r[None, :], 0.0) - np.diag(n + 1)
        B = r.copy()
    elif measure == "legt":
        sign = np.where(row >= col, 1.0, (-1.0) ** (row - col))
        A = -0.5 * r[:, None] * sign * r[None, :]
        B = 0.5 * r
    elif measure == "lmu":
        sign = np.where(row < col, -1.0, (-1.0) ** (row - col + 1))
        A = (2 * n + 1)[:, None] * sign
        B = (-1.0) ** n * (2 * n + 1)
    elif measure == "lagt":
        A = 0.5 * np.eye(N) - np.tril(np.ones((N, N)))
        B = np.ones(N)
    else:  # fout
        freqs = np.arange(N // 2, dtype=np.float64)
        d = np.stack([np.zeros(N // 2), freqs], axis=-1).reshape(-1)[1:]
        B = np.zeros(N)
        B[0::2] = math.sqrt(2.0)
        B[0] = 1.0
        A = np.pi * (-np.diag(d, 1) + np.diag(d, -1)) - np.outer(B, B)
    return A, B


def rank_correction(measure: Measure, N: int, rank: int | None = None) -> np.ndarray:
    """Low-rank term ``P`` (rank, N) with ``A + sum_r P_r P_r^T`` normal (S4's
    ``rank_correction``; Gu, Goel & Re, 2022, Theorem 1: every HiPPO matrix is normal
    plus low rank).

    Args:
      measure: ``"legs"``, ``"legt"``, ``"lagt"`` or ``"fout"`` (``"lmu"`` has no
        correction).
      N: state size (even for ``"fout"``).
      rank: ``None`` takes the smallest rank that works for the measure (2 for
        ``"legt"``, else 1); a larger rank pads with zero rows (extra trainable capacity
        in S4).

    Returns:
      ``P``: float64 (rank, N).

    Example:
      >>> import numpy as np
      >>> from ssm import hippo
      >>> A, _ = hippo.transition("legs", 6)
      >>> P = hippo.rank_correction("legs", 6)
      >>> P.shape
      (1, 6)
      >>> S = A + P.T @ P + np.eye(6) / 2  # skew-symmetric: A + P^T P = -I/2 + S
      >>> bool(np.allclose(S, -S.T))
      True
    """
    _check_measure(measure, tuple(_MIN_RANK))
    _check_size(N, even=(measure == "fout"))
    need = _MIN_RANK[measure]
    rank = need if rank is None else rank
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < need:
        raise ValueError(f"rank={rank!r} for measure={measure!r} must be an integer >= {need}")
    n = np.arange(N, dtype=np.float64)
    if measure == "legs":
        P = np.sqrt(n + 0.5)[None]
    elif measure == "legt":
        r = np.sqrt(2 * n + 1) / math.sqrt(2.0)
        P = np.stack([np.where(n % 2 == 1, r, 0.0), np.where(n % 2 == 0, r, 0.0)])
    elif measure == "lagt":
        P = np.full((1, N), math.sqrt(0.5))
    else:  # fout: P = B
        P = transition("fout", N)[1][None]
    return np.concatenate([P, np.zeros((rank - P.shape[0], N))], axis=0)


def dplr(
    measure: Measure, N: int, rank: int | None = None, b_clip: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Diagonal-plus-low-rank form of a HiPPO matrix (S4's ``nplr``; Gu, Goel & Re,
    2022, "Efficiently Modeling Long Sequences with Structured State Spaces", Theorem 1
    and Section 3.2).

    Over the conjugate-completed basis ``W = [V, conj V]`` (unitary, N x N),
    ``A = W (diag(Lambda, conj Lambda) - p p^*) W^*`` with ``p = [P^T; conj P^T]``,
    and ``B = W [Bt; conj Bt]``. Only the half with ``Im Lambda <= 0`` is returned.

    Args:
      measure: ``"legs"``, ``"legt"``, ``"lagt"`` or ``"fout"``.
      N: full (even) state size.
      rank: correction rank (default: the smallest that works).
      b_clip: if set, clip ``Im Bt`` to ``[-b_clip, b_clip]``. Off by default here, so
        that ``B = W [Bt; conj Bt]`` holds exactly; the S4 reference's ``nplr`` clips at
        2.0 by default (for LegS at N=64 that changes the initial kernel by ~67%), and
        so do the layers :class:`~ssm.layers.S4` and :class:`~ssm.layers.S4D`. What
        the clip moves depends on the phase of each column of ``V``, which ``eigh``
        leaves to LAPACK's convention, here as in the reference.

    Returns:
      ``(Lambda, P, B, V)``, complex128 NumPy arrays: ``Lambda`` (N/2,), ``P``
      (rank, N/2), ``B`` (N/2,), ``V`` (N, N/2) with orthonormal columns.

    Example:
      >>> import numpy as np
      >>> from ssm import hippo
      >>> Lambda, P, B, V = hippo.dplr("legs", 8)
      >>> Lambda.shape, P.shape, B.shape, V.shape
      ((4,), (1, 4), (4,), (8, 4))
      >>> Lambda.real  # LegS: every eigenvalue of A + P^T P has real part -1/2
      array([-0.5, -0.5, -0.5, -0.5])
      >>> W = np.concatenate([V, V.conj()], 1)
      >>> p = np.concatenate([P, P.conj()], 1).T  # (N, rank)
      >>> A = W @ (np.diag(np.concatenate([Lambda, Lambda.conj()])) - p @ p.conj().T) @ W.conj().T
      >>> bool(np.allclose(A, hippo.transition("legs", 8)[0]))
      True
    """
    _check_size(N, even=True)
    A, B = transition(measure, N)
    P = rank_correction(measure, N, rank)
    AP = A + P.T @ P
    # AP = c I + S with S skew: Re Lambda = c, and -i S is Hermitian, so eigh
    # gives Im Lambda and orthonormal eigenvectors stably.
    re = np.mean(np.diag(AP))
    im, V = np.linalg.eigh(-1j * (AP - re * np.eye(N)))
    order = np.argsort(im, kind="stable")
    im, V = im[order], V[:, order]
    if np.sum(np.abs(im) < 1e-6) > 2:
        raise ValueError(f"measure={measure!r} has more than one zero eigenvalue pair")
    if abs(im[N // 2 - 1]) < 1e-6:
        # A zero pair (FouT): eigh returns an arbitrary basis of its 2-d eigenspace.
        # The space is closed under conjugation; take a real orthonormal basis
        # (u1, u2) of it and keep v = (u1 + i u2)/sqrt(2), whose partner is conj v.
        pair = V[:, N // 2 - 1 : N // 2 + 1]
        u, _, _ = np.linalg.svd(np.concatenate([pair.real, pair.imag], axis=1))
        V[:, N // 2 - 1] = (u[:, 0] + 1j * u[:, 1]) / math.sqrt(2.0)
    Lambda = re + 1j * im[: N // 2]
    V = V[:, : N // 2]
    Vh = V.conj().T
    Bt = Vh @ B
    Pt = P.astype(complex) @ V.conj()  # rows: V^* P_r
    if b_clip is not None:
        if b_clip <= 0:
            raise ValueError(f"b_clip={b_clip!r} must be positive or None")
        Bt = Bt.real + 1j * np.clip(Bt.imag, -b_clip, b_clip)
    return Lambda, Pt, Bt, V


def s4d_init(kind: str, N: int, b_clip: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Diagonal state matrices of S4D (Gu et al., 2022, "On the Parameterization
    and Initialization of Diagonal State Space Models").

    ``Lambda = -real - i imag`` for n = 0..N/2-1:
      - ``"lin"``: real 1/2, imag pi n (S4D-Lin).
      - ``"inv"``: real 1/2, imag (N/pi)(N/(2n+1) - 1) (S4D-Inv).
      - ``"legs"``: the diagonal part of DPLR LegS, with its B (S4D-LegS).
      - ``"real"``: real 1+n, imag 0.

    Args:
      kind: one of :data:`S4D_INITS`: ``"lin"``, ``"inv"``, ``"legs"``, ``"real"``.
      N: full (even) state size; N/2 complex modes are returned.
      b_clip: for ``"legs"``, clip ``Im B`` as :func:`dplr` does; None (default): off.
        The S4 reference's S4D-LegS clips at 2.0, as the layer :class:`~ssm.layers.S4D`
        does by default; the other inits have ``B = 1`` and ignore it.

    Returns:
      ``(Lambda, B)``: complex128 NumPy arrays (N/2,), ``Lambda`` with ``Re < 0`` and
      ``Im <= 0``, ``B`` ones (except for ``"legs"``).

    Example:
      >>> from ssm import hippo
      >>> Lambda, B = hippo.s4d_init("lin", 8)
      >>> Lambda.round(3)
      array([-0.5+0.j   , -0.5-3.142j, -0.5-6.283j, -0.5-9.425j])
      >>> B
      array([1.+0.j, 1.+0.j, 1.+0.j, 1.+0.j])
    """
    check_choice("kind", kind, S4D_INITS)
    _check_size(N, even=True)
    n = np.arange(N // 2, dtype=np.float64)
    B = np.ones(N // 2, dtype=complex)
    real = np.full(N // 2, 0.5)
    if kind == "lin":
        imag = np.pi * n
    elif kind == "inv":
        imag = N / np.pi * (N / (2 * n + 1) - 1)
    elif kind == "legs":
        Lambda, _, B, _ = dplr("legs", N, b_clip=b_clip)
        imag = -Lambda.imag
    else:  # real
        imag = np.zeros(N // 2)
        real = 1 + n
    return -real - 1j * imag, B


def log_dt_init(key, shape, dt_min: float = 1e-3, dt_max: float = 1e-1):
    """``log(dt)`` with ``dt`` drawn log-uniformly in ``[dt_min, dt_max]`` (S4's
    step-size initialization).

    This one runs on device (it draws from a JAX key) so that layer construction
    stays traceable, e.g. under ``nnx.eval_shape``.

    Args:
      key: a ``jax.random`` key.
      shape: the output's shape, e.g. ``(H,)``: one step size per channel.
      dt_min, dt_max: the range, ``0 < dt_min <= dt_max``.

    Returns:
      A JAX array of ``shape`` (float32; float64 under x64) with values in
      ``[log dt_min, log dt_max]``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from ssm import hippo
      >>> log_dt = hippo.log_dt_init(jax.random.key(0), (3,))
      >>> log_dt.shape, log_dt.dtype
      ((3,), dtype('float32'))
      >>> bool(jnp.all((jnp.exp(log_dt) >= 1e-3) & (jnp.exp(log_dt) <= 1e-1)))
      True
    """
    import jax

    if not 0 < dt_min <= dt_max:
        raise ValueError(f"dt range ({dt_min!r}, {dt_max!r}) must satisfy 0 < dt_min <= dt_max")
    lo, hi = math.log(dt_min), math.log(dt_max)
    return jax.random.uniform(key, shape, minval=lo, maxval=hi)
