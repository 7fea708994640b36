"""Run folders nothing can corrupt: one training per folder (a lock), nothing of an
earlier run kept where a new one starts, whole-file rewrites, torn log lines, the
leftovers of a kill, and checkpoints verified on restore with a fallback to the
newest intact one (the resumed run still ends bitwise as an uninterrupted one)."""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from test_train import final_params, finish, records, run_train, tiny

from ssm.train import ConfigError, load_config, train_and_evaluate
from ssm.train.checkpoint import DamagedCheckpoints
from ssm.train.files import RunLock, read_jsonl, write_atomic
from ssm.train.metrics import MetricsLog


def train(tmp_path, workdir, *extra):
    return train_and_evaluate(load_config(None, tiny(tmp_path, *extra)), workdir)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_training_in_the_same_folder_is_refused_while_the_first_runs(tmp_path):
    workdir = tmp_path / "run"
    first = run_train(["--set", *tiny(tmp_path, "trainer.steps=100000", "checkpoint.every=100000")], workdir)
    try:
        deadline = time.time() + 120
        while not (workdir / ".lock").exists() or not (workdir / ".lock").read_text():
            assert first.poll() is None and time.time() < deadline, first.communicate()
            time.sleep(0.05)
        with pytest.raises(ConfigError, match=rf"in use by process {first.pid} on {socket.gethostname()}"):
            train(tmp_path, workdir, "trainer.steps=100000", "checkpoint.every=100000")
    finally:
        first.kill()
        first.wait()
    assert (workdir / ".lock").exists()  # the file stays; the kernel released its lock with the process
    summary = train(tmp_path, workdir, "trainer.steps=10")  # no checkpoint yet: the folder is taken over
    assert summary["steps"] == 10


HOLD = """
import sys, time
from ssm.train.files import RunLock
from ssm.train.config import ConfigError
start, folder = float(sys.argv[1]), sys.argv[2]
while time.time() < start:
    pass
try:
    with RunLock(folder):
        print("held", flush=True)
        time.sleep(float(sys.argv[3]))
except ConfigError as e:
    print("refused", e, flush=True)
"""


