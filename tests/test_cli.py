"""The training command as users run it: ``ssm-train`` (the console script),
``python -m ssm.train``, and from an installed wheel in a folder of its own."""

import json
import os
import pathlib
import subprocess
import sys
import zipfile

import yaml

from test_train import tiny

from ssm.train.cli import run_folder
from ssm.train.reference import reference, schema_rows

ROOT = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent


def run(argv, cwd, env=None, timeout=240):
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_ssm_train_help_lists_tasks_layers_configs_and_the_reference(tmp_path):
    out = run([str(BIN / "ssm-train"), "--help"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: ssm-train")
    for word in ("Tasks: copying, selective_copying", "mqar", "Layers (model.layer): s4, s4d, mamba",
                 "copying/: attention lstm m2 mamba mamba2 s4 s4d task", "docs/config.md", "--preset"):
        assert word in out.stdout, word


def test_python_m_ssm_train_finds_shipped_configs_from_any_folder(tmp_path):
    out = run([sys.executable, "-m", "ssm.train", "--print-config", "--config", "copying/s4.yaml", "--preset", "cpu"],
              tmp_path)
    assert out.returncode == 0, out.stderr
    printed = yaml.safe_load(out.stdout)
    assert printed["name"] == "copying-s4" and printed["preset"] == "cpu"
    default = run([sys.executable, "-m", "ssm.train", "--print-config"], tmp_path)
    assert default.returncode == 0 and yaml.safe_load(default.stdout)["name"] == "default"
    bad = run([sys.executable, "-m", "ssm.train", "--config", "copying/s5.yaml"], tmp_path)
    assert bad.returncode == 2 and "python -m ssm.train: config error: --config 'copying/s5.yaml'" in bad.stderr
    assert not (tmp_path / "runs").exists()


def test_run_folders_are_named_for_the_config_and_the_overrides_that_change_results():
    assert run_folder("default", []) == "runs/default"
    assert run_folder("default", ["trainer.steps=9", "logging.plot=false", "checkpoint.every=5"]) == "runs/default"
    assert run_folder("default", ["optim.lr=3e-4", "trainer.steps=9"]) == "runs/default,optim.lr=3e-4"
    assert run_folder("x", ["model.layer_kwargs={d_state: 8}"]) == "runs/x,model.layer_kwargs=_d_state_8_"
    long = run_folder("x", [f"task.params.n{i}={i}" for i in range(20)])
    assert long.startswith("runs/x,task.params.n0=0,task.params.n1=1,") and len(long) <= len("runs/x,") + 80
    assert long != run_folder("x", [f"task.params.n{i}={i + 1}" for i in range(20)])


def test_the_config_reference_is_generated_and_documents_every_key():
    assert (ROOT / "docs" / "config.md").read_text() == reference(), "run: python -m ssm.train.reference > docs/config.md"
    from ssm.train.config import Config

    assert all(row[3] for row in schema_rows(Config)), [row[0] for row in schema_rows(Config) if not row[3]]
    body = reference()
    assert "| `model.dtype` |" in body and "### `mqar`" in body and "### `mamba2`" in body
    assert not [line for line in body.splitlines() if line.endswith("|  |")]  # a key without a meaning


def test_the_wheel_ships_configs_and_the_command_and_trains_outside_the_repo(tmp_path):
    """Build the wheel (offline, without build isolation), install it into a folder of
    its own, and train from another folder with only that on the path."""
    dist = tmp_path / "dist"
    built = run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", str(ROOT),
                 "-w", str(dist)], tmp_path)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = dist.glob("ssm_jax-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for name in ("ssm/py.typed", "ssm/configs/default.yaml", "ssm/configs/mqar/mamba.yaml",
                 "ssm/configs/bench/memory_ci.yaml", "ssm/train/cli.py"):
        assert name in names, name
    assert not [n for n in names if n.startswith(("tests/", "runs/"))]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "ssm-train = ssm.train.cli:console" in scripts and "ssm-generate = ssm.generate.cli:console" in scripts
    site = tmp_path / "site"
    installed = run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site),
                     str(wheel)], tmp_path)
    assert installed.returncode == 0, installed.stderr[-2000:]
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = run([sys.executable, "-c", "import ssm; print(ssm.__file__)"], work, env)
    assert where.stdout.strip().startswith(str(site)), where
    trained = run([sys.executable, "-m", "ssm.train", "--set", *tiny(tmp_path, "trainer.steps=3")], work, env)
    assert trained.returncode == 0, trained.stderr[-3000:]
    (folder,) = (work / "runs").iterdir()
    assert folder.name.startswith("default,model.d_model=16")
    assert json.loads((folder / "summary.json").read_text())["steps"] == 3
