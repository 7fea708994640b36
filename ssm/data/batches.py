"""Batches as numpy dicts with fixed shapes, for a jitted step that compiles once.

Every batch holds the split's columns (``segment_ids`` int32 (batch, L) too, where the
task packs its rows: ``TaskInfo.packed``) plus
  ``mask``  bool (batch, L): ``arange(L) < length``, the real positions;
  ``valid`` bool (batch,): False only on the rows that pad the last eval batch.
Dtypes are exact: int32 token ids, targets and lengths; float32 vector inputs and
regression targets (``datasets``' numpy formatter would widen int32 to int64).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np

from ssm.checks import check_positive_int
from ssm.data.task import IGNORE

Batch = dict[str, np.ndarray]


def _to_numpy(column) -> np.ndarray:
    """A pyarrow column of scalars or (nested) fixed-shape lists -> numpy (rows, *shape)."""
    import pyarrow as pa

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    shape = [len(arr)]
    if isinstance(arr, pa.ExtensionArray):  # Array2D: lists of lists
        arr = arr.storage
    while pa.types.is_list(arr.type) or pa.types.is_fixed_size_list(arr.type):
        outer, arr = len(arr), arr.flatten()  # flatten (unlike .values) honours slicing
        shape.append(len(arr) // outer)
    return arr.to_numpy(zero_copy_only=False).reshape(shape)


def take(dataset, indices) -> Batch:
    """Rows ``indices`` (a sequence of ints or a slice) of a split, with ``mask`` and ``valid``."""
    table = dataset.with_format("arrow")[indices]
    batch = {name: _to_numpy(table.column(name)) for name in table.column_names}
    seq_len = batch["inputs"].shape[1]
    batch["mask"] = np.arange(seq_len)[None, :] < batch["length"][:, None]
    batch["valid"] = np.ones(len(batch["length"]), dtype=bool)
    return batch


@functools.lru_cache(maxsize=4)
def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the ``n`` examples in ``epoch``: a pure function of (seed, epoch)."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    perm.setflags(write=False)
    return perm


def get_batch(dataset, step: int, batch_size: int, *, seed: int) -> Batch:
    """The training batch at global step ``step``: a pure function of (step, seed).

    Epoch e = step // (len(dataset) // batch_size) visits the examples in the order
    ``epoch_permutation(len(dataset), seed, e)``; the last incomplete batch of an epoch
    is dropped. A resumed run needs only the step to continue with the same batches.

    Returns:
      the columns (inputs (batch, L) or (batch, L, d_input), targets, length (batch,),
      segment_ids (batch, L) where the split has them),
      ``mask`` (batch, L) and ``valid`` (batch,) (all True).
    """
    n = len(dataset)
    check_positive_int("batch_size", batch_size)
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size} is larger than the split ({n} examples)")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step={step!r} must be a non-negative integer")
    epoch, i = divmod(int(step), n // batch_size)
    indices = epoch_permutation(n, int(seed), epoch)[i * batch_size : (i + 1) * batch_size]
    return take(dataset, indices)


def _pad(batch: Batch, batch_size: int) -> Batch:
    """Pad rows to ``batch_size``: inputs 0, targets IGNORE (per-position) or 0, length 0,
    segment_ids 0, mask and valid False."""
    out = {}
    for name, x in batch.items():
        fill = IGNORE if name == "targets" and x.ndim == 2 else 0
        pad = np.full((batch_size - len(x), *x.shape[1:]), fill, dtype=x.dtype)
        out[name] = np.concatenate([x, pad])
    return out


def eval_batches(dataset, batch_size: int) -> Iterator[Batch]:
    """The whole split in order, ``batch_size`` rows at a time; the last batch is padded
    to ``batch_size`` (``valid`` False on the padding rows), so every batch has one shape.

    Weight per-example metrics by ``valid`` (and per-position ones by ``mask`` and
    ``targets != IGNORE``); padding rows have ``mask`` all False (and ``segment_ids``,
    where the split has them, all 0).
    """
    check_positive_int("batch_size", batch_size)
    n = len(dataset)
    for start in range(0, n, batch_size):
        batch = take(dataset, slice(start, min(start + batch_size, n)))
        yield _pad(batch, batch_size) if len(batch["length"]) < batch_size else batch
