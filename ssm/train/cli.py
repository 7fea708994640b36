"""Train a sequence model from a config: ``ssm-train``, ``python -m ssm.train`` or,
in a clone, ``python train.py`` (the same command).

    ssm-train                                         # the shipped default config
    ssm-train --config copying/s4.yaml --set optim.lr=3e-4 model.n_layers=4
    ssm-train --config configs/mqar/mamba.yaml --preset cpu
    ssm-train --print-config                          # the resolved config, as YAML
    ssm-train --workdir runs/x --evaluate --set task.params.input_seq_len=4096

``--config`` takes a YAML file by path or, when no such file exists, one of the
shipped configs by its name under ``configs/`` (listed below). The run folder
(``--workdir``; default ``runs/<name>`` plus the overrides that change the result,
e.g. ``runs/default,optim.lr=3e-4``) gets the resolved config, metrics.jsonl,
checkpoints, metrics.png and summary.json.
Running the same command again resumes from the last checkpoint; raising
``trainer.steps`` continues a finished run. ``--evaluate`` scores a run's latest
checkpoint on its task with other ``task.params`` (``--split``, ``--examples``,
``--set trainer.eval_batch_size=...``), without training, and appends the result to
the run folder's evaluations.jsonl.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import os
import pathlib
import re
import sys

from ssm.train.config import ConfigError
from ssm.train.shipped import configs_dir, resolve_config, shipped_summary

EVALUATE_KEYS = ("task.params.", "trainer.eval_batch_size=")
# Overrides that leave a run's results as they are, or continue it: not part of its folder's name.
UNNAMED = ("logging.", "distributed.", "trainer.steps=", "trainer.log_every=", "trainer.eval_every=",
           "trainer.devices=", "checkpoint.")
NAME_LIMIT = 80  # characters of overrides spelled out in a folder name; beyond, a hash
REFERENCE = "docs/config.md"


def run_folder(name: str, overrides: list[str]) -> str:
    """``runs/<name>``, plus the overrides that change what the run computes
    (``runs/default,optim.lr=3e-4``; past 80 characters, their start and a hash): one folder
    per experiment, so changing a hyperparameter starts a new run and repeating a
    command resumes it. ``trainer.steps`` and how a run is watched are left out."""
    named = [a for a in overrides if not a.startswith(UNNAMED)]
    if not named:
        return f"runs/{name}"
    spelled = ",".join(re.sub(r"[^\w.=~+-]+", "_", a) for a in named)
    if len(spelled) > NAME_LIMIT:  # the start spelled out, then a hash of all of them
        spelled = spelled[:NAME_LIMIT - 11] + "-" + hashlib.sha256("\0".join(named).encode()).hexdigest()[:10]
    return f"runs/{name},{spelled}"


def _epilog() -> str:
    from ssm.data import TASKS
    from ssm.layers import LAYERS

    rest = __doc__.split("\n\n", 2)[2]
    return (f"{rest}\nTasks: {', '.join(TASKS)}.\nLayers (model.layer): {', '.join(LAYERS)}.\n"
            f"Shipped configs (in {configs_dir()}; --config copying/s4.yaml names one):\n  "
            + shipped_summary().replace("\n", "\n  ")
            + f"\n\nEvery config key, its type, default and meaning: {REFERENCE} in the repository, or "
              f"`--config-reference` (the same text).")


def parse_args(argv=None, prog: str | None = None) -> argparse.Namespace:
    """The command line of ``ssm-train`` (``python train.py``)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_epilog())
    parser.add_argument("--config", help="YAML experiment: a path, or a shipped config's name (default: default.yaml)")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="override config keys, e.g. --set optim.lr=3e-4 trainer.steps=100; "
                             "'~model.layer_kwargs.init' deletes a key")
    parser.add_argument("--preset", help="apply a preset the config defines (e.g. cpu: a few minutes on a laptop); "
                                         "the same as --set preset=NAME")
    parser.add_argument("--workdir", help="run folder (default: runs/<config name>[,<overrides>])")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (task parameters and split sizes spelled out, "
                             "defaults included) and exit")
    parser.add_argument("--config-reference", action="store_true", help="print every config key, its type, "
                                                                       "default and meaning (markdown) and exit")
    parser.add_argument("--evaluate", action="store_true",
                        help="evaluate the run in --workdir (its own config; --set task.params.* changes the task)")
    parser.add_argument("--split", default="test", choices=("train", "validation", "test"),
                        help="with --evaluate: the split to score (default: test)")
    parser.add_argument("--examples", type=int, help="with --evaluate: examples in that split (default: the run's)")
    return parser.parse_args(argv)


def evaluate(args, prog: str) -> int:
    """``--evaluate``: score the run in ``--workdir`` on its task with other parameters."""
    import json

    from ssm.train import evaluate
    from ssm.train.config import apply_override

    if not args.workdir:
        print(f"{prog}: --evaluate needs --workdir, the run folder to evaluate", file=sys.stderr)
        return 2
    task_params, batch_size = {}, None
    for assignment in args.set:
        if not assignment.startswith(EVALUATE_KEYS):
            print(f"{prog}: --evaluate takes only --set task.params.<name>=... and trainer.eval_batch_size=...; "
                  f"got {assignment!r}", file=sys.stderr)
            return 2
        if assignment.startswith("trainer."):
            batch_size = int(assignment.partition("=")[2])
        else:
            task_params = apply_override(task_params, assignment[len("task.params."):])
    try:
        result = evaluate(args.workdir, task_params, split=args.split, examples=args.examples, batch_size=batch_size)
    except (ConfigError, ValueError) as e:
        print(f"{prog}: evaluate: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


def main(argv=None, prog: str | None = None) -> int:
    """The command line; returns the exit status (2: bad config, 1: stopped by NaN,
    128 + signal: stopped by SIGINT/SIGTERM with a checkpoint)."""
    args = parse_args(argv, prog)
    prog = prog or os.path.basename(sys.argv[0])
    if args.config_reference:
        from ssm.train.reference import reference

        print(reference(), end="")
        return 0
    if args.evaluate:
        return evaluate(args, prog)
    from ssm.train import Interrupted, NonFiniteLoss, load_config, train_and_evaluate
    from ssm.train.checkpoint import DamagedCheckpoints
    from ssm.train.config import dump, with_task_defaults

    overrides = [*args.set, *([f"preset={args.preset}"] if args.preset else [])]
    try:
        config = load_config(resolve_config(args.config), overrides)
        if args.print_config:
            print(dump(with_task_defaults(config)), end="")
            return 0
        train_and_evaluate(config, args.workdir or run_folder(config.name, overrides))
    except ConfigError as e:
        print(f"{prog}: config error: {e}", file=sys.stderr)
        return 2
    except (NonFiniteLoss, DamagedCheckpoints) as e:
        print(f"{prog}: stopped: {e}", file=sys.stderr)
        return 1
    except Interrupted as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise
        print(f"{prog}: stopped: no room to write {e.filename or 'a file'} ({e.strerror}). What was written "
              f"before stays, and the last good checkpoint with it; free some space and run the same command "
              f"to resume.", file=sys.stderr)
        return 1
    return 0


def console() -> None:
    """The ``ssm-train`` console script."""
    sys.exit(main(prog="ssm-train"))
