"""Losses and metrics per task kind, as sums and counts so that batches (and
padded eval rows) aggregate exactly."""

from __future__ import annotations

import jax.numpy as jnp
import optax

IGNORE = -100  # target of a position that is not scored


def objective(kind: str, outputs, batch) -> dict:
    """Sums over the scored items of a batch.

    Args:
      kind: ``"tokens"`` (outputs (batch, length, vocab), targets (batch, length)
        with IGNORE), ``"classification"`` (outputs (batch, classes), targets
        (batch,)) or ``"regression"`` (outputs (batch, 1), targets (batch,)).
      batch: with ``targets``, ``mask`` (batch, length) and optionally ``valid``
        (batch,) marking real rows of a padded eval batch.

    Returns:
      ``{"loss": sum, "correct": sum, "count": n}`` (float32 scalars); the mean
      loss is ``loss / count``; regression's ``correct`` stays 0 and its loss is
      the squared error.
    """
    targets = batch["targets"]
    valid = batch.get("valid")
    if kind == "tokens":
        weights = (targets != IGNORE) & batch["mask"]
        if valid is not None:
            weights &= valid[:, None]
        safe = jnp.where(weights, targets, 0)
        losses = optax.softmax_cross_entropy_with_integer_labels(outputs, safe)
        correct = jnp.argmax(outputs, -1) == safe
    else:
        weights = jnp.ones(targets.shape, bool) if valid is None else valid
        if kind == "classification":
            losses = optax.softmax_cross_entropy_with_integer_labels(outputs, targets)
            correct = jnp.argmax(outputs, -1) == targets
        else:
            losses = jnp.square(outputs[..., 0] - targets)
            correct = jnp.zeros(targets.shape, bool)
    w = weights.astype(jnp.float32)
    return {
        "loss": jnp.sum(losses.astype(jnp.float32) * w),
        "correct": jnp.sum(correct * w),
        "count": jnp.sum(w),
    }


def summarize(sums: dict, kind: str) -> dict:
    """Host-side means from summed metrics: ``loss`` and, except for regression, ``accuracy``."""
    count = max(float(sums["count"]), 1.0)
    out = {"loss": float(sums["loss"]) / count}
    if kind != "regression":
        out["accuracy"] = float(sums["correct"]) / count
    return out
