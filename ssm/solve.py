"""Dense linear solves written in plain ``jax.numpy`` operations.

``jnp.linalg.solve`` lowers to a LAPACK custom call on CPU. With jax/jaxlib 0.10.2,
an XLA:CPU program holding two independent such calls (two S4 layers' discretizations,
say) intermittently never finishes: both wait on each other, 0% CPU (reproduced with
two (64, 64, 64) batched solves under one ``jit``: 1 run in 3 hangs; a 2-layer S4
model evaluated beyond its ``l_max`` hung 6 runs in 6). Gauss-Jordan elimination as a
``fori_loop`` of ordinary array operations cannot deadlock, differentiates like any
other loop and runs on every backend; at the sizes S4 needs (N <= a few hundred,
batched over channels) it costs about what LAPACK does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["solve", "gauss_jordan"]


def solve(A, B):
    """``X`` with ``A X = B``, by Gauss-Jordan elimination with partial pivoting.

    A drop-in for ``jnp.linalg.solve`` (batch axes broadcast); its gradient is that of
    ``X = A^-1 B`` (``jax.lax.custom_linear_solve``), not of the elimination steps.

    Args:
      A: (..., n, n), real or complex, nonsingular.
      B: (..., n, k), or (..., n) for one right-hand side.

    Returns:
      X with ``B``'s shape (batch axes broadcast with ``A``'s), in the promoted dtype of
      ``A`` and ``B``.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm.solve import solve
      >>> rng = np.random.default_rng(0)
      >>> A = jnp.asarray(rng.normal(size=(2, 4, 4)), jnp.float32)
      >>> b = jnp.asarray(rng.normal(size=(2, 4)), jnp.float32)
      >>> x = solve(A, b)
      >>> x.shape, bool(jnp.allclose(jnp.einsum("bij,bj->bi", A, x), b, atol=1e-4))
      ((2, 4), True)
    """
    A, B = jnp.asarray(A), jnp.asarray(B)
    if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"A has shape {A.shape}; expected (..., n, n)")
    vector = B.ndim == A.ndim - 1
    if vector:
        B = B[..., None]
    if B.shape[-2] != A.shape[-1]:
        raise ValueError(f"B has shape {B.shape}; expected (..., {A.shape[-1]}, k) or (..., {A.shape[-1]})")
    dtype = jnp.result_type(A, B)
    batch = jnp.broadcast_shapes(A.shape[:-2], B.shape[:-2])
    A = jnp.broadcast_to(A, (*batch, *A.shape[-2:])).astype(dtype)
    B = jnp.broadcast_to(B, (*batch, *B.shape[-2:])).astype(dtype)
    # Differentiated implicitly (X = A^-1 B, dB = A^-T dX): the backward pass solves
    # again instead of storing every elimination step.
    X = jax.lax.custom_linear_solve(lambda x: A @ x, B, lambda _, b: gauss_jordan(A, b),
                                    lambda _, b: gauss_jordan(jnp.swapaxes(A, -1, -2), b))
    return X[..., 0] if vector else X


def gauss_jordan(A, B):
    """``A^-1 B`` by Gauss-Jordan elimination with partial pivoting, one pivot per step
    of a ``fori_loop`` (differentiated as a loop; :func:`solve` is the entry point).

    Args:
      A: (..., n, n), nonsingular.
      B: (..., n, k), of ``A``'s dtype and batch shape.

    Returns:
      (..., n, k) in that dtype.

    Example:
      >>> import jax.numpy as jnp
      >>> from ssm.solve import gauss_jordan
      >>> A = jnp.array([[0.0, 2.0], [1.0, 1.0]])  # the first pivot needs a row swap
      >>> gauss_jordan(A, jnp.array([[2.0], [3.0]]))
      Array([[2.],
             [1.]], dtype=float32)
    """
    n = A.shape[-1]
    M = jnp.concatenate([A, B], -1)
    rows = jnp.arange(n)

    def eliminate(i, M):
        column = jnp.abs(M[..., :, i])  # (..., n)
        pivot = jnp.argmax(jnp.where(rows >= i, column, -1), axis=-1)  # a row at or below i
        order = jnp.where(rows == i, pivot[..., None], jnp.where(rows == pivot[..., None], i, rows))
        M = jnp.take_along_axis(M, order[..., None], axis=-2)  # rows i and pivot swapped
        row = M[..., i, :] / M[..., i, i][..., None]  # (..., n + k)
        M = M - M[..., :, i][..., None] * row[..., None, :]
        return jnp.where((rows == i)[:, None], row[..., None, :], M)

    return jax.lax.fori_loop(0, n, eliminate, M)[..., n:]
