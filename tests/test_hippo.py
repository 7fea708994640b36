"""Tests for ssm.hippo: HiPPO matrices, DPLR forms, S4D inits, and HiPPO's memory.

Published values come from references.md sections 1 and 6 (state-spaces/s4).
"""

import math

import jax
import numpy as np
import pytest

import reference as ref
from ssm import hippo

DPLR_MEASURES = ("legs", "legt", "lagt", "fout")


def _sym(M):
    return (M + M.T) / 2


# ------------------------------------------------------------------- transition matrices


@pytest.mark.parametrize("N", [1, 8, 64])
def test_legs_is_lower_triangular_with_eigenvalues_minus_one_to_minus_N(N):
    A, B = hippo.transition("legs", N)
    assert A.shape == (N, N) and B.shape == (N,) and A.dtype == np.float64
    assert np.all(np.triu(A, 1) == 0)
    # Triangular: the eigenvalues are the diagonal, exactly -1..-N.
    np.testing.assert_array_equal(np.diag(A), -np.arange(1, N + 1))


@pytest.mark.parametrize("measure", DPLR_MEASURES)
def test_rank_correction_makes_A_normal_with_the_published_symmetric_part(measure):
    """A + P^T P = -I/2 + skew for LegS, and exactly skew for LegT, LagT, FouT."""
    for N in (2, 8, 64):
        A, _ = hippo.transition(measure, N)
        P = hippo.rank_correction(measure, N)
        AP = A + P.T @ P
        expected = -0.5 * np.eye(N) if measure == "legs" else np.zeros((N, N))
        np.testing.assert_allclose(_sym(AP), expected, atol=1e-13 * max(1, np.abs(A).max()))
        assert P.shape == (hippo._MIN_RANK[measure], N)


def test_rank_correction_pads_a_larger_rank_with_zero_rows():
    P = hippo.rank_correction("legs", 8, rank=3)
    assert P.shape == (3, 8)
    np.testing.assert_array_equal(P[0], hippo.rank_correction("legs", 8)[0])
    assert np.all(P[1:] == 0)


def test_legs_B_is_sqrt2_times_P():
    A, B = hippo.transition("legs", 32)
    np.testing.assert_allclose(B, math.sqrt(2) * hippo.rank_correction("legs", 32)[0], rtol=1e-15)


def test_lmu_is_a_similarity_transform_of_unhalved_legt():
    """LMU = T (2 A_legt) T^-1 and B_lmu = T (2 B_legt), T = diag((-1)^n sqrt(2n+1))."""
    for N in (1, 5, 32):
        A_legt, B_legt = hippo.transition("legt", N)
        A_lmu, B_lmu = hippo.transition("lmu", N)
        n = np.arange(N)
        t = (-1.0) ** n * np.sqrt(2 * n + 1)
        np.testing.assert_allclose(A_lmu, t[:, None] * (2 * A_legt) / t[None, :], rtol=1e-14, atol=1e-12)
        np.testing.assert_allclose(B_lmu, t * (2 * B_legt), rtol=1e-14)


def test_lagt_and_fout_match_the_published_formulas():
    A, B = hippo.transition("lagt", 4)
    np.testing.assert_array_equal(A, 0.5 * np.eye(4) - np.tril(np.ones((4, 4))))
    np.testing.assert_array_equal(B, np.ones(4))
    A, B = hippo.transition("fout", 6)
    np.testing.assert_allclose(B, [1, 0, math.sqrt(2), 0, math.sqrt(2), 0])
    # Frequency k couples states (2k, 2k+1) with +-pi k; the rest is -B B^T.
    S = A + np.outer(B, B)
    expected = np.zeros((6, 6))
    for k in (1, 2):
        expected[2 * k + 1, 2 * k], expected[2 * k, 2 * k + 1] = np.pi * k, -np.pi * k
    np.testing.assert_allclose(S, expected, atol=1e-15)


# ------------------------------------------------------------------------------- DPLR


@pytest.mark.parametrize("measure", DPLR_MEASURES)
def test_dplr_reconstructs_A_and_B_with_a_unitary_conjugate_basis(measure):
    """A = W (diag(Lambda, conj Lambda) - sum_r p_r p_r^*) W^*, B = W [Bt; conj Bt],
    with W = [V, conj V] unitary, to 1e-10 in float64 (FouT: its zero pair too)."""
    for N in (2, 8, 16, 64):
        A, B = hippo.transition(measure, N)
        Lambda, P, Bt, V = hippo.dplr(measure, N)
        half = N // 2
        assert Lambda.shape == (half,) and Bt.shape == (half,) and V.shape == (N, half)
        assert P.shape == (hippo._MIN_RANK[measure], half)
        W = np.concatenate([V, V.conj()], axis=1)
        np.testing.assert_allclose(W.conj().T @ W, np.eye(N), atol=1e-12)
        A_half, B_full, _ = ref.conjugate_completed(Lambda, P, Bt, np.zeros(half))
        A_rec = W @ A_half @ W.conj().T
        scale = np.abs(A).max()
        err_A = np.abs(A_rec - A).max() / scale
        err_B = np.abs(W @ B_full - B).max() / np.abs(B).max()
        assert err_A < 1e-10, (N, err_A)
        assert err_B < 1e-10, (N, err_B)
        assert np.all(Lambda.imag <= 1e-12)
        expected_re = -0.5 if measure == "legs" else 0.0
        np.testing.assert_allclose(Lambda.real, expected_re, atol=1e-12)


