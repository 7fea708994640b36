"""``load_task``: tasks -> ``datasets.DatasetDict`` saved on disk, keyed by what built them.

A build writes ``cache_dir/<task>-<hash>/`` where the hash covers the task name, its
generator version, the validated parameters, the split sizes, the seed and, for tasks
that read files, each file's path, size and modification time. The folder is written
under a temporary name and renamed when complete, so a killed build leaves no folder
that a later call would take for a cache (only a ``.tmp-*`` folder to delete by hand).
A later call with the same key memory-maps the saved Arrow files (``load_from_disk``)
and generates nothing; a cache whose files are missing or not of the sizes recorded when
it was written (``ssm_task.json``) is built again, with a note.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import uuid
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ssm.data.registry import get_task, make_params
from ssm.data.task import IGNORE, SPLITS, Columns, Task, TaskInfo

FORMAT_VERSION = 1  # bump when the on-disk layout of every task changes
META_FILE = "ssm_task.json"


def derive_seed(seed: int, split: str) -> int:
    """The generation seed of one split: independent streams for each (seed, split)."""
    return int(np.random.SeedSequence([seed, zlib.crc32(split.encode())]).generate_state(1, np.uint64)[0])


def features(info: TaskInfo):
    """The ``datasets.Features`` of a task's splits (shapes in ``ssm.data.task``)."""
    from datasets import Array2D, Features, List, Value

    L = info.seq_len
    if info.d_input is None:
        inputs = List(Value("int32"), length=L)
    else:
        inputs = Array2D((L, info.d_input), "float32")
    targets = {
        "tokens": List(Value("int32"), length=L),
        "classification": Value("int32"),
        "regression": Value("float32"),
    }[info.kind]
    columns = {"inputs": inputs, "targets": targets, "length": Value("int32")}
    if info.packed:
        columns["segment_ids"] = List(Value("int32"), length=L)
    return Features(columns)


def _expected(info: TaskInfo, n: int) -> dict[str, tuple[tuple[int, ...], type]]:
    L = info.seq_len
    expected = {
        "inputs": ((n, L), np.int32) if info.d_input is None else ((n, L, info.d_input), np.float32),
        "targets": {
            "tokens": ((n, L), np.int32),
            "classification": ((n,), np.int32),
            "regression": ((n,), np.float32),
        }[info.kind],
        "length": ((n,), np.int32),
    }
    if info.packed:
        expected["segment_ids"] = ((n, L), np.int32)
    return expected


def to_dataset(columns: Columns, info: TaskInfo, fingerprint: str | None = None):
    """Columns (numpy, shapes as ``ssm.data.task``) -> ``datasets.Dataset``, without a
    Python pass over the rows (the Arrow arrays share the numpy buffers).

    ``fingerprint`` names the dataset for ``datasets``' own caching (random if None);
    without one, ``datasets`` would hash every byte of the table (seconds per 100 MB)."""
    import datasets
    import pyarrow as pa

    n = len(columns["length"])
    feats = features(info)
    schema = feats.arrow_schema
    arrays = {}
    for name, (shape, dtype) in _expected(info, n).items():
        x = np.ascontiguousarray(columns[name], dtype=dtype)
        if x.shape != shape:
            raise ValueError(f"generated column {name!r} has shape {x.shape}, expected {shape}")
        arr = pa.array(x.reshape(-1))
        field_type = schema.field(name).type
        if isinstance(field_type, pa.ExtensionType):  # Array2D stores variable-size lists
            for size in reversed(shape[1:]):
                offsets = pa.array(np.arange(0, len(arr) + 1, size, dtype=np.int32))
                arr = pa.ListArray.from_arrays(offsets, arr)
            arr = pa.ExtensionArray.from_storage(field_type, arr)
        else:
            for size in reversed(shape[1:]):
                arr = pa.FixedSizeListArray.from_arrays(arr, size)
        arrays[name] = arr
    table = pa.table(arrays, schema=schema)
    return datasets.Dataset(
        table, info=datasets.DatasetInfo(features=feats), fingerprint=fingerprint or uuid.uuid4().hex
    )


def split_sizes(task: Task, params, sizes: Mapping[str, int] | None,
                data_dir: str | os.PathLike | None) -> tuple[dict[str, int], list]:
    """``(sizes, files)`` a load of ``task`` uses: its split sizes (generated: the task's
    defaults overridden split by split; read from files: the caps given) and the files
    it reads (none for a generated task)."""
    files = task.sources(params, None if data_dir is None else Path(data_dir)) if task.sources else []
    return _resolve_sizes(task, sizes, from_files=bool(files)), files


def _resolve_sizes(task: Task, sizes: Mapping[str, int] | None, from_files: bool) -> dict[str, int]:
    sizes = dict(sizes or {})
    for split, n in sizes.items():
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} in sizes; expected some of {list(SPLITS)}")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"sizes[{split!r}]={n!r} must be a positive integer")
    if from_files:  # caps on what the files hold
        return {split: int(n) for split, n in sizes.items()}
    return {split: int(n) for split, n in {**task.default_sizes, **sizes}.items()}


def _fingerprint(files: list[Path]) -> list[list]:
    out = []
    for f in files:
        st = f.stat()
        out.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
    return out


