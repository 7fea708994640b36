"""The trainer end to end: train.py as a subprocess, resume after SIGKILL (bitwise),
NaN stop, data-parallel equality, and every shipped config for a few steps."""

import json
import os
import re
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from flax import nnx

from ssm.train import ConfigError, NonFiniteLoss, load_config, train_and_evaluate
from ssm.train.metrics import TIMING
from ssm.train.trainer import segments

ROOT = pathlib.Path(__file__).resolve().parents[1]

# A few-second version of the default experiment.
TINY = ["model.d_model=16", "model.n_layers=1", "model.layer_kwargs={d_state: 8}",
        "task.params.l_noise=8", "task.params.l_memorize=4", "task.sizes={train: 256, validation: 32, test: 32}",
        "trainer.batch_size=8", "trainer.devices=1", "trainer.log_every=5", "trainer.eval_every=10",
        "schedule.warmup_steps=5", "logging.plot=false"]


def tiny(tmp_path, *extra):
    return [*TINY, f"task.cache_dir={tmp_path / 'cache'}", *extra]


def run_train(args, workdir, **kw):
    return subprocess.Popen([sys.executable, "train.py", *args, "--workdir", str(workdir)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def finish(proc, timeout=240):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def records(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def without_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def final_params(workdir):
    """(step, parameter leaves as numpy) of a run folder's latest checkpoint, whatever
    devices wrote it."""
    import orbax.checkpoint as ocp

    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    path = (workdir / "checkpoints" / str(steps[-1]) / "state").absolute()
    checkpointer = ocp.PyTreeCheckpointer()
    tree = checkpointer.metadata(path).item_metadata.tree
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    state = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
    return steps[-1], jax.tree.leaves(state["params"])


def test_train_py_runs_end_to_end_and_writes_its_run_folder(tmp_path):
    workdir = tmp_path / "run"
    code, out, err = finish(run_train(["--set", *tiny(tmp_path, "trainer.steps=20", "logging.plot=true")], workdir))
    assert code == 0, err
    for name in ("config.yaml", "metrics.jsonl", "metrics.png", "summary.json", "checkpoints"):
        assert (workdir / name).exists(), name
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 20
    rows = records(workdir)
    assert [r["step"] for r in rows if r["split"] == "train"] == [5, 10, 15, 20]
    assert {"loss", "accuracy", "lr", "tokens_per_s"} <= set(rows[0])
    assert "test" in out and str(workdir) in out
    # Off a terminal every log record is a line, once (an evaluation's line carries its step's train record).
    found = re.findall(r"^step (\d+)/20  train loss \S+ acc \S+  (\S+)", out, re.M)  # "|" starts validation
    assert [(n, after == "|") for n, after in found] == [("5", False), ("10", True), ("15", False), ("20", True)], out
    # Rerunning a finished run changes nothing.
    code, out, _ = finish(run_train(["--set", *tiny(tmp_path, "trainer.steps=20", "logging.plot=true")], workdir))
    assert code == 0 and "already trained" in out
    assert records(workdir) == rows
    # Another config in the same folder is refused before any work.
    code, _, err = finish(run_train(["--set", *tiny(tmp_path, "trainer.steps=20", "trainer.batch_size=4")], workdir))
    assert code == 2 and "another config" in err and "trainer.batch_size" in err
    # Raising trainer.steps continues the finished run; what was logged stays as it was.
    code, out, err = finish(run_train(["--set", *tiny(tmp_path, "trainer.steps=30")], workdir))
    assert code == 0, err
    assert "continuing a run configured for 20 steps to trainer.steps=30, from step 20" in out
    longer = records(workdir)
    assert longer[:len(rows) - 1] == rows[:-1]  # the old test record is recomputed at the new end
    assert [r["step"] for r in longer if r["split"] == "train"] == [5, 10, 15, 20, 25, 30]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["steps"] == 30 and load_config(workdir / "config.yaml").trainer.steps == 30


def train_whole(args, whole):
    """Train ``args`` uninterrupted in ``whole``: what an interrupted run must end as."""
    code, _, err = finish(run_train(args, whole))
    assert code == 0, err


def interrupted_run(args, other, ready, interrupt):
    """Start ``args`` in ``other``, wait until ``ready()`` and ``interrupt(proc)``; returns
    what the interrupted process said."""
    proc = run_train(args, other)
    deadline = time.time() + 180
    while not ready():
        assert proc.poll() is None and time.time() < deadline, "run ended before it could be interrupted"
        time.sleep(0.02)
    interrupt(proc)
    return finish(proc)


def assert_resumed_bitwise(args, whole, other):
    """Rerunning ``args`` in ``other`` resumes it and ends exactly as the run in ``whole``."""
    code, out, err = finish(run_train(args, other))
    assert code == 0, err
    assert "resuming from step" in out
    (step_a, params_a), (step_b, params_b) = final_params(whole), final_params(other)
    assert step_a == step_b
    for a, b in zip(params_a, params_b):
        np.testing.assert_array_equal(a, b)
    keys = [(r["step"], r["split"]) for r in records(other)]
    assert len(keys) == len(set(keys)), "a step was logged twice"
    assert without_timing(records(whole)) == without_timing(records(other))
    return out


def records_if_any(workdir):
    """The complete lines of a log another process is writing (the last may be half written)."""
    path = workdir / "metrics.jsonl"
    lines = path.read_text().split("\n")[:-1] if path.exists() else []
    return [json.loads(x) for x in lines if x.strip()]


def test_resume_after_sigkill_is_bitwise_identical(tmp_path):
    args = ["--set", *tiny(tmp_path, "trainer.steps=300", "checkpoint.every=10", "model.dropout=0.1")]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    train_whole(args, whole)
    interrupted_run(args, killed, lambda: (killed / "checkpoints" / "20").exists(),
                    lambda proc: os.kill(proc.pid, signal.SIGKILL))
    assert not (killed / "summary.json").exists(), "the run finished before the kill"
    steps_at_kill = max(r["step"] for r in records(killed))
    assert_resumed_bitwise(args, whole, killed)
    print(f"killed after step {steps_at_kill}, resumed, records identical")


def test_sigterm_or_sigint_saves_a_checkpoint_says_how_to_resume_and_resume_is_bitwise(tmp_path):
    """Preemption (SIGTERM) or Ctrl-C (SIGINT) between checkpoints: the run saves the step
    it is at, says so without a traceback, exits 128 + the signal; rerunning the same
    command ends exactly as an uninterrupted run, and the summary's wall time counts both
    processes. (One uninterrupted run for both signals.)"""
    # No scheduled checkpoint before the last step: any earlier one was written on the signal.
    args = ["--set", *tiny(tmp_path, "trainer.steps=300", "checkpoint.every=300", "model.dropout=0.1")]
    whole = tmp_path / "whole"
    train_whole(args, whole)
    for signum in (signal.SIGTERM, signal.SIGINT):
        stopped = tmp_path / f"stopped-{signum.name}"
        code, _, err = interrupted_run(
            args, stopped, lambda: any(r["split"] == "train" and r["step"] >= 15 for r in records_if_any(stopped)),
            lambda proc: os.kill(proc.pid, signum))
        assert code == 128 + signum, (signum.name, err)
        assert "Traceback" not in err and "Resume with the same command" in err
        step_at_stop = int(re.search(r"at step (\d+) of 300; checkpoint \1 is saved", err).group(1))
        assert 15 <= step_at_stop < 300
        assert (stopped / "checkpoints" / str(step_at_stop)).exists() and not (stopped / "summary.json").exists()
        assert f"resuming from step {step_at_stop}" in assert_resumed_bitwise(args, whole, stopped)
        first, second = segments(records(stopped))
        summary = json.loads((stopped / "summary.json").read_text())
        assert summary["wall_time_s"] >= first[-1]["wall_time_s"] + second[-1]["wall_time_s"]


def test_nonfinite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    """A batch with NaN inputs (bad data) from step 12 on: the run must stop, say so,
    and leave checkpoint 10 as the latest, with finite parameters."""
    import ssm.data

    real_get_batch = ssm.data.get_batch

    def poisoned(dataset, step, batch_size, *, seed):
        batch = real_get_batch(dataset, step, batch_size, seed=seed)
        if step >= 12:
            batch["inputs"] = np.full_like(batch["inputs"], np.nan)
        return batch

    monkeypatch.setattr(ssm.data, "get_batch", poisoned)
    config = load_config(None, [
        "task.name=adding", "task.params={seq_len: 16}", "task.sizes={train: 64, validation: 16, test: 16}",
        f"task.cache_dir={tmp_path / 'cache'}", "model.d_model=8", "model.n_layers=1",
        "model.layer_kwargs={d_state: 4}", "trainer.steps=40", "trainer.batch_size=8", "trainer.devices=1",
        "trainer.log_every=5", "checkpoint.every=5", "schedule.warmup_steps=0", "logging.plot=false",
        "logging.progress=false"])
    workdir = tmp_path / "run"
    with pytest.raises(NonFiniteLoss, match=r"loss became nan at step 13.*last good checkpoint is step 10"):
        train_and_evaluate(config, workdir)
    step, params = final_params(workdir)
    assert step == 10
    assert all(np.all(np.isfinite(p)) for p in params)
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["status"] == "nonfinite" and summary["last_checkpoint"] == 10
    assert summary["nonfinite_step"] == 13 and summary["stopped_at_step"] == 15  # the message's numbers


def test_eight_devices_match_one_device(tmp_path):
    assert jax.local_device_count() == 8, "tests/conftest.py sets 8 host devices"
    results = {}
    for n in (1, 8):
        config = load_config(None, [*tiny(tmp_path, "trainer.steps=6", f"trainer.devices={n}",
                                          "trainer.log_every=1", "trainer.eval_every=3",
                                          "checkpoint.every=6", "logging.progress=false")])
        train_and_evaluate(config, tmp_path / f"devices{n}")
        results[n] = (records(tmp_path / f"devices{n}"), final_params(tmp_path / f"devices{n}")[1])
    (rows1, params1), (rows8, params8) = results[1], results[8]
    for r1, r8 in zip(rows1, rows8):
        np.testing.assert_allclose(r8["loss"], r1["loss"], rtol=1e-5)
    for a, b in zip(params1, params8):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    summary = json.loads((tmp_path / "devices8" / "summary.json").read_text())
    assert summary["devices"] == 8


def test_batch_must_divide_over_devices(tmp_path):
    from ssm.train import ConfigError

    config = load_config(None, [*tiny(tmp_path, "trainer.steps=10", "trainer.devices=8", "trainer.batch_size=12")])
    with pytest.raises(ConfigError, match="trainer.batch_size: 12 must be divisible by the 8 devices"):
        train_and_evaluate(config, tmp_path / "run")


# Every shipped task x model config, shrunk to a few steps on a few examples.
SHRINK = {
    "copying": ["task.params.l_noise=8"],
    "selective_copying": ["task.params.l_noise=8", "task.params.l_memorize=4"],
    "induction_heads": ["task.params.input_seq_len=12"],
    "associative_recall": ["task.params.input_seq_len=12"],
    "mqar": ["task.params={vocab_size: 64, input_seq_len: 16, num_kv_pairs: 2}"],
    "adding": ["task.params.seq_len=16"],
    "listops": ["task.params={max_depth: 3, min_length: 5, max_length: 40, seq_len: 40}"],
    "text": ["task.params.seq_len=16"],
}
SHRINK_STATE = ["model.layer_kwargs.d_state=4"]
SHRINK_MODEL = {"mamba2": [*SHRINK_STATE, "model.layer_kwargs.headdim=8", "model.layer_kwargs.chunk_size=8"],
                "m2": ["model.layer_kwargs.filter_order=4", "model.mlp_expand=1"],
                "attention": ["model.layer_kwargs.n_heads=2", "model.mlp_expand=1"], "lstm": []}
MODEL_CONFIGS = sorted(p for p in (ROOT / "configs").glob("*/*.yaml") if p.stem != "task" and p.parent.name != "bench")


def test_every_task_has_configs_for_every_model():
    from ssm.data import TASKS
    from ssm.layers import LAYERS

    shipped = {(p.parent.name, p.stem) for p in MODEL_CONFIGS}
    assert shipped == {(t, m) for t in TASKS for m in LAYERS}
    assert set(SHRINK) == set(TASKS)


# One process trains a task's configs one after another, as train.py would (and, as the
# commands the tests start, at XLA's optimization level 0, tests/conftest.py: a few steps of
# each are bound by compilation, 5-12 s each at the default level, half that at 0).
TRAIN_CONFIGS = """
import json, sys, traceback
from ssm.train import load_config, train_and_evaluate
for job in json.load(sys.stdin):
    try:
        summary = train_and_evaluate(load_config(job["path"], job["overrides"]), job["workdir"])
        print(json.dumps({"path": job["path"], "summary": summary}, default=str), flush=True)
    except Exception:
        print(json.dumps({"path": job["path"], "error": traceback.format_exc()}), flush=True)
"""
def shipped_config_overrides(path: pathlib.Path, folder: pathlib.Path) -> list[str]:
    """The few-step, few-example version of a shipped config, its files under ``folder``."""
    overrides = [*SHRINK[path.parent.name], *SHRINK_MODEL.get(path.stem, SHRINK_STATE), "model.d_model=8",
                 "model.n_layers=1", "trainer.steps=2", "trainer.batch_size=4",
                 "trainer.eval_every=2", "trainer.devices=1", "checkpoint.every=2",
                 "schedule.warmup_steps=1", "task.sizes={train: 8, validation: 4, test: 4}",
                 f"task.cache_dir={folder / 'cache'}", "logging.progress=false", "logging.plot=false"]
    if path.parent.name == "text":
        corpus = folder / "corpus.txt"
        corpus.write_text("the quick brown fox jumps over the lazy dog. " * 40)
        overrides.append(f"task.params.path={corpus}")
    return overrides


TASKS_SHIPPED = sorted({p.parent.name for p in MODEL_CONFIGS})


@pytest.mark.parametrize("task", TASKS_SHIPPED)
def test_shipped_configs_train_a_few_steps(task, tmp_path):
    """Every shipped config of ``task`` (one per layer) trains a few steps and scores the
    test split, all in one process."""
    jobs = [{"path": str(p), "overrides": shipped_config_overrides(p, tmp_path), "workdir": str(tmp_path / p.stem)}
            for p in MODEL_CONFIGS if p.parent.name == task]
    proc = subprocess.run([sys.executable, "-c", TRAIN_CONFIGS], input=json.dumps(jobs), cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    results = {x["path"]: x for x in (json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{"))}
    assert len(results) == len(jobs), f"the training process stopped (exit {proc.returncode}): {proc.stderr[-3000:]}"
    failed = {path: r["error"] for path, r in results.items() if "error" in r}
    assert not failed, "\n".join(f"{path}:\n{error}" for path, error in failed.items())
    for path, r in results.items():
        summary = r["summary"]
        assert summary["status"] == "completed" and summary["steps"] == 2, path
        assert np.isfinite(summary["final"]["test"]["loss"]), path


def test_two_processes_through_jax_distributed_match_one_process(tmp_path):
    """Multi-host on one machine: two processes (one CPU device each, gloo collectives)
    split every global batch and end with the single-process parameters."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    args = ["--set", *tiny(tmp_path, "trainer.steps=12", "trainer.devices=null", "checkpoint.every=6",
                           "logging.progress=false")]
    host = ["distributed.multihost=true", f"distributed.coordinator_address=127.0.0.1:{port}",
            "distributed.num_processes=2"]
    procs = [run_train([*args, *host, f"distributed.process_id={i}"], tmp_path / "multi", env=env) for i in (0, 1)]
    outs = [finish(p) for p in procs]
    for code, _, err in outs:
        assert code == 0, err
    code, _, err = finish(run_train(args, tmp_path / "single", env=env))
    assert code == 0, err
    for r2, r1 in zip(records(tmp_path / "multi"), records(tmp_path / "single")):
        np.testing.assert_allclose(r2["loss"], r1["loss"], rtol=1e-5)
    for a, b in zip(final_params(tmp_path / "multi")[1], final_params(tmp_path / "single")[1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert json.loads((tmp_path / "multi" / "summary.json").read_text())["devices"] == 2


def test_training_with_muon_lowers_the_loss(tmp_path):
    config = load_config(None, [*tiny(tmp_path, "trainer.steps=40", "trainer.eval_every=40", "checkpoint.every=40",
                                      "optim.name=muon", "optim.muon_lr=0.02", "logging.progress=false")])
    train_and_evaluate(config, tmp_path / "run")
    losses = [r["loss"] for r in records(tmp_path / "run") if r["split"] == "train"]
    print("muon train losses:", [round(v, 3) for v in losses])
    assert losses[-1] < 0.8 * losses[0]


def test_evaluate_reopens_a_run_on_longer_sequences(tmp_path):
    """ssm.train.evaluate on the training setting reproduces the run's own test score;
    on longer sequences (S4 beyond its l_max) it runs without retraining; a change of
    the model's shapes is refused; train.py --evaluate does the same from the shell."""
    from ssm.train import ConfigError, evaluate, load_model

    workdir = tmp_path / "run"
    config = load_config(None, tiny(tmp_path, "trainer.steps=10", "model.layer=s4", "logging.progress=false"))
    summary = train_and_evaluate(config, workdir)
    same = evaluate(workdir)
    np.testing.assert_allclose(same["loss"], summary["final"]["test"]["loss"], rtol=1e-6)
    assert same["accuracy"] == summary["final"]["test"]["accuracy"] and same["step"] == 10
    longer = evaluate(workdir, {"l_noise": 40}, examples=16, batch_size=16)
    assert longer["seq_len"] == 48 and longer["examples"] == 16
    assert np.isfinite(longer["loss"])
    lines = (workdir / "evaluations.jsonl").read_text().splitlines()
    assert [json.loads(x)["task_params"] for x in lines] == [{}, {"l_noise": 40}]
    with pytest.raises(ConfigError, match="change the task.s vocab_size from 10 to 9"):
        evaluate(workdir, {"n_tokens": 9})
    model, loaded = load_model(workdir)
    assert loaded == config and type(model).__name__ == "SequenceModel"
    assert model.blocks[0].mixer.l_max == 16  # built for the training length

    out = subprocess.run([sys.executable, "train.py", "--workdir", str(workdir), "--evaluate", "--examples", "16",
                          "--set", "task.params.l_noise=24", "trainer.eval_batch_size=16"],
                         cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["task_params"] == {"l_noise": 24} and result["seq_len"] == 32
    bad = subprocess.run([sys.executable, "train.py", "--workdir", str(workdir), "--evaluate",
                          "--set", "optim.lr=1"], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert bad.returncode == 2 and "--evaluate takes only" in bad.stderr


def test_summary_reports_throughput_and_peak_memory(tmp_path):
    from ssm.train.trainer import train_tokens_per_s

    config = load_config(None, tiny(tmp_path, "trainer.steps=10", "logging.progress=false"))
    summary = train_and_evaluate(config, tmp_path / "run")
    assert summary["peak_memory_mib"] > 0 and summary["peak_memory_source"] == "XLA memory analysis"
    assert summary["eval_batch_sizes"] == {"validation": 8, "test": 8}  # on CPU: the training batch
    rates = [r["tokens_per_s"] for r in records(tmp_path / "run") if r["split"] == "train"]
    assert summary["train_tokens_per_s"] == rates[1]  # two intervals: the first (compiling) is left out
    rows = [{"split": "train", "tokens_per_s": v, "wall_time_s": w} for v, w in
            [(1, 1.0), (10, 2.0), (12, 3.0), (2, 0.5), (11, 1.5)]]  # a resumed process starts at 0.5 s
    assert train_tokens_per_s(rows) == 11


def test_eval_examples_caps_each_validation_pass_and_leaves_the_test_split_whole(tmp_path, monkeypatch):
    import ssm.train.trainer as trainer

    seen = []
    real = trainer.evaluate_split

    def counting(eval_step, state, dataset, *args):
        seen.append(len(dataset))
        return real(eval_step, state, dataset, *args)

    monkeypatch.setattr(trainer, "evaluate_split", counting)
    config = load_config(None, tiny(tmp_path, "trainer.steps=20", "trainer.eval_examples=8", "logging.progress=false"))
    train_and_evaluate(config, tmp_path / "run")
    assert seen == [8, 8, 32]  # validation at steps 10 and 20 (of 32 examples), then the whole test split


def test_mixed_precision_trains_bf16_activations_with_float32_parameters(tmp_path):
    """model.dtype=bfloat16: activations in bf16, parameters, optimizer state and the
    loss in float32; the run learns (its loss falls) as float32 does."""
    import jax.numpy as jnp

    from ssm.train import load_model

    losses = {}
    for dtype in ("float32", "bfloat16"):
        workdir = tmp_path / dtype
        config = load_config(None, tiny(tmp_path, "trainer.steps=30", f"model.dtype={dtype}"))
        train_and_evaluate(config, workdir)
        losses[dtype] = [r["loss"] for r in records(workdir) if r["split"] == "train"]
        model, _ = load_model(workdir)
        params = jax.tree.leaves(nnx.state(model, nnx.Param))
        assert {p.dtype for p in params} == {jnp.dtype(jnp.float32)}
        ids = jnp.asarray(np.random.default_rng(0).integers(0, 4, (2, 16)), jnp.int32)
        hidden = model.blocks[0](model.encoder(ids))
        assert hidden.dtype == jnp.dtype(dtype)
        assert model(ids).dtype == jnp.float32  # the logits (and so the loss) in float32
    for curve in losses.values():
        assert curve[-1] < 0.9 * curve[0], losses
    np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=0.1)


def test_a_missing_data_file_is_a_config_error_and_leaves_no_run_folder(tmp_path):
    config = load_config(None, [*tiny(tmp_path), "task.name=text", "~task.params",
                                f"task.params={{path: {tmp_path / 'no_such_corpus.txt'}}}", "~task.sizes"])
    workdir = tmp_path / "run"
    with pytest.raises(ConfigError, match="no_such_corpus"):
        train_and_evaluate(config, workdir)
    assert not workdir.exists()


def test_metrics_plot_has_the_run_title_the_test_point_the_schedule_and_whole_step_ticks(tmp_path):
    import matplotlib.pyplot as plt

    from ssm.train.metrics import figure

    workdir = tmp_path / "run"
    train_and_evaluate(load_config(None, tiny(tmp_path, "trainer.steps=10")), workdir)
    fig = figure(records(workdir), "default: test loss 1.0 (10 steps)")
    try:
        assert fig._suptitle.get_text() == "default: test loss 1.0 (10 steps)"
        loss, accuracy, lr = fig.axes
        assert (loss.get_ylabel(), accuracy.get_ylabel(), lr.get_ylabel()) == ("loss", "accuracy", "learning rate")
        assert [line.get_label() for line in loss.get_lines()] == ["train", "validation", "test"]
        assert [line.get_label() for line in lr.get_lines()] == ["lr", "ssm_lr"]
        for ax in fig.axes:
            ticks = [t for t in ax.get_xticks() if 0 <= t <= 10]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks
        assert loss.get_yscale() == "linear"  # a loss within one decade: log axes would show no labels
    finally:
        plt.close(fig)
    warmup = [(s, min(s, 5) / 5 * 3e-3) for s in range(11)]  # the whole schedule, not only the logged steps
    fig = figure(records(workdir), schedules={"lr": warmup, "ssm_lr": []})
    try:
        (line,) = fig.axes[-1].get_lines()
        assert list(line.get_xdata()) == list(range(11)) and line.get_ydata()[0] == 0.0
    finally:
        plt.close(fig)