def test_dplr_legs_spectrum_matches_published_values():
    Lambda, _, B, _ = hippo.dplr("legs", 64)
    np.testing.assert_allclose(Lambda.real, -0.5, atol=1e-12)
    mag = np.sort(np.abs(Lambda.imag))[::-1]
    assert round(mag[-1], 4) == 0.2639
    np.testing.assert_allclose(mag[:3], [1303.27, 433.03, 258.15], atol=0.005)
    print(f"\nLegS N=64: |Im Lambda| in [{mag[-1]:.4f}, {mag[0]:.2f}], max |Im Bt| {np.abs(B.imag).max():.1f}")


def test_b_clip_clips_only_the_imaginary_part_of_B():
    L0, P0, B0, V0 = hippo.dplr("legs", 64)
    L1, P1, B1, V1 = hippo.dplr("legs", 64, b_clip=2.0)
    # Published: 34% of Im(V* B) exceed 2, max 40.8.
    frac = np.mean(np.abs(B0.imag) > 2)
    assert abs(frac - 0.34) < 0.01 and round(np.abs(B0.imag).max(), 1) == 40.8
    np.testing.assert_array_equal(B1.real, B0.real)
    np.testing.assert_array_equal(B1.imag, np.clip(B0.imag, -2, 2))
    for a, b in ((L0, L1), (P0, P1), (V0, V1)):
        np.testing.assert_array_equal(a, b)
    _, B_s4d = hippo.s4d_init("legs", 64, b_clip=2.0)
    np.testing.assert_array_equal(B_s4d, B1)


# --------------------------------------------------------------------------- S4D inits


def test_s4d_init_values_match_published_formulas():
    N = 64
    n = np.arange(N // 2)
    inits = {kind: hippo.s4d_init(kind, N) for kind in hippo.S4D_INITS}
    for kind, (Lambda, B) in inits.items():
        assert Lambda.shape == B.shape == (N // 2,)
        assert np.all(Lambda.real < 0) and np.all(Lambda.imag <= 0), kind
    Lam, B = inits["inv"]
    np.testing.assert_allclose(-Lam.imag[:3], [1283.4, 414.2, 240.4], atol=0.05)
    assert round(-Lam.imag[-1], 3) == 0.323
    np.testing.assert_array_equal(Lam.real, -0.5)
    np.testing.assert_array_equal(B, 1)
    Lam, _ = inits["lin"]
    np.testing.assert_allclose(Lam, -0.5 - 1j * np.pi * n, rtol=1e-15)
    Lam, B = inits["real"]
    np.testing.assert_array_equal(Lam, -(1.0 + n))
    np.testing.assert_array_equal(B, 1)
    Lam, B = inits["legs"]
    L_dplr, _, B_dplr, _ = hippo.dplr("legs", N)
    np.testing.assert_array_equal(Lam.imag, L_dplr.imag)  # imag = -Im Lambda_dplr, negated
    np.testing.assert_allclose(Lam.real, L_dplr.real, atol=1e-14)  # -1/2
    np.testing.assert_array_equal(B, B_dplr)


def test_log_dt_init_is_log_uniform_within_range():
    dt_min, dt_max = 1e-3, 1e-1
    log_dt = np.asarray(hippo.log_dt_init(jax.random.key(0), (8192,), dt_min, dt_max))
    lo, hi = math.log(dt_min), math.log(dt_max)
    assert log_dt.shape == (8192,)
    assert log_dt.min() >= lo and log_dt.max() <= hi
    # Uniform in log: four equal log-bins hold a quarter each (binomial sd 0.005).
    counts = np.histogram(log_dt, bins=4, range=(lo, hi))[0] / log_dt.size
    np.testing.assert_allclose(counts, 0.25, atol=0.025)
    assert hippo.log_dt_init(jax.random.key(1), (2, 3)).shape == (2, 3)
    same = hippo.log_dt_init(jax.random.key(1), (3,), 1e-2, 1e-2)
    np.testing.assert_allclose(same, math.log(1e-2), rtol=1e-6)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: hippo.transition("legx", 8), "measure='legx'"),
        (lambda: hippo.dplr("lmu", 8), "measure='lmu'"),
        (lambda: hippo.rank_correction("legz", 8), "measure='legz'"),
        (lambda: hippo.transition("fout", 7), "N=7"),
        (lambda: hippo.dplr("legs", 7), "N=7"),
        (lambda: hippo.s4d_init("inv", 7), "N=7"),
        (lambda: hippo.transition("legs", 0), "N=0"),
        (lambda: hippo.transition("legs", -4), "N=-4"),
        (lambda: hippo.transition("legs", 4.0), "N=4.0"),
        (lambda: hippo.rank_correction("legt", 8, rank=1), "rank=1"),
        (lambda: hippo.dplr("legs", 8, rank=0), "rank=0"),
        (lambda: hippo.dplr("legs", 8, b_clip=0.0), "b_clip=0.0"),
        (lambda: hippo.s4d_init("foo", 8), "kind='foo'"),
        (lambda: hippo.log_dt_init(jax.random.key(0), (3,), 0.1, 0.01), r"dt range \(0.1, 0.01\).*dt_min"),
        (lambda: hippo.log_dt_init(jax.random.key(0), (3,), 0.0, 0.1), r"dt range \(0.0, 0.1\)"),
    ],
    ids=["measure", "lmu has no DPLR", "rank_correction measure", "fout odd N", "dplr odd N",
         "s4d odd N", "N zero", "N negative", "N float", "rank too small", "rank zero",
         "b_clip zero", "s4d kind", "dt range reversed", "dt_min zero"],
)
def test_bad_input_raises_value_error_naming_argument_and_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ------------------------------------------------------- HiPPO online approximation