def cache_key(task: Task, params, seed: int, sizes: dict[str, int], files: list[Path]) -> dict[str, Any]:
    """What the cache folder's name hashes (also written to its ``ssm_task.json``): the
    parameters in ``task.keyed_when_set`` only where they differ from their defaults."""
    defaults = {f.name: f.default for f in dataclasses.fields(params)}
    values = {name: value for name, value in dataclasses.asdict(params).items()
              if name not in task.keyed_when_set or value != defaults[name]}
    return {
        "format": FORMAT_VERSION,
        "task": task.name,
        "version": task.version,
        "params": values,
        "sizes": sizes,
        "seed": None if files else seed,  # read files do not depend on the seed
        "files": _fingerprint(files),
    }


def _build(task: Task, params, info: TaskInfo, seed: int, sizes: dict[str, int], files: list[Path], digest: str,
           splits: tuple[str, ...]):
    import datasets

    if files:
        split_columns = {split: cols for split, cols in task.read(params, files).items() if split in splits}
        split_columns = {
            split: {k: v[: sizes[split]] for k, v in cols.items()} if split in sizes else cols
            for split, cols in split_columns.items()
        }
    else:
        split_columns = {split: task.generate(params, n, derive_seed(seed, split)) for split, n in sizes.items()}
    for split, cols in split_columns.items():
        check_ids(f"{task.name} {split} split", cols, info)
    return datasets.DatasetDict(
        {split: to_dataset(cols, info, f"{task.name}-{digest}-{split}") for split, cols in split_columns.items()}
    )


def check_ids(where: str, columns: Columns, info: TaskInfo) -> None:
    """Token ids in [0, vocab_size) and class targets in [0, d_output) (IGNORE aside),
    checked once, when a dataset is built: an embedding would give NaN beyond the
    vocabulary and silently wrap -1 to its last row."""
    checks = []
    if info.d_input is None:
        checks.append(("inputs", np.asarray(columns["inputs"]), info.vocab_size))
    if info.kind in ("tokens", "classification"):
        targets = np.asarray(columns["targets"])
        checks.append(("targets", targets[targets != IGNORE], info.d_output))
    for name, values, size in checks:
        bad = values[(values < 0) | (values >= size)]
        if bad.size:
            raise ValueError(f"{where}: {name} hold {bad.size:,} ids outside [0, {size}) (e.g. {int(bad[0])})")


def _save_atomically(dataset_dict, folder: Path, meta: dict) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=folder.parent))
    try:
        dataset_dict.save_to_disk(str(tmp))
        stored = {p.relative_to(tmp).as_posix(): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        (tmp / META_FILE).write_text(json.dumps({**meta, "stored": stored}, indent=2) + "\n")
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / META_FILE).is_file():  # not a concurrent build of the same key
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _damage(folder: Path) -> str | None:
    """What is wrong with a finished cache folder: a file it stored that is missing or
    not of the size it was written with (None: nothing found, or no such folder)."""
    try:
        stored = json.loads((folder / META_FILE).read_text()).get("stored", {})
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as e:
        return f"its {META_FILE} does not read back: {e}"
    for name, size in stored.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size:,} bytes, not the {size:,} written"
    return None


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer")
    return int(seed)


def load_task(
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    seed: int = 0,
    sizes: Mapping[str, int] | None = None,
    cache_dir: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    splits: tuple[str, ...] | None = None,
):
    """Build (first call) or memory-map (later calls) a task's splits.

    Args:
      name: a key of ``ssm.data.TASKS``.
      params: overrides of the task's parameter dataclass fields (None: defaults).
      seed: generation seed; each split generates from its own seed derived from it.
      sizes: examples per split, overriding ``Task.default_sizes`` split by split; for
        data read from files, a cap on each split (default: everything).
      cache_dir: where the built datasets are kept, one folder per key.
      data_dir: where files are read from: LRA's ListOps TSVs, the text file or folder.
      splits: build only these (default: all three); each split is generated from its
        own seed, so a split built alone equals the same split built with the others.

    Returns:
      ``(DatasetDict, TaskInfo)``. The splits ("train", "validation", "test") have the
      columns ``inputs``, ``targets``, ``length`` (and ``segment_ids`` int32 (n, L) when
      ``TaskInfo.packed``: the text task with ``pack: true``) and are formatted as numpy: int32 for
      integer-only tasks; for vector-input tasks (adding) the float columns are float32
      but ``datasets`` hands out ``length`` as int64 (``get_batch`` and ``eval_batches``
      always return int32/float32).
    """
    import datasets

    task = get_task(name)
    params = make_params(task, params)
    info = task.info(params)
    seed = _check_seed(seed)
    sizes, files = split_sizes(task, params, sizes, data_dir)
    if splits is None:
        splits = SPLITS
    elif not splits or any(split not in SPLITS for split in splits):
        raise ValueError(f"splits={splits!r}; expected a non-empty subset of {SPLITS}")
    else:
        splits = tuple(split for split in SPLITS if split in splits)
    if not files:
        sizes = {split: n for split, n in sizes.items() if split in splits}
    key = cache_key(task, params, seed, sizes, files)
    if splits != SPLITS:  # only then: the key of a full build stays what it always was
        key["splits"] = list(splits)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    folder = Path(cache_dir) / f"{name}-{digest}"
    damage = _damage(folder)
    if damage:
        print(f"note: the dataset cache {folder} is damaged ({damage}); building it again")
        shutil.rmtree(folder)
    if not (folder / META_FILE).is_file():
        built = _build(task, params, info, seed, sizes, files, digest, splits)
        _save_atomically(built, folder, {"key": key, "info": dataclasses.asdict(info)})
        del built
    dataset_dict = datasets.load_from_disk(str(folder))
    if info.d_input is None:
        return dataset_dict.with_format("numpy", dtype=np.int32), info
    return dataset_dict.with_format("numpy"), info
