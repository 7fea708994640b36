"""``train_and_evaluate(config, workdir)``: one experiment, start to finish.

The run folder holds ``config.yaml`` (the resolved config), ``metrics.jsonl``,
``checkpoints/``, ``metrics.png`` and ``summary.json``. Running the same command
again in the same folder resumes from the latest checkpoint and ends exactly as
an uninterrupted run would: the data order is a pure function of (seed, step),
the dropout streams are part of the checkpointed state, and metrics logged after
the checkpoint are recomputed rather than kept twice.

One jitted step updates the split NNX state (``nnx.split(model, nnx.Param, ...)``)
with Optax; the batch is sharded over a 1-d ``"data"`` mesh of every device.
A step whose loss or gradient is not finite is not applied; the run then stops
at the next check with a clear message, and its last checkpoint stays good.
SIGINT or SIGTERM stops the run after the step in progress, with a checkpoint at
that step (:mod:`ssm.train.signals`); the same command resumes it. (With several
processes, every process must receive the signal, as a scheduler's preemption does.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
import optax
import yaml
from flax import nnx

from ssm import data
from ssm.layers import SequenceModel
from ssm.train import devices
from ssm.train.checkpoint import Checkpoints
from ssm.train.config import Config, ConfigError, dump, to_dict
from ssm.train.eval_batch import eval_batch_size
from ssm.train.files import RunLock, remove_leftover_temporaries, write_atomic
from ssm.train.metrics import MetricsLog, Progress, plot
from ssm.train.objectives import objective, summarize
from ssm.train.optimizer import build_optimizer
from ssm.train.signals import Interrupted, StopRequest

POOL = {"tokens": None, "classification": "mean", "regression": "last"}
#: Layers without a fixed-size recurrent state to carry from window to window
#: (``trainer.tbptt``): attention's KV cache grows, M2 has no state.
NO_FIXED_STATE = ("attention", "m2")
#: Layers built for a length (``l_max``: S4's truncated kernel, M2's filters), which
#: the task's sets unless ``model.layer_kwargs`` gives one.
SIZED_BY_LENGTH = ("s4", "m2")


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN or infinite loss (or gradient)."""


def build_model(config: Config, info: "data.TaskInfo", rngs: nnx.Rngs) -> SequenceModel:
    """The experiment's network, sized by the task (vocabulary, outputs, length)."""
    m = config.model
    layer_kwargs = dict(m.layer_kwargs)
    if m.layer in SIZED_BY_LENGTH:
        layer_kwargs.setdefault("l_max", info.seq_len)
    pool = POOL[info.kind] if m.pool == "auto" else (None if m.pool == "none" else m.pool)
    return SequenceModel(
        d_model=m.d_model, n_layers=m.n_layers, d_output=info.d_output,
        vocab_size=info.vocab_size, d_input=info.d_input, layer=m.layer, layer_kwargs=layer_kwargs, block=m.block,
        norm=m.norm, prenorm=m.prenorm, activation=m.activation, post=m.post, dropout=m.dropout,
        mlp=m.mlp, mlp_expand=m.mlp_expand, pool=pool, tie_embeddings=m.tie_embeddings, head_bias=m.head_bias,
        norm_eps=m.norm_eps, embedding_std=m.embedding_std, residual_in_fp32=m.residual_in_fp32,
        dtype=None if m.dtype is None else jnp.dtype(m.dtype), param_dtype=jnp.dtype(m.param_dtype), rngs=rngs,
    )


