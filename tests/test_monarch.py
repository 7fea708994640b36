"""``ssm.monarch`` against explicit block-diagonal and permutation matrices (float64)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from ssm import monarch
from tests import reference

# (n_in, n_out, nblocks): square m², square non-square-number, rectangular, the extremes.
SIZES = [(16, 16, 4), (32, 32, None), (15, 15, 5), (12, 18, 3), (18, 12, 6), (8, 8, 1), (8, 8, 8)]


def random_factors(rng, n_in, n_out, nblocks, dtype=np.float64):
    r_shape, l_shape = monarch.factor_shapes(n_in, n_out, nblocks)
    return rng.standard_normal(r_shape).astype(dtype), rng.standard_normal(l_shape).astype(dtype)


@pytest.mark.parametrize("n_in, n_out, nblocks", SIZES)
def test_matmul_and_to_dense_equal_the_explicit_product(n_in, n_out, nblocks, rng, x64):
    R, L = random_factors(rng, n_in, n_out, nblocks)
    W = reference.monarch_dense(R, L)
    x = rng.standard_normal((3, 5, n_in))
    np.testing.assert_allclose(monarch.to_dense((R, L)), W, rtol=0, atol=1e-13)
    np.testing.assert_allclose(monarch.matmul(x, (R, L)), x @ W, rtol=0, atol=1e-12)
    assert monarch.sizes((R, L)) == (n_in, n_out)
    assert monarch.param_count(n_in, n_out, nblocks) == R.size + L.size


def test_square_monarch_is_p_l_p_r_with_the_reshape_transpose(rng, x64):
    """n = m²: ``M = P L P^T R`` (column-vector form) with ``P`` the perfect shuffle."""
    m = 4
    n = m * m
    R, L = random_factors(rng, n, n, m)
    P = np.zeros((n, n))
    for i in range(m):
        for j in range(m):
            P[j * m + i, i * m + j] = 1
    # Column-vector operators of the two factors: y = B x with B = blockdiag(F[a]^T).
    BR = np.zeros((n, n))
    BL = np.zeros((n, n))
    for a in range(m):
        BR[a * m:(a + 1) * m, a * m:(a + 1) * m] = R[a].T
        BL[a * m:(a + 1) * m, a * m:(a + 1) * m] = L[a].T
    M = P @ BL @ P.T @ BR
    np.testing.assert_allclose(monarch.to_dense((R, L)).T, M, rtol=0, atol=1e-12)
    assert monarch.param_count(n, n) == 2 * n ** 1.5


@pytest.mark.parametrize("n_in, n_out, nblocks", SIZES)
def test_project_recovers_a_monarch_matrix(n_in, n_out, nblocks, rng, x64):
    W = reference.monarch_dense(*random_factors(rng, n_in, n_out, nblocks))
    back = monarch.to_dense(monarch.project(W, nblocks))
    assert np.linalg.norm(back - W) <= 1e-12 * np.linalg.norm(W)
    assert float(monarch.projection_error(W, nblocks)) <= 1e-12 * np.linalg.norm(W)


@pytest.mark.parametrize("n_in, n_out, nblocks", [(16, 16, 4), (12, 18, 3), (24, 24, 4)])
def test_projection_error_is_the_closed_form_optimum(n_in, n_out, nblocks, rng, x64):
    """On a random W the error is the root sum of squares of every block's singular
    values after the first; no other Monarch matrix nearby does better."""
    W = rng.standard_normal((n_in, n_out))
    (b, p, q), (_, _, s) = monarch.factor_shapes(n_in, n_out, nblocks)
    tail = 0.0
    for a in range(b):
        for j in range(q):
            block = W[np.ix_([a * p + c for c in range(p)], [t * q + j for t in range(s)])]
            tail += np.sum(np.linalg.svd(block, compute_uv=False)[1:] ** 2)
    factors = monarch.project(W, nblocks)
    error = np.linalg.norm(W - reference.monarch_dense(*map(np.asarray, factors)))
    np.testing.assert_allclose(error, math.sqrt(tail), rtol=1e-12)
    np.testing.assert_allclose(monarch.projection_error(W, nblocks), math.sqrt(tail), rtol=1e-12)
    for _ in range(5):
        nudged = [np.asarray(f) + 1e-3 * rng.standard_normal(f.shape) for f in factors]
        assert np.linalg.norm(W - reference.monarch_dense(*nudged)) > error


@pytest.mark.parametrize("n, nblocks", [(15, 3), (27, 3), (36, 6), (48, 6), (64, 8)])
def test_column_permuted_dft_is_a_monarch_matrix(n, nblocks, rng, x64):
    """Cooley–Tukey: with inputs reordered (n2, n1) the DFT of size n = n1·n2 factors
    exactly (twiddles in R, the n2-point DFTs in L); projected in complex128 and
    applied in complex64 it equals the FFT (unnormalized and orthonormal)."""
    n1, n2 = n // nblocks, nblocks
    perm = np.array([n2 * (i % n1) + i // n1 for i in range(n)])
    F = np.exp(-2j * np.pi * np.outer(np.arange(n), np.arange(n)) / n)  # x @ F = fft(x)
    W = F[perm]
    assert float(monarch.projection_error(W, nblocks)) <= 1e-12 * np.linalg.norm(W)
    factors = tuple(f.astype(np.complex64) for f in monarch.project(W, nblocks))
    x = (rng.standard_normal((4, n)) + 1j * rng.standard_normal((4, n))).astype(np.complex64)
    y = monarch.matmul(x[:, perm], factors)
    scale = np.abs(np.fft.fft(x)).max()
    np.testing.assert_allclose(y, np.fft.fft(x), rtol=0, atol=1e-4 * scale)
    y_ortho = monarch.matmul(x[:, perm], tuple(f / n**0.25 for f in factors))
    np.testing.assert_allclose(y_ortho, np.fft.fft(x, norm="ortho"), rtol=0, atol=1e-4 * scale / n**0.5)


def test_gradients_match_finite_differences_and_the_dense_product(rng, x64):
    R, L = random_factors(rng, 12, 18, 3)
    x = rng.standard_normal((2, 12))
    loss = lambda x, R, L: jnp.sum(jnp.sin(monarch.matmul(x, (R, L))))  # noqa: E731
    check_grads(loss, (x, R, L), order=1, modes=("rev",), eps=1e-6, atol=1e-7, rtol=1e-7)
    grads = jax.grad(loss, argnums=(0, 1, 2))(x, R, L)
    dense = jax.grad(lambda x, R, L: jnp.sum(jnp.sin(x @ monarch.to_dense((R, L)))), argnums=(0, 1, 2))(x, R, L)
    for g, d in zip(grads, dense):
        np.testing.assert_allclose(g, d, rtol=1e-12, atol=1e-12)


def test_matmul_in_float32_and_bf16(rng):
    R, L = random_factors(rng, 64, 64, None, np.float32)
    x = rng.standard_normal((8, 64)).astype(np.float32)
    W = reference.monarch_dense(R.astype(np.float64), L.astype(np.float64))
    exact = x.astype(np.float64) @ W
    y32 = jax.jit(monarch.matmul)(x, (R, L))
    assert y32.dtype == jnp.float32
    assert np.abs(y32 - exact).max() <= 1e-5 * np.abs(exact).max()
    bf = jnp.bfloat16
    y16 = monarch.matmul(jnp.asarray(x, bf), (jnp.asarray(R, bf), jnp.asarray(L, bf)))
    assert y16.dtype == bf
    assert np.abs(np.asarray(y16, np.float64) - exact).max() <= 3e-2 * np.abs(exact).max()


def test_default_nblocks_and_counts():
    assert monarch.default_nblocks(1024) == 32
    assert monarch.default_nblocks(4096) == 64
    assert monarch.default_nblocks(32) == 4  # nearest sqrt(32) = 5.66 among 1, 2, 4, 8, 16, 32
    assert monarch.default_nblocks(1024, 4096) == 32
    assert monarch.default_nblocks(6, 10) == 2
    assert monarch.factor_shapes(1024, 4096) == ((32, 32, 128), (128, 32, 32))
    assert monarch.param_count(4096, 4096) == 2 * 4096 * 64
    assert monarch.flops(4096, 4096, 4096) == 2 * 4096 * 2 * 4096 * 64
    assert monarch.divisors(36) == [1, 2, 3, 4, 6, 9, 12, 18, 36]


def test_bad_input_raises_clear_errors(rng):
    with pytest.raises(ValueError, match="nblocks=5 must divide n_in=16"):
        monarch.factor_shapes(16, 16, 5)
    with pytest.raises(ValueError, match="nblocks=0; expected a positive integer"):
        monarch.factor_shapes(16, 16, 0)
    R, L = random_factors(rng, 16, 16, 4)
    with pytest.raises(ValueError, match=r"L must be \(4, 4, o\)"):
        monarch.matmul(np.ones((2, 16)), (R, L[:2]))
    with pytest.raises(ValueError, match=r"x has shape \(2, 15\); expected \(\.\.\., 16\)"):
        monarch.matmul(np.ones((2, 15)), (R, L))
    with pytest.raises(ValueError, match="factors must be a pair"):
        monarch.to_dense(R)
    with pytest.raises(ValueError, match=r"W has shape \(16,\)"):
        monarch.project(np.ones(16))
