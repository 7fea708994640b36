"""LRA ListOps (google-research/long-range-arena ``lra_benchmarks/data/listops.py`` for
the grammar, ``lra_benchmarks/listops/input_pipeline.py`` for the tokenization).

Expressions over the digits 0-9 with the operators MIN, MAX, MED (``int`` of the
median, as LRA's ``int(np.median(...))``) and SM (sum mod 10); FIRST and LAST are
disabled, as in LRA. In the text format an operator opens with ``[MIN`` and closes
with ``]``; the published TSV files also wrap every partial application in ``(`` ``)``::

    [MAX 2 9 [MIN 4 7 ] 0 ]                              -> 9
    ( ( ( ( [MAX 2 ) 9 ) ( ( [MIN 4 ) 7 ) ] ) ) 0 ) ] )   (the same, as in the TSVs)

Generation follows LRA's ``generate_tree`` draw for draw (``random.Random(seed)`` plays
LRA's module-level ``random``): from depth 1, a node above ``max_depth`` is a leaf
with probability 0.75 (``random() > 0.25``), else an operator with
``randint(2, max_args)`` arguments (2..10 with the default ``max_args`` 10: Python's
``randint`` includes both ends); nodes at ``max_depth`` are leaves. An expression of
``length`` tokens (1 per digit, 2 per operator: its head and its ``]``) is kept when
``min_length < length < max_length`` and not seen before in the split (duplicates across
splits need tiny bounds to happen at all).

Tokenization (as LRA and s4): drop ``(`` and ``)``, rename ``]`` to ``X``, split on
whitespace, map through the fixed ``VOCAB`` (0 = padding), truncate and right-pad to
``seq_len``. Ten classes. Defaults as LRA: 96000/2000/2000 examples, lengths in
(500, 2000), padded to 2000. With ``data_dir``, ``load_task`` reads LRA's
``basic_{train,val,test}.tsv`` (columns ``Source``, ``Target``) instead of generating.
"""

from __future__ import annotations

import csv
import dataclasses
import random
from pathlib import Path

import numpy as np

from ssm.data.task import Columns, Task, TaskInfo, check_int, fail

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")  # LRA's order: random.choice draws from it
END = "X"  # "]" after tokenization
VOCAB = ("<pad>", *"0123456789", *OPERATORS, END)
PAD = 0
TOKEN_ID = {token: i for i, token in enumerate(VOCAB)}
DIGIT_IDS = tuple(TOKEN_ID[str(v)] for v in range(10))
TSV_FILES = {"train": "basic_train.tsv", "validation": "basic_val.tsv", "test": "basic_test.tsv"}
VALUE_P = 0.25  # LRA: a node is a leaf when random() > VALUE_P


def apply(op: str, args: list[int]) -> int:
    """Value of operator ``op`` (``"[MIN"``, ...) on the digits ``args``."""
    if not args:
        raise ValueError(f"operator {op} has no arguments")
    if op == "[MIN":
        return min(args)
    if op == "[MAX":
        return max(args)
    if op == "[MED":  # int(np.median(args)): the mean of the middle pair, truncated
        s, m = sorted(args), len(args) // 2
        return s[m] if len(args) % 2 else (s[m - 1] + s[m]) // 2
    if op == "[SM":
        return sum(args) % 10
    raise ValueError(f"unknown operator {op!r}; expected one of {OPERATORS}")


def split_tokens(source: str) -> list[str]:
    """LRA/s4 tokenization: drop "(" and ")", rename "]" to "X", split on whitespace."""
    return source.translate({ord("]"): END, ord("("): None, ord(")"): None}).split()


def tokenize(source: str) -> list[int]:
    """Token ids of an expression in the text format."""
    try:
        return [TOKEN_ID[t] for t in split_tokens(source)]
    except KeyError as e:
        raise ValueError(f"unknown ListOps token {e.args[0]!r}; expected one of {VOCAB[1:]}") from None


def decode(ids) -> str:
    """Text of token ids (padding dropped), with "]" for the closing token."""
    return " ".join("]" if i == TOKEN_ID[END] else VOCAB[i] for i in np.asarray(ids).tolist() if i != PAD)


def evaluate(source: str) -> int:
    """Value (0..9) of an expression such as ``"[MAX 2 9 [MIN 4 7 ] 0 ]"``; the TSVs'
    parentheses and the tokenized ``X`` for ``]`` are accepted too."""
    stack: list[tuple[str, list[int]]] = []
    result = None
    tokens = split_tokens(source)
    for i, token in enumerate(tokens):
        if result is not None:
            raise ValueError(f"unexpected {token!r} after the end of the expression in {source!r}")
        if token in OPERATORS:
            stack.append((token, []))
            continue
        if token == END:
            if not stack:
                raise ValueError(f"unbalanced ']' at token {i} of {source!r}")
            value = apply(*stack.pop())
        elif token in TOKEN_ID and token.isdigit():
            value = int(token)
        else:
            raise ValueError(f"unknown ListOps token {token!r} in {source!r}; expected one of {VOCAB[1:]}")
        if stack:
            stack[-1][1].append(value)
        else:
            result = value
    if result is None:
        raise ValueError(f"incomplete ListOps expression {source!r}")
    return result