def check_before_work(config: Config):
    """What can be known wrong before any data is built or any file written: the task's
    parameters and split sizes, the model (built abstractly, without memory, so a layer
    option it refuses is named by its config key) and the devices the batches split
    over. Returns ``(info, mesh)``."""
    t, task_cfg = config.trainer, config.task
    task = data.get_task(task_cfg.name)
    params = data.make_params(task, task_cfg.params)
    info = task.info(params)
    try:
        abstract = nnx.eval_shape(lambda: build_model(config, info, nnx.Rngs(0)))
    except (ValueError, TypeError) as e:
        raise ConfigError(_model_key(str(e), config)) from None
    if t.tbptt is not None:
        if info.kind != "tokens" or info.seq_len % t.tbptt:
            raise ConfigError(f"trainer.tbptt: {t.tbptt} needs a per-position task whose length it divides; task "
                              f"{task_cfg.name!r} is {info.kind!r} with length {info.seq_len}")
        if config.model.layer in NO_FIXED_STATE:
            raise ConfigError(f"trainer.tbptt: model.layer={config.model.layer!r} has no fixed-size state to carry "
                              "from window to window (a KV cache grows; M2 has none); use s4, s4d, mamba, mamba2 or lstm")
    if info.packed and config.model.layer == "m2":
        raise ConfigError(f"task.params.pack: packed rows need layers that restart at each document, and "
                          f"model.layer={config.model.layer!r} (M2's long convolution) cannot; use s4, s4d, mamba, "
                          "mamba2, attention or lstm, or pack: false")
    with _as_config_error(task_cfg.name):
        sizes, files = data.split_sizes(task, params, task_cfg.sizes, task_cfg.data_dir)
    n_params = sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    need = 4 * n_params * jnp.dtype(config.model.param_dtype).itemsize  # parameters, gradients, Adam's two moments
    have = devices.device_memory_bytes()
    if have is not None and need > have:
        raise ConfigError(f"model: {n_params:,} parameters need about {need / 2**30:.1f} GiB with their gradients "
                          f"and optimizer state, more than the {have / 2**30:.1f} GiB of this device "
                          f"(model.d_model={config.model.d_model}, model.n_layers={config.model.n_layers})")
    row = 4 * (info.seq_len * (info.d_input or 1) + (info.seq_len if info.kind == "tokens" else 1) + 1
               + (info.seq_len if info.packed else 0))  # inputs, targets, length, segment_ids
    examples = 0 if files else sum(sizes.values())  # files: the sizes only cap what they hold
    host = devices.host_memory_bytes()
    if host is not None and examples * row > host:
        raise ConfigError(f"task: {examples:,} examples of {info.seq_len:,} positions need about "
                          f"{examples * row / 2**30:.1f} GiB to generate, more than this machine's "
                          f"{host / 2**30:.1f} GiB (task.sizes {sizes}, task.params {task_cfg.params})")
    if sizes.get("train", t.batch_size) < t.batch_size:
        raise ConfigError(f"trainer.batch_size: {t.batch_size} is larger than the train split "
                          f"(task.sizes.train={sizes['train']})")
    mesh = devices.data_mesh(t.devices, {"trainer.batch_size": t.batch_size,
                                         **({"trainer.eval_batch_size": t.eval_batch_size} if t.eval_batch_size else {})})
    return info, mesh


@contextlib.contextmanager
def _as_config_error(task: str):
    """A missing data file or a task's refusal, as a config error naming the task."""
    try:
        yield
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"task {task!r}: {e}") from None


def _model_key(message: str, config: Config) -> str:
    """A layer's ``name=value ...`` error as the config key that set it."""
    name = message.split("=", 1)[0]
    if name in config.model.layer_kwargs:
        return f"model.layer_kwargs.{message}"
    if name in {f.name for f in dataclasses.fields(config.model)}:
        return f"model.{message}"
    return f"model (layer {config.model.layer!r}): {message}"


def build_state(config: Config, info: "data.TaskInfo"):
    """The experiment's model and its training state at step 0.

    Returns ``(model, tx, schedules, state)``: ``state`` holds ``params`` and
    ``rest`` (``nnx.split(model, nnx.Param, ...)``), ``opt_state`` and the metric
    accumulators ``acc``: the tree a checkpoint stores.
    """
    t = config.trainer
    model = build_model(config, info, nnx.Rngs(t.seed))
    tx, schedules = build_optimizer(model, config.optim, config.schedule, t.steps)
    _, params, rest = nnx.split(model, nnx.Param, ...)
    state = {"params": params, "rest": rest, "opt_state": tx.init(params), "acc": _zero_accumulators()}
    return model, tx, schedules, state


def _zero_accumulators():
    """Per-log-interval sums, kept on device and checkpointed with the state."""
    zero = lambda: jnp.zeros((), jnp.float32)  # noqa: E731  (distinct buffers: the state is donated)
    return {"loss": zero(), "correct": zero(), "count": zero(), "steps": jnp.zeros((), jnp.int32),
            "nonfinite_step": jnp.full((), -1, jnp.int32), "nonfinite_loss": zero()}


