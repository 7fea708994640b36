"""Monarch matrices (Dao et al., 2022): products of two block-diagonal matrices
and two fixed permutations, ``M = P L P^T R``, applied with two batched block
matmuls and reshapes; no dense matrix is ever built.

Layout, in the notation of :mod:`ssm.typing` (``k`` blocks; ``u``, ``v``, ``o`` the
widths of a block). A Monarch map from ``n_in = k·u`` to ``n_out = v·o`` features is a
pair of factors ``(R, L)``:

* ``R`` (k, u, v): ``k`` blocks, each maps ``u`` inputs to ``v`` outputs;
* ``L`` (v, k, o): ``v`` blocks, each maps ``k`` inputs to ``o`` outputs.

For ``x`` (..., n_in), in Flax's ``x @ W`` layout:

1. split ``x`` into ``k`` contiguous chunks of ``u`` and multiply chunk ``a`` by
   ``R[a]``: ``h[a, j]`` (k, v);
2. permute: transpose ``h`` to (v, k), so block ``j`` of ``L`` gathers output ``j``
   of every ``R`` block;
3. multiply row ``j`` by ``L[j]``: ``z[j, t]`` (v, o);
4. permute: output feature ``t·v + j`` is ``z[j, t]``.

Hence ``W[a·u + c, t·v + j] = R[a, c, j] · L[j, a, t]``: cut ``W`` into (u × o)
blocks ``W_{a,j}`` (rows ``a·u + c``, columns ``t·v + j``) and each is the rank-one
matrix ``R[a, :, j] ⊗ L[j, a, :]``. That is why :func:`project` is exact and
Frobenius-optimal by a rank-one SVD per block.

For a square ``n = k²`` with ``k`` blocks, ``R`` and ``L`` are ``k`` blocks of k × k and
this is the paper's ``P L P^T R`` with ``P`` the reshape-transpose ``i·k + j -> j·k + i``.
For any ``n`` and a divisor ``k`` the blocks of ``R`` are (n/k) × (n/k) and those of
``L`` are k × k. Rectangular maps use ``k | n_in`` and ``k | n_out``, with
``u = n_in/k``, ``v = n_out/k`` and ``o = k``: the intermediate width is ``n_out``.

Cost: ``k·u·v + v·k·o`` parameters (``2 n^1.5`` for ``k = sqrt(n)``, against ``n²``
dense) and as many multiply-adds per row of ``x``.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from einops import rearrange

from ssm.checks import check_positive_int
from ssm.typing import Array, ArrayLike, Float, Inexact, Num

__all__ = ["Factors", "divisors", "default_nblocks", "factor_shapes", "param_count", "flops", "sizes", "matmul",
           "to_dense", "project", "projection_error"]

#: A factor pair ``(R (k, u, v), L (v, k, o))`` (the layout of the module docstring).
Factors = tuple[Num[ArrayLike, "blocks block_in block_mid"], Num[ArrayLike, "block_mid blocks block_out"]]

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
    nearest ``sqrt(n_in)`` (the larger on a tie). For a square ``n = k²`` it is ``k``.

    Args:
      n_in: input features.
      n_out: output features (default ``n_in``).

    Returns:
      An int ``k`` dividing both sizes.

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
    ``((k, n_in/k, n_out/k), (n_out/k, k, k))`` (the layout of the module docstring).

    Args:
      n_in, n_out: sizes.
      nblocks: k, dividing both (default :func:`default_nblocks`).

    Returns:
      ``(R shape, L shape)``, two 3-tuples of ints.

    Example:
      >>> from ssm.monarch import factor_shapes
      >>> factor_shapes(16, 16), factor_shapes(12, 8)
      (((4, 4, 4), (4, 4, 4)), ((4, 3, 2), (2, 4, 4)))
    """
    n_in, n_out = _check_size("n_in", n_in), _check_size("n_out", n_out)
    k = _check_nblocks(n_in, n_out, nblocks)
    return (k, n_in // k, n_out // k), (n_out // k, k, k)


def param_count(n_in: int, n_out: int, nblocks: int | None = None) -> int:
    """Parameters of a Monarch map (also its multiply-adds per row of ``x``):
    ``k·u·v + v·k·o``, ``2 n^1.5`` for a square ``n`` with ``k = sqrt(n)``.

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
        raise ValueError(f"factors have shapes R {R.shape}, L {L.shape}; expected R (k, u, v) and L (v, k, o)")
    k, _, v = R.shape
    if L.shape[:2] != (v, k):
        raise ValueError(f"factors have shapes R {R.shape}, L {L.shape}; L must be ({v}, {k}, o) "
                         f"(one block per output of an R block, one input per R block)")
    return R, L


def sizes(factors: Factors) -> tuple[int, int]:
    """``(n_in, n_out)`` of a factor pair.

    Args:
      factors: ``(R (k, u, v), L (v, k, o))``.

    Returns:
      ``(k·u, v·o)``, two ints.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm import monarch
      >>> rng = np.random.default_rng(0)
      >>> R, L = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in monarch.factor_shapes(16, 16))
      >>> monarch.sizes((R, L))
      (16, 16)
    """
    R, L = _check_factors(factors)
    k, u, v = R.shape
    return k * u, v * L.shape[2]


# ------------------------------------------------------------------- the map


def matmul(x: Num[ArrayLike, "*batch n_in"], factors: Factors) -> Inexact[Array, "*batch n_out"]:
    """``x @ W`` for the Monarch matrix ``W`` of ``factors``, without forming ``W``.

    Args:
      x: (..., n_in).
      factors: ``(R (k, u, v), L (v, k, o))`` with ``n_in = k·u``.

    Returns:
      (..., n_out) with ``n_out = v·o``, in the promoted dtype of ``x`` and the factors.

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
    k, u, v = R.shape
    x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[-1] != k * u:
        raise ValueError(f"x has shape {x.shape}; expected (..., {k * u}) for factors R {R.shape}")
    # Blocks lead every operand, so both products are canonical batched matmuls and
    # XLA adds no transposes of its own: the three rearranges are all the data moves.
    rows = x.reshape(-1, k * u)  # (b, n_in): every leading axis in one
    h = jnp.einsum("kbu,kuv->kbv", rearrange(rows, "b (k u) -> k b u", k=k), R)  # (k, b, v)
    z = jnp.einsum("vbk,vko->vbo", rearrange(h, "k b v -> v b k"), L)  # (v, b, o)
    return rearrange(z, "v b o -> b (o v)").reshape(*x.shape[:-1], -1)


