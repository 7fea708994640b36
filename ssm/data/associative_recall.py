"""Associative recall (HazyResearch/safari ``src/dataloaders/synthetics.py``,
``generate_assoc_recall`` with ``num_keys`` 1 and ``allow_dot`` False).

V = ``vocab_size`` ids, as safari: of the V-2 ordinary ids, the first K = (V-2)//2 are
keys and the rest values; V-2 is the trigger "=>" and V-1 the no-op ".". Each example
draws its own map key -> value (values may repeat), then ``input_seq_len``/2 random
(key, value) pairs; keys repeat with the same value. The query is a key that occurs
in the context (uniform over the distinct keys present), after the trigger::

    inputs  = k1 v1 k2 v2 ... ++ [V-2, q]                   (L = input_seq_len + 2,)
    targets = [IGNORE] * (L - 1) ++ [value of q]

Scored at the final position only. Defaults: vocab 20, input_seq_len 40, 5000/500.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ssm.data.task import IGNORE, Columns, Task, TaskInfo, check_int, fail


@dataclasses.dataclass(frozen=True)
class AssociativeRecallParams:
    """Parameters of the associative recall task: the defaults are the published setting, each
    field's comment says what it is, and ``__post_init__`` checks them."""

    vocab_size: int = 20  # ids: keys, values, the trigger and a no-op
    input_seq_len: int = 40  # context length: input_seq_len / 2 (key, value) pairs

    def __post_init__(self):
        check_int(self, "vocab_size", minimum=4)
        check_int(self, "input_seq_len", minimum=2)
        if self.input_seq_len % 2:
            fail(self, "input_seq_len", "must be even: the context is (key, value) pairs")


def trigger_id(vocab_size: int) -> int:
    """Id of the query trigger: ``vocab_size - 2``."""
    return vocab_size - 2


def n_keys(vocab_size: int) -> int:
    """Keys are ids 0..K-1, values K..V-3."""
    return (vocab_size - 2) // 2


def info(p: AssociativeRecallParams) -> TaskInfo:
    """Tokens over ``vocab_size`` ids, length ``input_seq_len + 2`` (the context, the
    trigger and the query key)."""
    return TaskInfo("tokens", p.input_seq_len + 2, p.vocab_size, None, p.vocab_size)


def generate(p: AssociativeRecallParams, n: int, seed: int) -> Columns:
    """Returns ``inputs`` and ``targets`` int32 (n, L) and ``length`` int32 (n,) = L."""
    rng = np.random.default_rng(seed)
    trigger, K = trigger_id(p.vocab_size), n_keys(p.vocab_size)
    rows = np.arange(n)
    value_of = rng.integers(K, trigger, size=(n, K))  # (n, K): each example's map
    keys = rng.integers(0, K, size=(n, p.input_seq_len // 2))
    context = np.empty((n, p.input_seq_len), dtype=np.int32)
    context[:, 0::2] = keys
    context[:, 1::2] = np.take_along_axis(value_of, keys, axis=1)
    present = np.zeros((n, K), dtype=bool)
    present[rows[:, None], keys] = True
    query = np.argmax(np.where(present, rng.random((n, K)), -1.0), axis=1)
    inputs = np.concatenate(
        [context, np.full((n, 1), trigger, dtype=np.int32), query[:, None].astype(np.int32)], axis=1
    )
    targets = np.full(inputs.shape, IGNORE, dtype=np.int32)
    targets[:, -1] = value_of[rows, query]
    return {"inputs": inputs, "targets": targets, "length": np.full(n, inputs.shape[1], dtype=np.int32)}


ASSOCIATIVE_RECALL = Task(
    "associative_recall", AssociativeRecallParams, {"train": 5_000, "validation": 500, "test": 500}, info, generate
)
