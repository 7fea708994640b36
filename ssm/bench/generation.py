"""Generation throughput with recurrent inference: tokens per second of a jitted decode
loop (``SequenceModel.step`` under ``lax.scan``, greedy) after a context of C tokens.

An SSM's step costs the same whatever C is: its state has a fixed size. Attention's
KV cache holds C + new tokens and every step attends over it, so its cost grows with
C. The context's content does not change the cost of a step, so the state is set
directly: an SSM starts from its zero state, attention from a cache whose first C
positions hold random keys and values. Measured with :func:`ssm.bench.common.measure`
(compiled once, one warm-up, median of the timed runs).

    python -m ssm.bench.generation      # S4 (both step modes) and S4D, against rebuilding per token

The command line times the decode of S4 and S4D at the memory benchmark's generation
setting (width 256, 4 layers, batch 1, ``configs/bench/memory_cpu.yaml``'s
``generation:``), each against a baseline in the same run: the same model with its
discrete system rebuilt on every token (:meth:`~ssm.layers.S4.setup_step` inside the
step, as the step did before its state carried the system), with the SSM step's
FLOPs per token counted by :func:`ssm_step_flops`.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
from flax import nnx

from ssm.bench.common import MiB, emit, fmt_ratio, markdown_table, measure, parser, run_header, started


def decode_loop(graphdef, new_tokens: int, rebuild: bool = False):
    """``(params, state, tokens (batch,)) -> (last tokens, state)``: ``new_tokens`` greedy steps.

    ``rebuild``: remake every S4/S4D layer's discrete system (``setup_step()``) before
    each step instead of using the one its state carries (the cost a step had when it
    rebuilt the system per token; a baseline)."""

    def decode(params, state, tokens):
        model = nnx.merge(graphdef, params)

        def body(carry, _):
            state, tokens = carry
            if rebuild:
                state = [{**s, "system": block.mixer.setup_step()} if isinstance(s, dict) and "system" in s else s
                         for block, s in zip(model.blocks, state)]
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
            valid = jnp.broadcast_to(jnp.arange(layer_state["valid"].shape[1]) < context, layer_state["valid"].shape)
            return {**layer_state, **filled, "valid": valid, "pos": jnp.asarray(context, jnp.int32)}
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


def time_decode(overrides: dict, *, context: int, new_tokens: int, batch_size: int, vocab_size: int = 256,
                repeats: int = 3, rebuild: bool = False):
    """Build the model of the config ``overrides`` for token inputs of ``vocab_size``, put
    it in its state after ``context`` tokens (:func:`context_state`) and time
    ``new_tokens`` greedy steps of it (:func:`decode_loop`, :func:`ssm.bench.common.measure`).

    Returns:
      ``(timing, model, state)``: the :class:`~ssm.bench.common.Timing`, the model and
      the state the timed runs started from.
    """
    from ssm.data import TaskInfo
    from ssm.train.config import Config, from_dict
    from ssm.train.trainer import build_model

    config = from_dict(Config, overrides)
    model = build_model(config, TaskInfo("tokens", context + new_tokens, vocab_size, None, vocab_size), nnx.Rngs(0))
    model.eval()
    graphdef, params = nnx.split(model)
    state = context_state(model, batch_size, context, new_tokens, jax.random.key(context))
    tokens = jnp.zeros((batch_size,), jnp.int32)
    timing = measure(decode_loop(graphdef, new_tokens, rebuild), params, state, tokens, repeats=repeats)
    return timing, model, state


def run(spec: dict) -> list[dict]:
    """Rows of tokens/s for each model and context of ``spec``:

    ``models`` (names in the preset's models, given as ``spec["model_configs"]``: name ->
    config overrides), ``contexts``, ``new_tokens``, ``batch_size``, ``vocab_size``,
    ``model`` (overrides for every model, e.g. width and depth), ``repeats``.
    """
    from ssm.train.config import merge

    rows = []
    batch, new = spec.get("batch_size", 1), spec.get("new_tokens", 64)
    for name in spec["models"]:
        for context in spec["contexts"]:
            start = time.perf_counter()
            overrides = merge(spec["model_configs"][name], {"model": spec.get("model", {})})
            timing, model, state = time_decode(overrides, context=context, new_tokens=new, batch_size=batch,
                                               vocab_size=spec.get("vocab_size", 256), repeats=spec.get("repeats", 3))
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


def ssm_step_flops(layer) -> int:
    """Real FLOPs of one S4/S4D recurrent step per token, counted by hand (the mixer
    alone, without the block's projections): a complex multiply-add is 8, a complex
    product 6, complex by real 2, a complex addition 2; M = N/2 modes per channel.

    - diagonal (S4D): ``Abar x + Bbar u`` and ``Re(C . x)``: 14 M per channel;
    - S4 ``"dense"``: ``Abar`` (M, 2M) on ``[x, conj x]``: 16 M^2 + 10 M (O(H N^2));
    - S4 ``"linear"`` (rank r): four rank-r contractions at 4 each (only real parts
      are needed) and the diagonal products: 16 r M + 24 M (O(H N r)).
    """
    H, M = layer.d_model, layer.state_size
    mode = getattr(layer, "step_mode", "diagonal")
    if mode == "dense":
        per = 16 * M * M + 10 * M
    elif mode == "linear":
        per = 16 * layer.P.shape[-3] * M + 24 * M
    else:
        per = 14 * M
    return H * per


#: The command line's models: name -> (config overrides, rebuild the system per token).
DECODE_MODELS = {
    "s4-legs (rebuilt per token)": ({"layer": "s4", "layer_kwargs": {"d_state": 64, "measure": "legs",
                                                                      "step_mode": "dense"}}, True),
    "s4-legs (dense)": ({"layer": "s4", "layer_kwargs": {"d_state": 64, "measure": "legs", "step_mode": "dense"}}, False),
    "s4-legs (linear)": ({"layer": "s4", "layer_kwargs": {"d_state": 64, "measure": "legs", "step_mode": "linear"}}, False),
    "s4d (rebuilt per token)": ({"layer": "s4d", "layer_kwargs": {"d_state": 64, "init": "legs"}}, True),
    "s4d": ({"layer": "s4d", "layer_kwargs": {"d_state": 64, "init": "legs"}}, False),
}


def main(argv=None) -> None:
    """Command line: decode tokens/s of S4 (linear and dense steps) and S4D, each against the
    same model rebuilding its discrete system per token, at the memory benchmark's generation setting."""
    p = parser(__doc__, repeats=3)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--context", type=int, default=1024, help="context before decoding (default: %(default)s)")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens decoded per timed run (default: %(default)s)")
    p.add_argument("--batch", type=int, default=1)
    args = p.parse_args(argv)
    run = started()
    rows, seconds = [], {}
    for name, (overrides, rebuild) in DECODE_MODELS.items():
        timing, model, state = time_decode({"model": {**overrides, "d_model": args.d_model, "n_layers": args.layers}},
                                           context=args.context, new_tokens=args.new_tokens, batch_size=args.batch,
                                           repeats=args.repeats, rebuild=rebuild)
        seconds[name] = timing.seconds
        baseline = next((n for n, (o, r) in DECODE_MODELS.items() if r and o["layer"] == overrides["layer"]), None)
        mixer = model.blocks[0].mixer
        rows.append([name, f"{args.batch * args.new_tokens / timing.seconds:,.0f}",
                     f"{1e3 * timing.seconds / args.new_tokens:.2f}",
                     fmt_ratio(seconds.get(baseline), timing.seconds) if not rebuild else "1.0×",
                     "(+ the rebuild)" if rebuild else f"{ssm_step_flops(mixer) / 1e6:.3f}",
                     f"{state_floats(state):,}"])
        print(" | ".join(rows[-1]), flush=True)
    table = markdown_table(["model (step)", "decode tokens/s", "ms / token", "vs rebuilt per token",
                            "SSM step MFLOP / token / layer", "state floats / sequence"], rows)
    details = (f"width {args.d_model}, {args.layers} layers, batch {args.batch}, context {args.context}, "
               f"{args.new_tokens} new tokens per run, median of {args.repeats}")
    emit(f"{run_header(details, run)}\n\n{table}", args.out)


if __name__ == "__main__":
    main()
