"""Helpers for recurrent-inference tests: run a model token by token, compare outputs."""

import jax.numpy as jnp
from flax import nnx


def run_steps(model, x, state=None):
    """Feed ``x`` (batch, length, ...) one position at a time from ``state`` (default:
    ``model.init_state``); returns the stacked outputs (batch, length, ...) and the state."""
    state = model.init_state(x.shape[0]) if state is None else state
    step = nnx.jit(lambda m, x_t, s: m.step(x_t, s))  # compile once, not op by op
    ys = []
    for t in range(x.shape[1]):
        y, state = step(model, x[:, t], state)
        ys.append(y)
    return jnp.stack(ys, 1), state


def rel(a, b):
    """Relative L2 error of ``a`` against ``b``."""
    return float(jnp.linalg.norm((a - b).ravel()) / jnp.linalg.norm(b.ravel()))