def _window_sums(graphdef, kind: str, params, rest, batch, initial_state=None):
    """The summed objective of ``batch`` (rows, or one window of them) from ``initial_state``
    (or none): ``(loss sum, (sums, rest, state))``, ``rest`` with its advanced dropout
    streams, ``state`` the model's after the last position (None without one)."""
    model = nnx.merge(graphdef, params, rest, copy=True)  # fresh Variables in this trace (flax#5050)
    call = dict(mask=batch["mask"], segment_ids=batch.get("segment_ids"))
    if initial_state is None:
        outputs, state = model(batch["inputs"], **call), None
    else:
        outputs, state = model(batch["inputs"], initial_state=initial_state, return_state=True, **call)
    sums = objective(kind, outputs, batch)
    return sums["loss"], (sums, nnx.split(model, nnx.Param, ...)[2], state)


def truncated_bptt(graphdef, kind: str, window: int):
    """``(params, rest, batch) -> ((loss sum, (sums, rest)), grads)`` of the summed loss
    over rows run as consecutive windows of ``window`` positions: the model's state
    passes from each window to the next (so the outputs and losses are those of the
    whole rows) and its gradient is stopped there (truncated backpropagation through
    time), so the backward pass holds one window's activations, not a row's. A
    ``lax.scan`` over the windows sums their gradients.

    Args:
      graphdef: the model's graph.
      kind: the task kind (``"tokens"``).
      window: K, positions per window; it divides the rows' length L.

    Batch arrays (rows, L, ...) are cut into L / K windows; per-row ones pass whole.
    """

    def value_and_grad(params, rest, batch):
        rows, length = batch["mask"].shape
        windows = length // window
        cut = {k: jnp.moveaxis(v.reshape(rows, windows, window, *v.shape[2:]), 1, 0)
               for k, v in batch.items() if v.ndim >= 2 and v.shape[1] == length}
        whole = {k: v for k, v in batch.items() if k not in cut}
        state = nnx.merge(graphdef, params, rest).init_state(rows)
        zero = jax.tree.map(jnp.zeros_like, params)
        totals = {k: jnp.zeros((), jnp.float32) for k in ("loss", "correct", "count")}

        def one_window(carry, piece):
            grads, totals, rest, state = carry
            (_, (sums, rest, state)), g = jax.value_and_grad(
                functools.partial(_window_sums, graphdef, kind), has_aux=True)(
                params, rest, {**piece, **whole}, jax.lax.stop_gradient(state))
            grads = jax.tree.map(jnp.add, grads, g)
            totals = {k: totals[k] + sums[k] for k in totals}
            return (grads, totals, rest, state), None

        (grads, sums, rest, _), _ = jax.lax.scan(one_window, (zero, totals, rest, state), cut)
        return (sums["loss"], (sums, rest)), grads

    return value_and_grad


def make_train_step(graphdef, tx, kind: str, tbptt: int | None = None):
    """``(state, batch, step) -> state``: one optimizer step on the split NNX state;
    with ``tbptt`` (K positions), rows run as windows of K (:func:`truncated_bptt`)."""

    def loss_and_grads(params, rest, batch):
        """``((mean loss, (sums, rest)), gradients of the mean loss)``."""
        if tbptt:
            (total, (sums, rest)), grads = truncated_bptt(graphdef, kind, tbptt)(params, rest, batch)
            count = jnp.maximum(sums["count"], 1.0)
            return (total / count, (sums, rest)), jax.tree.map(lambda g: g / count, grads)

        def loss_fn(params, rest):
            total, (sums, rest, _) = _window_sums(graphdef, kind, params, rest, batch)
            return total / jnp.maximum(sums["count"], 1.0), (sums, rest)

        return jax.value_and_grad(loss_fn, has_aux=True)(params, rest)

    def train_step(state, batch, step):
        (loss, (sums, rest)), grads = loss_and_grads(state["params"], state["rest"], batch)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads))
        old = {k: state[k] for k in ("params", "rest", "opt_state")}
        new = {"params": optax.apply_updates(state["params"], updates), "rest": rest, "opt_state": opt_state}
        kept = jax.lax.cond(finite, lambda: new, lambda: old)
        acc = state["acc"]
        first_bad = (acc["nonfinite_step"] < 0) & ~finite
        acc = {
            **{k: acc[k] + jnp.where(finite, sums[k], 0.0) for k in ("loss", "correct", "count")},
            "steps": acc["steps"] + 1,
            "nonfinite_step": jnp.where(first_bad, step, acc["nonfinite_step"]),
            "nonfinite_loss": jnp.where(first_bad, loss, acc["nonfinite_loss"]),
        }
        return {**kept, "acc": acc}

    return train_step


