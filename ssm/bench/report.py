"""The memory benchmark's results: rows from the run folders, then ``results.csv``,
``results.md`` and the plots.

A row is one (model, task, setting, metric) with the columns of :data:`COLUMNS`; a
cell group (the cells that differ only in learning rate) contributes the rows of its
best learning rate by the validation metric, as Zoology reports its sweeps.
"""

from __future__ import annotations

import collections
import csv
import json
import math
import pathlib
import statistics

from ssm.bench import grid

COLUMNS = ("model", "task", "setting", "metric", "value", "published", "params", "train_tokens_per_s",
           "peak_memory_mib", "wall_s", "steps", "seed")
HIGHER_IS_BETTER = {"accuracy": True, "loss": False, "mse": False, "bits_per_byte": False, "rmse": False,
                    "tokens_per_s": True}


def setting_label(cell: grid.Cell) -> str:
    """A cell's setting name and swept values as one label, e.g. ``"default, d_model=64"``."""
    sweep = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in cell.sweep)
    return ", ".join(x for x in (cell.setting, sweep) if x)


def cell_metrics(summary: dict, metric: str, split: str) -> float | None:
    """A cell's ``metric`` on ``split`` ("test" or "validation") from its summary."""
    record = (summary.get("final") or {}).get(split)
    if record is None:
        return None
    if metric == "accuracy":
        return record.get("accuracy")
    if metric == "bits_per_byte":
        return record["loss"] / math.log(2)
    return record["loss"]  # loss, mse (regression's loss is the squared error)


def wall_seconds(workdir: pathlib.Path) -> float | None:
    """Seconds a cell trained, summed over its processes (a resumed run starts its
    clock again, so each drop of ``wall_time_s`` starts a new process)."""
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return None
    total, last = 0.0, 0.0
    for line in path.read_text().splitlines():
        if line.strip():
            wall = json.loads(line)["wall_time_s"]
            if wall < last:
                total += last
            last = wall
    return total + last


def _evaluations(workdir: pathlib.Path) -> list[dict]:
    path = workdir / "evaluations.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def collect(preset: dict, cells: list[grid.Cell], out: pathlib.Path, sections: dict) -> tuple[list[dict], list]:
    """``(rows, records)``: the result rows, and one record per cell (its summary, or
    ``finished: False``), for the tables and plots."""
    records = []
    for cell in cells:
        workdir = out / "cells" / cell.id
        path = workdir / "summary.json"
        summary = json.loads(path.read_text()) if path.exists() else {}
        spec = preset["tasks"][cell.task]
        metric = spec.get("metric", "accuracy")
        records.append({"cell": cell, "workdir": workdir, "summary": summary, "metric": metric,
                        "finished": summary.get("status") in ("completed", "nonfinite"),
                        "validation": cell_metrics(summary, metric, "validation"),
                        "test": cell_metrics(summary, metric, "test"), "wall_s": wall_seconds(workdir),
                        "evaluations": _evaluations(workdir)})
    groups = collections.defaultdict(list)
    for r in records:
        if r["finished"]:
            groups[r["cell"].group].append(r)
    rows = []
    for members in groups.values():
        best = best_of(members)
        best["best"] = True
        rows.extend(cell_rows(best, preset, n_lrs=len(members)))
    for section_rows in sections.values():
        rows.extend({k: r.get(k) for k in COLUMNS} for r in section_rows)
    return rows, records


def best_of(members: list[dict]) -> dict:
    """The record with the best validation metric (a failed run counts as worst)."""
    higher = HIGHER_IS_BETTER[members[0]["metric"]]

    def score(r):
        v = r["validation"]
        if v is None or not math.isfinite(v):
            return -math.inf
        return v if higher else -v

    return max(members, key=score)


def cell_rows(record: dict, preset: dict, n_lrs: int) -> list[dict]:
    """The results rows of one finished cell: its metric, its learning rate when several were tried, and its
    extrapolation evaluations."""
    cell, summary = record["cell"], record["summary"]
    spec = preset["tasks"][cell.task]
    published = (spec.get("published") or {}).get(cell.model)
    base = {"model": cell.model, "task": cell.task, "setting": setting_label(cell), "params": summary.get("n_params"),
            "train_tokens_per_s": summary.get("train_tokens_per_s"), "peak_memory_mib": summary.get("peak_memory_mib"),
            "wall_s": record["wall_s"], "steps": summary.get("steps"), "seed": cell.seed}
    value = record["test"]
    rows = [{**base, "metric": record["metric"], "value": value, "published": published}]
    if n_lrs > 1:
        rows.append({**base, "metric": "lr", "value": cell.lr, "published": None})
    extra = spec.get("extrapolate")
    if extra:
        for ev in record["evaluations"]:
            if extra.get("examples") not in (None, ev.get("examples")) or set(ev["task_params"]) != {extra["param"]}:
                continue
            v = ev["task_params"][extra["param"]]
            factor = v / _base_value(cell, extra["param"])
            ev_value = ev.get("accuracy") if record["metric"] == "accuracy" else ev["loss"]
            rows.append({**base, "setting": f"{base['setting']}; {extra['param']}={v} ({factor:g}x)",
                         "metric": record["metric"], "value": ev_value, "published": published})
    return rows