@dataclasses.dataclass(frozen=True)
class ListOpsParams:
    """Parameters of the ListOps task: the defaults are the published setting, each
    field's comment says what it is, and ``__post_init__`` checks them."""

    max_depth: int = 10  # deepest nesting of operators
    max_args: int = 10  # most arguments of one operator
    min_length: int = 500  # generated expressions are longer than this (tokens)
    max_length: int = 2000  # and shorter than this
    seq_len: int = 2000  # padded length; longer (read) expressions are truncated, as LRA

    def __post_init__(self):
        check_int(self, "max_depth", minimum=1)
        check_int(self, "max_args", minimum=2)
        check_int(self, "min_length", minimum=0)
        check_int(self, "max_length", minimum=2)
        check_int(self, "seq_len", minimum=1)
        if self.max_length - self.min_length < 2:
            fail(self, "max_length", f"must exceed min_length={self.min_length} by at least 2 (both are exclusive)")
        if self.seq_len < self.max_length - 1:
            fail(self, "seq_len", f"must hold the longest generated expression, max_length - 1 = {self.max_length - 1}")


def info(p: ListOpsParams) -> TaskInfo:
    """Classification into the 10 values of an expression, inputs of ``seq_len`` tokens
    over the ListOps vocabulary."""
    return TaskInfo("classification", p.seq_len, len(VOCAB), None, 10)


def _tree_sampler(rnd: random.Random, max_depth: int, max_args: int):
    """LRA's ``generate_tree`` as ``tree(depth, out) -> value``, emitting token ids into
    the list ``out``. It draws exactly as LRA does: ``random()`` per node above
    ``max_depth``, ``choice(range(10))`` per leaf, ``randint(2, max_args)`` then the
    arguments then ``choice(OPERATORS)`` per operator; calling ``_randbelow`` (what those
    methods reduce to) directly halves the time."""
    random_, below = rnd.random, rnd._randbelow
    op_ids, end_id = tuple(TOKEN_ID[op] for op in OPERATORS), TOKEN_ID[END]

    def tree(depth: int, out: list[int]) -> int:
        if depth < max_depth and random_() <= VALUE_P:
            n_args = 2 + below(max_args - 1)  # randint(2, max_args)
            head = len(out)
            out.append(PAD)  # the operator is drawn after its arguments
            args = [tree(depth + 1, out) for _ in range(n_args)]
            k = below(len(OPERATORS))  # choice(OPERATORS)
            out[head] = op_ids[k]
            out.append(end_id)
            return apply(OPERATORS[k], args)
        value = below(10)  # choice(range(10))
        out.append(DIGIT_IDS[value])
        return value

    return tree


def _pack(rows: list[bytes], labels: list[int], seq_len: int) -> Columns:
    """Token ids, one ``bytes`` per example (every id is below 256), -> padded columns."""
    inputs = np.zeros((len(rows), seq_len), dtype=np.int32)
    length = np.empty(len(rows), dtype=np.int32)
    for i, ids in enumerate(rows):
        ids = np.frombuffer(ids, dtype=np.uint8)[:seq_len]
        inputs[i, : len(ids)] = ids
        length[i] = len(ids)
    return {"inputs": inputs, "targets": np.asarray(labels, dtype=np.int32), "length": length}


def generate(p: ListOpsParams, n: int, seed: int) -> Columns:
    """Returns ``inputs`` int32 (n, seq_len), ``targets`` int32 (n,) in 0..9 and
    ``length`` int32 (n,). One Python tree per example (about 0.6 ms each at the defaults)."""
    tree = _tree_sampler(random.Random(seed), p.max_depth, p.max_args)
    seen: set[bytes] = set()
    rows, labels = [], []
    attempts, max_attempts = 0, 1000 * n + 10_000
    while len(rows) < n:
        attempts += 1
        if attempts > max_attempts:
            raise RuntimeError(
                f"found only {len(rows)} distinct ListOps expressions with {p.min_length} < length < "
                f"{p.max_length} in {max_attempts} trees; widen the bounds or ask for fewer examples"
            )
        out: list[int] = []
        value = tree(1, out)
        if not p.min_length < len(out) < p.max_length:
            continue
        ids = bytes(out)  # the set shares these objects with ``rows``
        if ids in seen:
            continue
        seen.add(ids)
        rows.append(ids)
        labels.append(value)
    return _pack(rows, labels, p.seq_len)


def sources(p: ListOpsParams, data_dir: Path | None) -> list[Path]:
    """LRA's three TSV files in ``data_dir``; none (generate) when ``data_dir`` is None."""
    if data_dir is None:
        return []
    files = [Path(data_dir) / name for name in TSV_FILES.values()]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"data_dir={str(data_dir)!r} lacks the LRA ListOps files {missing}; it needs {list(TSV_FILES.values())} "
            "(from lra_release, folder listops-1000), or pass data_dir=None to generate"
        )
    return files


def read_tsv(path: Path, seq_len: int) -> Columns:
    """One LRA TSV file (header ``Source``, ``Target``) -> columns, as ``generate``."""
    rows, labels = [], []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        if reader.fieldnames is None or not {"Source", "Target"} <= set(reader.fieldnames):
            raise ValueError(f"{path} must have the columns 'Source' and 'Target'; found {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            try:
                rows.append(bytes(tokenize(row["Source"])))
                labels.append(int(row["Target"]))
            except ValueError as e:
                raise ValueError(f"{path}, line {line}: {e}") from None
    return _pack(rows, labels, seq_len)


def read(p: ListOpsParams, files: list[Path]) -> dict[str, Columns]:
    """The columns of each split from LRA's TSV files (:func:`read_tsv`), in the order of
    :func:`sources`."""
    return {split: read_tsv(path, p.seq_len) for split, path in zip(TSV_FILES, files)}


LISTOPS = Task(
    "listops",
    ListOpsParams,
    {"train": 96_000, "validation": 2_000, "test": 2_000},
    info,
    generate,
    sources=sources,
    read=read,
)
