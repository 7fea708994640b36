"""Induction heads (HazyResearch/safari ``src/dataloaders/synthetics.py``,
``generate_induction_head`` with one trigger and ``induction_len`` 1).

V = ``vocab_size`` ids, as safari: 0..V-3 are ordinary tokens, V-2 is the trigger
"=>" and V-1 the no-op "." (unused here, kept so the vocabulary matches the
associative recall task). A context of ``input_seq_len`` random ordinary tokens holds
one trigger at a random position p in [0, input_seq_len - 3]; the trigger is repeated
at the end and the model must answer with the token that followed its first occurrence::

    inputs  = context ++ [V-2]                      (L = input_seq_len + 1,)
    targets = [IGNORE] * input_seq_len ++ [context[p + 1]]

Scored at the final position only (safari scores only there at test time). Defaults:
vocab 20, input_seq_len 30, 5000/500 examples.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ssm.data.task import IGNORE, Columns, Task, TaskInfo, check_int


@dataclasses.dataclass(frozen=True)
class InductionParams:
    """Parameters of the induction heads task: the defaults are the published setting, each
    field's comment says what it is, and ``__post_init__`` checks them."""

    vocab_size: int = 20  # ids: vocab_size - 2 ordinary tokens, the trigger and a no-op
    input_seq_len: int = 30  # context length before the repeated trigger

    def __post_init__(self):
        check_int(self, "vocab_size", minimum=3)
        check_int(self, "input_seq_len", minimum=3)


def trigger_id(vocab_size: int) -> int:
    """Id of the trigger "=>" (the no-op "." is ``vocab_size - 1``)."""
    return vocab_size - 2


def info(p: InductionParams) -> TaskInfo:
    """Tokens over ``vocab_size`` ids, length ``input_seq_len + 1`` (the context and the
    repeated trigger)."""
    return TaskInfo("tokens", p.input_seq_len + 1, p.vocab_size, None, p.vocab_size)


def generate(p: InductionParams, n: int, seed: int) -> Columns:
    """Returns ``inputs`` and ``targets`` int32 (n, L) and ``length`` int32 (n,) = L."""
    rng = np.random.default_rng(seed)
    trigger = trigger_id(p.vocab_size)
    context = rng.integers(0, trigger, size=(n, p.input_seq_len)).astype(np.int32)
    pos = rng.integers(0, p.input_seq_len - 2, size=n)
    rows = np.arange(n)
    context[rows, pos] = trigger
    inputs = np.concatenate([context, np.full((n, 1), trigger, dtype=np.int32)], axis=1)
    targets = np.full(inputs.shape, IGNORE, dtype=np.int32)
    targets[:, -1] = context[rows, pos + 1]
    return {"inputs": inputs, "targets": targets, "length": np.full(n, inputs.shape[1], dtype=np.int32)}


INDUCTION_HEADS = Task(
    "induction_heads", InductionParams, {"train": 5_000, "validation": 500, "test": 500}, info, generate
)
