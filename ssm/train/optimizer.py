"""The optimizer of an experiment: AdamW (or Muon on the dense matrices) per
parameter group, one schedule shape, global-norm gradient clipping (Optax)."""

from __future__ import annotations

import optax

from ssm.groups import param_labels
from ssm.train.config import OptimConfig, ScheduleConfig


def schedule(peak: float, config: ScheduleConfig, steps: int) -> optax.Schedule:
    """Linear warmup from 0 to ``peak`` over ``config.warmup(steps)`` steps, then decay
    to ``min_lr_ratio * peak`` at ``steps`` (cosine or linear), or stay constant."""
    warmup = config.warmup(steps)
    end = peak * config.min_lr_ratio
    if config.decay == "constant":
        decay = optax.constant_schedule(peak)
    elif config.decay == "linear":
        decay = optax.linear_schedule(peak, end, max(steps - warmup, 1))
    else:
        decay = optax.cosine_decay_schedule(peak, max(steps - warmup, 1), alpha=config.min_lr_ratio)
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def build_optimizer(model, optim: OptimConfig, sched: ScheduleConfig, steps: int):
    """``(tx, schedules)``: the GradientTransformation for ``model``'s parameters, and
    the learning-rate schedule of each group (for logging).

    Groups (:mod:`ssm.groups`): ``ssm`` gets ``ssm_lr`` and no weight decay;
    ``matrix`` and ``adamw`` get ``lr`` and ``weight_decay``; ``no_decay`` gets
    ``lr`` and none. With ``name: muon`` the ``matrix`` group takes Muon steps at
    ``muon_lr`` (with decoupled ``weight_decay``) and the rest AdamW as above (NAdamW,
    as in optax's muon).
    """
    base = schedule(optim.lr, sched, steps)
    ssm = schedule(optim.ssm_lr, sched, steps)
    if optim.name == "muon":
        from ssm.optim import muon

        tx = muon(schedule(optim.muon_lr, sched, steps), steps=optim.msign_steps, coeffs=optim.msign_coeffs,
                  weight_decay=optim.weight_decay, adam_learning_rate=base, adam_b1=optim.b1,
                  adam_b2=optim.b2, eps=optim.eps, adam_weight_decay=optim.weight_decay,
                  ssm_learning_rate=ssm, labels=param_labels(model))
    else:
        def adamw(lr, weight_decay):
            return optax.adamw(lr, b1=optim.b1, b2=optim.b2, eps=optim.eps, weight_decay=weight_decay)

        decayed = adamw(base, optim.weight_decay)
        tx = optax.multi_transform(
            {"ssm": adamw(ssm, 0.0), "matrix": decayed, "adamw": decayed, "no_decay": adamw(base, 0.0)},
            param_labels(model),
        )
    if optim.grad_clip is not None:
        tx = optax.chain(optax.clip_by_global_norm(optim.grad_clip), tx)
    return tx, {"lr": base, "ssm_lr": ssm}
