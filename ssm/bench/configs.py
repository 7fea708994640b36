"""What each shipped config costs here: seconds per training step and per evaluation
batch, measured on batches of the config's own shapes, and the time a whole run would
take (steps x step time + evaluations), as published and with ``--preset cpu``.

    python -m ssm.bench.configs                      # every shipped model config
    python -m ssm.bench.configs --only mqar/ copying/s4d.yaml
    python -m ssm.bench.configs --write              # also rewrite each file's cost line

No dataset is built: one batch of examples is generated (random bytes for the text
task), which costs the same per step as any other. Each step is compiled, run once to
warm up, then timed (:func:`ssm.bench.common.measure`: median of ``--repeats``, fewer
where a step is slow). ``--write``
puts one ``# Cost on ...`` comment line under each file's first comment block.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import pathlib
import re

import jax
import numpy as np
from flax import nnx

from ssm.bench.common import emit, markdown_table, measure, parser, run_header, started
from ssm.train.devices import host_memory_bytes

COST_LINE = "# Cost on "


def example_batch(task, params, info, batch_size: int) -> dict:
    """A batch of the task's shapes: generated examples, or random bytes where the
    task only reads files (text)."""
    from ssm.data import IGNORE

    try:
        columns = task.generate(params, batch_size, 0)
    except ValueError:  # a task that reads files
        rng = np.random.default_rng(0)
        tokens = rng.integers(0, info.vocab_size, (batch_size, info.seq_len + 1), dtype=np.int32)
        columns = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
                   "length": np.full(batch_size, info.seq_len, np.int32)}
    length = np.asarray(columns["length"])
    batch = {k: np.asarray(v) for k, v in columns.items()}
    batch["mask"] = np.arange(info.seq_len)[None, :] < length[:, None]
    batch["valid"] = np.ones(batch_size, bool)
    assert (batch["targets"] != IGNORE).any()
    return batch


def config_cost(config, repeats: int) -> dict:
    """Step and evaluation-batch seconds of ``config`` and its whole run's estimate."""
    from ssm import data
    from ssm.train.trainer import build_state, make_eval_step, make_train_step

    t, task_cfg = config.trainer, config.task
    task = data.get_task(task_cfg.name)
    params = data.make_params(task, task_cfg.params)
    info = task.info(params)
    model, tx, _, state = build_state(config, info)
    train_graph = nnx.split(model, nnx.Param, ...)[0]
    model.eval()
    eval_graph = nnx.split(model, nnx.Param, ...)[0]
    eval_batch_size = t.eval_batch_size or t.batch_size
    train_batch = example_batch(task, params, info, t.batch_size)
    eval_batch = example_batch(task, params, info, eval_batch_size)
    train_step = jax.jit(make_train_step(train_graph, tx, info.kind))
    eval_step = jax.jit(make_eval_step(eval_graph, info.kind))
    step = np.int32(0)
    train = measure(lambda s, b: train_step(s, b, step), state, train_batch, repeats=repeats)
    compile_s, step_s = train.compile_s, train.seconds
    eval_s = measure(eval_step, state["params"], state["rest"], eval_batch, repeats=repeats).seconds
    sizes, _ = data.split_sizes(task, params, task_cfg.sizes, task_cfg.data_dir)
    validation = min(sizes.get("validation", 0), t.eval_examples or math.inf)
    evals = t.steps // t.eval_every + (t.steps % t.eval_every != 0)
    eval_batches = evals * math.ceil(validation / eval_batch_size) + math.ceil(sizes.get("test", 0) / eval_batch_size)
    total = t.steps * step_s + eval_batches * eval_s
    n_params = sum(x.size for x in jax.tree.leaves(state["params"]))
    return {"params": n_params, "step_s": step_s, "eval_s": eval_s, "compile_s": compile_s, "steps": t.steps,
            "eval_batches": eval_batches, "total_s": total, "seq_len": info.seq_len, "batch_size": t.batch_size}


