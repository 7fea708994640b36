"""What a task is: its static description (`TaskInfo`), its registry entry (`Task`), and
the checks its parameter dataclasses run in ``__post_init__``.

Column conventions shared by every task (n examples, L = ``TaskInfo.seq_len``):

=========  ==============================  ==================  =========================
column     tokens task                     classification      regression
=========  ==============================  ==================  =========================
inputs     int32 (n, L)                    int32 (n, L)        float32 (n, L, d_input)
targets    int32 (n, L), ``IGNORE`` where  int32 (n,)          float32 (n,)
           not scored
length     int32 (n,): real positions;     (the same)          (the same)
           inputs are right-padded with
           0 beyond it
=========  ==============================  ==================  =========================

A task whose rows pack several sequences (``TaskInfo.packed``: the text task with
``pack: true``) has one more column, ``segment_ids`` int32 (n, L): 1, 2, 3, ... for the
sequences of a row in order, 0 beyond ``length``; positions with different ids belong to
different sequences and must not see each other.

Nothing here imports ``datasets``: building and caching live in ``ssm.data.cache``.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

IGNORE = -100
"""Target value at positions that are not scored (the PyTorch/Hugging Face convention)."""

SPLITS = ("train", "validation", "test")  #: The splits every task has, in this order.

Kind = Literal["tokens", "classification", "regression"]


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """Static shapes a model needs to be built for a task.

    Attributes:
      kind: ``"tokens"`` (a target per position), ``"classification"`` (one class per
        sequence) or ``"regression"`` (one float per sequence).
      seq_len: padded input length L.
      vocab_size: number of input token ids (token inputs), else None.
      d_input: width of float-vector inputs (e.g. 2 for adding), else None.
      d_output: output vocabulary (tokens), number of classes, or 1 (regression).
      packed: rows pack several sequences: every split has a ``segment_ids`` column
        int32 (n, L) (module docstring) that a model must be given, so that its
        sequences stay apart.
    """

    kind: Kind
    seq_len: int
    vocab_size: int | None
    d_input: int | None
    d_output: int
    packed: bool = False

    def __post_init__(self):
        if self.kind not in ("tokens", "classification", "regression"):
            raise ValueError(f"kind={self.kind!r} must be 'tokens', 'classification' or 'regression'")
        if (self.vocab_size is None) == (self.d_input is None):
            raise ValueError("exactly one of vocab_size (token inputs) and d_input (vector inputs) is set")


Columns = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Task:
    """One entry of ``ssm.data.TASKS``.

    Attributes:
      name: registry key.
      params: frozen dataclass of generation parameters; its defaults are the published
        setting and its ``__post_init__`` validates.
      default_sizes: examples per split ("train", "validation", "test") when generating.
        Empty for tasks that only read files (then every example in the files is used).
      info: ``info(params) -> TaskInfo``.
      generate: ``generate(params, n, seed) -> {"inputs", "targets", "length"}``, numpy
        arrays with n rows (shapes in the module docstring), deterministic in ``seed``.
      version: bump when the generator's output for the same (params, seed) changes; it
        is part of the cache key.
      sources: optional ``sources(params, data_dir) -> list[Path]``: the files to read
        instead of generating (empty list: generate). They are fingerprinted (path, size,
        mtime) into the cache key.
      read: ``read(params, files) -> {split: columns}``, required when ``sources`` is set.
      keyed_when_set: parameters added after caches of the task were written: the cache
        key holds each of them only when it differs from its default, so the caches built
        before it existed keep their folders.
    """

    name: str
    params: type
    default_sizes: Mapping[str, int] = dataclasses.field(compare=False)
    info: Callable[[Any], TaskInfo] = dataclasses.field(compare=False)
    generate: Callable[[Any, int, int], Columns] = dataclasses.field(compare=False)
    version: int = 1
    sources: Callable[[Any, Path | None], list[Path]] | None = dataclasses.field(default=None, compare=False)
    read: Callable[[Any, list[Path]], dict[str, Columns]] | None = dataclasses.field(default=None, compare=False)
    keyed_when_set: tuple[str, ...] = dataclasses.field(default=(), compare=False)


# ----------------------------------------------------------------------------- checks
# Each check reads ``params.<name>``, raises ValueError naming the field, the value and
# what is expected, and normalises the value (numpy ints -> int, ints -> float) so that
# equal settings hash to the same cache folder.


def fail(params, name: str, expected: str):
    """Raise ValueError: ``<Params>: <name>=<value> <expected>``."""
    value = getattr(params, name)
    raise ValueError(f"{type(params).__name__}: {name}={value!r} {expected}")


def _set(params, name: str, value) -> None:
    object.__setattr__(params, name, value)


def check_int(params, name: str, minimum: int = 1) -> int:
    """``params.<name>`` as an int >= ``minimum`` (stored back as a plain int), else :func:`fail`."""
    value = getattr(params, name)
    phrase = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
    if isinstance(value, bool):
        fail(params, name, f"must be {phrase}")
    try:
        value = operator.index(value)
    except TypeError:
        fail(params, name, f"must be {phrase}")
    if value < minimum:
        fail(params, name, f"must be {phrase}")
    _set(params, name, value)
    return value


def check_float(params, name: str, *, low: float, high: float = math.inf, include_low: bool = False) -> float:
    """``params.<name>`` as a float in ``(low, high]`` (``[low, high]`` with ``include_low``),
    stored back as a float, else :func:`fail`."""
    value = getattr(params, name)
    if high == math.inf:
        bounds = f"{'>=' if include_low else '>'} {low:g}"
    else:
        bounds = f"in {'[' if include_low else '('}{low:g}, {high:g}]"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        fail(params, name, f"must be a number {bounds}")
    value = float(value)
    if not (value >= low if include_low else value > low) or value > high or math.isnan(value):
        fail(params, name, f"must be a number {bounds}")
    _set(params, name, value)
    return value


def check_bool(params, name: str) -> bool:
    """``params.<name>`` as a bool (NumPy bools too), stored back, else :func:`fail`."""
    value = getattr(params, name)
    if not isinstance(value, (bool, np.bool_)):
        fail(params, name, "must be true or false")
    _set(params, name, bool(value))
    return bool(value)


def check_str(params, name: str) -> str:
    """``params.<name>`` as a str (a ``Path`` becomes one), stored back, else :func:`fail`."""
    value = getattr(params, name)
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str):
        fail(params, name, "must be a string")
    _set(params, name, value)
    return value


def param_names(params_cls: type) -> list[str]:
    """The field names of a task's parameter dataclass, in order."""
    return [f.name for f in dataclasses.fields(params_cls)]
