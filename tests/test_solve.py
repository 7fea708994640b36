"""The plain-JAX dense solve against NumPy's LAPACK in float64, and its gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssm.solve import solve


@pytest.mark.parametrize("complex_", [False, True])
def test_solve_equals_numpy_on_batched_systems(complex_, rng, x64):
    A = rng.normal(size=(3, 5, 12, 12))
    B = rng.normal(size=(3, 5, 12, 4))
    if complex_:
        A, B = A + 1j * rng.normal(size=A.shape), B + 1j * rng.normal(size=B.shape)
    X = solve(jnp.asarray(A), jnp.asarray(B))
    np.testing.assert_allclose(X, np.linalg.solve(A, B), rtol=1e-10, atol=1e-12)
    x = solve(A[0, 0], B[0, 0, :, 0])  # NumPy inputs, one right-hand side
    np.testing.assert_allclose(x, np.linalg.solve(A[0, 0], B[0, 0, :, 0]), rtol=1e-10, atol=1e-12)


def test_solve_pivots_past_a_zero_diagonal(rng, x64):
    A = rng.normal(size=(6, 6))
    A[0, 0] = 0.0  # no elimination without a row swap
    A[np.arange(1, 6), np.arange(1, 6)] *= 1e-9  # and tiny diagonals after it
    B = rng.normal(size=(6, 2))
    np.testing.assert_allclose(solve(A, B), np.linalg.solve(A, B), rtol=1e-8, atol=1e-10)


def test_solve_gradients_equal_lapacks(rng, x64):
    A = jnp.asarray(rng.normal(size=(2, 7, 7)) + 7 * np.eye(7))
    B = jnp.asarray(rng.normal(size=(2, 7, 3)))
    W = jnp.asarray(rng.normal(size=(2, 7, 3)))
    ours = jax.grad(lambda A, B: jnp.sum(W * solve(A, B)), argnums=(0, 1))(A, B)
    theirs = jax.grad(lambda A, B: jnp.sum(W * jnp.linalg.solve(A, B)), argnums=(0, 1))(A, B)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_two_independent_solves_in_one_program_finish():
    """Two batched (64, 64, 64) solves under one jit (with jnp.linalg.solve, XLA:CPU in
    jax 0.10.2 hung in a third of such runs); float32."""
    A = [jnp.asarray(np.random.default_rng(i).normal(size=(64, 64, 64)) + 10 * np.eye(64), jnp.float32)
         for i in range(2)]
    b = jnp.ones((64, 64, 1), jnp.float32)
    X = jax.jit(lambda A, b: [solve(a, b) for a in A])(A, b)
    for a, x in zip(A, X):
        np.testing.assert_allclose(a @ x, b, rtol=1e-4, atol=1e-4)


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match=r"A has shape \(3, 4\)"):
        solve(jnp.ones((3, 4)), jnp.ones((3, 1)))
    with pytest.raises(ValueError, match=r"B has shape \(4, 1\)"):
        solve(jnp.eye(3), jnp.ones((4, 1)))