def measure_or_oom(config, repeats: int) -> dict:
    """:func:`config_cost`, or ``{"oom": bytes}`` where a step does not fit in memory here."""
    try:
        return config_cost(config, repeats)
    except jax.errors.JaxRuntimeError as e:
        asked = re.search(r"allocating (\d+) bytes", str(e))
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        return {"oom": int(asked.group(1)) if asked else None}


def fmt_bytes(n: int | None) -> str:
    """``n`` bytes as whole GiB (``"?"`` when None)."""
    return "?" if n is None else f"{n / 2**30:.0f} GiB"


def fmt_duration(seconds: float) -> str:
    """``seconds`` as a rounded duration in s, min, h or days."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def cost_line(published: dict, cpu: dict | None, where: str) -> str:
    """The cost comment line of a shipped config: the published setting's time per step and total (or that it
    does not fit in memory) on ``where``, and the cpu preset's total."""
    def cost(r):
        if "oom" in r:
            return (f"a training step does not fit in its {fmt_bytes(host_memory_bytes())} of memory "
                    f"(one allocation asked for {fmt_bytes(r['oom'])})")
        return f"{r['step_s']:.3g} s/step, about {fmt_duration(r['total_s'])} for {r['steps']:,} steps with evaluations"

    text = f"{COST_LINE}{where}: {cost(published)}"
    if cpu is not None:
        text += f"; --preset cpu {'about ' + fmt_duration(cpu['total_s']) if 'oom' not in cpu else cost(cpu)}"
    return text + "."


def write_cost_line(path: pathlib.Path, line: str) -> None:
    """Put ``line`` under the file's first comment block, replacing an older one."""
    lines = [x for x in path.read_text().splitlines() if not x.startswith(COST_LINE)]
    head = next((i for i, x in enumerate(lines) if not x.startswith("#")), len(lines))
    path.write_text("\n".join([*lines[:head], line, *lines[head:]]) + "\n")


def main(argv=None) -> None:
    """Command line: time a training step of every shipped config (or those ``--only`` names) and print (or
    ``--write``) their cost lines."""
    from ssm.train import load_config
    from ssm.train.shipped import configs_dir, shipped_configs

    p = parser(__doc__, repeats=3)
    p.add_argument("--only", nargs="+", default=[], help="configs whose names start with these")
    p.add_argument("--write", action="store_true", help="rewrite each config's cost comment line")
    args = p.parse_args(argv)
    run = started()
    names = [n for n in shipped_configs() if not n.endswith("/task.yaml")
             and (not args.only or n.startswith(tuple(args.only)))]
    date = datetime.date.today().isoformat()
    where = f"a {os.cpu_count()}-core CPU (measured {date})"
    rows = []
    for name in names:
        path = configs_dir() / name
        published = load_config(path)
        cpu = load_config(path, ["preset=cpu"])
        results = {"published": measure_or_oom(published, args.repeats),
                   "cpu": None if dataclasses.replace(cpu, preset=None) == published else measure_or_oom(cpu, args.repeats)}
        for variant, r in results.items():
            if r is not None and "oom" in r:
                rows.append([name, variant, "", "", "", "", "", "", f"out of memory ({fmt_bytes(r['oom'])} asked)"])
                print(" | ".join(rows[-1]), flush=True)
            elif r is not None:
                rows.append([name, variant, f"{r['params']:,}", f"{r['batch_size']}×{r['seq_len']}", f"{r['step_s']:.3g}",
                             f"{r['eval_s']:.3g}", f"{r['steps']:,}", f"{r['compile_s']:.0f}", fmt_duration(r["total_s"])])
                print(" | ".join(rows[-1]), flush=True)
        if args.write:
            write_cost_line(path, cost_line(results["published"], results["cpu"], where))
    table = markdown_table(["config", "variant", "params", "batch × length", "s / step", "s / eval batch", "steps",
                            "compile s", "whole run (estimate)"], rows)
    emit(f"{run_header(date, run)}\n\n{table}", args.out)


if __name__ == "__main__":
    main()