def to_dense(factors: Factors) -> Inexact[Array, "n_in n_out"]:
    """The (n_in, n_out) matrix ``W`` with ``matmul(x, factors) == x @ W``:
    ``W[a·u + c, t·v + j] = R[a, c, j] · L[j, a, t]``.

    Args:
      factors: ``(R (k, u, v), L (v, k, o))``.

    Returns:
      (k·u, v·o) in the factors' promoted dtype.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm import monarch
      >>> rng = np.random.default_rng(0)
      >>> R, L = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in monarch.factor_shapes(16, 16))
      >>> W = monarch.to_dense((R, L))
      >>> W.shape, int(jnp.linalg.matrix_rank(W[:4, ::4]))  # each (u x o) block W_{a,j} has rank one
      ((16, 16), 1)
    """
    R, L = _check_factors(factors)
    return rearrange(jnp.einsum("kuv,vko->kuvo", R, L), "k u v o -> (k u) (o v)")


def _blocks(W, nblocks):
    """``W`` (n_in, n_out) as an inexact array and its (k, v, u, o) blocks ``W_{a,j}``."""
    W = jnp.asarray(W)
    if W.ndim != 2:
        raise ValueError(f"W has shape {W.shape}; expected (n_in, n_out)")
    if not jnp.issubdtype(W.dtype, jnp.inexact):
        W = W.astype(jnp.float32)
    (k, u, v), (_, _, o) = factor_shapes(*W.shape, nblocks)
    return W, rearrange(W, "(k u) (o v) -> k v u o", k=k, u=u, o=o, v=v)


def project(W: Num[ArrayLike, "n_in n_out"], nblocks: int | None = None,
            ) -> tuple[Inexact[Array, "blocks block_in block_mid"], Inexact[Array, "block_mid blocks block_out"]]:
    """The Monarch matrix nearest ``W`` in Frobenius norm, as factors.

    Each (u × o) block ``W_{a,j}`` (see the module docstring) is replaced by its
    best rank-one approximation ``σ_1 u_1 v_1^H`` (Eckart–Young), split as
    ``R[a, :, j] = sqrt(σ_1) u_1`` and ``L[j, a, :] = sqrt(σ_1) v_1^H``. The blocks
    are independent, so this is the exact optimum; its error is
    :func:`projection_error`. Works for real and complex ``W``.

    Args:
      W: (n_in, n_out).
      nblocks: number of ``R`` blocks; must divide both sizes (default
        :func:`default_nblocks`).

    Returns:
      ``(R (k, n_in/k, n_out/k), L (n_out/k, k, k))`` in ``W``'s dtype (float32 for an
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
    root = jnp.sqrt(S[..., 0]).astype(W.dtype)  # (k, v)
    R = U[..., :, 0] * root[..., None]  # (k, v, u)
    L = Vh[..., 0, :] * root[..., None]  # (k, v, o)
    return rearrange(R, "k v u -> k u v"), rearrange(L, "k v o -> v k o")


def projection_error(W: Num[ArrayLike, "n_in n_out"], nblocks: int | None = None) -> Float[Array, ""]:
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