def make_eval_step(graphdef, kind: str):
    """``(params, rest, batch) -> sums`` in evaluation mode (no dropout)."""

    def eval_step(params, rest, batch):
        return _window_sums(graphdef, kind, params, rest, batch)[1][0]

    return eval_step


def evaluate_split(eval_step, state, dataset, batch_size: int, mesh, kind: str) -> dict:
    """Loss (and accuracy) of ``state``'s parameters over a whole split, in batches of
    ``batch_size`` (the last one padded)."""
    rows = devices.process_rows(batch_size)
    sums = None
    for batch in data.eval_batches(dataset, batch_size):
        out = eval_step(state["params"], state["rest"],
                        devices.shard_batch({k: v[rows] for k, v in batch.items()}, mesh))
        sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    return summarize(jax.device_get(sums), kind)


def check_run_folder(config: Config, workdir: pathlib.Path, write: bool) -> int | None:
    """A run folder belongs to one experiment: resuming with another config is an error,
    except for ``trainer.steps`` (raised to continue a finished run, or lowered). A folder
    with no checkpoint yet (a run that stopped before its first) is taken over. With
    ``write``, the folder is made and ``config.yaml`` (re)written.

    Returns the steps the folder's run was configured for when that is all that
    differs, else None."""
    saved = workdir / "config.yaml"
    started = any(p.name.isdigit() for p in (workdir / "checkpoints").glob("*"))
    for parent in workdir.absolute().parents:
        if (parent / "config.yaml").is_file() and (parent / "checkpoints").is_dir():
            raise ConfigError(f"--workdir {str(workdir)!r} is inside the run folder {str(parent)!r}; "
                              f"give a folder of its own")
    if started and not saved.exists():
        raise ConfigError(f"run folder {str(workdir)!r} has checkpoints but no config.yaml, so it cannot be checked "
                          f"against this config: put its config.yaml back, or use another --workdir")
    if not started:
        if write:
            workdir.mkdir(parents=True, exist_ok=True)
            write_atomic(saved, dump(config))
        return None
    try:
        old = yaml.safe_load(saved.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{saved} is not valid YAML ({e}); it is this run's config: repair it") from None
    if not isinstance(old, dict):
        raise ConfigError(f"{saved} holds no config (it reads as {old!r}); it is this run's config: repair it")
    new = to_dict(config)
    for free in ("logging", "distributed"):  # how a run is watched or launched, not what it computes
        old.pop(free, None), new.pop(free, None)
    old_steps = old.get("trainer", {}).pop("steps", None)
    new["trainer"].pop("steps")
    if old != new:
        diff = sorted(_diff_keys(old, new))
        raise ConfigError(f"run folder {str(workdir)!r} holds a run with another config "
                          f"(differs at {diff}); use another --workdir or the same config")
    if old_steps == config.trainer.steps:
        return None
    if write:
        write_atomic(saved, dump(config))
    return old_steps


def _diff_keys(a, b, prefix=""):
    for key in set(a) | set(b):
        path = f"{prefix}{key}"
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            yield from _diff_keys(a[key], b[key], path + ".")
        elif a.get(key) != b.get(key):
            yield path


def train_and_evaluate(config: Config, workdir) -> dict:
    """Train ``config`` in ``workdir`` (resuming if it holds a checkpoint).

    Args:
      config: a checked :class:`~ssm.train.Config` (:func:`~ssm.train.load_config`).
      workdir: the run folder (made if missing): ``config.yaml``, metrics, checkpoints,
        plots and ``summary.json`` go there.

    Returns:
      The run's summary (a dict, as written to ``summary.json``).
    """
    devices.initialize(config.distributed)
    primary = devices.is_primary()
    workdir = pathlib.Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"run folder {str(workdir)!r} is a file, not a folder; give --workdir a folder")
    check_run_folder(config, workdir, write=False)  # before any work: a wrong folder is refused
    _, mesh = check_before_work(config)
    t, task = config.trainer, config.task
    import datasets

    datasets.disable_progress_bars()  # building a cache is quick; its bars only clutter the log
    with _as_config_error(task.name):  # the data before the folder: a missing file leaves no half-made folder
        splits, info = data.load_task(task.name, task.params, seed=task.seed, sizes=task.sizes or None,
                                      cache_dir=task.cache_dir, data_dir=task.data_dir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"run folder {str(workdir)!r} cannot be made: {e.strerror}") from None
    with RunLock(workdir) if primary else contextlib.nullcontext():  # one training per folder
        configured_steps = check_run_folder(config, workdir, write=primary)
        return _train(config, workdir, splits, info, mesh, configured_steps, primary)


