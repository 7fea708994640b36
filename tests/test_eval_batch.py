"""The automatic evaluation batch: the training batch on CPU, elsewhere the largest
that fits in the training step's memory (by XLA's memory analysis), capped by the split."""

import jax
import jax.numpy as jnp

from ssm.train.devices import live_bytes
from ssm.train.eval_batch import eval_batch_size, largest_fitting


def test_largest_fitting_is_linear_in_the_batch_and_rounded_to_the_devices():
    # 1000 fixed bytes + 100 per example: a budget of 1000 + 100 * 37 fits 37, so 36 on 4 devices.
    assert largest_fitting(8, 1000 + 8 * 100, 1000, 1000 + 37 * 100, 4, 10_000) == 36
    assert largest_fitting(8, 1800, 1000, 1000 + 37 * 100, 1, 10_000) == 37
    assert largest_fitting(8, 1800, 1000, 1000 + 37 * 100, 4, 21) == 24  # the split, rounded up to the devices
    assert largest_fitting(8, 1800, 1000, 500, 4, 10_000) == 8  # never below the training batch


def test_eval_batch_size_reads_the_compiled_memory_and_stays_within_the_budget(rng):
    w = jnp.asarray(rng.normal(size=(64, 512)), jnp.float32)
    step = jax.jit(lambda w, x: jnp.tanh(x @ w).sum(0))  # w: the parameters, an argument

    def lower(size):
        return step.lower(w, jax.ShapeDtypeStruct((size, 64), jnp.float32))

    base = 16
    budget = 12 * live_bytes(lower(base).compile())
    assert eval_batch_size(lower, base, budget, w.nbytes, 8, 100_000, platform="cpu") == base
    assert eval_batch_size(lower, base, None, w.nbytes, 8, 100_000, platform="gpu") == base
    chosen = eval_batch_size(lower, base, budget, w.nbytes, 8, 100_000, platform="gpu")
    assert chosen % 8 == 0 and chosen > 4 * base
    assert live_bytes(lower(chosen).compile()) <= budget * 1.05  # within the budget (XLA pads a little)
    assert eval_batch_size(lower, base, budget, w.nbytes, 8, 50, platform="gpu") == 56  # capped by the split
    assert largest_fitting(8, 900, 1000, 10**9, 1, 10**6) == 8  # memory not above the fixed part: no guess
