"""Byte-level language modelling on a local text file or folder.

The bytes of the file (or of every file under the folder whose name matches ``glob``,
in sorted path order, hidden ones skipped), at most ``max_bytes`` of them (0: all), are
concatenated and split contiguously: the first
1 - validation_fraction - test_fraction go to "train", then "validation", then "test".
Each split is cut into windows of L = ``seq_len`` bytes starting at 0, L, 2L, ...::

    inputs  = bytes[i : i + L]        targets = bytes[i + 1 : i + L + 1]

The last window of a split is shorter: its ``length`` counts its real positions, inputs
are padded with 0 and targets with IGNORE beyond it. Vocabulary: the 256 byte values.

With ``pack: true`` the rows hold documents instead of one stream (:func:`packed`). A
split's bytes are cut into documents at file boundaries and after each ``separator`` byte
(0..255; -1: none, each file is one document), which stays as the last byte of its
document so that a model learns to end one; the split's own ends end documents too. A
document of m bytes gives the m - 1 pairs ``inputs = doc[:-1]``, ``targets = doc[1:]``
(none when m < 2), cut into pieces at positions 0, L, 2L, ... as the windows above cut a
stream: a piece is one window of that document read alone. The pieces are packed in
order, never split, into rows of L positions by next fit (a piece that does not fit in
what is left of the row starts the next row), so only the tail of a row that the next
piece overflows is padding. Each row gets one more column, ``segment_ids`` int32 (n, L):
1, 2, 3, ... for its pieces in order and 0 beyond ``length``; positions with different ids
must not see each other (``SequenceModel(..., segment_ids=...)``). ``separator`` needs
``pack: true`` and is refused without it. ``pack: false`` (the default) is the stream above,
cached in the folders it had before these two fields existed.

The path comes from ``params["path"]`` (relative to ``data_dir`` when that is given) or,
when that is empty, from ``data_dir`` itself. ``stdlib:`` names the source folder of the
Python standard library that runs this code (``stdlib:json`` a folder inside it), a real
corpus every machine has; its ``site-packages`` is skipped. Nothing is generated, so
``seed`` plays no part and ``sizes`` only caps the number of windows (or packed rows) per split.
"""

from __future__ import annotations

import dataclasses
import sysconfig
from pathlib import Path

import numpy as np

from ssm.data.task import (IGNORE, SPLITS, Columns, Task, TaskInfo, check_bool, check_float, check_int, check_str,
                           fail)


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
    pack: bool = False  # pack whole documents (files, or up to each separator) into full rows with segment_ids
    separator: int = -1  # with pack: a byte value 0..255 that ends a document inside a file (-1: none)

    def __post_init__(self):
        check_str(self, "path")
        check_str(self, "glob")
        check_int(self, "seq_len", minimum=1)
        check_int(self, "max_bytes", minimum=0)
        check_float(self, "validation_fraction", low=0.0, high=1.0)
        check_float(self, "test_fraction", low=0.0, high=1.0)
        if self.validation_fraction + self.test_fraction >= 1.0:
            fail(self, "test_fraction", f"plus validation_fraction={self.validation_fraction} must be below 1")
        check_bool(self, "pack")
        check_int(self, "separator", minimum=-1)
        if self.separator > 255:
            fail(self, "separator", "must be a byte value 0..255, or -1 for none")
        if self.separator != -1 and not self.pack:
            fail(self, "separator", "needs pack: true (unpacked, the text is one stream of windows, not documents)")


def info(p: TextParams) -> TaskInfo:
    """Bytes: tokens over 256 ids, windows (or packed rows, ``packed``) of ``seq_len``."""
    return TaskInfo("tokens", p.seq_len, 256, None, 256, packed=p.pack)


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


def document_starts(data: np.ndarray, file_starts: np.ndarray, separator: int) -> np.ndarray:
    """Where the documents of a uint8 array (m,) begin: at 0, at each of ``file_starts``
    (offsets into ``data``; those outside [1, m) are left out) and after each ``separator``
    byte (-1: none). Returns the sorted distinct offsets, int64 (d,), each below m."""
    m = len(data)
    starts = [np.zeros(1, np.int64), np.asarray(file_starts, np.int64)]
    if separator >= 0:
        starts.append(np.flatnonzero(data == separator) + 1)
    starts = np.unique(np.concatenate(starts))
    return starts[(starts >= 0) & (starts < m)]


