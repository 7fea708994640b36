"""Evaluation cost per example against the evaluation batch size, for one config:
the measurement behind :mod:`ssm.train.eval_batch` (the training batch on CPU, the
largest batch that fits on an accelerator).

    python -m ssm.bench.eval_batch --config mqar/mamba.yaml --preset cpu --sizes 32 64 256 1024
"""

from __future__ import annotations


from flax import nnx

from ssm.bench.common import MiB, emit, fmt_ratio, markdown_table, measure, parser, run_header, started


def main(argv=None) -> None:
    """Command line: time evaluation per example at several batch sizes for one config."""
    from ssm import data
    from ssm.bench.configs import example_batch
    from ssm.train import load_config
    from ssm.train.shipped import resolve_config
    from ssm.train.trainer import build_state, make_eval_step

    p = parser(__doc__, repeats=5)
    p.add_argument("--config", default="mqar/mamba.yaml")
    p.add_argument("--preset", help="a preset of the config (e.g. cpu)")
    p.add_argument("--sizes", nargs="+", type=int, default=[32, 64, 256, 1024])
    args = p.parse_args(argv)
    run = started()
    config = load_config(resolve_config(args.config), [f"preset={args.preset}"] if args.preset else [])
    task = data.get_task(config.task.name)
    params = data.make_params(task, config.task.params)
    info = task.info(params)
    model, _, _, state = build_state(config, info)
    model.eval()
    step = make_eval_step(nnx.split(model, nnx.Param, ...)[0], info.kind)
    rows, first = [], None
    for size in args.sizes:
        batch = example_batch(task, params, info, size)
        t = measure(step, state["params"], state["rest"], batch, repeats=args.repeats)
        per = t.seconds / size
        first = first or per
        rows.append([str(size), f"{1e3 * t.seconds:.1f}", f"{1e6 * per:.0f}", fmt_ratio(per, first),
                     "—" if t.live_bytes is None else f"{t.live_bytes / MiB:.1f}"])
    table = markdown_table(["eval batch", "ms / batch", "µs / example", "per example vs the first", "live MiB"], rows)
    emit(f"`{args.config}`{' --preset ' + args.preset if args.preset else ''}: "
         f"{run_header(f'median of {args.repeats} runs', run)}\n\n{table}", args.out)


if __name__ == "__main__":
    main()
