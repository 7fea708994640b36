"""Naive float64 references the tests compare the library against.

Written for clarity, never for speed, and independent of the library's
algorithms: dense matrices, explicit powers, Python loops over time. NumPy only.

Shapes follow the library's notation where it matters: ``N`` is the full state
size, ``L`` a length. Everything here works on a single channel; tests loop over
channels.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.polynomial import legendre

# ----------------------------------------------------------------- matrix exponential


def expm(M: np.ndarray) -> np.ndarray:
    """``exp(M)`` by scaling and squaring of a Taylor series (real or complex).

    Scale ``M`` by ``2^-s`` so that its 1-norm is at most 1/2, sum 20 Taylor terms
    (the remainder is below 0.5^21 / 21! ~ 1e-26), then square ``s`` times.
    Products are einsums (no threaded BLAS; see ``kernel_by_powers``).
    """
    M = np.asarray(M)
    norm = np.abs(M).sum(axis=0).max()
    s = max(0, math.ceil(math.log2(norm)) + 1) if norm > 0 else 0
    X = M / 2.0**s
    term = np.eye(M.shape[0], dtype=M.dtype)
    out = term.copy()
    for k in range(1, 21):
        term = np.einsum("ij,jk->ik", term, X) / k
        out = out + term
    for _ in range(s):
        out = np.einsum("ij,jk->ik", out, out)
    return out


# -------------------------------------------------------------------- discretization


def discretize_zoh(A: np.ndarray, B: np.ndarray, dt: float):
    """Zero-order hold of ``x' = A x + B u`` (A (N, N), B (N,)):
    ``Abar = exp(dt A)``, ``Bbar = int_0^dt exp(s A) ds B``.

    Both come from one exponential of the augmented matrix
    ``[[A, B], [0, 0]] dt`` (Van Loan), so A need not be invertible.
    """
    N = A.shape[0]
    dtype = np.result_type(A, B, np.float64)
    aug = np.zeros((N + 1, N + 1), dtype=dtype)
    aug[:N, :N] = A
    aug[:N, N] = B
    E = expm(aug * dt)
    return E[:N, :N].copy(), E[:N, N].copy()


def discretize_bilinear(A: np.ndarray, B: np.ndarray, dt: float):
    """Bilinear (Tustin): ``Abar = (I - dt A/2)^-1 (I + dt A/2)``,
    ``Bbar = (I - dt A/2)^-1 dt B``."""
    eye = np.eye(A.shape[0])
    left = eye - dt * A / 2
    return np.linalg.solve(left, eye + dt * A / 2), np.linalg.solve(left, dt * B)


def discretize(A, B, dt, discretization: str):
    return {"zoh": discretize_zoh, "bilinear": discretize_bilinear}[discretization](A, B, dt)


# ------------------------------------------------------------- conjugate completion


def conjugate_completed(Lambda, P, B, C):
    """Dense N-dimensional system of one channel's DPLR (or diagonal) half.

    ``A = diag(Lambda, conj Lambda) - sum_r p_r p_r^*`` with ``p_r = [P_r, conj P_r]``,
    ``B = [B, conj B]``, ``C = [C, conj C]``. ``P`` is (rank, N/2), or None for a
    diagonal system.
    """
    lam = np.concatenate([Lambda, np.conj(Lambda)])
    A = np.diag(lam).astype(complex)
    if P is not None:
        for p_half in np.atleast_2d(P):
            p = np.concatenate([p_half, np.conj(p_half)])
            A = A - np.outer(p, np.conj(p))
    return A, np.concatenate([B, np.conj(B)]), np.concatenate([C, np.conj(C)])


# --------------------------------------------------------------- kernel, convolution


def kernel_by_powers(Abar, Bbar, C, length: int) -> np.ndarray:
    """``K[l] = C Abar^l Bbar`` for l < length, one matrix-vector product per step.

    Stops once the state has decayed below 1e-250 of the input (the rest of K is
    then zero to far below any tolerance): carrying on would only grind through
    subnormal numbers, which are ~100x slower on x86. The product is an einsum,
    not ``@``: a multithreaded BLAS matrix-vector product of this size is up to
    100x slower when the cores are busy (pytest -n 2).
    """
    K = np.zeros(length, dtype=np.result_type(Abar, Bbar, C))
    x = Bbar
    floor = 1e-250 * np.abs(Bbar).max()
    for l in range(length):
        K[l] = np.sum(C * x)
        x = np.einsum("ij,j->i", Abar, x)
        if np.abs(x).max() < floor:
            break
    return K


def ssm_kernel(Lambda, P, B, C, dt, length, discretization="bilinear"):
    """Real kernels (H, length) of H channels' conjugate-completed systems.

    Lambda, B, C (H, N/2); P None (diagonal), (rank, N/2) shared, or (H, rank, N/2);
    dt (H,). Each channel is completed, discretized densely and powered.
    """
    K = []
    for h in range(len(dt)):
        P_h = None if P is None else (P if np.ndim(P) == 2 else P[h])
        A, Bf, Cf = conjugate_completed(Lambda[h], P_h, B[h], C[h])
        Abar, Bbar = discretize(A, Bf, float(dt[h]), discretization)
        K.append(kernel_by_powers(Abar, Bbar, Cf, length))
    K = np.stack(K)
    assert np.abs(K.imag).max() <= 1e-8 * max(1.0, np.abs(K).max()), "conjugate completion broke"
    return K.real


def causal_conv(u: np.ndarray, K: np.ndarray) -> np.ndarray:
    """``y[t] = sum_{l=0}^{t} K[l] u[t-l]`` for u (L,), K (>= L,), directly."""
    L = len(u)
    y = np.zeros(L)
    for t in range(L):
        for l in range(t + 1):
            y[t] += K[l] * u[t - l]
    return y


def anticausal_conv(u: np.ndarray, K: np.ndarray, lag0: bool) -> np.ndarray:
    """``y[t] = sum_{m >= 1} K[m-1] u[t+m]`` (S4's reverse kernel, no lag 0),
    or ``sum_{m >= 0} K[m] u[t+m]`` if ``lag0``."""
    L = len(u)
    y = np.zeros(L)
    for t in range(L):
        for m in range(0 if lag0 else 1, L - t):
            y[t] += K[m if lag0 else m - 1] * u[t + m]
    return y


def recurrence(Abar, Bbar, C, u: np.ndarray) -> np.ndarray:
    """``x_t = Abar x_{t-1} + Bbar u_t`` from ``x_{-1} = 0``; ``y_t = C x_t``
    (the update comes first, so y_0 = C Bbar u_0)."""
    x = np.zeros(Abar.shape[0], dtype=np.result_type(Abar, Bbar))
    y = np.zeros(len(u), dtype=np.result_type(x, C))
    for t in range(len(u)):
        x = np.einsum("ij,j->i", Abar, x) + Bbar * u[t]
        y[t] = np.sum(C * x)
    return y


def smooth_number(n: int) -> int:
    """Smallest m >= n whose only prime factors are 2, 3 and 5."""
    m = max(n, 1)
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


# --------------------------------------------------- HiPPO online function approximation


def legendre_basis(N: int, x: np.ndarray) -> np.ndarray:
    """``sqrt(2n+1) P_n(x)`` for n < N at points x: (len(x), N)."""
    return np.stack(
        [math.sqrt(2 * n + 1) * legendre.legval(x, np.eye(N)[n]) for n in range(N)], axis=-1
    )


def hippo_legs_online(f: np.ndarray, A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Scale-invariant HiPPO-LegS, ``c'(t) = (A c + B f) / t``, over samples f (T,).

    Step k (0-based) is bilinear with ``A/(k+1)``, ``B/(k+1)`` from ``c = 0``, as in
    S4's ``HiPPOScale``. The final state holds Legendre coefficients of the whole
    history: ``f(s T) ~ sum_n c_n sqrt(2n+1) P_n(2s - 1)`` for s in [0, 1].
    """
    N = len(B)
    eye = np.eye(N)
    c = np.zeros(N)
    for k, fk in enumerate(f):
        a, b = A / (k + 1), B / (k + 1)
        c = np.linalg.solve(eye - a / 2, np.einsum("ij,j->i", eye + a / 2, c) + b * fk)
    return c


def hippo_legt_online(f: np.ndarray, A: np.ndarray, B: np.ndarray, step: float) -> np.ndarray:
    """Translated HiPPO-LegT, ``c'(t) = (A c + B f) / theta``, bilinear with
    ``step = dt / theta`` over samples f (T,), from ``c = 0``. Returns the final
    state (N,): coefficients of the last window ``[t - theta, t]``."""
    Abar, Bbar = discretize_bilinear(A, B, step)
    c = np.zeros(len(B))
    for fk in f:
        c = np.einsum("ij,j->i", Abar, c) + Bbar * fk
    return c
