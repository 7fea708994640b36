"""Vectorized sampling without replacement, one independent draw per row.

NumPy's ``Generator.choice(replace=False)`` draws one row at a time; the generators
need thousands of rows, each with its own small subset of a large population.
"""

from __future__ import annotations

import numpy as np


def distinct_integers(rng: np.random.Generator, rows: int, low: int, high: int, k: int) -> np.ndarray:
    """``k`` distinct integers from ``[low, high)`` per row, uniform over subsets and orders.

    Floyd's algorithm (one vectorized step per drawn element, O(rows k^2) work), then a
    per-row shuffle, since Floyd's subset is uniform but its order is not.

    Returns:
      int64 array (rows, k).
    """
    size = high - low
    if not 0 <= k <= size:
        raise ValueError(f"k={k} must be between 0 and the population size {size}")
    out = np.empty((rows, k), dtype=np.int64)
    for j, top in enumerate(range(size - k, size)):
        t = rng.integers(0, top + 1, size=rows)
        taken = (out[:, :j] == t[:, None]).any(axis=1)
        out[:, j] = np.where(taken, top, t)
    order = np.argsort(rng.random((rows, k)), axis=1)
    return np.take_along_axis(out, order, axis=1) + low


def weighted_distinct(rng: np.random.Generator, rows: int, p: np.ndarray, k: int) -> np.ndarray:
    """``k`` distinct indices into ``p`` per row, drawn one after another with
    probabilities ``p`` renormalised over what is left (as ``choice(replace=False, p=p)``).

    Gumbel top-k: the indices of the k largest ``log p + Gumbel`` keys, in decreasing key
    order, have exactly the distribution of successive weighted draws.

    Returns:
      int64 array (rows, k).
    """
    keys = np.log(p)[None, :] + rng.gumbel(size=(rows, len(p)))
    return np.argsort(-keys, axis=1, kind="stable")[:, :k].astype(np.int64)
