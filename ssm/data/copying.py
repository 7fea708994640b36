"""Copying and selective copying (state-spaces/s4 ``src/dataloaders/datasets/copying.py``).

Alphabet of A = ``n_tokens`` ids: 0 is the blank, A-1 the marker, data tokens are
1..A-2. M = ``l_memorize`` data tokens sit in a blank region of M + ``l_noise``
positions: at its first M positions (copying), or at M sorted random positions
(selective copying, s4's ``variable=True``). Then come M markers, during which the
model must emit the tokens in order::

    inputs  = region ++ [A-1] * M                          (L = l_noise + 2 M,)
    targets = [IGNORE] * (l_noise + M) ++ tokens            (L,)

The s4 defaults (l_noise 100, l_memorize 10, n_tokens 10, 10000/1000 examples) apply
to both. The Mamba paper's selective copying uses l_noise 4096, l_memorize 16, n_tokens 16.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ssm.data.sampling import distinct_integers
from ssm.data.task import IGNORE, Columns, Task, TaskInfo, check_bool, check_int


@dataclasses.dataclass(frozen=True)
class CopyingParams:
    """Parameters of the copying task: the defaults are the published setting, each
    field's comment says what it is, and ``__post_init__`` checks them."""

    l_noise: int = 100  # blank positions the tokens must be carried across
    l_memorize: int = 10  # data tokens to copy
    n_tokens: int = 10  # alphabet: blank, marker and n_tokens - 2 data tokens
    selective: bool = False  # tokens at random positions of the region (selective copying)

    def __post_init__(self):
        check_int(self, "l_noise", minimum=0)
        check_int(self, "l_memorize", minimum=1)
        check_int(self, "n_tokens", minimum=3)
        check_bool(self, "selective")


@dataclasses.dataclass(frozen=True)
class SelectiveCopyingParams(CopyingParams):
    """The copying task's parameters with ``selective`` on: tokens at random positions of
    the region."""
    selective: bool = True  # tokens at random positions of the region


def info(p: CopyingParams) -> TaskInfo:
    """Tokens over ``n_tokens`` ids, length ``l_noise + 2 l_memorize``."""
    return TaskInfo(
        kind="tokens", seq_len=p.l_noise + 2 * p.l_memorize, vocab_size=p.n_tokens, d_input=None, d_output=p.n_tokens
    )


def generate(p: CopyingParams, n: int, seed: int) -> Columns:
    """Returns ``inputs`` and ``targets`` int32 (n, L) and ``length`` int32 (n,) = L."""
    rng = np.random.default_rng(seed)
    M, A = p.l_memorize, p.n_tokens
    region_len = p.l_noise + M
    tokens = rng.integers(1, A - 1, size=(n, M))
    if p.selective:
        positions = np.sort(distinct_integers(rng, n, 0, region_len, M), axis=1)
    else:
        positions = np.broadcast_to(np.arange(M), (n, M))
    region = np.zeros((n, region_len), dtype=np.int32)
    np.put_along_axis(region, positions, tokens, axis=1)
    inputs = np.concatenate([region, np.full((n, M), A - 1, dtype=np.int32)], axis=1)
    targets = np.full(inputs.shape, IGNORE, dtype=np.int32)
    targets[:, region_len:] = tokens
    return {"inputs": inputs, "targets": targets, "length": np.full(n, inputs.shape[1], dtype=np.int32)}


_SIZES = {"train": 10_000, "validation": 1_000, "test": 1_000}
COPYING = Task("copying", CopyingParams, _SIZES, info, generate)
SELECTIVE_COPYING = Task("selective_copying", SelectiveCopyingParams, _SIZES, info, generate)
