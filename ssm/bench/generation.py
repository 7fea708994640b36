"""Generation throughput with recurrent inference: tokens per second of a jitted decode
loop (``SequenceModel.step`` under ``lax.scan``, greedy) after a context of C tokens.

An SSM's step costs the same whatever C is: its state has a fixed size. Attention's
KV cache holds C + new tokens and every step attends over it, so its cost grows with
C. The context's content does not change the cost of a step, so the state is set
directly: an SSM starts from its zero state, attention from a cache whose first C
positions hold random keys and values. Measured with :func:`ssm.bench.common.measure`
(compiled once, one warm-up, median of the timed runs).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
from flax import nnx

from ssm.bench.common import MiB, measure


def decode_loop(graphdef, new_tokens: int):
    """``(params, state, tokens (batch,)) -> (last tokens, state)``: ``new_tokens`` greedy steps."""

    def decode(params, state, tokens):
        model = nnx.merge(graphdef, params)

        def body(carry, _):
            state, tokens = carry
            logits, state = model.step(tokens, state)
            return (state, jnp.argmax(logits, -1).astype(tokens.dtype)), None

        (state, tokens), _ = jax.lax.scan(body, (state, tokens), None, length=new_tokens)
        return tokens, state

    return decode


def context_state(model, batch_size: int, context: int, new_tokens: int, key):
    """The state after ``context`` tokens, as far as a step's cost can tell: random KV
    caches filled to ``context`` (attention), zero states elsewhere."""
    state = model.init_state(batch_size, max_len=context + new_tokens)

    def fill(layer_state):
        if isinstance(layer_state, dict) and "pos" in layer_state:  # a KV cache
            k1, k2 = jax.random.split(jax.random.fold_in(key, len(layer_state["k"].shape)))
            filled = {n: jax.random.normal(k, layer_state[n].shape, layer_state[n].dtype)
                      for n, k in (("k", k1), ("v", k2))}
            return {**filled, "pos": jnp.asarray(context, jnp.int32)}
        return layer_state

    return [fill(s) for s in state]


def state_floats(state) -> int:
    """Numbers a recurrent state holds per batch row (complex entries count twice).

    Entries under a ``"system"`` key (the discrete system an S4/S4D state carries, the
    same for every row: :mod:`ssm.layers.conv_ssm`) are not per-row state and are not
    counted."""
    total = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        if any(getattr(key, "key", None) == "system" for key in path):
            continue
        if leaf.ndim:
            total += leaf.size // leaf.shape[0] * (2 if jnp.iscomplexobj(leaf) else 1)
    return total


def run(spec: dict) -> list[dict]:
    """Rows of tokens/s for each model and context of ``spec``:

    ``models`` (names in the preset's models, given as ``spec["model_configs"]``: name ->
    config overrides), ``contexts``, ``new_tokens``, ``batch_size``, ``vocab_size``,
    ``model`` (overrides for every model, e.g. width and depth), ``repeats``.
    """
    from ssm.data import TaskInfo
    from ssm.train.config import Config, from_dict, merge
    from ssm.train.trainer import build_model

    rows = []
    batch, new = spec.get("batch_size", 1), spec.get("new_tokens", 64)
    for name in spec["models"]:
        for context in spec["contexts"]:
            start = time.perf_counter()
            overrides = merge(spec["model_configs"][name], {"model": spec.get("model", {})})
            config = from_dict(Config, overrides)
            info = TaskInfo("tokens", context + new, spec.get("vocab_size", 256), None, spec.get("vocab_size", 256))
            model = build_model(config, info, nnx.Rngs(0))
            model.eval()
            graphdef, params = nnx.split(model)
            state = context_state(model, batch, context, new, jax.random.key(context))
            tokens = jnp.zeros((batch,), jnp.int32)
            timing = measure(decode_loop(graphdef, new), params, state, tokens, repeats=spec.get("repeats", 3))
            n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
            rows.append({
                "model": name, "task": "generation", "setting": f"context={context}", "metric": "tokens_per_s",
                "value": batch * new / timing.seconds, "published": None, "params": n_params,
                "train_tokens_per_s": None,
                "peak_memory_mib": None if timing.live_bytes is None else timing.live_bytes / MiB,
                "wall_s": time.perf_counter() - start, "steps": new, "seed": 0,
                "state_floats": state_floats(state), "context": context,
            })
            print(f"  generation {name} context={context}: {rows[-1]['value']:.0f} tokens/s "
                  f"(state {rows[-1]['state_floats']:,} numbers per sequence)", flush=True)
    return rows
