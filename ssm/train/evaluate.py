"""A finished (or stopped) run, reopened: its model with the checkpoint's parameters,
and its evaluation on other settings of its task (longer sequences, more key-value
pairs) without retraining."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from collections.abc import Mapping
from typing import Any

import jax
import yaml
from flax import nnx

from ssm import data
from ssm.checks import check_choice
from ssm.train import devices
from ssm.train.checkpoint import Checkpoints
from ssm.train.config import Config, ConfigError, from_dict
from ssm.train.trainer import build_state, evaluate_split, make_eval_step

SHAPE_FIELDS = ("kind", "vocab_size", "d_input", "d_output")  # TaskInfo fields the model is built for


def run_config(workdir) -> Config:
    """The resolved config a run folder was trained with (its ``config.yaml``), as a
    :class:`~ssm.train.Config`; a folder without one raises :class:`~ssm.train.ConfigError`."""
    path = pathlib.Path(workdir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{str(workdir)!r} is not a run folder: it has no config.yaml")
    return from_dict(Config, yaml.safe_load(path.read_text()))


def _restore(config: Config, workdir: pathlib.Path, mesh, step: int | None = None):
    """``(model, info, state, step)``: the run's model rebuilt for its training task and
    the state of its latest intact checkpoint (or of ``step``), placed on ``mesh``. Reads
    only: the folder stays as it is (a training may be running in it)."""
    task = config.task
    info = data.get_task(task.name).info(data.make_params(data.get_task(task.name), task.params))
    model, _, _, state = build_state(config, info)
    checkpoints = Checkpoints(workdir / "checkpoints", every=config.checkpoint.every, keep=config.checkpoint.keep,
                              writer=False)
    try:
        if checkpoints.latest_step() is None:
            raise ConfigError(f"run folder {str(workdir)!r} has no checkpoint yet")
        state, meta = checkpoints.restore(devices.replicate(state, mesh), step)
    finally:
        checkpoints.close()
    return model, info, state, int(meta["step"])


def load_model(workdir, step: int | None = None) -> tuple[nnx.Module, Config]:
    """Reopen a run's model.

    Args:
      workdir: a run folder of :func:`~ssm.train.train_and_evaluate`.
      step: the checkpoint to load (default: the latest intact one).

    Returns:
      ``(model, config)``: the run's :class:`~ssm.layers.SequenceModel` with the
      parameters of that checkpoint, without the optimizer state, in evaluation mode (no
      dropout), on one device; and its :class:`~ssm.train.Config`.
    """
    workdir = pathlib.Path(workdir)
    config = run_config(workdir)
    model, _, state, _ = _restore(config, workdir, devices.data_mesh(1, {}), step)
    graph = nnx.split(model, nnx.Param, ...)[0]
    model = nnx.merge(graph, state["params"], state["rest"])
    model.eval()
    return model, config


def evaluate(workdir, task_params: Mapping[str, Any] | None = None, *, split: str = "test",
             examples: int | None = None, batch_size: int | None = None, record: bool = True) -> dict:
    """Evaluate a run's latest checkpoint on its task with other parameters.

    The model keeps the shapes it was trained with (vocabulary, outputs, and the
    ``l_max`` of S4 and M2); only what the model does not depend on may change, such as
    the sequence length or the number of key-value pairs. Layers run longer inputs as
    their docstrings say (S4 re-truncates its kernel, M2's filters have ``l_max`` taps,
    attention's RoPE and the recurrent layers have no maximum).

    Args:
      workdir: a run folder of :func:`~ssm.train.train_and_evaluate`.
      task_params: overrides of the training task's parameters (None: the same task).
      split: which split to build and score ("train", "validation" or "test"); only
        that split is generated, with the run's ``task.seed``.
      examples: its number of examples (default: the run's ``task.sizes``, else the
        task's default; files-based tasks: a cap).
      batch_size: evaluation batch (default: the run's ``trainer.eval_batch_size``, else
        its batch size); lower it for long sequences.
      record: append the result to the run folder's ``evaluations.jsonl``.

    Returns:
      ``{"step", "split", "task_params", "loss", "accuracy" (not for regression),
      "examples", "seq_len", "wall_time_s"}``.
    """
    start = time.perf_counter()
    workdir = pathlib.Path(workdir)
    config = run_config(workdir)
    check_choice("split", split, data.SPLITS)
    task_cfg = config.task
    task = data.get_task(task_cfg.name)
    try:
        params = data.make_params(task, {**task_cfg.params, **dict(task_params or {})})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"task_params: {e}") from None
    t = config.trainer
    batch_size = batch_size or t.eval_batch_size or t.batch_size
    mesh = devices.data_mesh(t.devices, {"batch_size": batch_size})
    model, trained_on, state, step = _restore(config, workdir, mesh)
    info = task.info(params)
    for field in SHAPE_FIELDS:
        if getattr(info, field) != getattr(trained_on, field):
            raise ConfigError(f"task_params={dict(task_params or {})} change the task's {field} from "
                              f"{getattr(trained_on, field)!r} to {getattr(info, field)!r}; the model was built for "
                              "the first: only parameters that keep the model's shapes may change")
    import datasets

    datasets.disable_progress_bars()
    sizes = dict(task_cfg.sizes)
    if examples is not None:
        sizes[split] = examples
    splits, _ = data.load_task(task.name, dataclasses.asdict(params), seed=task_cfg.seed,
                               sizes=sizes or None, cache_dir=task_cfg.cache_dir,
                               data_dir=task_cfg.data_dir, splits=(split,))
    model.eval()
    eval_step = jax.jit(make_eval_step(nnx.split(model, nnx.Param, ...)[0], info.kind))
    metrics = evaluate_split(eval_step, state, splits[split], batch_size, mesh, info.kind)
    result = {"step": step, "split": split, "task_params": dict(task_params or {}), **metrics,
              "examples": len(splits[split]), "seq_len": info.seq_len,
              "wall_time_s": time.perf_counter() - start}
    if record and devices.is_primary():
        with (workdir / "evaluations.jsonl").open("a") as f:
            f.write(json.dumps(result) + "\n")
    return result
