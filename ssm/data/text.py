"""Byte-level language modelling on a local text file or folder.

The bytes of the file (or of every file under the folder whose name matches ``glob``,
in sorted path order, hidden ones skipped), at most ``max_bytes`` of them (0: all), are
concatenated and split contiguously: the first
1 - validation_fraction - test_fraction go to "train", then "validation", then "test".
Each split is cut into windows of L = ``seq_len`` bytes starting at 0, L, 2L, ...::

    inputs  = bytes[i : i + L]        targets = bytes[i + 1 : i + L + 1]

The last window of a split is shorter: its ``length`` counts its real positions, inputs
are padded with 0 and targets with IGNORE beyond it. Vocabulary: the 256 byte values.

The path comes from ``params["path"]`` (relative to ``data_dir`` when that is given) or,
when that is empty, from ``data_dir`` itself. ``stdlib:`` names the source folder of the
Python standard library that runs this code (``stdlib:json`` a folder inside it), a real
corpus every machine has; its ``site-packages`` is skipped. Nothing is generated, so
``seed`` plays no part and ``sizes`` only caps the number of windows per split.
"""

from __future__ import annotations

import dataclasses
import sysconfig
from pathlib import Path

import numpy as np

from ssm.data.task import IGNORE, SPLITS, Columns, Task, TaskInfo, check_float, check_int, check_str, fail


@dataclasses.dataclass(frozen=True)
class TextParams:
    """Parameters of the text task: each field's comment says what it is, and
    ``__post_init__`` checks them."""

    path: str = ""  # a file or folder (in a YAML file, relative to it), or stdlib:[subfolder]
    seq_len: int = 256  # bytes per window
    validation_fraction: float = 0.05  # of the bytes, after the train part
    test_fraction: float = 0.05  # of the bytes, at the end
    glob: str = "*"  # which files of a folder to read
    max_bytes: int = 0  # read at most this many bytes (0: everything)

    def __post_init__(self):
        check_str(self, "path")
        check_str(self, "glob")
        check_int(self, "seq_len", minimum=1)
        check_int(self, "max_bytes", minimum=0)
        check_float(self, "validation_fraction", low=0.0, high=1.0)
        check_float(self, "test_fraction", low=0.0, high=1.0)
        if self.validation_fraction + self.test_fraction >= 1.0:
            fail(self, "test_fraction", f"plus validation_fraction={self.validation_fraction} must be below 1")


def info(p: TextParams) -> TaskInfo:
    """Bytes: tokens over 256 ids, windows of ``seq_len``."""
    return TaskInfo("tokens", p.seq_len, 256, None, 256)


def generate(p: TextParams, n: int, seed: int) -> Columns:
    """Refused: the text task reads its data (:func:`read`), it generates none."""
    raise ValueError("the text task reads a file: give load_task params={'path': ...} or data_dir=...")


STDLIB = "stdlib:"
SKIPPED_IN_STDLIB = ("site-packages", "dist-packages", "__pycache__")


def sources(p: TextParams, data_dir: Path | None) -> list[Path]:
    """The files to read, in order."""
    stdlib = p.path.startswith(STDLIB)
    if stdlib:
        root = Path(sysconfig.get_paths()["stdlib"]) / p.path[len(STDLIB):]
    elif p.path:
        root = Path(p.path).expanduser()
        if data_dir is not None and not root.is_absolute():
            root = Path(data_dir) / root
    elif data_dir is not None:
        root = Path(data_dir)
    else:
        raise ValueError("the text task needs a file or folder: pass params={'path': ...} or data_dir=...")
    if root.is_file():
        return [root.resolve()]
    if not root.is_dir():
        raise FileNotFoundError(f"text path {str(root)!r} is neither a file nor a folder")
    skipped = SKIPPED_IN_STDLIB if stdlib else ()
    files = sorted(
        f.resolve()
        for f in root.rglob(p.glob)
        if f.is_file() and not any(part.startswith(".") or part in skipped for part in f.relative_to(root).parts)
    )
    if not files:
        raise FileNotFoundError(f"text folder {str(root)!r} holds no files matching glob={p.glob!r}")
    return files


def windows(data: np.ndarray, seq_len: int) -> Columns:
    """Next-byte windows of a uint8 array (m,): ``inputs``/``targets`` int32
    (ceil((m-1)/L), L), ``length`` int32."""
    n = -(-(len(data) - 1) // seq_len)
    padded = np.zeros(n * seq_len + 1, dtype=np.int32)
    padded[: len(data)] = data
    inputs = padded[:-1].reshape(n, seq_len).copy()
    targets = padded[1:].reshape(n, seq_len).copy()
    length = np.minimum(len(data) - 1 - np.arange(n) * seq_len, seq_len).astype(np.int32)
    beyond = np.arange(seq_len)[None, :] >= length[:, None]
    inputs[beyond] = 0  # the split's last byte has no target: it is not an input either
    targets[beyond] = IGNORE
    return {"inputs": inputs, "targets": targets, "length": length}


def read(p: TextParams, files: list[Path]) -> dict[str, Columns]:
    """The bytes of ``files`` (at most ``max_bytes``; 0: all) split into train, validation and test
    by the fractions, each cut into windows of ``seq_len`` (:func:`windows`)."""
    chunks, total = [], 0
    for f in files:
        if p.max_bytes and total >= p.max_bytes:
            break
        chunks.append(np.fromfile(f, dtype=np.uint8, count=p.max_bytes - total if p.max_bytes else -1))
        total += len(chunks[-1])
    data = np.concatenate(chunks)
    n_val = int(len(data) * p.validation_fraction)
    n_test = int(len(data) * p.test_fraction)
    bounds = np.cumsum([0, len(data) - n_val - n_test, n_val, n_test])
    out = {}
    for split, lo, hi in zip(SPLITS, bounds[:-1], bounds[1:]):
        if hi - lo < 2:
            raise ValueError(
                f"the {split} split of {len(data)} text bytes has {hi - lo} (at least 2 are needed); "
                "use more text or larger fractions"
            )
        out[split] = windows(data[lo:hi], p.seq_len)
    return out


TEXT = Task("text", TextParams, {}, info, generate, sources=sources, read=read)