def _base_value(cell: grid.Cell, param: str):
    from ssm import data

    config = cell.build()
    task = data.get_task(config.task.name)
    return getattr(data.make_params(task, config.task.params), param)


# ----------------------------------------------------------------------------- files


def write(rows: list[dict], records: list[dict], preset: dict, meta: dict, results: pathlib.Path) -> None:
    """Write ``results.csv``, the plots and ``results.md`` into ``results``."""
    with (results / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv(row.get(k)) for k in COLUMNS})
    figures = plots(rows, records, preset, results)
    (results / "results.md").write_text(markdown(rows, records, preset, meta, figures))


def _csv(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def _fmt(value, metric: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—" if value is None else "failed"
    if metric == "accuracy":
        return f"{100 * value:.1f}%"
    if metric == "lr":
        return f"{value:g}"
    if metric == "tokens_per_s":
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _gap(value, published, metric: str) -> str:
    if value is None or published is None or not math.isfinite(value):
        return ""
    if metric == "accuracy":
        return f"{100 * (value - published):+.1f} pp"
    return f"{value / published:.2g}x" if published else ""


def _num(value, digits: int = 0) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def markdown(rows: list[dict], records: list[dict], preset: dict, meta: dict, figures: list[str]) -> str:
    """The benchmark's ``results.md``: command, machine, one table per task and the figures."""
    lines = [f"# Memory benchmark: preset `{meta['preset']}`", "",
             f"- **Command:** `{meta['command']}`",
             f"- **Started:** {meta['started']}; wall time {meta['wall_s'] / 60:.1f} min; cells finished "
             f"{meta['cells']}, {meta['trained_now']} of them trained by this invocation (a grid resumes: the "
             f"others were finished by earlier invocations of the same command); training time of all cells "
             f"{meta['cells_wall_s'] / 60:.1f} min",
             f"- **Machine:** {meta['machine']} (at the end: load average "
             f"{meta['machine_at_end'].rsplit('load average ', 1)[-1]})", "",
             "Each cell is one training run; where a cell was trained at several learning rates the row is the "
             "best by validation (its `lr` row says which). Accuracy is the token (or sequence) accuracy on the "
             "test split; `published` is the paper's number for its own (larger) setting.", ""]
    by_task = collections.defaultdict(list)
    for row in rows:
        by_task[row["task"]].append(row)
    for task, task_rows in by_task.items():
        lines += [f"## {task}", ""]
        if task == "generation":
            lines += [_pivot(task_rows, "setting", "tokens/s of recurrent decoding"), ""]
            continue
        header = ["model", "setting", "metric", "ours", "published", "gap", "params", "train tok/s", "peak MiB",
                  "steps", "wall s"]
        body = [[r["model"], r["setting"], r["metric"], _fmt(r["value"], r["metric"]),
                 _fmt(r["published"], r["metric"]) if r["published"] is not None else "",
                 _gap(r["value"], r["published"], r["metric"]), _num(r["params"]), _num(r["train_tokens_per_s"]),
                 _num(r["peak_memory_mib"], 1), _num(r["steps"]), _num(r["wall_s"])] for r in task_rows]
        lines += [_table(header, body), ""]
    speed = [r for r in rows if r["train_tokens_per_s"] and r["metric"] not in ("lr",) and "x)" not in r["setting"]]
    if speed:
        lines += ["## Training throughput (tokens/s, median over log intervals)", "",
                  _pivot([{**r, "value": r["train_tokens_per_s"], "setting": r["task"]} for r in speed], "setting",
                         "train tokens/s"), ""]
    for figure in figures:
        lines += [f"![{figure}]({figure})", ""]
    return "\n".join(lines)


def _table(header: list[str], body: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(out + ["| " + " | ".join(str(c) for c in row) + " |" for row in body])


def _pivot(rows: list[dict], column: str, what: str) -> str:
    """Models down, ``column`` values across, the mean value of the rows in each cell."""
    columns = list(dict.fromkeys(r[column] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    cells = collections.defaultdict(list)
    for r in rows:
        if r["value"] is not None:
            cells[r["model"], r[column]].append(r["value"])
    body = [[m, *(f"{statistics.mean(cells[m, c]):,.0f}" if cells[m, c] else "—" for c in columns)] for m in models]
    return _table([f"model ({what})", *columns], body)


# ----------------------------------------------------------------------------- plots


def plots(rows: list[dict], records: list[dict], preset: dict, results: pathlib.Path) -> list[str]:
    """Write the PNG figures; their file names, for the markdown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for task, spec in (preset.get("tasks") or {}).items():
        task_records = [r for r in records if r["cell"].task == task and r["finished"]]
        if not task_records:
            continue
        if spec.get("extrapolate"):
            written.append(_extrapolation(plt, task, spec, task_records, results))
        if "model.d_model" in (spec.get("sweep") or {}):
            written.append(_width(plt, task, task_records, results))
        written.append(_curves(plt, task, task_records, results))
    generation = [r for r in rows if r["task"] == "generation"]
    if generation:
        written.append(_generation(plt, generation, results))
    hippo = ("hippo_error_vs_n.png", "hippo_error_vs_position.png", "hippo_reconstruction_example.png")
    written += [f for f in hippo if (results / f).exists() and any(r["task"] == "hippo_reconstruction" for r in rows)]
    return [w for w in written if w]


def _save(plt, fig, results: pathlib.Path, name: str, dpi: int) -> str:
    fig.tight_layout()
    fig.savefig(results / name, dpi=dpi)
    plt.close(fig)
    return name


def _best(records):
    return [r for r in records if r.get("best")]


def _extrapolation(plt, task, spec, records, results) -> str:
    param = spec["extrapolate"]["param"]
    fig, ax = plt.subplots(figsize=(6, 4))
    lines = collections.defaultdict(lambda: collections.defaultdict(list))
    train_value = None
    for r in _best(records):
        train_value = _base_value(r["cell"], param)
        for ev in r["evaluations"]:
            if set(ev["task_params"]) == {param} and ev.get("accuracy") is not None:
                lines[r["cell"].model][ev["task_params"][param]].append(ev["accuracy"])
    for model, points in lines.items():
        xs = sorted(points)
        ax.plot(xs, [100 * statistics.mean(points[x]) for x in xs], "o-", label=model)
    if train_value:
        ax.axvline(train_value, color="gray", ls=":", label="training length")
    ax.set_xscale("log", base=2)
    ax.set(xlabel=param, ylabel="test accuracy (%)", title=f"{task}: trained at {param}={train_value}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, results, f"{task}_extrapolation.png", dpi=110)


def _width(plt, task, records, results) -> str:
    settings = list(dict.fromkeys(r["cell"].setting for r in records))
    fig, axes = plt.subplots(1, len(settings), figsize=(4.5 * len(settings), 3.8), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        lines = collections.defaultdict(lambda: collections.defaultdict(list))
        for r in _best(records):
            if r["cell"].setting == setting and r["test"] is not None:
                lines[r["cell"].model][dict(r["cell"].sweep)["model.d_model"]].append(r["test"])
        for model, points in lines.items():
            xs = sorted(points)
            ax.plot(xs, [100 * statistics.mean(points[x]) for x in xs], "o-", label=model)
        ax.set_xscale("log", base=2)
        ax.set(xlabel="model width (d_model)", ylabel="test accuracy (%)", title=f"{task} {setting}", ylim=(0, 102))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return _save(plt, fig, results, f"{task}_width.png", dpi=110)


def _curves(plt, task, records, results) -> str:
    """Validation metric against step for every cell of the task, one panel per setting."""
    panels = list(dict.fromkeys(setting_label(r["cell"]) for r in records))
    cols = min(len(panels), 3)
    rows_n = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.5 * cols, 3.3 * rows_n), squeeze=False)
    metric = records[0]["metric"]
    for ax, panel in zip(axes.flat, panels):
        for r in records:
            if setting_label(r["cell"]) != panel:
                continue
            path = r["workdir"] / "metrics.jsonl"
            points = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
            key = "accuracy" if metric == "accuracy" else "loss"
            points = [(p["step"], p[key]) for p in points if p["split"] == "validation" and key in p]
            if points:
                label = r["cell"].model + (f" lr={r['cell'].lr:g}" if r["cell"].lr else "")
                ax.plot(*zip(*points), "-", label=label, lw=2 if r.get("best") else 1, alpha=1 if r.get("best") else 0.5)
        ax.set(title=panel, xlabel="step", ylabel=f"validation {'accuracy' if metric == 'accuracy' else metric}")
        if metric != "accuracy":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{task}: learning curves of every cell")
    return _save(plt, fig, results, f"{task}_curves.png", dpi=100)


def _generation(plt, rows, results) -> str:
    fig, ax = plt.subplots(figsize=(6, 4))
    by_model = collections.defaultdict(list)
    for r in rows:
        by_model[r["model"]].append((int(r["setting"].split("=")[1]), r["value"]))
    for model, points in by_model.items():
        points.sort()
        ax.plot(*zip(*points), "o-", label=model)
    ax.set(xscale="log", yscale="log", xlabel="context (tokens)", ylabel="generated tokens/s",
           title="recurrent generation: SSM step vs attention's KV cache")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(plt, fig, results, "generation.png", dpi=110)