def _smooth_signal(rng, t):
    """Sum of six sines of frequency <= 5 (one at 5) with random amplitudes in
    +-[0.5, 1] and zero phase, so f(0) = 0.

    Why f(0) = 0: S4's LegS recurrence (A/(k+1) from c = 0) acts as if the history
    began with half a step of zeros. A jump there, f(0) != 0, rings through every
    Legendre coefficient (~f(0) sqrt(2n+1)/(2T)) and dominates the RMSE near s = 0.
    """
    freq = rng.uniform(0, 5, 6)
    freq[0] = 5.0
    amp = rng.uniform(0.5, 1, 6) * rng.choice([-1.0, 1.0], 6)
    return np.sin(2 * np.pi * t[:, None] * freq) @ amp


def test_hippo_legs_state_reconstructs_the_whole_history(rng):
    """Scale-invariant LegS over 4000 samples on [0, 1]; the final state gives
    f(s) ~ sum_n c_n sqrt(2n+1) P_n(2s-1) on all of [0, 1]."""
    T = 4000
    t = (np.arange(T) + 0.5) / T
    f = _smooth_signal(rng, t)
    rmse = {}
    for N in (16, 32, 64):
        A, B = hippo.transition("legs", N)
        c = ref.hippo_legs_online(f, A, B)
        rmse[N] = np.sqrt(np.mean((ref.legendre_basis(N, 2 * t - 1) @ c - f) ** 2))
    print(f"\nLegS history RMSE (signal rms {np.sqrt(np.mean(f**2)):.2f}): "
          + ", ".join(f"N={N}: {e:.2e}" for N, e in rmse.items()))
    assert rmse[32] < 1e-2
    assert rmse[32] < 0.5 * rmse[16]
    # N=64 is not asserted: the bilinear discretization error dominates there.


def test_hippo_legt_state_reconstructs_the_last_window(rng):
    """Un-halved LegT (2x S4's), window theta = 0.5, 4000 samples on [0, 1]. The
    basis is sqrt(2n+1) P_n(2u-1) with u = (s - (t - theta))/theta in [0, 1]
    (u = 1 is now); in delay form r = 1 - u it is sqrt(2n+1) (-1)^n P_n(2r-1)."""
    T, theta = 4000, 0.5
    t = (np.arange(T) + 0.5) / T
    f = _smooth_signal(rng, t)
    window = t > 1 - theta
    u = (t[window] - (1 - theta)) / theta
    rmse = {}
    for N in (16, 32, 64):
        A, B = hippo.transition("legt", N)
        c = ref.hippo_legt_online(f, 2 * A, 2 * B, step=1 / (T * theta))
        rmse[N] = np.sqrt(np.mean((ref.legendre_basis(N, 2 * u - 1) @ c - f[window]) ** 2))
    print("\nLegT window RMSE: " + ", ".join(f"N={N}: {e:.2e}" for N, e in rmse.items()))
    assert rmse[32] < 2e-2
    # The other orientation is wrong by O(1): the test pins the direction.
    flipped = ref.legendre_basis(32, 1 - 2 * u) @ ref.hippo_legt_online(
        f, *(2 * x for x in hippo.transition("legt", 32)), step=1 / (T * theta))
    assert np.sqrt(np.mean((flipped - f[window]) ** 2)) > 0.1
