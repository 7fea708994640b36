"""The long-range memory benchmark: models x tasks, each cell a real training run.

    python -m ssm.bench.memory --preset ci --out runs/bench/memory-ci
    python -m ssm.bench.memory --preset cpu --out runs/bench/memory-cpu --only task=mqar,model=mamba

A preset (``configs/bench/memory_<preset>.yaml``; ``ci`` a few minutes on 2 CPU cores,
``cpu`` about 80 minutes, ``paper`` the published sizes for a GPU) lists the models, the
tasks with their settings, sweeps, learning rates and seeds (grammar in
:mod:`ssm.bench.grid`). Every cell trains through :func:`ssm.train.train_and_evaluate`
in ``OUT/cells/<cell id>/``: a finished cell is not run again and a killed grid resumes
where it stopped (inside a cell too, from its last checkpoint). Cells that extrapolate
are then evaluated at longer settings with :func:`ssm.train.evaluate`. Two sections
train nothing: HiPPO online reconstruction (:mod:`ssm.bench.hippo_memory`) and
recurrent generation throughput (:mod:`ssm.bench.generation`).

Outputs in ``--results`` (default ``OUT``): ``results.csv`` (one row per model, task,
setting and metric; the best learning rate of each cell group by validation, as
Zoology reports), ``results.md`` (ours beside published, with the gap) and PNG plots.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import shlex
import sys
import time

from ssm.bench import grid, report
from ssm.bench.report import cell_metrics
from ssm.bench.common import cpu_name
from ssm.train.config import ConfigError
from ssm.train.signals import Interrupted

SECTIONS = ("hippo", "generation")  # the preset's sections that train nothing


def run_cell(cell: grid.Cell, workdir: pathlib.Path) -> dict:
    """Train the cell unless its folder already holds a finished run of the same config
    (a folder with another config, from an edited preset, is an error); its summary."""
    from ssm.train import NonFiniteLoss, train_and_evaluate
    from ssm.train.trainer import check_run_folder

    summary_path = workdir / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        if summary.get("status") in ("completed", "nonfinite") and check_run_folder(cell.build(), workdir,
                                                                                      write=False) is None:
            return summary  # (a cell whose trainer.steps were raised since is continued)
    try:
        return train_and_evaluate(cell.build(), workdir)
    except NonFiniteLoss as e:
        print(f"  {cell.id}: {e}", file=sys.stderr)
        return json.loads(summary_path.read_text())


def extrapolate(cell: grid.Cell, workdir: pathlib.Path, spec: dict) -> list[dict]:
    """Evaluations of a finished cell at ``factor`` times its training value of
    ``spec["param"]``, read back from ``evaluations.jsonl`` where already done."""
    from ssm import data
    from ssm.train import evaluate

    config = cell.build()
    task = data.get_task(config.task.name)
    param = spec["param"]
    base = getattr(data.make_params(task, config.task.params), param)
    examples = spec.get("examples")  # None: the run's test split size, whatever it came to
    done = {}
    path = workdir / "evaluations.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            if examples is None or r["examples"] == examples:
                done[(json.dumps(r["task_params"], sort_keys=True), r["split"])] = r
    out = []
    for factor in spec["factors"]:
        params = {param: int(base * factor)}
        key = (json.dumps(params, sort_keys=True), "test")
        result = done.get(key)
        if result is None:
            result = evaluate(workdir, params, examples=spec.get("examples"), batch_size=spec.get("batch_size"))
        out.append({**result, "factor": factor, "value_of_param": params[param], "param": param})
    return out


class Eta:
    """The grid's remaining time: the seconds per unit of work (steps x batch x length)
    of the cells trained so far, times the work of the cells still to train. Cells
    finished before (read back, perhaps evaluated) count as neither time nor work."""

    def __init__(self, to_train: list[grid.Cell]):
        self.work = {c.id: self._work(c) for c in to_train}
        self.left = sum(self.work.values())
        self.done = 0.0
        self.seconds = 0.0
        self.start = time.perf_counter()

    @staticmethod
    def _work(cell: grid.Cell) -> float:
        config = cell.build()
        from ssm import data

        task = data.get_task(config.task.name)
        seq_len = task.info(data.make_params(task, config.task.params)).seq_len
        return float(config.trainer.steps * config.trainer.batch_size * seq_len)

    def finished(self, cell: grid.Cell, seconds: float) -> str:
        """The progress text after ``cell`` ends, ``seconds`` after it began."""
        if cell.id in self.work:
            self.left -= self.work[cell.id]
            self.done += self.work[cell.id]
            self.seconds += seconds
        elapsed = time.perf_counter() - self.start
        if self.done == 0 or self.left <= 0:
            return f"{elapsed / 60:.1f} min so far"
        return f"{elapsed / 60:.1f} min so far, about {self.seconds / self.done * self.left / 60:.1f} min left"


def run_section(name: str, spec: dict, out: pathlib.Path, results: pathlib.Path, preset_models: dict) -> list[dict]:
    """A section that trains nothing, cached in ``OUT/<name>.json``."""
    cache = out / f"{name}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    start = time.perf_counter()
    if name == "hippo":
        from ssm.bench import hippo_memory

        rows = hippo_memory.run(spec, results)
    else:
        from ssm.bench import generation

        rows = generation.run({**spec, "model_configs": preset_models})
    print(f"[{name}] {len(rows)} rows in {time.perf_counter() - start:.0f} s")
    cache.write_text(json.dumps(rows, indent=1))
    return rows


def machine() -> str:
    """A line describing this machine: CPU, cores, OS, JAX version and backend, load average."""
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "unknown"
    import jax

    return (f"{cpu_name()}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}; "
            f"jax {jax.__version__}, backend {jax.default_backend()}; load average {load}")


def parse_args(argv=None) -> argparse.Namespace:
    """The command line of ``python -m ssm.bench.memory``."""
    p = argparse.ArgumentParser(prog="python -m ssm.bench.memory", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--preset", default="ci", help=f"one of {grid.PRESETS}, or a preset YAML file (default: ci)")
    p.add_argument("--out", help="grid folder: cells/, section caches (default: runs/bench/memory-<preset>)")
    p.add_argument("--results", help="where results.csv, results.md and the plots go (default: --out)")
    p.add_argument("--only", help="a subset: key=value pairs (task, setting, model, lr, seed) separated by "
                                  "commas, e.g. task=mqar,model=mamba; a key twice accepts either value")
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Command line: train the preset's grid of cells (a rerun keeps the finished ones) and write its results table and
    plots; returns the exit status."""
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        path = grid.preset_path(args.preset)
        preset = grid.load_preset(path)
        cells = grid.expand(preset)
        cell_filter, sections_wanted = split_only(args.only)
        selected = [] if cell_filter == "" else grid.select(cells, cell_filter)
    except ConfigError as e:
        print(f"ssm.bench.memory: {e}", file=sys.stderr)
        return 2
    name = preset.get("name", path.stem)
    out = pathlib.Path(args.out or f"runs/bench/memory-{name}")
    results = pathlib.Path(args.results or out)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)
    started_at = datetime.datetime.now(datetime.timezone.utc)
    machine_at_start = machine()
    print(f"memory benchmark '{name}': {len(selected)} of {len(cells)} cells -> {out}; {machine_at_start}")

    finished_before = {c.id for c in selected if (out / "cells" / c.id / "summary.json").exists()}
    eta = Eta([c for c in selected if c.id not in finished_before])
    trained_now = 0
    for i, cell in enumerate(selected, 1):
        workdir = out / "cells" / cell.id
        trained = cell.id not in finished_before
        trained_now += trained
        t0 = time.perf_counter()
        try:
            summary = run_cell(cell, workdir)
        except ConfigError as e:
            print(f"ssm.bench.memory: cell {cell.id}: {e}", file=sys.stderr)
            return 2
        except Interrupted as e:
            print(f"ssm.bench.memory: cell {cell.id}: {e} The grid resumes with the same command too.",
                  file=sys.stderr)
            return e.exit_code
        spec = preset["tasks"][cell.task]
        if spec.get("extrapolate") and summary.get("status") == "completed":
            extrapolate(cell, workdir, spec["extrapolate"])
        value = cell_metrics(summary, spec.get("metric", "accuracy"), "test")
        shown = "failed (non-finite loss)" if value is None else f"{spec.get('metric', 'accuracy')} {value:.4f}"
        verb = "trained" if trained else "done before"
        seconds = time.perf_counter() - t0
        print(f"[{i:>{len(str(len(selected)))}}/{len(selected)}] {cell.id}: {shown} ({verb}, "
              f"{seconds:.0f} s); grid: {eta.finished(cell, seconds)}", flush=True)

    sections = {}
    for section in SECTIONS:
        if preset.get(section) and section in sections_wanted:
            sections[section] = run_section(section, preset[section], out, results, preset["models"])
        elif (out / f"{section}.json").exists():
            sections[section] = json.loads((out / f"{section}.json").read_text())

    rows, records = report.collect(preset, cells, out, sections)
    command = "python -m ssm.bench.memory " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    meta = {"preset": name, "command": command.strip(), "started": started_at.strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine_at_start, "machine_at_end": machine(),
            "wall_s": time.perf_counter() - start, "cells": f"{sum(r['finished'] for r in records)} of {len(cells)}",
            "trained_now": trained_now, "cells_wall_s": sum(r["wall_s"] or 0 for r in records)}
    report.write(rows, records, preset, meta, results)
    print(f"results: {results / 'results.md'}, {results / 'results.csv'} ({len(rows)} rows, "
          f"{(time.perf_counter() - start) / 60:.1f} min)")
    return 0


def split_only(only: str | None) -> tuple[str | None, set[str]]:
    """``--only`` as (the filter for training cells, the sections it names).

    Without ``--only`` every cell and section runs. ``task=hippo`` or
    ``task=generation`` name sections; a filter that names only sections selects no
    cell (returned as ""), and one that names no task runs no section.
    """
    if not only:
        return None, set(SECTIONS)
    grid.parse_only(only)  # a bad pair is an error, even beside a section
    parts = only.split(",")
    sections = {p.partition("=")[2] for p in parts if p.startswith("task=") and p.partition("=")[2] in SECTIONS}
    rest = [p for p in parts if not (p.startswith("task=") and p.partition("=")[2] in SECTIONS)]
    if sections and not any(p.startswith("task=") for p in rest):
        return "", sections
    return ",".join(rest), sections


if __name__ == "__main__":
    sys.exit(main())
