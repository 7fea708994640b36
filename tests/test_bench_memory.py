"""The memory benchmark, ``python -m ssm.bench.memory``: the ci preset run once as users run
it, its results checked against its run folders, a rerun that trains nothing, ``--only``
subsets, a grid killed and resumed; and :mod:`ssm.bench.grid`'s expansion, selection and
preset checks without training."""

import collections
import csv
import json
import math
import os
import pathlib
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import time
import types

import pytest
import yaml

from ssm.bench import grid, memory, report
from ssm.train.config import ConfigError, dump

ROOT = pathlib.Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "configs" / "bench").glob("memory_*.yaml"))
CI = ROOT / "configs" / "bench" / "memory_ci.yaml"
COLUMNS = ["model", "task", "setting", "metric", "value", "published", "params", "train_tokens_per_s",
           "peak_memory_mib", "wall_s", "steps", "seed"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# The cells read and write their datasets in task.cache_dir, ".cache/datasets" relative to
# the working directory (the repository root here, an ignored folder): the command line has
# no way to move it without another preset file, and these tests run the shipped one.
ENV = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


def bench(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "ssm.bench.memory", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def read_csv(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def jsonl(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def same_number(text, value):
    """A results.csv field (floats written with 6 significant digits) against the value it holds."""
    if value is None:
        return text == ""
    return text != "" and float(text) == pytest.approx(value, rel=1e-5, abs=1e-12)


def metric_of(summary, metric, split="test"):
    """The cell's metric in the benchmark's unit, computed here from its summary."""
    record = summary["final"][split]
    return {"accuracy": lambda: record["accuracy"], "mse": lambda: record["loss"], "loss": lambda: record["loss"],
            "bits_per_byte": lambda: record["loss"] / math.log(2)}[metric]()




def n_cells(preset):
    """The grid's size counted from the YAML: settings x sweep x models x learning rates x seeds."""
    total = 0
    for spec in preset["tasks"].values():
        models = spec.get("models") or list(preset["models"])
        lrs = spec.get("lr")
        per_model = [len(lrs.get(m, lrs.get("*")) if isinstance(lrs, dict) else lrs) if isinstance(lrs, (list, dict))
                     else 1 for m in models]
        sweep = math.prod(len(v) for v in (spec.get("sweep") or {}).values())
        total += len(spec.get("settings") or {"default": {}}) * sweep * sum(per_model) * len(spec.get("seeds") or [0])
    return total


def cell_lines(stdout):
    """``{cell id: its progress line}`` from the grid's output."""
    return {m[1]: m[0] for m in re.finditer(r"^\[\s*\d+/\d+\] (\S+): .*$", stdout, re.M)}


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR", f"{path.name} is not a PNG file"
    return struct.unpack(">II", data[16:24])


# ----------------------------------------------------------------------------- grid, no training

def tiny_preset(**task):
    return {"defaults": {"model": {"d_model": 8, "n_layers": 1}, "trainer": {"steps": 2, "batch_size": 4},
                         "schedule": {"warmup_steps": 0}},
            "models": {"a": {"model": {"layer": "s4d"}}, "b": {"model": {"layer": "lstm"}}},
            "tasks": {"copying": task}}


def test_expand_merges_defaults_then_task_then_model_then_the_cells_own_values():
    preset = {
        "defaults": {"model": {"d_model": 8, "n_layers": 1, "dropout": 0.1},
                     "trainer": {"steps": 1, "batch_size": 4, "seed": 7},
                     "optim": {"lr": 0.1, "weight_decay": 0.5}, "schedule": {"warmup_steps": 1}},
        "models": {"a": {"model": {"layer": "s4d", "n_layers": 3, "d_model": 12}, "optim": {"lr": 0.2},
                         "trainer": {"batch_size": 8}, "task": {"params": {"l_noise": 5}}},
                   "b": {"model": {"layer": "lstm"}}},
        "tasks": {"copying": {"config": {"model": {"n_layers": 2, "dropout": 0.2},
                                         "trainer": {"batch_size": 6, "steps": 2},
                                         "task": {"params": {"l_noise": 4, "l_memorize": 3}}},
                              "settings": {"short": {"l_noise": 6}}, "sweep": {"model.d_model": [16]},
                              "lr": [0.3], "seeds": [2]}},
    }
    a, b = grid.expand(preset)
    assert (a.task, a.setting, a.sweep, a.model, a.lr, a.seed) == ("copying", "short", (("model.d_model", 16),),
                                                                  "a", 0.3, 2)
    assert a.id == "copying-short-d_model16-a-lr0.3-s2" and a.config["name"] == a.id
    config = a.build()
    assert config.model.layer == "s4d"
    assert config.optim.weight_decay == 0.5 and config.schedule.warmup_steps == 1  # defaults alone
    assert config.model.dropout == 0.2 and config.trainer.steps == 2  # task config over defaults
    assert config.model.n_layers == 3 and config.trainer.batch_size == 8  # model over task config
    assert config.model.d_model == 16  # sweep over model and defaults
    assert config.optim.lr == 0.3  # the cell's lr over the model's and the defaults'
    assert config.trainer.seed == config.task.seed == 2  # the cell's seed over the defaults'
    assert config.task.params == {"l_noise": 6, "l_memorize": 3}  # setting over model over task config
    assert config.task.name == "copying"
    config = b.build()  # a model that sets nothing of its own keeps the task's values
    assert (config.model.layer, config.model.n_layers, config.model.dropout) == ("lstm", 2, 0.2)
    assert (config.trainer.batch_size, config.optim.lr, config.task.params["l_noise"]) == (6, 0.3, 6)


def test_sweeps_take_every_combination_of_any_config_values():
    cells = grid.expand(tiny_preset(models=["a"], sweep={"model.d_model": [8, 16], "model.norm": ["layer", "rms"],
                                                         "model.layer_kwargs": [{"d_state": 4}]}))
    got = {(c.build().model.d_model, c.build().model.norm, c.build().model.layer_kwargs["d_state"]) for c in cells}
    assert got == {(8, "layer", 4), (8, "rms", 4), (16, "layer", 4), (16, "rms", 4)}
    assert len({c.id for c in cells}) == 4


def test_cell_ids_are_unique_readable_and_colliding_ids_are_refused():
    cells = grid.expand(grid.load_preset(CI))
    ids = [c.id for c in cells]
    assert len(ids) == len(set(ids)) == n_cells(yaml.safe_load(CI.read_text()))
    assert all(re.fullmatch(r"[A-Za-z0-9_.=+-]+", i) for i in ids)
    assert "mqar-L16-kv2-d_model32-mamba2-lr0-s0" in ids and "selective_copying-default-s4d-lr0.003-s0" in ids
    colliding = tiny_preset(settings={"a/b": {"l_noise": 4}, "a_b": {"l_noise": 5}}, models=["a"])
    with pytest.raises(ConfigError, match="same id"):
        grid.expand(colliding)


def test_learning_rates_per_model_with_a_default_for_the_rest():
    cells = grid.expand(tiny_preset(lr={"a": [1e-3, 3e-3], "*": [1e-2]}))
    assert [(c.model, c.lr, c.build().optim.lr) for c in cells] == [("a", 1e-3, 1e-3), ("a", 3e-3, 3e-3),
                                                                   ("b", 1e-2, 1e-2)]
    assert len({c.group for c in cells if c.model == "a"}) == 1  # the lrs of a model are one group
    assert [c.lr for c in grid.expand(tiny_preset(lr=5e-4))] == [5e-4, 5e-4]  # one lr, not a list
    with pytest.raises(ConfigError, match="no entry for model 'b'"):
        grid.expand(tiny_preset(lr={"a": [1e-3]}))


def test_eta_extrapolates_the_trained_cells_rate_to_the_cells_still_to_train():
    cells = grid.expand(grid.load_preset(CI))[:4]
    eta = memory.Eta(cells[1:])  # cells[0] was finished before this invocation
    work = [eta.work[c.id] for c in cells[1:]]
    # A cell read back after a slow evaluation says nothing about training speed.
    assert "left" not in eta.finished(cells[0], seconds=500.0)
    text = eta.finished(cells[1], seconds=60.0)
    left = float(re.search(r"about ([\d.]+) min left", text).group(1))
    assert left == pytest.approx(60.0 / work[0] * (work[1] + work[2]) / 60, abs=0.051)
    eta.finished(cells[2], seconds=30.0)
    assert "left" not in eta.finished(cells[3], seconds=1.0)  # nothing left


def test_select_ands_keys_ors_a_repeated_key_and_reads_lr_as_a_number():
    cells = grid.expand(grid.load_preset(CI))

    def ids(only):
        return [c.id for c in grid.select(cells, only)]

    assert ids(None) == ids("") == [c.id for c in cells]
    assert ids("task=selective_copying,model=mamba,model=s4d") == [c.id for c in cells if c.task == "selective_copying"]
    assert ids("task=selective_copying,model=mamba") == ["selective_copying-default-mamba-lr0.001-s0",
                                                         "selective_copying-default-mamba-lr0.003-s0"]
    assert ids("lr=1e-3") == ids("lr=0.001") == ids("lr=0.0010") == [c.id for c in cells if c.lr == 1e-3]
    assert len(ids("task=mqar,setting=L16-kv2")) == 2 and len(ids("task=mqar,task=copying")) == 4
    assert ids("seed=0") == [c.id for c in cells]
    with pytest.raises(ConfigError, match="matches no cell"):
        grid.select(cells, "task=copying,model=mamba2")
    for bad in ("colour=red", "mamba", "task=copying,=x"):
        with pytest.raises(ConfigError, match="expected key=value pairs"):
            grid.select(cells, bad)


@pytest.mark.parametrize("text, message", [
    ("colour: blue\n", "unknown key 'colour'"),
    ("models: {a: {}}\ntasks: {copying: {epochs: 3}}\n", r"tasks\.copying\.epochs: unknown key"),
    ("models: {a: {}}\ntasks: {copying: {models: [a, mamba]}}\n", r"tasks\.copying\.models: 'mamba' is not in models"),
    ("models: {a: {}}\ntasks: {copying: {metric: f1}}\n", r"tasks\.copying\.metric='f1'; expected one of"),
], ids=["unknown-key", "unknown-task-key", "unknown-model", "bad-metric"])
def test_preset_checks_raise_config_error_naming_the_key(tmp_path, text, message):
    path = tmp_path / "memory_bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        grid.load_preset(path)


def test_a_cell_with_a_bad_config_is_refused_before_any_work_naming_the_cell_and_key():
    with pytest.raises(ConfigError, match=r"cell copying-default-a-lr0-s0: .*trainer\.steps"):
        grid.expand(tiny_preset(models=["a"], config={"trainer": {"steps": 0}}))
    with pytest.raises(ConfigError, match="--preset 'gpu'"):
        grid.preset_path("gpu")
    with pytest.raises(ConfigError, match="does not exist"):
        grid.load_preset(ROOT / "configs" / "bench" / "memory_missing.yaml")


def test_the_ci_preset_is_among_the_shipped_presets():
    assert CI in PRESETS
    assert grid.preset_path("ci") == CI


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_shipped_preset_expands_and_every_cell_config_validates(path):
    from ssm import data
    from ssm.bench.hippo_memory import DEFAULT_SPEC

    preset = grid.load_preset(path)
    cells = grid.expand(preset)  # builds every cell's Config: its checks ran
    assert len(cells) == n_cells(preset)
    for cell in cells:
        config = cell.build()
        task = data.get_task(config.task.name)
        task.info(data.make_params(task, config.task.params))  # what the runner asks before training
    for name, spec in preset["tasks"].items():
        models = set(spec.get("models") or preset["models"])
        assert set(spec.get("published") or {}) <= models, f"{name}: published for a model it does not train"
        if spec.get("extrapolate"):
            params = data.make_params(data.get_task(name), {})
            assert hasattr(params, spec["extrapolate"]["param"]), f"{name}: extrapolate.param"
    assert set(preset.get("generation", {}).get("models", [])) <= set(preset["models"])
    assert set(preset.get("hippo") or {}) <= set(DEFAULT_SPEC)
    print(f"{path.name}: {len(cells)} cells")


# ----------------------------------------------------------------------------- the ci preset, run once

@pytest.fixture(scope="module")
def ci(tmp_path_factory):
    """One run of ``python -m ssm.bench.memory --preset ci`` for the whole module."""
    out = tmp_path_factory.mktemp("memory-ci")
    start = time.perf_counter()
    proc = bench("--preset", "ci", "--out", str(out))
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-5000:]
    preset = yaml.safe_load(CI.read_text())
    header, rows = read_csv(out / "results.csv")
    print(f"ci preset: {seconds:.0f} s, {len(rows)} rows")
    return types.SimpleNamespace(out=out, stdout=proc.stdout, preset=preset, cells=grid.expand(grid.load_preset(CI)),
                                 header=header, rows=rows, seconds=seconds)


def summary_of(ci, cell):
    return json.loads((ci.out / "cells" / cell.id / "summary.json").read_text())


def test_ci_preset_runs_end_to_end_as_users_run_it(ci):
    ids = [c.id for c in ci.cells]
    assert f"{len(ids)} of {len(ids)} cells" in ci.stdout
    assert sorted(p.name for p in (ci.out / "cells").iterdir()) == sorted(ids)
    lines = cell_lines(ci.stdout)
    assert set(lines) == set(ids)
    assert all("(trained," in line for line in lines.values())
    for cell in ci.cells:
        workdir = ci.out / "cells" / cell.id
        assert summary_of(ci, cell)["status"] == "completed"
        assert (workdir / "config.yaml").read_text() == dump(cell.build())  # the folder trained its cell
    for section in ("hippo", "generation"):
        assert re.search(rf"^\[{section}\] \d+ rows", ci.stdout, re.M), section
    for name in ("results.csv", "results.md", "hippo.json", "generation.json"):
        assert (ci.out / name).is_file(), name


def test_results_csv_has_the_columns_and_every_model_and_task_of_the_preset(ci):
    assert ci.header == COLUMNS
    assert {r["model"] for r in ci.rows} >= set(ci.preset["models"])
    assert {r["task"] for r in ci.rows} == set(ci.preset["tasks"]) | {"hippo_reconstruction", "generation"}
    groups = collections.Counter(c.group for c in ci.cells)
    expected = sum(1 + (n > 1) + len((ci.preset["tasks"][g[0]].get("extrapolate") or {}).get("factors", []))
                   for g, n in groups.items())
    hippo, gen = ci.preset["hippo"], ci.preset["generation"]
    expected += len(hippo["measures"]) * len(hippo["N"]) * 2 + len(gen["models"]) * len(gen["contexts"])
    assert len(ci.rows) == expected


def test_each_row_is_the_test_metric_of_its_groups_best_learning_rate_by_validation(ci):
    rows = {(r["model"], r["task"], r["setting"], r["metric"]): r for r in ci.rows}
    groups = collections.defaultdict(list)
    for cell in ci.cells:
        groups[cell.group].append(cell)
    assert "L16-kv2, d_model=16" in {r["setting"] for r in ci.rows if r["task"] == "mqar"}
    swept = 0
    for members in groups.values():
        first = members[0]
        metric = ci.preset["tasks"][first.task].get("metric", "accuracy")
        setting = report.setting_label(first)
        row = rows[first.model, first.task, setting, metric]
        if len(members) > 1:
            swept += 1
            chosen_lr = float(rows[first.model, first.task, setting, "lr"]["value"])
            (chosen,) = [c for c in members if c.lr == pytest.approx(chosen_lr, rel=1e-5)]
            validation = {c.lr: metric_of(summary_of(ci, c), metric, "validation") for c in members}
            best = (max if metric == "accuracy" else min)(validation.values())
            assert validation[chosen.lr] == best, f"{chosen.id}: not the best validation of {validation}"
            print(f"{first.task} {first.model}: validation {validation} -> lr {chosen.lr:g}")
        else:
            (chosen,) = members
            assert (first.model, first.task, setting, "lr") not in rows
        summary = summary_of(ci, chosen)
        assert same_number(row["value"], metric_of(summary, metric)), chosen.id
        assert int(row["params"]) == summary["n_params"] and int(row["steps"]) == summary["steps"] == 20
        assert same_number(row["train_tokens_per_s"], summary["train_tokens_per_s"])
        assert same_number(row["peak_memory_mib"], summary["peak_memory_mib"])
        walls = [r["wall_time_s"] for r in jsonl(ci.out / "cells" / chosen.id / "metrics.jsonl")]
        assert walls == sorted(walls)  # one process trained it
        assert same_number(row["wall_s"], walls[-1])
        assert row["seed"] == str(chosen.seed)
        published = (ci.preset["tasks"][first.task].get("published") or {}).get(first.model)
        assert same_number(row["published"], published)
    assert swept == 2  # selective_copying: mamba and s4d at two learning rates


def test_extrapolation_rows_are_the_cells_evaluations_and_1x_reproduces_the_test_split(ci):
    spec = ci.preset["tasks"]["induction_heads"]["extrapolate"]
    train_len = ci.preset["tasks"]["induction_heads"]["config"]["task"]["params"][spec["param"]]
    rows = {(r["model"], r["setting"]): r for r in ci.rows if r["task"] == "induction_heads"}
    for cell in (c for c in ci.cells if c.task == "induction_heads"):
        evaluations = jsonl(ci.out / "cells" / cell.id / "evaluations.jsonl")
        assert len(evaluations) == len(spec["factors"])  # once each
        summary = summary_of(ci, cell)
        for factor in spec["factors"]:
            value = train_len * factor
            (ev,) = [e for e in evaluations if e["task_params"] == {spec["param"]: value}]
            assert ev["examples"] == spec["examples"] and ev["split"] == "test" and ev["step"] == summary["steps"]
            row = rows[cell.model, f"default; {spec['param']}={value} ({factor:g}x)"]
            assert same_number(row["value"], ev["accuracy"])
            if factor == 1:  # the same checkpoint on the same split: the test numbers again
                assert ev["accuracy"] == summary["final"]["test"]["accuracy"]
                assert ev["loss"] == pytest.approx(summary["final"]["test"]["loss"], rel=1e-5)
            print(f"{cell.model} at {spec['param']}={value}: accuracy {ev['accuracy']:.3f}")


def test_hippo_and_generation_rows_are_the_sections_results(ci):
    for task, cache in (("hippo_reconstruction", "hippo.json"), ("generation", "generation.json")):
        cached = json.loads((ci.out / cache).read_text())
        rows = [r for r in ci.rows if r["task"] == task]
        assert len(rows) == len(cached) > 0
        for row, want in zip(rows, cached):
            assert (row["model"], row["setting"], row["metric"]) == (want["model"], want["setting"], want["metric"])
            assert same_number(row["value"], want["value"]) and want["value"] > 0
    hippo = ci.preset["hippo"]
    assert {(r["model"], r["setting"], r["metric"]) for r in ci.rows if r["task"] == "hippo_reconstruction"} == {
        (f"hippo-{m}", f"N={n}", metric) for m in hippo["measures"] for n in hippo["N"]
        for metric in ("rmse", "rmse_midpoint")}
    gen = ci.preset["generation"]
    assert {(r["model"], r["setting"]) for r in ci.rows if r["task"] == "generation"} == {
        (m, f"context={c}") for m in gen["models"] for c in gen["contexts"]}


def test_results_md_has_a_section_per_task_names_the_command_and_its_png_plots_exist(ci):
    md = (ci.out / "results.md").read_text()
    assert f"- **Command:** `python -m ssm.bench.memory --preset ci --out {shlex.quote(str(ci.out))}`" in md
    sections = re.findall(r"^## (\S+)$", md, re.M)
    assert set(sections) >= set(ci.preset["tasks"]) | {"hippo_reconstruction", "generation"}
    figures = re.findall(r"^!\[([^\]]+)\]\(([^)]+)\)$", md, re.M)
    assert all(alt == link for alt, link in figures)
    expected = {f"{t}_curves.png" for t in ci.preset["tasks"]} | {
        "induction_heads_extrapolation.png", "mqar_width.png", "generation.png", "hippo_error_vs_n.png",
        "hippo_error_vs_position.png", "hippo_reconstruction_example.png"}
    assert {link for _, link in figures} == expected
    for name in sorted(expected):
        width, height = png_size(ci.out / name)
        assert width > 100 and height > 100, name
    print(f"{len(sections)} sections, {len(expected)} plots")


def test_extrapolation_without_examples_is_evaluated_once_and_reported(ci, tmp_path, monkeypatch):
    """A preset may leave ``extrapolate.examples`` out (the run's test split size): a rerun
    must read the evaluations back, not evaluate again, and report them."""
    monkeypatch.chdir(tmp_path)  # the evaluation's task.cache_dir is relative
    (cell,) = [c for c in ci.cells if c.task == "induction_heads" and c.model == "attention"]
    workdir = tmp_path / "cells" / cell.id
    shutil.copytree(ci.out / "cells" / cell.id, workdir)
    (workdir / "evaluations.jsonl").unlink()
    spec = {"param": "input_seq_len", "factors": [1, 2], "batch_size": 32}
    first = memory.extrapolate(cell, workdir, spec)
    lines = (workdir / "evaluations.jsonl").read_text()
    assert len(lines.splitlines()) == 2
    again = memory.extrapolate(cell, workdir, spec)
    assert (workdir / "evaluations.jsonl").read_text() == lines, "evaluated again"
    assert [r["accuracy"] for r in again] == [r["accuracy"] for r in first]
    assert first[0]["accuracy"] == summary_of(ci, cell)["final"]["test"]["accuracy"]
    preset = {**ci.preset, "tasks": {"induction_heads": {**ci.preset["tasks"]["induction_heads"], "extrapolate": spec}}}
    rows, _ = report.collect(preset, [cell], tmp_path, {})
    assert [r["setting"] for r in rows] == ["default", "default; input_seq_len=16 (1x)",
                                           "default; input_seq_len=32 (2x)"]
    assert [r["value"] for r in rows[1:]] == [r["accuracy"] for r in first]


def test_rerun_skips_finished_cells_trains_nothing_and_writes_the_same_results_csv(ci):
    def snapshot():
        files = {}
        for path in sorted((ci.out / "cells").rglob("*")):
            if path.is_file() and "checkpoints" not in path.parts:
                files[str(path.relative_to(ci.out))] = path.read_bytes()
            elif path.is_dir() and path.parent.name == "checkpoints":
                files[str(path.relative_to(ci.out))] = "checkpoint"
        for name in ("hippo.json", "generation.json", "results.csv"):
            files[name] = (ci.out / name).read_bytes()
        return files

    def tables(md):  # results.md without the lines about when and where it ran
        return [x for x in md.splitlines() if not x.startswith(("- **Started:**", "- **Machine:**"))]

    before, md_before = snapshot(), (ci.out / "results.md").read_text()
    start = time.perf_counter()
    proc = bench("--preset", "ci", "--out", str(ci.out))
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-5000:]
    lines = cell_lines(proc.stdout)
    assert set(lines) == {c.id for c in ci.cells}
    assert all("(done before," in line for line in lines.values()), "a cell ran again"
    assert "(trained," not in proc.stdout and "[hippo]" not in proc.stdout and "[generation]" not in proc.stdout
    after = snapshot()
    assert after.keys() == before.keys()
    changed = [k for k in before if before[k] != after[k]]
    # Every column of results.csv is read from the run folders and section caches (wall_s
    # from metrics.jsonl, throughput and memory from summary.json): byte for byte the same.
    assert changed == [], f"changed by the rerun: {changed}"
    assert tables((ci.out / "results.md").read_text()) == tables(md_before)
    print(f"rerun: {len(lines)} cells done before, {seconds:.1f} s (the first run: {ci.seconds:.0f} s)")


# ----------------------------------------------------------------------------- --only and resume

def test_only_one_task_and_model_trains_exactly_that_cell_and_no_section(tmp_path):
    (cell,) = grid.select(grid.expand(grid.load_preset(CI)), "task=copying,model=lstm")
    proc = bench("--preset", "ci", "--out", str(tmp_path), "--only", "task=copying,model=lstm")
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert f"1 of {n_cells(yaml.safe_load(CI.read_text()))} cells" in proc.stdout and list(cell_lines(proc.stdout)) == [cell.id]
    assert [p.name for p in (tmp_path / "cells").iterdir()] == [cell.id]
    workdir = tmp_path / "cells" / cell.id
    assert json.loads((workdir / "summary.json").read_text())["status"] == "completed"
    assert (workdir / "config.yaml").read_text() == dump(cell.build())
    assert not (tmp_path / "hippo.json").exists() and not (tmp_path / "generation.json").exists()
    _, rows = read_csv(tmp_path / "results.csv")
    assert [(r["model"], r["task"], r["metric"]) for r in rows] == [("lstm", "copying", "accuracy")]


def test_only_task_hippo_runs_only_the_hippo_section(tmp_path):
    proc = bench("--preset", "ci", "--out", str(tmp_path), "--only", "task=hippo")
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert f"0 of {n_cells(yaml.safe_load(CI.read_text()))} cells" in proc.stdout and cell_lines(proc.stdout) == {}
    assert list((tmp_path / "cells").iterdir()) == []
    assert (tmp_path / "hippo.json").is_file() and not (tmp_path / "generation.json").exists()
    _, rows = read_csv(tmp_path / "results.csv")
    assert len(rows) == 16 and {r["task"] for r in rows} == {"hippo_reconstruction"}
    png_size(tmp_path / "hippo_error_vs_n.png")


@pytest.mark.parametrize("only, message", [
    ("task=nothing", " matches no cell of the grid"),
    ("task=copying,model=mamba2", " matches no cell of the grid"),
    ("colour=red", ": expected key=value pairs with keys task, setting, model, lr, seed"),
    ("mamba", ": expected key=value pairs"),
    ("task=hippo,colour=red", ": expected key=value pairs"),  # beside a section too
], ids=["no-task", "no-model-in-task", "bad-key", "no-equals", "bad-key-with-section"])
def test_only_that_matches_nothing_or_has_a_bad_key_exits_2(tmp_path, only, message):
    proc = bench("--preset", "ci", "--out", str(tmp_path / "out"), "--only", only, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"ssm.bench.memory: --only {only!r}{message}" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_killed_grid_resumes_where_it_stopped(tmp_path):
    first, second = grid.select(grid.expand(grid.load_preset(CI)), "task=copying")
    args = [sys.executable, "-m", "ssm.bench.memory", "--preset", "ci", "--out", str(tmp_path / "g"),
            "--only", "task=copying"]
    cells = tmp_path / "g" / "cells"
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(args, cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 240
        while True:  # until the first cell's summary is whole
            assert proc.poll() is None and time.time() < deadline, "the grid ended before it could be killed"
            try:
                if json.loads((cells / first.id / "summary.json").read_text())["status"] == "completed":
                    break
            except (FileNotFoundError, json.JSONDecodeError):
                pass
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (cells / second.id / "summary.json").exists(), "the second cell finished before the kill"
    at_kill = {c.id: (cells / c.id / "metrics.jsonl").read_text() if (cells / c.id / "metrics.jsonl").exists()
               else "" for c in (first, second)}
    checkpoints = sorted(p.name for p in (cells / second.id / "checkpoints").glob("*")) \
        if (cells / second.id / "checkpoints").exists() else []

    proc = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-5000:]
    lines = cell_lines(proc.stdout)
    assert "(done before," in lines[first.id] and "(trained," in lines[second.id]
    assert (cells / first.id / "metrics.jsonl").read_text() == at_kill[first.id]
    for cell in (first, second):
        summary = json.loads((cells / cell.id / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["steps"] == 20
        records = jsonl(cells / cell.id / "metrics.jsonl")
        keys = [(r["split"], r["step"]) for r in records]
        assert len(keys) == len(set(keys)), f"{cell.id}: a step was logged twice"
        assert [s for split, s in keys if split == "train"] == [5, 10, 15, 20]
        assert [s for split, s in keys if split == "validation"] == [10, 20]
    _, rows = read_csv(tmp_path / "g" / "results.csv")
    assert {r["model"] for r in rows} == {first.model, second.model}
    print(f"killed with {second.id} at {len(at_kill[second.id].splitlines())} log lines, "
          f"checkpoints {checkpoints}; resumed")


def test_a_finished_cell_of_an_edited_preset_is_refused(tmp_path):
    """A cell folder that holds a finished run of another config (the preset was edited
    since) is not silently reused: the grid stops and names the cell and the key."""
    preset = yaml.safe_load(CI.read_text())
    preset["tasks"] = {"copying": {**preset["tasks"]["copying"], "models": ["lstm"]}}
    preset.pop("hippo"), preset.pop("generation")
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump(preset))
    assert bench("--preset", str(path), "--out", str(tmp_path / "out")).returncode == 0
    preset["defaults"]["trainer"]["batch_size"] = 4
    path.write_text(yaml.safe_dump(preset))
    proc = bench("--preset", str(path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "copying-default-lstm" in proc.stderr and "another config" in proc.stderr and "trainer.batch_size" in proc.stderr
