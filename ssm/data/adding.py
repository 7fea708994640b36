"""The adding problem (state-spaces/s4 ``src/dataloaders/datasets/adding.py``).

Inputs are L = ``seq_len`` steps of 2 channels: a U[0, 1) value and a marker that is 1
at exactly one position in each half ([0, L//2) and [L//2, L)). The target is the sum
of the two marked values (mean squared error; predicting the constant 1 scores 1/6)::

    inputs  float32 (L, 2)    targets float32 ()

Defaults as s4: L 1000, 50000 examples of which 10% validation; we add an equally
large test split.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ssm.data.task import Columns, Task, TaskInfo, check_int


@dataclasses.dataclass(frozen=True)
class AddingParams:
    """Parameters of the adding task: the defaults are the published setting, each
    field's comment says what it is, and ``__post_init__`` checks them."""

    seq_len: int = 1000  # steps of 2 channels (value, marker)

    def __post_init__(self):
        check_int(self, "seq_len", minimum=2)


def info(p: AddingParams) -> TaskInfo:
    """Regression on L steps of 2 channels: ``TaskInfo('regression', L, None, 2, 1)``."""
    return TaskInfo("regression", p.seq_len, None, 2, 1)


def generate(p: AddingParams, n: int, seed: int) -> Columns:
    """Returns ``inputs`` float32 (n, L, 2), ``targets`` float32 (n,), ``length`` int32 (n,) = L."""
    rng = np.random.default_rng(seed)
    L, mid = p.seq_len, p.seq_len // 2
    rows = np.arange(n)
    first = rng.integers(0, mid, size=n)
    second = rng.integers(mid, L, size=n)
    inputs = np.zeros((n, L, 2), dtype=np.float32)
    inputs[:, :, 0] = rng.random((n, L), dtype=np.float32)
    inputs[rows, first, 1] = 1.0
    inputs[rows, second, 1] = 1.0
    targets = inputs[rows, first, 0] + inputs[rows, second, 0]
    return {"inputs": inputs, "targets": targets.astype(np.float32), "length": np.full(n, L, dtype=np.int32)}


ADDING = Task("adding", AddingParams, {"train": 45_000, "validation": 5_000, "test": 5_000}, info, generate)
