"""Tests for ssm.kernels against the naive float64 references in reference.py.

The reference kernel of every system is ``K[l] = C Abar^l Bbar`` by explicit
powers of the dense, conjugate-completed, discretized state matrix (design.md);
nothing here reuses the library's Vandermonde, Cauchy or Woodbury algebra.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference as ref
from ssm import hippo, kernels


# Jitted once per shape: eager dispatch would compile every primitive separately.
diagonal_kernel = jax.jit(kernels.diagonal_kernel, static_argnums=(4, 5))
dplr_kernel = jax.jit(kernels.dplr_kernel, static_argnums=(5,), static_argnames=("c_tilde", "chunk"))
truncate_output = jax.jit(kernels.truncate_output, static_argnums=(5,))
untruncate_output = jax.jit(kernels.untruncate_output, static_argnums=(5,))
fft_conv = jax.jit(kernels.fft_conv, static_argnames=("reverse_lag0",))


def _crandn(rng, *shape):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / math.sqrt(2)


def _rel_err(K, R):
    """Largest per-channel relative L2 error of K against R, both (H, L)."""
    K, R = np.asarray(K, np.float64), np.asarray(R, np.float64)
    return float(np.max(np.linalg.norm(K - R, axis=-1) / np.linalg.norm(R, axis=-1)))


def _ref_kernels(Lambda, P, B, C, dt, length, discretization="bilinear"):
    """Reference (H, length) kernels in float64."""
    c128 = lambda x: None if x is None else np.asarray(x, np.complex128)  # noqa: E731
    return ref.ssm_kernel(c128(Lambda), c128(P), c128(B), c128(C), np.asarray(dt, np.float64),
                          length, discretization)


def _random_diagonal(rng, H, half, spread=30.0):
    """Stable random diagonal system: Re Lambda in [-1.5, -0.05], |Im Lambda| up to `spread`."""
    Lambda = -rng.uniform(0.05, 1.5, (H, half)) + 1j * rng.uniform(-spread, spread, (H, half))
    return Lambda, _crandn(rng, H, half), _crandn(rng, H, half)


def _hippo_dplr(measure, N, H):
    """HiPPO DPLR half tiled over H channels. FouT's zero eigenvalue puts a pole of
    the Cauchy sum on the unit circle (k = 0), so it is shifted to Re = -1e-3 (S4's
    layer clamps Re Lambda <= -1e-4 for the same reason)."""
    Lambda, P, B, _ = hippo.dplr(measure, N)
    if measure == "fout":
        Lambda = Lambda - 1e-3
    return np.tile(Lambda, (H, 1)), P, np.tile(B, (H, 1))


# --------------------------------------------------------------------- discretization


def test_discretizations_match_dense_formulas(x64, rng):
    H, half = 3, 5
    Lambda, B, _ = _random_diagonal(rng, H, half)
    dt = np.array([1e-3, 0.05, 0.3])
    for name, fn in (("zoh", kernels.discretize_zoh), ("bilinear", kernels.discretize_bilinear)):
        Abar, Bbar = (np.asarray(x) for x in fn(jnp.asarray(Lambda), jnp.asarray(B), jnp.asarray(dt)))
        for h in range(H):
            A_ref, B_ref = ref.discretize(np.diag(Lambda[h]), B[h], dt[h], name)
            np.testing.assert_allclose(Abar[h], np.diag(A_ref), rtol=1e-13, err_msg=name)
            np.testing.assert_allclose(Bbar[h], B_ref, rtol=1e-12, err_msg=name)


def test_discretize_dplr_is_dense_bilinear_of_the_conjugate_completed_system(x64, rng):
    H, half, rank = 2, 4, 2
    Lambda, B, C = _random_diagonal(rng, H, half)
    P = _crandn(rng, H, rank, half)
    dt = np.array([0.01, 0.2])
    A, Bf, Cf = (np.asarray(x) for x in kernels.dplr_conjugate_completed(*map(jnp.asarray, (Lambda, P, B, C))))
    Abar, Bbar = (np.asarray(x) for x in kernels.discretize_dplr(*map(jnp.asarray, (Lambda, P, B, dt))))
    for h in range(H):
        A_ref, B_ref, C_ref = ref.conjugate_completed(Lambda[h], P[h], B[h], C[h])
        np.testing.assert_allclose(A[h], A_ref, atol=1e-14)
        np.testing.assert_array_equal(Bf[h], B_ref)
        np.testing.assert_array_equal(Cf[h], C_ref)
        Abar_ref, Bbar_ref = ref.discretize_bilinear(A_ref, B_ref, dt[h])
        np.testing.assert_allclose(Abar[h], Abar_ref, atol=1e-13)
        np.testing.assert_allclose(Bbar[h], Bbar_ref, atol=1e-13)


# ------------------------------------------------------------------ S4D (diagonal) kernel


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_diagonal_kernel_matches_naive_powers_in_float64(x64, rng, discretization):
    """Includes modes with |dt Lambda / 2| > 1 (bilinear Abar near -1, the
    negated-logarithm branch) and a ragged last block (L = 300 in blocks of 18)."""
    H, half, L = 3, 6, 300
    Lambda, B, C = _random_diagonal(rng, H, half, spread=300.0)
    dt = np.array([1e-3, 2e-2, 0.1])
    K = diagonal_kernel(*map(jnp.asarray, (Lambda, B, C, dt)), L, discretization)
    assert K.shape == (H, L) and K.dtype == jnp.float64
    err = _rel_err(K, _ref_kernels(Lambda, None, B, C, dt, L, discretization))
    print(f"\ndiagonal_kernel {discretization} float64 vs naive powers: {err:.1e}")
    assert err < 1e-10


def test_diagonal_kernel_convolution_equals_the_recurrence(x64, rng):
    """fft_conv(u, K) equals x_t = Abar x_{t-1} + Bbar u_t, y_t = 2 Re C x_t: the
    kernel's lag 0 is C Bbar (the update comes first)."""
    H, half, L = 2, 4, 50
    Lambda, B, C = _random_diagonal(rng, H, half)
    dt = np.array([0.01, 0.1])
    u = rng.standard_normal((1, L, H))
    K = diagonal_kernel(*map(jnp.asarray, (Lambda, B, C, dt)), L)
    y = np.asarray(fft_conv(jnp.asarray(u), K))
    for h in range(H):
        Abar, Bbar = ref.discretize_zoh(np.diag(Lambda[h]), B[h], dt[h])
        y_ref = 2 * ref.recurrence(Abar, Bbar, C[h], u[0, :, h]).real
        np.testing.assert_allclose(y[0, :, h], y_ref, rtol=1e-10, atol=1e-12 * np.abs(y_ref).max())


