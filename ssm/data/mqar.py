"""Multi-query associative recall, MQAR (HazyResearch/zoology
``zoology/data/multiquery_ar.py``, one pass: ``num_passes`` 1).

With V = ``vocab_size``, L = ``input_seq_len`` and D = ``num_kv_pairs``: D distinct
keys from [1, V/2) and D distinct values from [V/2, V) form the context
k1 v1 ... kD vD (2D positions). Every key is then queried once, at position
2D + 2 g, where the gaps g are D distinct draws from [0, (L - 2D)/2) with
p(g = i) proportional to (i + 1)^(power_a - 1) (short gaps are likelier). The target
at a query's position is its value (the next token in Zoology's shifted labels);
every other target is IGNORE. The positions that are neither context nor query hold 0,
replaced by uniform random ids from [0, V) when ``random_non_queries`` (the default)::

    inputs  (L,): k1 v1 ... kD vD  x x k3 x x x k1 x ...
    targets (L,):  -100 ...           -100 v3 ...  -100 v1 ...

Defaults as Zoology: V 8192, L 64, D 8, power_a 0.01; 100000 train and 3000 test
examples. Zoology asserts L even, V > L and 4 D <= L; so does ``MQARParams``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ssm.data.sampling import distinct_integers, weighted_distinct
from ssm.data.task import IGNORE, Columns, Task, TaskInfo, check_bool, check_float, check_int, fail


@dataclasses.dataclass(frozen=True)
class MQARParams:
    """Parameters of the MQAR task: the defaults are the published setting, each
    field's comment says what it is, and ``__post_init__`` checks them."""

    vocab_size: int = 8192  # keys from [1, V/2), values from [V/2, V)
    input_seq_len: int = 64  # sequence length (even)
    num_kv_pairs: int = 8  # key-value pairs in the context, each queried once
    power_a: float = 0.01  # query gaps g drawn with p(g) proportional to (g + 1)^(power_a - 1)
    random_non_queries: bool = True  # fill the other positions with random ids (else 0)

    def __post_init__(self):
        V = check_int(self, "vocab_size", minimum=4)
        L = check_int(self, "input_seq_len", minimum=4)
        D = check_int(self, "num_kv_pairs", minimum=1)
        check_float(self, "power_a", low=0.0)
        check_bool(self, "random_non_queries")
        if L % 2:
            fail(self, "input_seq_len", "must be even")
        if V <= L:
            fail(self, "vocab_size", f"must be greater than input_seq_len={L}")
        if 4 * D > L:
            fail(self, "num_kv_pairs", f"must be at most input_seq_len / 4 = {L // 4}")


def info(p: MQARParams) -> TaskInfo:
    """Tokens over ``vocab_size`` ids, length ``input_seq_len``."""
    return TaskInfo("tokens", p.input_seq_len, p.vocab_size, None, p.vocab_size)


def generate(p: MQARParams, n: int, seed: int) -> Columns:
    """Returns ``inputs`` and ``targets`` int32 (n, L) and ``length`` int32 (n,) = L."""
    rng = np.random.default_rng(seed)
    V, L, D = p.vocab_size, p.input_seq_len, p.num_kv_pairs
    context = 2 * D
    keys = distinct_integers(rng, n, 1, V // 2, D)
    values = distinct_integers(rng, n, V // 2, V, D)
    space = (L - context) // 2
    weights = p.power_a * np.arange(1, space + 1) ** (p.power_a - 1)
    gaps = weighted_distinct(rng, n, weights / weights.sum(), D)
    query_pos = context + 2 * gaps  # (n, D)

    inputs = np.zeros((n, L), dtype=np.int32)
    inputs[:, 0:context:2] = keys
    inputs[:, 1:context:2] = values
    np.put_along_axis(inputs, query_pos, keys, axis=1)
    targets = np.full((n, L), IGNORE, dtype=np.int32)
    np.put_along_axis(targets, query_pos, values, axis=1)
    if p.random_non_queries:
        noise = rng.integers(0, V, size=(n, L), dtype=np.int32)
        inputs = np.where(inputs == 0, noise, inputs)
    return {"inputs": inputs, "targets": targets, "length": np.full(n, L, dtype=np.int32)}


MQAR = Task("mqar", MQARParams, {"train": 100_000, "validation": 3_000, "test": 3_000}, info, generate)
