"""What truncated backpropagation through time saves: the training step on long rows,
whole and as windows (``trainer.tbptt``, :func:`ssm.train.trainer.truncated_bptt`).

For one layer's text config (``configs/text/<layer>.yaml``, resized by the flags), the
jitted training step (loss, gradients, optimizer update) on a batch of random bytes,
once backpropagating through whole rows and once per window size K: the state passes
from window to window and its gradient stops there, so the backward pass holds one
window's activations. Each is timed by :func:`ssm.bench.common.measure` (compiled once,
one warm-up, median, ``block_until_ready``) with the compiled program's temporaries
from XLA's memory analysis; ratios are against whole rows, measured in the same run.

    python -m ssm.bench.tbptt                         # mamba, batch 8, length 4096, K = 256, 1024
    python -m ssm.bench.tbptt --layer s4d --windows 512 --repeats 3
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ssm.bench.common import emit, fmt_mib, fmt_ms, fmt_ratio, footnote, markdown_table, measure, parser, \
    run_header, started
from ssm.checks import check_positive_int
from ssm.layers import LAYERS as LAYER_CLASSES
from ssm.train.trainer import NO_FIXED_STATE

#: Layers whose state passes from window to window (not those of
#: :data:`ssm.train.trainer.NO_FIXED_STATE`).
LAYERS = tuple(name for name in LAYER_CLASSES if name not in NO_FIXED_STATE)


def train_step_and_state(layer: str, batch: int, length: int, d_model: int, n_layers: int, tbptt: int | None):
    """The text config of ``layer`` at these sizes: ``(step, state, rows)``, the training
    step (with ``tbptt`` windows, or whole rows for None), its state at step 0 and a
    batch of random bytes (batch, length)."""
    from ssm import data
    from ssm.train import load_config
    from ssm.train.shipped import resolve_config
    from ssm.train.trainer import build_state, make_train_step

    config = load_config(resolve_config(f"text/{layer}.yaml"),
                         [f"model.d_model={d_model}", f"model.n_layers={n_layers}", f"task.params.seq_len={length}",
                          f"trainer.batch_size={batch}", "trainer.devices=1"])
    task = data.get_task("text")
    info = task.info(data.make_params(task, {"seq_len": length}))
    model, tx, _, state = build_state(config, info)
    step = make_train_step(nnx.split(model, nnx.Param, ...)[0], tx, info.kind, tbptt)
    ids = np.random.default_rng(0).integers(0, 256, size=(batch, length + 1)).astype(np.int32)
    rows = {"inputs": jnp.asarray(ids[:, :-1]), "targets": jnp.asarray(ids[:, 1:]),
            "mask": jnp.ones((batch, length), bool), "length": jnp.full((batch,), length, jnp.int32)}
    return step, state, rows


def main(argv=None):
    """Command line: the training step with whole rows and with each window size."""
    p = parser(__doc__, repeats=3)
    p.add_argument("--layer", default="mamba", choices=LAYERS)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=4096)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--windows", type=int, nargs="+", default=[256, 1024], help="window sizes K (divide --length)")
    args = p.parse_args(argv)
    for name in ("batch", "length", "d_model", "n_layers"):
        check_positive_int(f"--{name.replace('_', '-')}", getattr(args, name))
    for k in args.windows:
        if check_positive_int("--windows", k) > args.length or args.length % k:
            raise SystemExit(f"--windows {k}: a window size must divide --length={args.length}")
    run = started()
    results = {}
    for k in (None, *args.windows):
        step, state, rows = train_step_and_state(args.layer, args.batch, args.length, args.d_model, args.n_layers, k)
        results[k] = measure(step, state, rows, jnp.asarray(0, jnp.int32), repeats=args.repeats)
        jax.clear_caches()
    whole = results[None]
    table = markdown_table(
        ["backpropagation", "ms / step", "time ratio", "temp MiB", "memory ratio"],
        [["whole rows" if k is None else f"windows of {k}", fmt_ms(t), fmt_ratio(t.seconds, whole.seconds),
          fmt_mib(t), fmt_ratio(t.temp_bytes, whole.temp_bytes)] for k, t in results.items()])
    details = (f"text/{args.layer}.yaml, batch {args.batch}, length {args.length}, d_model {args.d_model}, "
               f"{args.n_layers} layers, float32")
    emit(f"{run_header(details, run)}\n\n{table}\n\n{footnote(args.repeats, run.time)}", args.out)
    return results


if __name__ == "__main__":
    main()