def test_a_dead_holders_lock_never_blocks_and_two_racing_processes_never_both_hold_it(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    for leftover in ("", json.dumps({"pid": dead_pid(), "host": socket.gethostname()}), "{torn"):
        (workdir / ".lock").write_text(leftover)  # what a killed holder or a full disk may leave
        with RunLock(workdir):
            pass
    for trial in range(2):  # both start at the same instant, over a lock file a dead process left
        (workdir / ".lock").write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname()}))
        start = time.time() + 2.5
        procs = [subprocess.Popen([sys.executable, "-c", HOLD, str(start), str(workdir), "1.5"],
                                  stdout=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [p.communicate(timeout=60)[0] for p in procs]
        assert sorted(o.split()[0] for o in outs) == ["held", "refused"], (trial, outs)
        assert "in use by process" in next(o for o in outs if o.startswith("refused"))


def test_taking_over_a_folder_without_checkpoint_keeps_nothing_of_the_earlier_run(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    earlier = {"step": 10, "split": "validation", "loss": 1e-9, "accuracy": 1.0, "wall_time_s": 1.0, "process": 0}
    (workdir / "metrics.jsonl").write_text(json.dumps(earlier) + "\n")
    (workdir / "summary.json").write_text(json.dumps({"status": "nonfinite"}))
    summary = train(tmp_path, workdir, "trainer.steps=10")
    assert earlier not in records(workdir)
    assert summary["best_validation"]["loss"] != earlier["loss"] and summary["status"] == "completed"


def test_rewrites_are_atomic_a_failed_one_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "split": "train", "loss": 1.0 / s} for s in range(1, 10)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def killed(*args):
        raise KeyboardInterrupt  # a kill between writing the new file and the rename

    monkeypatch.setattr("ssm.train.files.os.replace", killed)
    with pytest.raises(KeyboardInterrupt):
        MetricsLog(path).truncate_after(3)
    assert read_jsonl(path) == rows and [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]
    monkeypatch.undo()
    MetricsLog(path).truncate_after(3)
    assert read_jsonl(path) == rows[:3]
    write_atomic(tmp_path / "summary.json", "{}")
    assert (tmp_path / "summary.json").read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == [
        "metrics.jsonl", "summary.json"]  # no temporary file left


def test_a_torn_last_line_is_dropped_with_a_note_and_a_bad_line_elsewhere_is_named(tmp_path, capsys):
    workdir = tmp_path / "run"
    train(tmp_path, workdir, "trainer.steps=10", "checkpoint.every=5")
    whole = records(workdir)
    shutil.rmtree(workdir / "checkpoints" / "10")
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write('{"step": 11, "split": "tr')  # a kill in the middle of an append
    summary = train(tmp_path, workdir, "trainer.steps=10", "checkpoint.every=5")
    assert "dropped a torn last line" in capsys.readouterr().out
    assert summary["steps"] == 10 and [r["step"] for r in records(workdir)] == [r["step"] for r in whole]
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][:-3]
    (workdir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"metrics\.jsonl, line 2: not a JSON record"):
        read_jsonl(workdir / "metrics.jsonl")


def test_a_kill_before_the_summary_logs_the_test_once_and_leftovers_are_cleaned(tmp_path):
    workdir = tmp_path / "run"
    train(tmp_path, workdir, "trainer.steps=10", "checkpoint.every=2", "checkpoint.keep=2")
    (workdir / "summary.json").unlink()  # killed after the last checkpoint, before the summary
    leftover = workdir / "checkpoints" / "12.orbax-checkpoint-tmp-1234567"
    leftover.mkdir()
    shutil.copytree(workdir / "checkpoints" / "8", workdir / "checkpoints" / "4")  # more than keep=2
    summary = train(tmp_path, workdir, "trainer.steps=10", "checkpoint.every=2", "checkpoint.keep=2")
    assert summary["status"] == "completed"
    assert [r["split"] for r in records(workdir)].count("test") == 1
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["10", "8"]


def overwrite_with_other_values(folder, step):
    """Random bytes that still read back: the stored state with one Adam moment changed,
    saved again under its old record (and so its old checksum)."""
    import jax
    import orbax.checkpoint as ocp

    path = (folder / str(step) / "state").absolute()
    tree = ocp.StandardCheckpointer().restore(path)
    leaves, treedef = jax.tree.flatten(tree)
    index = max(range(len(leaves)), key=lambda i: np.asarray(leaves[i]).size)
    leaves[index] = np.asarray(leaves[index]).copy()
    leaves[index].flat[0] = -2.8e-33
    shutil.rmtree(path)
    ocp.StandardCheckpointer().save(path, jax.tree.unflatten(treedef, leaves))
    ocp.StandardCheckpointer().wait_until_finished()


def truncate_largest_file(folder, step):
    files = sorted((p for p in (folder / str(step)).rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    with open(files[-1], "r+b") as f:
        f.truncate(files[-1].stat().st_size // 2)


def flip_the_checksum_key_and_change_values(folder, step):
    """Two faults: other values in the arrays, and one bit of the record that would
    have switched its verification off ("checksum" -> "checksul")."""
    overwrite_with_other_values(folder, step)
    record = folder / str(step) / "meta" / "metadata"
    record.write_text(record.read_text().replace('"checksum"', '"checksul"'))


DAMAGE = {
    "other values": overwrite_with_other_values,
    "other values, checksum key flipped": flip_the_checksum_key_and_change_values,
    "truncated file": truncate_largest_file,
    "no _METADATA": lambda folder, step: (folder / str(step) / "state" / "_METADATA").unlink(),
    "no meta item": lambda folder, step: shutil.rmtree(folder / str(step) / "meta"),
    "empty step folder": lambda folder, step: [shutil.rmtree(folder / str(step)), (folder / str(step)).mkdir()],
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_and_ends_bitwise(tmp_path, damage, capsys):
    args = ("trainer.steps=15", "checkpoint.every=5")
    whole, other = tmp_path / "whole", tmp_path / "other"
    train(tmp_path, whole, *args)
    train(tmp_path, other, "trainer.steps=10", "checkpoint.every=5")  # checkpoints 5 and 10
    DAMAGE[damage](other / "checkpoints", 10)
    capsys.readouterr()
    train(tmp_path, other, *args)
    out = capsys.readouterr().out
    assert f"checkpoint 10 in {(other / 'checkpoints').absolute()} is damaged" in out, out
    assert "resuming from checkpoint 5 instead" in out and "from step 5" in out, out
    assert any((other / "damaged_checkpoints").iterdir())  # kept for inspection
    (step_a, params_a), (step_b, params_b) = final_params(whole), final_params(other)
    assert step_a == step_b == 15
    for a, b in zip(params_a, params_b):
        np.testing.assert_array_equal(a, b)


def test_no_intact_checkpoint_stops_with_what_was_wrong_and_moves_nothing(tmp_path):
    workdir = tmp_path / "run"
    train(tmp_path, workdir, "trainer.steps=5", "checkpoint.every=5")
    truncate_largest_file(workdir / "checkpoints", 5)
    for _ in range(2):  # the same answer every time: nothing was moved, the user decides
        with pytest.raises(DamagedCheckpoints, match=r"no intact checkpoint in .*\(step 5: .*Move or delete"):
            train(tmp_path, workdir, "trainer.steps=10", "checkpoint.every=5")
        assert (workdir / "checkpoints" / "5").is_dir() and not (workdir / "damaged_checkpoints").exists()
    cli = tmp_path / "cli"
    code, _, err = finish(run_train(["--set", *tiny(tmp_path, "trainer.steps=5", "checkpoint.every=5")], cli))
    assert code == 0, err
    truncate_largest_file(cli / "checkpoints", 5)
    code, _, err = finish(run_train(["--set", *tiny(tmp_path, "trainer.steps=10", "checkpoint.every=5")], cli))
    assert code == 1 and "stopped: no intact checkpoint" in err and "Traceback" not in err, err


def test_a_workdir_that_is_a_file_or_cannot_be_made_is_a_config_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        train(tmp_path, tmp_path / "file")
    with pytest.raises(ConfigError, match="cannot be made"):
        train(tmp_path, tmp_path / "file" / "run")


@pytest.mark.parametrize("override, message", [
    ("model.layer_kwargs.d_state=7", r"model\.layer_kwargs\.d_state=7"),
    ("model.layer_kwargs.d_state=8.5", r"model\.layer_kwargs\.d_state=8\.5"),
    ("trainer.batch_size=512", r"trainer\.batch_size: 512 is larger than the train split"),
    ("trainer.batch_size=6", r"trainer\.batch_size: 6 must be divisible by the 4 devices"),
])
def test_bad_layer_options_and_batch_sizes_are_refused_before_anything_is_written(tmp_path, override, message):
    devices = "trainer.devices=4" if "divisible" in message else "trainer.devices=1"
    config = load_config(None, [*tiny(tmp_path), devices, override])
    with pytest.raises(ConfigError, match=message):
        train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_an_s4_measure_without_a_dplr_form_is_named_by_its_key(tmp_path):
    config = load_config(None, [*tiny(tmp_path), "model.layer=s4", "~model.layer_kwargs",
                                "model.layer_kwargs={d_state: 8, measure: lmu}"])
    with pytest.raises(ConfigError, match=r"model\.layer_kwargs\.measure='lmu'"):
        train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override, message", [
    ("model.d_model=100000000", r"model: [\d,]+ parameters need about [\d.]+ GiB .* more than the [\d.]+ GiB of this device"),
    ("task.params.l_noise=100000000", r"task: 320 examples of 100,000,008 positions need about [\d.]+ GiB to generate"),
])
def test_what_cannot_fit_in_memory_is_refused_with_the_estimate(tmp_path, override, message):
    config = load_config(None, [*tiny(tmp_path), override])
    with pytest.raises(ConfigError, match=message):
        train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_load_model_reads_a_given_checkpoint_and_changes_nothing_in_the_folder(tmp_path):
    import jax
    from flax import nnx

    from ssm.train import load_model

    workdir = tmp_path / "run"
    train(tmp_path, workdir, "trainer.steps=10", "checkpoint.every=5")
    leftover = workdir / "checkpoints" / "15.orbax-checkpoint-tmp-99"  # as a live training's save in progress
    leftover.mkdir()
    latest, config = load_model(workdir)
    ten, _ = load_model(workdir, step=10)
    five, _ = load_model(workdir, step=5)
    leaves = [jax.tree.leaves(nnx.state(m, nnx.Param)) for m in (latest, ten, five)]
    assert all(np.array_equal(a, b) for a, b in zip(leaves[0], leaves[1]))
    assert not all(np.array_equal(a, b) for a, b in zip(leaves[0], leaves[2]))
    assert leftover.is_dir() and config.trainer.steps == 10
    with pytest.raises(DamagedCheckpoints, match=r"no checkpoint 7 .*there are: \[5, 10\]"):
        load_model(workdir, step=7)



def test_a_run_killed_after_its_plot_or_its_summary_gets_both_on_the_rerun(tmp_path):
    workdir = tmp_path / "run"
    train(tmp_path, workdir, "trainer.steps=10", "logging.plot=true")
    (workdir / "summary.json").unlink()
    (workdir / "metrics.png").write_bytes(b"")  # what an interrupted plot used to leave
    (workdir / ".metrics.jsonl.tmp-12345").write_text("half")  # and an interrupted rewrite
    summary = train(tmp_path, workdir, "trainer.steps=10", "logging.plot=true")
    assert (workdir / "metrics.png").read_bytes().startswith(b"\x89PNG") and summary["status"] == "completed"
    assert not list(workdir.glob(".*.tmp-*"))
    assert summary["peak_memory_mib"] and set(summary["eval_batch_sizes"]) == {"validation", "test"}


def test_a_run_folder_without_its_config_or_inside_another_is_refused(tmp_path):
    workdir = tmp_path / "run"
    train(tmp_path, workdir, "trainer.steps=5", "checkpoint.every=5")
    with pytest.raises(ConfigError, match=r"is inside the run folder"):
        train(tmp_path, workdir / "checkpoints" / "70", "trainer.steps=5")
    saved = (workdir / "config.yaml").read_text()
    for broken, message in (("model: [unclosed", "is not valid YAML"), ("", "holds no config")):
        (workdir / "config.yaml").write_text(broken)
        with pytest.raises(ConfigError, match=message):
            train(tmp_path, workdir, "trainer.steps=10", "checkpoint.every=5")
    (workdir / "config.yaml").unlink()
    with pytest.raises(ConfigError, match="has checkpoints but no config.yaml"):
        train(tmp_path, workdir, "trainer.steps=10", "checkpoint.every=5", "optim.lr=0.01")
    (workdir / "config.yaml").write_text(saved)
    assert train(tmp_path, workdir, "trainer.steps=10", "checkpoint.every=5")["steps"] == 10


def test_sigterm_during_the_final_evaluation_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    import signal

    from ssm.train import Interrupted, trainer

    evaluate_split = trainer.evaluate_split

    def preempted_at_the_test(eval_step, state, dataset, *args):
        if len(dataset) == 48:  # the test split (validation has 32)
            os.kill(os.getpid(), signal.SIGTERM)
        return evaluate_split(eval_step, state, dataset, *args)

    monkeypatch.setattr(trainer, "evaluate_split", preempted_at_the_test)
    workdir = tmp_path / "run"
    args = ("trainer.steps=10", "checkpoint.every=5", "task.sizes={train: 256, validation: 32, test: 48}")
    with pytest.raises(Interrupted, match="during the final evaluation; checkpoint 10 is saved"):
        train(tmp_path, workdir, *args)
    assert (workdir / "checkpoints" / "10").is_dir() and not (workdir / "summary.json").exists()
    monkeypatch.undo()
    summary = train(tmp_path, workdir, *args)
    assert summary["steps"] == 10 and [r["split"] for r in records(workdir)].count("test") == 1


def test_a_full_disk_is_a_clear_stop_and_the_same_command_resumes(tmp_path):
    """``ulimit -f``: writes past 64 KiB fail (EFBIG, as a full disk's ENOSPC would)."""
    workdir = tmp_path / "run"
    args = ["--set", *tiny(tmp_path, "trainer.steps=40", "checkpoint.every=10")]
    proc = subprocess.run(["bash", "-c", 'ulimit -f 64 && exec "$@"', "bash", sys.executable, "train.py", *args,
                           "--workdir", str(workdir)], cwd=pathlib.Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 1 and "stopped: no room to write" in proc.stderr, proc.stderr[-2000:]
    assert "run the same command to resume" in proc.stderr
    code, out, err = finish(run_train(args, workdir))
    assert code == 0, err
    assert json.loads((workdir / "summary.json").read_text())["steps"] == 40