def next_fit(sizes: np.ndarray, capacity: int) -> np.ndarray:
    """The row of each item of ``sizes`` (int (p,), each in [1, capacity]) packed in order
    into rows of ``capacity`` by next fit: an item that does not fit in what is left of the
    current row starts the next one. Returns int64 (p,), nondecreasing from 0.

    A Python loop over the items (about 0.1 us each: 50 ms for the ~400k pieces of 100 MB
    of text at ``seq_len`` 256): next fit is sequential."""
    rows, row, fill = [], -1, capacity
    for size in sizes.tolist():
        if fill + size > capacity:
            row, fill = row + 1, 0
        fill += size
        rows.append(row)
    return np.array(rows, dtype=np.int64)


def packed(data: np.ndarray, starts: np.ndarray, seq_len: int) -> Columns:
    """The documents of a uint8 array (m,) that begin at ``starts`` (sorted, distinct, the
    first 0, as :func:`document_starts`) as next-byte pairs packed into rows of L = ``seq_len``.

    Document d (bytes ``starts[d]`` up to the next start) gives its pairs cut into pieces of
    at most L (positions 0..L-1, L..2L-1, ...); the pieces, in order, go into rows by
    :func:`next_fit`. Returns ``inputs``/``targets`` int32 (n, L) (0 and IGNORE beyond the
    row's ``length``), ``length`` int32 (n,) and ``segment_ids`` int32 (n, L) (1, 2, ... for
    the pieces of a row, 0 beyond ``length``); n is 0 when no document has 2 bytes.

    Vectorized but for :func:`next_fit`'s loop over the pieces; beyond the output, the
    memory is about 6 bytes per byte of ``data``."""
    L, m = seq_len, len(data)
    starts = np.asarray(starts, np.int64)
    ends = np.append(starts[1:], m)
    pairs = ends - starts - 1  # a document's last byte is a target only
    pairs = pairs[pairs > 0]
    n_pieces = -(-pairs // L)
    sizes = np.full(int(n_pieces.sum()), L, dtype=np.int64)
    sizes[np.cumsum(n_pieces) - 1] = pairs - (n_pieces - 1) * L  # each document's last piece
    row = next_fit(sizes, L)
    n = int(row[-1]) + 1 if len(row) else 0
    length = np.bincount(row, weights=sizes, minlength=n).astype(np.int32)
    segment = (np.arange(len(row)) - np.searchsorted(row, row) + 1).astype(np.int32)  # 1 + place in its row
    # the pieces fill each row's first `length` positions, in order, and hold the pairs in
    # the order of `data`: so the real positions, row by row, take the pairs in order
    filled = np.arange(L)[None, :] < length[:, None]
    is_input = np.ones(m, dtype=bool)
    is_input[ends - 1] = False
    inputs = np.zeros((n, L), dtype=np.int32)
    targets = np.full((n, L), IGNORE, dtype=np.int32)
    segment_ids = np.zeros((n, L), dtype=np.int32)
    inputs[filled] = data[is_input]
    targets[filled] = data[1:][is_input[:-1]]
    segment_ids[filled] = np.repeat(segment, sizes)
    return {"inputs": inputs, "targets": targets, "length": length, "segment_ids": segment_ids}


def read(p: TextParams, files: list[Path]) -> dict[str, Columns]:
    """The bytes of ``files`` (at most ``max_bytes``; 0: all) split into train, validation and test
    by the fractions, each cut into windows of ``seq_len`` (:func:`windows`) or, with ``pack``,
    into documents packed into rows (:func:`document_starts`, :func:`packed`)."""
    chunks, total = [], 0
    for f in files:
        if p.max_bytes and total >= p.max_bytes:
            break
        chunks.append(np.fromfile(f, dtype=np.uint8, count=p.max_bytes - total if p.max_bytes else -1))
        total += len(chunks[-1])
    data = np.concatenate(chunks)
    file_starts = np.cumsum([0] + [len(c) for c in chunks[:-1]])
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
        if not p.pack:
            out[split] = windows(data[lo:hi], p.seq_len)
            continue
        split_data = data[lo:hi]
        out[split] = packed(split_data, document_starts(split_data, file_starts - lo, p.separator), p.seq_len)
        if not len(out[split]["length"]):
            raise ValueError(
                f"the {split} split of {hi - lo} text bytes holds no document of at least 2 bytes "
                f"(separator={p.separator}); use more text or larger fractions"
            )
    return out


TEXT = Task("text", TextParams, {}, info, generate, sources=sources, read=read, keyed_when_set=("pack", "separator"))