# ------------------------------------------------------------------------ S4 DPLR kernel


@pytest.mark.parametrize("measure", ["legs", "legt", "lagt", "fout"])
def test_dplr_kernel_matches_naive_powers_of_the_conjugate_completed_system(x64, rng, measure):
    """HiPPO DPLR forms (LegT: rank 2) with random C, against C Abar^l Bbar of
    diag(Lambda, conj Lambda) - p p^*, in float64 (L = 200, chunk 32)."""
    H, N, L = 3, 16, 200
    Lambda, P, B = _hippo_dplr(measure, N, H)
    C = _crandn(rng, H, N // 2)
    dt = np.array([1e-3, 1e-2, 0.1])
    K = dplr_kernel(*map(jnp.asarray, (Lambda, P, B, C, dt)), L, chunk=32)
    err = _rel_err(K, _ref_kernels(Lambda, P, B, C, dt, L))
    print(f"\ndplr_kernel {measure} (rank {P.shape[0]}) float64 vs naive powers: {err:.1e}")
    assert err < 1e-10


def test_dplr_kernel_with_per_channel_rank2_P_matches_naive_powers(x64, rng):
    H, half, L = 2, 5, 120
    Lambda, B, C = _random_diagonal(rng, H, half)
    P = 0.5 * _crandn(rng, H, 2, half)
    dt = np.array([0.02, 0.2])
    K = dplr_kernel(*map(jnp.asarray, (Lambda, P, B, C, dt)), L)
    err = _rel_err(K, _ref_kernels(Lambda, P, B, C, dt, L))
    assert err < 1e-10, err


def test_dplr_kernel_of_hippo_legs_is_the_real_legs_kernel(x64, rng):
    """With dplr('legs', N) and C_half = C_real @ V, the kernel is C_real Abar^l Bbar
    of the real LegS system (A, B) itself."""
    N, L = 16, 256
    A, B_real = hippo.transition("legs", N)
    Lambda, P, B, V = hippo.dplr("legs", N)
    C_real = rng.standard_normal((2, N))
    dt = np.array([1e-2, 0.1])
    C = C_real @ V
    K = dplr_kernel(*map(jnp.asarray, (np.tile(Lambda, (2, 1)), P, np.tile(B, (2, 1)), C, dt)), L)
    R = []
    for h in range(2):
        Abar, Bbar = ref.discretize_bilinear(A, B_real, dt[h])
        R.append(ref.kernel_by_powers(Abar, Bbar, C_real[h], L))
    err = _rel_err(K, np.stack(R))
    print(f"\ndplr_kernel(dplr('legs')) vs real LegS kernel: {err:.1e}")
    assert err < 1e-10


def test_dplr_kernel_with_zero_P_equals_bilinear_diagonal_kernel(x64, rng):
    H, half, L = 2, 6, 100
    Lambda, B, C = _random_diagonal(rng, H, half)
    dt = np.array([0.01, 0.3])
    args = [jnp.asarray(x) for x in (Lambda, B, C, dt)]
    K_dplr = dplr_kernel(args[0], jnp.zeros((1, half), complex), *args[1:], L)
    K_diag = diagonal_kernel(*args, L, "bilinear")
    assert _rel_err(K_dplr, K_diag) < 1e-12


def test_truncated_output_round_trips_and_gives_the_same_kernel(x64, rng):
    """truncate_output is C (I - Abar^L) (top half), untruncate_output inverts it,
    and dplr_kernel(C~, c_tilde=True) equals dplr_kernel(C)."""
    H, N, L = 2, 8, 64
    Lambda, P, B = _hippo_dplr("legs", N, H)
    C = _crandn(rng, H, N // 2)
    dt = np.array([0.05, 0.2])
    args = [jnp.asarray(x) for x in (Lambda, P, B)]
    C_t = truncate_output(*args, jnp.asarray(C), jnp.asarray(dt), L)
    for h in range(H):
        A_full, B_full, C_full = ref.conjugate_completed(Lambda[h], P, B[h], C[h])
        Abar, _ = ref.discretize_bilinear(A_full, B_full, dt[h])
        expect = C_full @ (np.eye(N) - np.linalg.matrix_power(Abar, L))
        np.testing.assert_allclose(C_t[h], expect[: N // 2], rtol=1e-11, atol=1e-12)
    C_back = untruncate_output(*args, C_t, jnp.asarray(dt), L)
    np.testing.assert_allclose(C_back, C, rtol=1e-11, atol=1e-12)
    K = dplr_kernel(*args, jnp.asarray(C), jnp.asarray(dt), L)
    K_t = dplr_kernel(*args, C_t, jnp.asarray(dt), L, c_tilde=True)
    assert _rel_err(K_t, K) < 1e-12


# --------------------------------------------------------------- float32 accuracy


def _f32_inputs(*arrays):
    """Round to complex64/float32; return (float32 JAX arrays, float64 NumPy copies)."""
    lo = [np.asarray(x, np.complex64 if np.iscomplexobj(x) else np.float32) for x in arrays]
    return [jnp.asarray(x) for x in lo], [x.astype(np.complex128 if np.iscomplexobj(x) else np.float64) for x in lo]


# (length, dt per channel, tolerance): log-spaced dt up to 4096, dt = 1e-4 at 16384.
F32_CASES = [(4096, np.geomspace(1e-3, 1e-1, 4), 1e-4), (16384, np.full(4, 1e-4), 5e-4)]


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_diagonal_kernel_float32_matches_float64_reference(rng, discretization):
    """complex64 kernels vs float64 computed on the same rounded inputs (N = 64).
    The error floor is float32 rounding of the phase l * log(Abar): ~ l |dt Lambda|
    2^-24 per mode, largest for LegS (|Im Lambda| up to 1303, |B| up to 40)."""
    H, N = 4, 64
    lines = []
    for kind in ("lin", "inv", "legs"):
        Lambda, B = hippo.s4d_init(kind, N)
        C = _crandn(rng, H, N // 2)
        for L, dt, tol in F32_CASES:
            (Lj, Bj, Cj, dtj), (L64, B64, C64, dt64) = _f32_inputs(
                np.tile(Lambda, (H, 1)), np.tile(B, (H, 1)), C, dt)
            K = np.asarray(diagonal_kernel(Lj, Bj, Cj, dtj, L, discretization))
            assert K.dtype == np.float32 and np.all(np.isfinite(K))
            R = _ref_kernels(L64, None, B64, C64, dt64, L, discretization)
            err = _rel_err(K, R)
            lines.append(f"{kind:4s} L={L:5d}: {err:.1e}")
            assert err < tol, lines[-1]
            assert np.abs(K).max() <= 1.01 * np.abs(R).max()  # no blow-up
    print(f"\ndiagonal_kernel {discretization} float32 rel L2: " + "; ".join(lines))


def test_dplr_kernel_float32_matches_float64_reference(rng):
    H, N = 4, 64
    Lambda, P, B = _hippo_dplr("legs", N, H)
    lines = []
    for L, dt, tol in F32_CASES:
        C = _crandn(rng, H, N // 2)
        (Lj, Pj, Bj, Cj, dtj), (L64, P64, B64, C64, dt64) = _f32_inputs(Lambda, P, B, C, dt)
        K = np.asarray(dplr_kernel(Lj, Pj, Bj, Cj, dtj, L))
        assert K.dtype == np.float32 and np.all(np.isfinite(K))
        R = _ref_kernels(L64, P64, B64, C64, dt64, L)
        err = _rel_err(K, R)
        lines.append(f"L={L:5d}: {err:.1e}")
        assert err < tol, lines[-1]
        assert np.abs(K).max() <= 1.01 * np.abs(R).max()
    print("\ndplr_kernel legs N=64 float32 rel L2: " + "; ".join(lines))


# ---------------------------------------------------------------------- convolution


@pytest.mark.parametrize("L", [1, 2, 7, 13, 64])
def test_fft_conv_matches_direct_convolution(x64, rng, L):
    """Causal, and bidirectional with S4's reverse kernel (no lag 0) and with lag 0;
    kernels longer than u are cut to L."""
    batch, H = 2, 3
    u = rng.standard_normal((batch, L, H))
    K, K_rev = rng.standard_normal((H, L + 3)), rng.standard_normal((H, L))
    y = np.asarray(fft_conv(jnp.asarray(u), jnp.asarray(K)))
    y_s4 = np.asarray(fft_conv(jnp.asarray(u), jnp.asarray(K), jnp.asarray(K_rev)))
    y_s5 = np.asarray(fft_conv(jnp.asarray(u), jnp.asarray(K), jnp.asarray(K_rev), reverse_lag0=True))
    for b in range(batch):
        for h in range(H):
            causal = ref.causal_conv(u[b, :, h], K[h])
            np.testing.assert_allclose(y[b, :, h], causal, atol=1e-12)
            np.testing.assert_allclose(
                y_s4[b, :, h], causal + ref.anticausal_conv(u[b, :, h], K_rev[h], lag0=False), atol=1e-12)
            np.testing.assert_allclose(
                y_s5[b, :, h], causal + ref.anticausal_conv(u[b, :, h], K_rev[h], lag0=True), atol=1e-12)


def test_fft_conv_of_bf16_input_transforms_in_float32_and_returns_bf16(rng):
    L, H = 37, 4
    u = jnp.asarray(rng.standard_normal((2, L, H)), jnp.bfloat16)
    K = jnp.asarray(rng.standard_normal((H, L)) / L, jnp.float32)
    y = fft_conv(u, K)
    assert y.dtype == jnp.bfloat16
    # Same float32 transform as a float32 input, rounded once at the end.
    np.testing.assert_array_equal(np.asarray(y), np.asarray(fft_conv(u.astype(jnp.float32), K).astype(jnp.bfloat16)))
    u64, K64 = np.asarray(u, np.float64), np.asarray(K, np.float64)
    y_ref = np.stack([np.stack([ref.causal_conv(u64[b, :, h], K64[h]) for h in range(H)], -1) for b in range(2)])
    err = np.abs(np.asarray(y, np.float64) - y_ref)
    assert np.all(err <= 2.0**-8 * np.abs(y_ref) + 1e-5), err.max()


def test_fft_length_is_the_smallest_5_smooth_number_at_least_n():
    for n in range(1, 2001):
        assert kernels.fft_length(n) == ref.smooth_number(n), n
    assert kernels.fft_length(2 * 8191) == 16384 and kernels.fft_length(8001) == 8100


# ------------------------------------------------------------------------ gradients


def _check_gradient(loss, theta, name):
    """jax.grad of a float64 loss over the flat real vector theta against central
    differences, coordinate by coordinate."""
    f = jax.jit(loss)
    g = np.asarray(jax.jit(jax.grad(loss))(theta))
    assert np.all(np.isfinite(g))
    eps = 1e-6
    fd = np.zeros_like(g)
    for i in range(theta.size):
        e = np.zeros(theta.size)
        e[i] = eps
        fd[i] = (f(theta + e) - f(theta - e)) / (2 * eps)
    err = np.abs(g - fd).max() / np.abs(fd).max()
    print(f"\n{name} gradient vs central differences: {err:.1e}")
    assert err < 1e-6


def test_kernel_gradients_match_finite_differences(x64, rng):
    """Gradients w.r.t. Lambda, B, C (real and imaginary parts), P and dt, for a tiny
    case whose dt makes some bilinear modes cross |dt Lambda / 2| > 1."""
    H, half, L = 2, 3, 24
    Lambda, B, C = _random_diagonal(rng, H, half, spread=40.0)
    P = 0.3 * _crandn(rng, 1, half)
    dt = np.array([0.02, 0.15])
    w = jnp.asarray(rng.standard_normal((H, L)))

    def unpack(theta, n_complex):
        z = theta[: 2 * n_complex].reshape(2, -1)
        return z[0] + 1j * z[1], theta[2 * n_complex:]

    def pack(*arrays, real=()):
        flat = np.concatenate([x.ravel() for x in arrays])
        return jnp.asarray(np.concatenate([flat.real, flat.imag, *real]))

    n = H * half
    for discretization in ("zoh", "bilinear"):
        def loss(theta):
            z, d = unpack(theta, 3 * n)
            Lm, Bm, Cm = (z[i * n:(i + 1) * n].reshape(H, half) for i in range(3))
            return jnp.sum(w * kernels.diagonal_kernel(Lm, Bm, Cm, d, L, discretization))

        _check_gradient(loss, pack(Lambda, B, C, real=[dt]), f"diagonal_kernel {discretization}")

    def loss(theta):
        z, d = unpack(theta, 3 * n + half)
        Lm, Bm, Cm = (z[i * n:(i + 1) * n].reshape(H, half) for i in range(3))
        Pm = z[3 * n:].reshape(1, half)
        return jnp.sum(w * kernels.dplr_kernel(Lm, Pm, Bm, Cm, d, L))

    _check_gradient(loss, pack(Lambda, B, C, P, real=[dt]), "dplr_kernel")


# --------------------------------------------------------------------------- memory


def test_kernel_backward_memory_grows_like_H_times_N_plus_L_not_H_N_L():
    """Compiled temp bytes of value_and_grad(sum K^2) over (Lambda, B, C, dt) at
    H = 8, N/2 = 32, L = 4096 and 16384: the growth stays within 1.5 (H, dL)
    complex64 buffers, and the total well under one (H, N/2, L) complex64 buffer
    (the naive Vandermonde/Cauchy tensor).

    diagonal_kernel's blocked Vandermonde also holds a few (H, N/2, sqrt L) factors:
    O(H (L + N sqrt L)), which is O(H L) once L >= N^2/4.

    dplr_kernel without a stored C~ also holds the binary powering of
    truncate_output, O(H N^2 log L): two (H, N, N) matrices per doubling of L."""
    H, half = 8, 32
    N = 2 * half
    Lambda, P, B = _hippo_dplr("legs", N, H)
    Lambda, B = jnp.asarray(Lambda, jnp.complex64), jnp.asarray(B, jnp.complex64)
    P = jnp.asarray(P, jnp.complex64)
    dt = jnp.full((H,), 1e-2, jnp.float32)
    L1, L2 = 4096, 16384
    c64 = np.dtype(np.complex64).itemsize
    fns = {
        "diagonal_kernel": lambda L: lambda Lm, Bm, Cm, d: kernels.diagonal_kernel(Lm, Bm, Cm, d, L),
        "dplr_kernel c_tilde": lambda L: lambda Lm, Bm, Cm, d: kernels.dplr_kernel(Lm, P, Bm, Cm, d, L, c_tilde=True),
        "dplr_kernel": lambda L: lambda Lm, Bm, Cm, d: kernels.dplr_kernel(Lm, P, Bm, Cm, d, L),
    }
    naive = H * half * L2 * c64
    print(f"\none (H, N/2, L={L2}) complex64 buffer: {naive / 2**20:.1f} MiB")
    for name, make in fns.items():
        temp = {}
        for L in (L1, L2):
            kernel = make(L)
            loss = lambda *a, kernel=kernel: jnp.sum(kernel(*a) ** 2)  # noqa: E731
            compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3))).lower(Lambda, B, B, dt).compile()
            temp[L] = compiled.memory_analysis().temp_size_in_bytes
        allowed = 1.5 * H * (L2 - L1) * c64
        if name == "diagonal_kernel":  # blocked: a few (H, N/2, sqrt L) factors as well
            allowed += 6 * H * half * (math.isqrt(L2) - math.isqrt(L1)) * c64
        if name == "dplr_kernel":
            allowed += 2 * 2 * H * N * N * c64  # two more doublings, two matrices each
        growth = temp[L2] - temp[L1]
        print(f"{name}: temp {temp[L1] / 2**20:.2f} -> {temp[L2] / 2**20:.2f} MiB, "
              f"growth {growth / 2**20:.2f} MiB (allowed {allowed / 2**20:.2f})")
        assert growth <= allowed
        assert temp[L2] < naive / 3


# ------------------------------------------------------------------------ bad input


def _bad_kernel_call(case):
    H, half = 2, 4
    Lam = jnp.full((H, half), -0.5 + 1j)
    B = C = jnp.ones((H, half), jnp.complex64)
    P = jnp.ones((1, half), jnp.complex64)
    dt = jnp.full((H,), 0.1)
    u = jnp.ones((1, 8, H))
    K = jnp.ones((H, 8))
    d, p = kernels.diagonal_kernel, kernels.dplr_kernel
    return {
        "Lambda rank": (lambda: d(Lam[0], B, C, dt, 8), "Lambda has shape"),
        "B shape": (lambda: d(Lam, B[:, :3], C, dt, 8), "B has shape"),
        "C shape": (lambda: d(Lam, B, C[:1], dt, 8), "C has shape"),
        "dt shape": (lambda: d(Lam, B, C, dt[:1], 8), "dt has shape"),
        "dt scalar": (lambda: p(Lam, P, B, C, 0.1, 8), "dt has shape"),
        "P rank": (lambda: p(Lam, P[0], B, C, dt, 8), "P has shape"),
        "P size": (lambda: p(Lam, P[:, :3], B, C, dt, 8), "P has shape"),
        "P channels": (lambda: p(Lam, jnp.ones((3, 1, half)), B, C, dt, 8), "P has shape"),
        "dplr C shape": (lambda: p(Lam, P, B, C[:, :2], dt, 8), "C has shape"),
        "length 0": (lambda: d(Lam, B, C, dt, 0), "length=0"),
        "length float": (lambda: d(Lam, B, C, dt, 8.0), "length=8.0"),
        "dplr length negative": (lambda: p(Lam, P, B, C, dt, -1), "length=-1"),
        "discretization": (lambda: d(Lam, B, C, dt, 8, "euler"), "discretization='euler'"),
        "fft_conv u rank": (lambda: kernels.fft_conv(u[0], K), "u has shape"),
        "fft_conv K short": (lambda: kernels.fft_conv(u, K[:, :4]), "K has shape"),
        "fft_conv K_reverse channels": (lambda: kernels.fft_conv(u, K, K[:1]), "K_reverse has shape"),
    }[case]


@pytest.mark.parametrize("case", [
    "Lambda rank", "B shape", "C shape", "dt shape", "dt scalar", "P rank", "P size",
    "P channels", "dplr C shape", "length 0", "length float", "dplr length negative",
    "discretization", "fft_conv u rank", "fft_conv K short", "fft_conv K_reverse channels",
])
def test_bad_input_raises_value_error_naming_the_argument(case):
    call, message = _bad_kernel_call(case)
    with pytest.raises(ValueError, match=message):
        call()
