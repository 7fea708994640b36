"""Train a sequence model from a config.

    python train.py                                   # configs/default.yaml
    python train.py --config configs/copying/s4.yaml --set optim.lr=3e-4 model.n_layers=4
    python train.py --print-config                    # the resolved config, as YAML
    python train.py --workdir runs/x --evaluate --set task.params.input_seq_len=4096

The run folder (``--workdir``, default ``runs/<name>``) gets the resolved config,
metrics.jsonl, checkpoints, metrics.png and summary.json. Running the same command
again resumes from the last checkpoint. ``--evaluate`` scores a run's latest
checkpoint on its task with other ``task.params`` (``--split``, ``--examples``,
``--set trainer.eval_batch_size=...``), without training, and appends the result to
the run folder's evaluations.jsonl.
"""

from __future__ import annotations

import argparse
import sys

DEFAULT_CONFIG = "configs/default.yaml"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="train.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"YAML experiment (default: {DEFAULT_CONFIG})")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="override config keys, e.g. --set optim.lr=3e-4 trainer.steps=100; "
                             "'~model.layer_kwargs.init' deletes a key")
    parser.add_argument("--workdir", help="run folder (default: runs/<config name>)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config (task parameters and split sizes spelled out, defaults included) and exit")
    parser.add_argument("--evaluate", action="store_true",
                        help="evaluate the run in --workdir (its own config; --set task.params.* changes the task)")
    parser.add_argument("--split", default="test", choices=("train", "validation", "test"),
                        help="with --evaluate: the split to score (default: test)")
    parser.add_argument("--examples", type=int, help="with --evaluate: examples in that split (default: the run's)")
    return parser.parse_args(argv)


EVALUATE_KEYS = ("task.params.", "trainer.eval_batch_size=")


def evaluate(args) -> int:
    """``--evaluate``: score the run in ``--workdir`` on its task with other parameters."""
    import json

    from ssm.train import ConfigError, evaluate
    from ssm.train.config import apply_override

    if not args.workdir:
        print("train.py: --evaluate needs --workdir, the run folder to evaluate", file=sys.stderr)
        return 2
    task_params, batch_size = {}, None
    for assignment in args.set:
        if not assignment.startswith(EVALUATE_KEYS):
            print(f"train.py: --evaluate takes only --set task.params.<name>=... and trainer.eval_batch_size=...; "
                  f"got {assignment!r}", file=sys.stderr)
            return 2
        if assignment.startswith("trainer."):
            batch_size = int(assignment.partition("=")[2])
        else:
            task_params = apply_override(task_params, assignment[len("task.params."):])
    try:
        result = evaluate(args.workdir, task_params, split=args.split, examples=args.examples, batch_size=batch_size)
    except (ConfigError, ValueError) as e:
        print(f"train.py: evaluate: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.evaluate:
        return evaluate(args)
    from ssm.train import ConfigError, Interrupted, NonFiniteLoss, load_config, train_and_evaluate
    from ssm.train.config import dump, with_task_defaults

    try:
        config = load_config(args.config, args.set)
    except ConfigError as e:
        print(f"train.py: config error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(dump(with_task_defaults(config)), end="")
        return 0
    try:
        train_and_evaluate(config, args.workdir or f"runs/{config.name}")
    except ConfigError as e:
        print(f"train.py: config error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLoss as e:
        print(f"train.py: stopped: {e}", file=sys.stderr)
        return 1
    except Interrupted as e:
        print(f"train.py: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
