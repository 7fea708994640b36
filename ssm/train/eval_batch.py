"""The evaluation batch size when ``trainer.eval_batch_size`` is null.

On an accelerator: the largest batch whose evaluation program fits in the memory the
training step already holds (an evaluation keeps no activations for a backward pass
and no gradients, so it is usually several times the training batch), capped by the
split's size. On CPU: the training batch. Measured on a 2-core CPU (BENCHMARKS.md,
"Evaluation batch size"), a larger batch buys little or costs there: MQAR's Mamba
(width 64) spends 308 us per example at 32, 431 at 1024; its S4D 218 at 32, 153 at 256,
209 at 1024. Accelerators gain from the parallelism instead.
"""

from __future__ import annotations

import math

import jax

from ssm.train.devices import live_bytes


def largest_fitting(base: int, live_at_base: int, fixed: int, budget: int, multiple: int, cap: int) -> int:
    """The largest multiple of ``multiple`` in [base, cap rounded up to ``multiple``]
    whose memory, ``fixed`` bytes plus (``live_at_base`` - ``fixed``) / ``base`` per
    example, stays within ``budget`` bytes (``base`` where even that does not, or where
    the memory at ``base`` is not above ``fixed``: nothing to extrapolate from)."""
    if live_at_base <= fixed:
        return base
    per_example = (live_at_base - fixed) / base
    fits = int((budget - fixed) // per_example)
    top = math.ceil(cap / multiple) * multiple
    return max(base, min(top, fits // multiple * multiple))


def eval_batch_size(lower_eval, base: int, budget: int | None, fixed: int, multiple: int, cap: int,
                    platform: str | None = None) -> int:
    """The evaluation batch for a split of ``cap`` examples: ``base`` on CPU or where no
    memory figure exists, else :func:`largest_fitting` the ``budget`` (the training
    step's live bytes). ``lower_eval(batch_size)`` lowers the evaluation step for one
    batch of that size (compiled here once, at ``base``, to read its memory analysis);
    ``fixed``: the bytes of its parameters, which do not grow with the batch."""
    platform = platform or jax.default_backend()
    if platform == "cpu" or budget is None:
        return base
    live = live_bytes(lower_eval(base).compile())
    if live is None:
        return base
    return largest_fitting(base, live, fixed, budget, multiple, cap)
