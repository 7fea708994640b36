"""Train a sequence model from a config.

    python train.py                                   # configs/default.yaml
    python train.py --config configs/copying/s4.yaml --set optim.lr=3e-4 model.n_layers=4
    python train.py --print-config                    # the resolved config, as YAML

The run folder (``--workdir``, default ``runs/<name>``) gets the resolved config,
metrics.jsonl, checkpoints, metrics.png and summary.json. Running the same command
again resumes from the last checkpoint.
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
                        help="override config keys, e.g. --set optim.lr=3e-4 trainer.steps=100")
    parser.add_argument("--workdir", help="run folder (default: runs/<config name>)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from ssm.train import ConfigError, NonFiniteLoss, load_config, train_and_evaluate
    from ssm.train.config import dump

    try:
        config = load_config(args.config, args.set)
    except ConfigError as e:
        print(f"train.py: config error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(dump(config), end="")
        return 0
    try:
        train_and_evaluate(config, args.workdir or f"runs/{config.name}")
    except ConfigError as e:
        print(f"train.py: config error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLoss as e:
        print(f"train.py: stopped: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
