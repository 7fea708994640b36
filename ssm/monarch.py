"""Monarch matrices (Dao et al., 2022): products of two block-diagonal matrices
and two fixed permutations, ``M = P L P^T R``, applied with two batched block
matmuls and reshapes; no dense matrix is ever built.

Layout. A Monarch map from ``n_in = b·p`` to ``n_out = q·s`` features is a pair of
factors ``(R, L)``:

* ``R`` (b, p, q): ``b`` blocks, each maps ``p`` inputs to ``q`` outputs;
* ``L`` (q, b, s): ``q`` blocks, each maps ``b`` inputs to ``s`` outputs.

For ``x`` (..., n_in), in Flax's ``x @ W`` layout:

1. split ``x`` into ``b`` contiguous chunks of ``p`` and multiply chunk ``a`` by
   ``R[a]``: ``h[a, j]`` (b, q);
2. permute: transpose ``h`` to (q, b), so block ``j`` of ``L`` gathers output ``j``
   of every ``R`` block;
3. multiply row ``j`` by ``L[j]``: ``z[j, t]`` (q, s);
4. permute: output feature ``t·q + j`` is ``z[j, t]``.

Hence ``W[a·p + c, t·q + j] = R[a, c, j] · L[j, a, t]``: cut ``W`` into (p × s)
blocks ``W_{a,j}`` (rows ``a·p + c``, columns ``t·q + j``) and each is the rank-one
matrix ``R[a, :, j] ⊗ L[j, a, :]``. That is why :func:`project` is exact and
Frobenius-optimal by a rank-one SVD per block.

For a square ``n = m²`` with ``b = m``, ``R`` and ``L`` are ``m`` blocks of m × m and
this is the paper's ``P L P^T R`` with ``P`` the reshape-transpose ``i·m + j -> j·m + i``.
For any ``n`` and a divisor ``b`` the blocks of ``R`` are (n/b) × (n/b) and those of
``L`` are b × b. Rectangular maps use ``b | n_in`` and ``b | n_out``, with
``p = n_in/b``, ``q = n_out/b`` and ``s = b``: the intermediate width is ``n_out``.

Cost: ``b·p·q + q·b·s`` parameters (``2 n^1.5`` for ``b = sqrt(n)``, against ``n²``
dense) and as many multiply-adds per row of ``x``.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from einops import rearrange

from ssm.checks import check_positive_int

__all__ = ["divisors", "default_nblocks", "factor_shapes", "param_count", "flops", "sizes", "matmul", "to_dense",
           "project", "projection_error"]

# ---------------------------------------------------------------------- sizes


def _check_size(name: str, n) -> int:
    return check_positive_int(name, n)


def divisors(n: int) -> list[int]:
    """All divisors of ``n``, ascending: the block counts a size allows.

    Args:
      n: a positive int.

    Returns:
      A list of ints.

    Example:
      >>> from ssm.monarch import divisors
      >>> divisors(12)
      [1, 2, 3, 4, 6, 12]
    """
    n = _check_size("n", n)
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def default_nblocks(n_in: int, n_out: int | None = None) -> int:
    """The number of ``R`` blocks: the common divisor of ``n_in`` and ``n_out``
    nearest ``sqrt(n_in)`` (the larger on a tie). For a square ``n = m²`` it is ``m``.

    Args:
      n_in: input features.
      n_out: output features (default ``n_in``).

    Returns:
      An int ``b`` dividing both sizes.

    Example:
      >>> from ssm.monarch import default_nblocks
      >>> default_nblocks(16), default_nblocks(12, 8)
      (4, 4)
    """
    n_in = _check_size("n_in", n_in)
    n_out = n_in if n_out is None else _check_size("n_out", n_out)
    target = math.sqrt(n_in)
    return min(divisors(math.gcd(n_in, n_out)), key=lambda d: (abs(d - target), -d))


def _check_nblocks(n_in: int, n_out: int, nblocks) -> int:
    """``nblocks`` (or the default when None), checked to divide both sizes."""
    if nblocks is None:
        return default_nblocks(n_in, n_out)
    nblocks = _check_size("nblocks", nblocks)
    if n_in % nblocks or n_out % nblocks:
        raise ValueError(f"nblocks={nblocks} must divide n_in={n_in} and n_out={n_out}; "
                         f"common divisors: {divisors(math.gcd(n_in, n_out))}")
    return nblocks


def factor_shapes(n_in: int, n_out: int, nblocks: int | None = None) -> tuple[tuple, tuple]:
    """Shapes of the factors ``(R, L)`` of an ``n_in -> n_out`` Monarch map:
    ``((b, n_in/b, n_out/b), (n_out/b, b, b))`` (the layout of the module docstring).

    Args:
      n_in, n_out: sizes.
      nblocks: b, dividing both (default :func:`default_nblocks`).

    Returns:
      ``(R shape, L shape)``, two 3-tuples of ints.

    Example:
      >>> from ssm.monarch import factor_shapes
      >>> factor_shapes(16, 16), factor_shapes(12, 8)
      (((4, 4, 4), (4, 4, 4)), ((4, 3, 2), (2, 4, 4)))
    """
    n_in, n_out = _check_size("n_in", n_in), _check_size("n_out", n_out)
    b = _check_nblocks(n_in, n_out, nblocks)
    return (b, n_in // b, n_out // b), (n_out // b, b, b)


def param_count(n_in: int, n_out: int, nblocks: int | None = None) -> int:
    """Parameters of a Monarch map (also its multiply-adds per row of ``x``):
    ``b·p·q + q·b·s``, ``2 n^1.5`` for a square ``n`` with ``b = sqrt(n)``.

    Args:
      n_in, n_out, nblocks: as :func:`factor_shapes`.

    Returns:
      An int.

    Example:
      >>> from ssm.monarch import param_count
      >>> param_count(16, 16), 16 * 16  # against a dense matrix
      (128, 256)
    """
    return sum(math.prod(s) for s in factor_shapes(n_in, n_out, nblocks))


def flops(rows: int, n_in: int, n_out: int, nblocks: int | None = None) -> int:
    """FLOPs of :func:`matmul` on ``rows`` rows: 2 per multiply-add.

    Args:
      rows: rows of ``x``.
      n_in, n_out, nblocks: as :func:`factor_shapes`.

    Returns:
      An int.

    Example:
      >>> from ssm.monarch import flops
      >>> flops(2, 16, 16)
      512
    """
    return 2 * _check_size("rows", rows) * param_count(n_in, n_out, nblocks)


def _check_factors(factors) -> tuple:
    """``(R, L)`` with matching shapes; returns them as arrays (else a ValueError naming
    the shapes)."""
    if not isinstance(factors, (tuple, list)) or len(factors) != 2:
        raise ValueError(f"factors must be a pair (R, L); got {type(factors).__name__}")
    R, L = (jnp.asarray(f) for f in factors)
    if R.ndim != 3 or L.ndim != 3:
        raise ValueError(f"factors have shapes R {R.shape}, L {L.shape}; expected R (b, p, q) and L (q, b, s)")
    b, _, q = R.shape
    if L.shape[:2] != (q, b):
        raise ValueError(f"factors have shapes R {R.shape}, L {L.shape}; L must be ({q}, {b}, s) "
                         f"(one block per output of an R block, one input per R block)")
    return R, L


def sizes(factors) -> tuple[int, int]:
    """``(n_in, n_out)`` of a factor pair.

    Args:
      factors: ``(R (b, p, q), L (q, b, s))``.

    Returns:
      ``(b·p, q·s)``, two ints.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm import monarch
      >>> rng = np.random.default_rng(0)
      >>> R, L = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in monarch.factor_shapes(16, 16))
      >>> monarch.sizes((R, L))
      (16, 16)
    """
    R, L = _check_factors(factors)
    b, p, q = R.shape
    return b * p, q * L.shape[2]


# ------------------------------------------------------------------- the map


def matmul(x, factors):
    """``x @ W`` for the Monarch matrix ``W`` of ``factors``, without forming ``W``.

    Args:
      x: (..., n_in).
      factors: ``(R (b, p, q), L (q, b, s))`` with ``n_in = b·p``.

    Returns:
      (..., n_out) with ``n_out = q·s``, in the promoted dtype of ``x`` and the factors.

    Dao et al. (2022), "Monarch: Expressive Structured Matrices for Efficient and
    Accurate Training": ``M = P L P^T R``, two batched block products.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm import monarch
      >>> rng = np.random.default_rng(0)
      >>> R, L = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in monarch.factor_shapes(16, 16))
      >>> x = jnp.asarray(rng.normal(size=(2, 16)), jnp.float32)
      >>> y = monarch.matmul(x, (R, L))
      >>> y.shape, bool(jnp.allclose(y, x @ monarch.to_dense((R, L)), atol=1e-4))
      ((2, 16), True)
    """
    R, L = _check_factors(factors)
    b, p, q = R.shape
    x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[-1] != b * p:
        raise ValueError(f"x has shape {x.shape}; expected (..., {b * p}) for factors R {R.shape}")
    # Blocks lead every operand, so both products are canonical batched matmuls and
    # XLA adds no transposes of its own: the three rearranges are all the data moves.
    rows = x.reshape(-1, b * p)
    h = jnp.einsum("arc,acj->arj", rearrange(rows, "r (a c) -> a r c", a=b), R)  # (b, rows, q)
    z = jnp.einsum("jra,jat->jrt", rearrange(h, "a r j -> j r a"), L)  # (q, rows, s)
    return rearrange(z, "j r t -> r (t j)").reshape(*x.shape[:-1], -1)


def to_dense(factors):
    """The (n_in, n_out) matrix ``W`` with ``matmul(x, factors) == x @ W``:
    ``W[a·p + c, t·q + j] = R[a, c, j] · L[j, a, t]``.

    Args:
      factors: ``(R (b, p, q), L (q, b, s))``.

    Returns:
      (b·p, q·s) in the factors' promoted dtype.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm import monarch
      >>> rng = np.random.default_rng(0)
      >>> R, L = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in monarch.factor_shapes(16, 16))
      >>> W = monarch.to_dense((R, L))
      >>> W.shape, int(jnp.linalg.matrix_rank(W[:4, ::4]))  # each (p x s) block W_{a,j} has rank one
      ((16, 16), 1)
    """
    R, L = _check_factors(factors)
    return rearrange(jnp.einsum("acj,jat->acjt", R, L), "a c j t -> (a c) (t j)")


def _blocks(W, nblocks):
    """``W`` (n_in, n_out) as an inexact array and its (b, q, p, s) blocks ``W_{a,j}``."""
    W = jnp.asarray(W)
    if W.ndim != 2:
        raise ValueError(f"W has shape {W.shape}; expected (n_in, n_out)")
    if not jnp.issubdtype(W.dtype, jnp.inexact):
        W = W.astype(jnp.float32)
    (b, p, q), (_, _, s) = factor_shapes(*W.shape, nblocks)
    return W, rearrange(W, "(a c) (t j) -> a j c t", a=b, c=p, t=s, j=q)


def project(W, nblocks: int | None = None):
    """The Monarch matrix nearest ``W`` in Frobenius norm, as factors.

    Each (p × s) block ``W_{a,j}`` (see the module docstring) is replaced by its
    best rank-one approximation ``σ_1 u_1 v_1^H`` (Eckart–Young), split as
    ``R[a, :, j] = sqrt(σ_1) u_1`` and ``L[j, a, :] = sqrt(σ_1) v_1^H``. The blocks
    are independent, so this is the exact optimum; its error is
    :func:`projection_error`. Works for real and complex ``W``.

    Args:
      W: (n_in, n_out).
      nblocks: number of ``R`` blocks; must divide both sizes (default
        :func:`default_nblocks`).

    Returns:
      ``(R (b, n_in/b, n_out/b), L (n_out/b, b, b))`` in ``W``'s dtype (float32 for an
      integer ``W``).

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm import monarch
      >>> rng = np.random.default_rng(0)
      >>> R, L = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in monarch.factor_shapes(16, 16))
      >>> W = monarch.to_dense((R, L))
      >>> factors = monarch.project(W)  # a Monarch matrix is its own projection
      >>> [f.shape for f in factors], bool(jnp.allclose(monarch.to_dense(factors), W, atol=1e-4))
      ([(4, 4, 4), (4, 4, 4)], True)
    """
    W, blocks = _blocks(W, nblocks)
    U, S, Vh = jnp.linalg.svd(blocks, full_matrices=False)
    root = jnp.sqrt(S[..., 0]).astype(W.dtype)  # (b, q)
    R = U[..., :, 0] * root[..., None]  # (b, q, p)
    L = Vh[..., 0, :] * root[..., None]  # (b, q, s)
    return rearrange(R, "a j c -> a c j"), rearrange(L, "a j t -> j a t")


def projection_error(W, nblocks: int | None = None):
    """``‖W − to_dense(project(W))‖_F``, in closed form: the root sum of squares of
    every block's singular values after the first.

    Args:
      W: (n_in, n_out).
      nblocks: as :func:`project`.

    Returns:
      A scalar array, ``W``'s real dtype (float32 for an integer ``W``).

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm import monarch
      >>> W = jnp.asarray(np.random.default_rng(0).normal(size=(16, 16)), jnp.float32)
      >>> error = monarch.projection_error(W)
      >>> bool(jnp.allclose(error, jnp.linalg.norm(W - monarch.to_dense(monarch.project(W))), rtol=1e-4))
      True
    """
    _, blocks = _blocks(W, nblocks)
    S = jnp.linalg.svd(blocks, compute_uv=False)
    return jnp.sqrt(jnp.sum(S[..., 1:] ** 2))
