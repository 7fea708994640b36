"""Truncated backpropagation through time (``trainer.tbptt``, issue #16 item 4): the
windowed step against separate calls that pass the state by hand, and the trainer."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ssm.layers import SequenceModel
from ssm.train import ConfigError, load_config, train_and_evaluate
from ssm.train.objectives import objective
from ssm.train.trainer import truncated_bptt

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_windows_pass_the_state_and_stop_its_gradient(rng, x64):
    """Against a loop over windows with the state passed by hand through
    ``jax.lax.stop_gradient``: the same summed loss (that of whole rows: the forward pass
    is exact) and the same gradients, which differ from full backpropagation's. One
    layer (the LSTM, the cheapest to compile): the windowing is the trainer's, and every
    layer's state passing is tested in tests/test_segments.py; the trainer test below
    runs Mamba."""
    model = SequenceModel(d_model=4, n_layers=2, d_output=6, vocab_size=6, layer="lstm",
                          param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    ids = jnp.asarray(rng.integers(0, 6, size=(2, 12)))
    mask = jnp.ones((2, 12), bool).at[1, 10:].set(False)
    batch = {"inputs": ids, "targets": jnp.roll(ids, -1, axis=1), "mask": mask, "length": mask.sum(1)}

    def window_loss(p, piece, state):
        out = nnx.merge(graphdef, p, rest)(piece["inputs"], mask=piece["mask"], initial_state=state,
                                           return_state=True)
        return objective("tokens", out[0], piece)["loss"], out[1]

    window_grad = jax.jit(jax.value_and_grad(window_loss, has_aux=True))  # one compilation for every window
    expected_loss, expected_grads, state = 0.0, jax.tree.map(jnp.zeros_like, params), model.init_state(2)
    for lo in range(0, 12, 4):
        piece = {k: v[:, lo:lo + 4] for k, v in batch.items() if k != "length"}
        (loss, state), g = window_grad(params, piece, jax.lax.stop_gradient(state))
        expected_loss += loss
        expected_grads = jax.tree.map(jnp.add, expected_grads, g)

    (total, (sums, _)), grads = jax.jit(truncated_bptt(graphdef, "tokens", 4))(params, rest, batch)
    whole = objective("tokens", nnx.jit(lambda m: m(ids, mask=mask))(model), batch)
    # forward exact; the objective sums its losses in float32 (ssm.train.objectives)
    np.testing.assert_allclose(total, whole["loss"], rtol=1e-6)
    np.testing.assert_allclose(total, expected_loss, rtol=1e-6)
    assert float(sums["count"]) == float(mask.sum())
    for g, e in zip(jax.tree.leaves(grads), jax.tree.leaves(expected_grads)):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)
    full = jax.jit(jax.grad(lambda p: objective("tokens", nnx.merge(graphdef, p, rest)(ids, mask=mask), batch)["loss"]))(
        params)
    difference = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(grads)))
    assert difference > 1e-6  # the truncation is real: gradients across windows are cut


def overrides(tmp_path, *extra):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    return ["model.d_model=8", "model.n_layers=1", "model.layer_kwargs={d_state: 4}", "trainer.steps=2",
            "trainer.batch_size=4", "trainer.log_every=1", "trainer.eval_every=2", "trainer.devices=1",
            "checkpoint.every=2", "schedule.warmup_steps=1", "logging.progress=false", "logging.plot=false",
            f"task.params.path={corpus}", "task.params.seq_len=16", "task.sizes={train: 8, validation: 4, test: 4}",
            f"task.cache_dir={tmp_path / 'cache'}", *extra]


def test_the_trainer_runs_rows_as_windows_with_the_loss_of_whole_rows(tmp_path):
    """``trainer.tbptt: 4`` on the text task trains, and its first step's loss (same
    parameters, the forward pass exact) is the full run's."""
    runs = {}
    for name, extra in (("full", ()), ("tbptt", ("trainer.tbptt=4",))):
        summary = train_and_evaluate(load_config(CONFIGS / "text" / "mamba.yaml", overrides(tmp_path, *extra)),
                                     tmp_path / name)
        assert summary["status"] == "completed"
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        runs[name] = [r for r in map(json.loads, lines) if r["split"] == "train"]
    np.testing.assert_allclose(runs["tbptt"][0]["loss"], runs["full"][0]["loss"], rtol=1e-6)
    assert np.isfinite(runs["tbptt"][1]["loss"])  # (Adam's first update is about the gradients' signs, which
    # truncation may keep: the unit test above shows the truncated gradients differ)


def test_tbptt_refuses_what_it_cannot_window(tmp_path):
    with pytest.raises(ConfigError, match="trainer.tbptt: 5 needs a per-position task whose length it divides"):
        train_and_evaluate(load_config(CONFIGS / "text" / "mamba.yaml", overrides(tmp_path, "trainer.tbptt=5")),
                           tmp_path / "a")
    with pytest.raises(ConfigError, match="trainer.tbptt: model.layer='attention' has no fixed-size state"):
        train_and_evaluate(load_config(CONFIGS / "text" / "attention.yaml",
                                       overrides(tmp_path, "trainer.tbptt=4", "~model.layer_kwargs")), tmp_path / "b")
    with pytest.raises(ConfigError, match="trainer.tbptt: 0 must be > 0"):
        load_config(CONFIGS / "text" / "mamba.yaml", overrides(tmp_path, "trainer.tbptt=0"))


def test_the_memory_benchmark_runs_and_reports_each_window_size(capsys):
    from ssm.bench.tbptt import main

    results = main(["--layer", "lstm", "--batch", "2", "--length", "16", "--d-model", "8", "--n-layers", "1",
                    "--windows", "4", "--repeats", "1"])
    assert list(results) == [None, 4]
    assert all(t.seconds > 0 and t.temp_bytes is not None for t in results.values())
    out = capsys.readouterr().out
    assert "| whole rows |" in out and "| windows of 4 |" in out
    with pytest.raises(SystemExit, match="--windows 5: a window size must divide --length=16"):
        main(["--length", "16", "--windows", "5"])