def _train(config: Config, workdir: pathlib.Path, splits: dict, info: "data.TaskInfo", mesh, configured_steps: int | None,
           primary: bool) -> dict:
    """The training of :func:`train_and_evaluate`, in its checked and locked run folder."""
    t = config.trainer
    if t.eval_examples is not None and t.eval_examples < len(splits["validation"]):
        splits["validation"] = splits["validation"].select(range(t.eval_examples))  # the test split stays whole
    rows = devices.process_rows(t.batch_size)

    model, tx, schedules, state = build_state(config, info)
    train_graph = nnx.split(model, nnx.Param, ...)[0]
    model.eval()
    eval_graph = nnx.split(model, nnx.Param, ...)[0]
    n_params = sum(x.size for x in jax.tree.leaves(state["params"]))
    state = devices.replicate(state, mesh)

    if primary:
        remove_leftover_temporaries(workdir)
    checkpoints = Checkpoints(workdir / "checkpoints", every=config.checkpoint.every, keep=config.checkpoint.keep,
                              writer=primary)
    log = MetricsLog(workdir / "metrics.jsonl", tensorboard=config.logging.tensorboard, enabled=primary)
    summary_path = workdir / "summary.json"
    start = 0
    if checkpoints.latest_step() is not None:
        state, meta = checkpoints.restore(state)
        start = meta["step"]
    if start >= t.steps and summary_path.exists():
        checkpoints.close()
        print(f"{workdir}: already trained for {start} steps; summary in {summary_path}")
        return json.loads(summary_path.read_text())
    log.truncate_after(start)  # from step 0: whatever an earlier run in the folder left
    summary_path.unlink(missing_ok=True)  # an earlier summary no longer describes the folder; rewritten at the end
    if start:
        if configured_steps is not None and start < t.steps:
            print(f"{workdir}: continuing a run configured for {configured_steps} steps to trainer.steps={t.steps}, "
                  f"from step {start}; the learning-rate schedule is now that of a {t.steps}-step run")
        else:
            print(f"{workdir}: resuming from step {start}")
    # Which process of the run this is (0, then 1 after a resume, ...), in every record it writes.
    process = 1 + max((r.get("process", 0) for r in log.read()), default=-1) if primary and start else 0

    train_step = jax.jit(make_train_step(train_graph, tx, info.kind, t.tbptt), donate_argnums=0)
    eval_step = jax.jit(make_eval_step(eval_graph, info.kind))
    compiled, memory = None, (None, "not compiled: no step ran")

    eval_batch_sizes: dict[str, int] = {}  # per split, chosen at its first evaluation

    def batch_at(step: int) -> tuple[dict, int]:
        """The sharded training batch of ``step`` and its real (unpadded) positions, all processes'."""
        batch = data.get_batch(splits["train"], step, t.batch_size, seed=t.seed)
        return devices.shard_batch({k: v[rows] for k, v in batch.items()}, mesh), int(batch["mask"].sum())

    def eval_batch_size_of(split: str) -> int:
        if split not in eval_batch_sizes:
            eval_batch_sizes[split] = t.eval_batch_size or automatic_eval_batch_size(split)
        return eval_batch_sizes[split]

    def evaluate(split: str) -> dict:
        return evaluate_split(eval_step, state, splits[split], eval_batch_size_of(split), mesh, info.kind)

    def automatic_eval_batch_size(split: str) -> int:
        def lower(size: int):
            batch = next(data.eval_batches(splits[split], size))
            return eval_step.lower(state["params"], state["rest"],
                                   devices.shard_batch({k: v[devices.process_rows(size)] for k, v in batch.items()}, mesh))

        fixed = sum(x.nbytes for x in jax.tree.leaves((state["params"], state["rest"])))
        return eval_batch_size(lower, t.batch_size, None if compiled is None else devices.live_bytes(compiled),
                               fixed, mesh.devices.size, len(splits[split]))

    def check_finite(step: int, acc: dict | None = None) -> None:
        """Stop if a step was not finite; ``acc``: the accumulators, if already on the host."""
        acc = jax.device_get(state["acc"]) if acc is None else acc
        bad = int(acc["nonfinite_step"])
        if bad >= 0:
            value = float(acc["nonfinite_loss"])
            last = checkpoints.latest_step()
            checkpoints.close()
            if primary:
                write_atomic(summary_path, json.dumps({"name": config.name, "status": "nonfinite",
                                                    "nonfinite_step": bad + 1, "stopped_at_step": step,
                                                    "last_checkpoint": last}, indent=2))
            kept = (f"The last good checkpoint is step {last} in {workdir / 'checkpoints'}." if last is not None
                    else f"No checkpoint was written yet (the first is due at step {config.checkpoint.every}).")
            raise NonFiniteLoss(
                f"loss became {value} at step {bad + 1}; the update was not applied and training stopped "
                f"at step {step}. {kept} Lower optim.lr, set optim.grad_clip, or check the data.")

    def save(step: int) -> None:
        checkpoints.save(step, state, {"step": step, "data_position": step, "seed": t.seed})

    note = config.schedule.warmup_note(t.steps)
    if note and primary and start < t.steps:
        print(f"note: {note}")
    progress = Progress(t.steps, start, config.logging.progress and primary)
    run_start = interval_start = time.perf_counter()
    history: list[dict] = []
    step = start
    interval_steps = interval_tokens = 0  # steps and real tokens since the last log (for throughput)
    with StopRequest() as stop:
        while step < t.steps:
            batch, real_tokens = batch_at(step)
            step_index = jnp.asarray(step, jnp.int32)
            if compiled is None:  # compiled ahead of time once, to read its memory analysis
                compiled = train_step.lower(state, batch, step_index).compile()
            state = compiled(state, batch, step_index)
            if memory[0] is None:
                memory = devices.peak_memory_mib(compiled)
            step += 1
            interval_steps += 1
            interval_tokens += real_tokens
            record = None
            if step % t.log_every == 0 or step == t.steps:
                checkpoints.manager.check_for_errors()  # a failed background save (a full disk) stops the run now
                acc = jax.device_get(state["acc"])
                check_finite(step, acc)
                elapsed = time.perf_counter() - interval_start
                record = {"step": step, "split": "train", **summarize(acc, info.kind),
                          "lr": float(schedules["lr"](step)), "ssm_lr": float(schedules["ssm_lr"](step)),
                          "tokens_per_s": interval_tokens / elapsed,
                          "step_time_s": elapsed / interval_steps,
                          "wall_time_s": time.perf_counter() - run_start, "process": process}
                log.write(record)
                history.append(record)
                state["acc"] = devices.replicate(_zero_accumulators(), mesh)
                interval_start, interval_steps, interval_tokens = time.perf_counter(), 0, 0
            progress.update(1, record)
            evaluating = step % t.eval_every == 0 or step == t.steps  # its line shows the train record too
            if record is not None and primary and not progress.shown and not evaluating:  # a log, not a terminal
                print(f"step {step}/{t.steps}  train {_fmt(record)}  {record['tokens_per_s']:,.0f} tok/s", flush=True)
            if evaluating:
                eval_start = time.perf_counter()
                result = {"step": step, "split": "validation", **evaluate("validation"),
                          "wall_time_s": time.perf_counter() - run_start, "process": process}
                log.write(result)
                if primary:
                    progress.bar.write(_line(step, t.steps, history[-1] if history else None, result))
                interval_start += time.perf_counter() - eval_start  # evaluation is not training throughput
            if step % config.checkpoint.every == 0 or step == t.steps:
                check_finite(step)
                save(step)
            if stop.signum is not None:
                check_finite(step)
                if checkpoints.latest_step() != step:
                    save(step)
                checkpoints.close()
                progress.close()
                raise Interrupted(stop.signum, step, (
                    f"stopped by {stop.signum.name} at step {step} of {t.steps}; checkpoint {step} is saved "
                    f"in {workdir / 'checkpoints'}. Resume with the same command."))
        progress.close()
        test = {"step": step, "split": "test", **evaluate("test"), "wall_time_s": time.perf_counter() - run_start,
                "process": process}
        if stop.signum is not None:  # during the test pass: the last checkpoint is kept, the test is redone
            checkpoints.close()
            raise Interrupted(stop.signum, step, (
                f"stopped by {stop.signum.name} during the final evaluation; checkpoint {step} is saved in "
                f"{workdir / 'checkpoints'}. Resume with the same command."))
    log.write(test)
    checkpoints.close()
    if memory[0] is None:  # no step ran in this process (it resumed at the end): the same figure as one that did
        memory = devices.peak_memory_mib(train_step.lower(state, batch_at(0)[0], jnp.asarray(0, jnp.int32)).compile())
    for split in ("validation", "test"):  # (validation too when this process ran none)
        eval_batch_size_of(split)
    # Only the primary process reads the log back; the others summarize what they hold.
    records = log.read() if primary else [test]
    earlier = sum(seg[-1]["wall_time_s"] for seg in segments(records)[:-1])  # processes before this one
    summary = _summary(config, records, test, n_params=n_params, devices=mesh.devices.size,
                       wall_time_s=earlier + time.perf_counter() - run_start, peak_memory_mib=memory[0],
                       peak_memory_source=memory[1], eval_batch_sizes=eval_batch_sizes)
    if primary:  # the plot first: summary.json marks the run finished, and a rerun redoes what comes before it
        if config.logging.plot:
            every = max(1, t.steps // 500)
            curves = {k: [(s, float(f(s))) for s in range(0, t.steps + 1, every)] for k, f in schedules.items()}
            plot(records, workdir / "metrics.png", title=f"{config.name}: test {_fmt(test)} ({step} steps)",
                 schedules=curves)
        write_atomic(summary_path, json.dumps(summary, indent=2))
        print(f"{config.name}: test {_fmt(test)} ({summary['wall_time_s']:.0f} s); run folder {workdir}")
    return summary


def _summary(config: Config, records: list[dict], test: dict, **facts) -> dict:
    validation = [_metrics(r) for r in records if r["split"] == "validation"]
    final = {"test": _metrics(test)}
    summary = {"name": config.name, "status": "completed", "steps": test["step"], **facts,
               "train_tokens_per_s": train_tokens_per_s(records),
               "backend": jax.default_backend(), "final": final}
    if validation:
        final["validation"] = validation[-1]
        summary["best_validation"] = max(validation, key=lambda r: r.get("accuracy", -r["loss"]))
    return summary


def segments(records: list[dict]) -> list[list[dict]]:
    """The records of each process that worked on the run, in order (a resumed run has
    several), by their ``process`` field (logs older than it: a new process starts where
    ``wall_time_s`` goes back)."""
    out, last = [], None
    for r in records:
        if last is None or (r["process"] != last["process"] if "process" in r and "process" in last
                            else r["wall_time_s"] < last["wall_time_s"]):
            out.append([])
        out[-1].append(r)
        last = r
    return out


def train_tokens_per_s(records: list[dict]) -> float | None:
    """Training throughput of a run: the median over its log intervals, leaving out the
    first interval of each process (it includes compilation) unless nothing else is left."""
    rates, firsts = [], []
    for segment in segments(records):
        train = [r["tokens_per_s"] for r in segment if r["split"] == "train"]
        firsts += train[:1]
        rates += train[1:]
    rates = rates or firsts
    return statistics.median(rates) if rates else None


def _metrics(record: dict) -> dict:
    return {k: record[k] for k in ("step", "loss", "accuracy") if k in record}


def _fmt(record: dict) -> str:
    out = f"loss {record['loss']:.4f}"
    if "accuracy" in record:
        out += f" acc {record['accuracy']:.4f}"
    return out


def _line(step: int, total: int, train: dict | None, validation: dict) -> str:
    head = f"step {step}/{total}"
    if train is not None:
        head += f"  train {_fmt(train)}"
    return f"{head}  | validation {_fmt(validation)}"
