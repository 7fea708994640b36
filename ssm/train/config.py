"""Experiment configuration: typed, frozen dataclasses are the schema; YAML files
under ``configs/`` are experiments; ``--set a.b=value`` overrides on the command line.

A YAML file may start with ``extends: other.yaml`` (a path relative to the file);
its mapping is merged over the other's, key by key. Unknown keys, wrong types and
impossible values raise :class:`ConfigError` before any work starts, naming the
key's path, the value and what was expected.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import pathlib
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml


class ConfigError(ValueError):
    """A bad configuration value; the message names the key's path."""


# Floating-point types a model's parameters or activations may take, by their NumPy names.
DTYPES = ("float32", "bfloat16", "float16")


# ----------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class ModelConfig:
    """The network: :class:`ssm.layers.SequenceModel` with one kind of sequence layer."""

    layer: str = "s4d"  # the sequence layer: a name in ssm.layers.LAYERS
    d_model: int = 64  # width of the residual stream
    n_layers: int = 2  # residual blocks
    layer_kwargs: dict = field(default_factory=dict)  # keyword options of the layer's class (see "Layer options")
    block: str = "residual"  # residual (a residual around each sublayer) or m2 (M2's BERT layer: prenorm false, post null, an mlp)
    norm: str = "layer"  # layer (LayerNorm) or rms (RMSNorm)
    prenorm: bool = True  # normalize each block's input (true) or its output (false)
    activation: str = "gelu"  # after the sequence layer: gelu (exact, erf), gelu_tanh, silu, relu, tanh or identity
    post: str | None = "glu"  # projection after the activation: glu, linear or null (none; the Mamba block)
    dropout: float = 0.0  # dropout rate after the activation and the projection
    mlp: str | None = None  # a position-wise GLU MLP after each layer: dense, monarch (M2) or none
    mlp_expand: int = 4  # its hidden width, in multiples of d_model
    pool: str = "auto"  # auto: none for token tasks, mean for classification, last for regression
    tie_embeddings: bool = False  # head = transposed embedding (token tasks; the Mamba LM)
    head_bias: bool = True  # an untied head has a bias (Hugging Face's Mamba heads have none)
    norm_eps: float | None = None  # epsilon of every norm (null: 1e-5 for mamba and mamba2, as mamba_ssm; else 1e-6, Flax's)
    embedding_std: float | None = None  # the token embedding's initial std (null: 0.02 for mamba and mamba2, as mamba_ssm; else Flax's 1/sqrt(d_model))
    residual_in_fp32: bool = False  # keep the residual stream float32 under bf16 activations (mamba_ssm's Block)
    dtype: str | None = None  # activations: null (= param_dtype) or bfloat16 (mixed precision)
    param_dtype: str = "float32"  # parameters (and optimizer state); SSM state and loss stay float32 at least

    def check(self, path: str) -> None:
        from ssm.layers import LAYERS
        from ssm.layers.backbone import BLOCKS, MLPS
        from ssm.layers.block import POSTS
        from ssm.layers.parts import ACTIVATIONS, NORMS

        choose(f"{path}.layer", self.layer, tuple(LAYERS))
        positive(f"{path}.d_model", self.d_model)
        positive(f"{path}.n_layers", self.n_layers)
        choose(f"{path}.block", self.block, BLOCKS)
        choose(f"{path}.norm", self.norm, NORMS)
        choose(f"{path}.activation", self.activation, tuple(ACTIVATIONS))
        choose(f"{path}.post", self.post, POSTS)
        rate(f"{path}.dropout", self.dropout)
        choose(f"{path}.mlp", self.mlp, MLPS)
        positive(f"{path}.mlp_expand", self.mlp_expand)
        choose(f"{path}.pool", self.pool, ("auto", "none", "mean", "last"))
        if self.norm_eps is not None:
            positive(f"{path}.norm_eps", self.norm_eps)
        if self.embedding_std is not None:
            positive(f"{path}.embedding_std", self.embedding_std)
        choose(f"{path}.dtype", self.dtype, (None, *DTYPES))
        choose(f"{path}.param_dtype", self.param_dtype, DTYPES)
        signature = inspect.signature(LAYERS[self.layer].__init__).parameters
        options = tuple(k for k, p in signature.items() if p.kind is p.KEYWORD_ONLY and k != "rngs")
        for key in self.layer_kwargs:
            if key in ("dtype", "param_dtype"):
                raise ConfigError(f"{path}.layer_kwargs.{key}: set {path}.{key} instead (it applies to the whole "
                                  f"model: embedding, blocks, norms and head)")
            if key not in options:
                raise ConfigError(f"{path}.layer_kwargs.{key}: not an option of layer "
                                  f"{self.layer!r}; valid options: {options} (drop it with "
                                  f"--set '~{path}.layer_kwargs.{key}', or all with '~{path}.layer_kwargs')")


@dataclass(frozen=True)
class TaskConfig:
    """The data: a task of :data:`ssm.data.TASKS`, its parameters and split sizes."""

    name: str = "copying"  # a name in ssm.data.TASKS
    params: dict = field(default_factory=dict)  # the task's parameters (see "Task parameters")
    sizes: dict = field(default_factory=dict)  # examples per split: train, validation, test (default: the task's)
    seed: int = 0  # seed of the generated examples (each split its own stream)
    cache_dir: str = ".cache/datasets"  # where generated splits are saved (datasets.save_to_disk) and reused
    data_dir: str | None = None  # local files some tasks read (ListOps TSVs, text); in a YAML file, relative to it

    def check(self, path: str) -> None:
        from ssm.data import TASKS

        choose(f"{path}.name", self.name, tuple(TASKS))
        params_cls = TASKS[self.name].params
        fields = tuple(f.name for f in dataclasses.fields(params_cls))
        for key in self.params:
            if key not in fields:
                raise ConfigError(f"{path}.params.{key}: not a parameter of task {self.name!r}; "
                                  f"valid parameters: {fields}")
        try:
            params_cls(**self.params)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{path}.params: {e}") from None
        for key, value in self.sizes.items():
            choose(f"{path}.sizes", key, ("train", "validation", "test"))
            positive(f"{path}.sizes.{key}", value)


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with the parameter groups of :mod:`ssm.groups`; or, with ``name: muon``,
    Muon (:func:`ssm.optim.muon`) on the ``matrix`` group at ``muon_lr`` and AdamW on
    the rest."""

    name: str = "adamw"  # adamw | muon
    lr: float = 3e-3  # AdamW's (base) learning rate
    ssm_lr: float = 1e-3  # learning rate of the SSM dynamics (no weight decay)
    muon_lr: float = 0.02  # Muon's learning rate for dense matrices
    msign_coeffs: str = "jordan"  # Muon's Newton-Schulz coefficients: a name in ssm.linalg.COEFFS
    msign_steps: int = 5  # Muon's Newton-Schulz iterations
    weight_decay: float = 0.01  # AdamW's decoupled weight decay (matrix and adamw groups)
    b1: float = 0.9  # Adam's first-moment decay (Muon's momentum)
    b2: float = 0.999  # Adam's second-moment decay
    eps: float = 1e-8  # Adam's epsilon; with name: muon also the Newton-Schulz normalization's, as optax
    grad_clip: float | None = 1.0  # global-norm clip; null: off

    def check(self, path: str) -> None:
        from ssm.linalg import COEFFS

        choose(f"{path}.name", self.name, ("adamw", "muon"))
        positive(f"{path}.lr", self.lr)
        positive(f"{path}.muon_lr", self.muon_lr)
        choose(f"{path}.msign_coeffs", self.msign_coeffs, tuple(COEFFS))
        positive(f"{path}.msign_steps", self.msign_steps)
        positive(f"{path}.ssm_lr", self.ssm_lr)
        nonnegative(f"{path}.weight_decay", self.weight_decay)
        for key in ("b1", "b2"):
            rate(f"{path}.{key}", getattr(self, key))
        positive(f"{path}.eps", self.eps)
        if self.grad_clip is not None:
            positive(f"{path}.grad_clip", self.grad_clip)


@dataclass(frozen=True)
class ScheduleConfig:
    """Linear warmup, then cosine (or linear, or constant) decay, for every group."""

    warmup_steps: int = 100  # linear warmup from 0 (a tenth of the run where it would not fit)
    decay: str = "cosine"  # after warmup: cosine, linear or constant
    min_lr_ratio: float = 0.0  # final lr / peak lr

    def warmup(self, steps: int) -> int:
        """The warmup a run of ``steps`` steps gets: ``warmup_steps``, or a tenth of the
        run where ``warmup_steps`` would not fit in it (a short trial of a long config)."""
        return self.warmup_steps if self.warmup_steps <= steps else steps // 10

    def warmup_note(self, steps: int) -> str | None:
        """What :meth:`warmup` changed, for the run's log; None when nothing."""
        if self.warmup(steps) == self.warmup_steps:
            return None
        return (f"schedule.warmup_steps={self.warmup_steps} exceeds trainer.steps={steps}: warming up over "
                f"{self.warmup(steps)} steps (a tenth of the run) instead")

    def check(self, path: str) -> None:
        nonnegative(f"{path}.warmup_steps", self.warmup_steps)
        choose(f"{path}.decay", self.decay, ("cosine", "linear", "constant"))
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"{path}.min_lr_ratio: {self.min_lr_ratio!r} must be in [0, 1]")


@dataclass(frozen=True)
class TrainerConfig:
    """The training loop: steps, batch sizes, evaluation and logging intervals, seed, devices."""

    steps: int = 1000  # optimizer steps; raise it to continue a finished run
    batch_size: int = 32  # examples per step, global over all devices
    eval_every: int = 250  # steps between validation passes (and one at the end)
    eval_batch_size: int | None = None  # examples per evaluation batch (null: batch_size on CPU, the largest that fits elsewhere)
    log_every: int = 20  # steps between training-metric records (and log lines off a terminal)
    eval_examples: int | None = None  # validation examples per evaluation (default: the whole split)
    seed: int = 0  # parameter initialization, dropout and data order
    devices: int | None = None  # local devices to use (default: all)
    tbptt: int | None = None  # truncated BPTT: train each row as windows of this many positions, the state carried between them and its gradient stopped (null: off)

    def check(self, path: str) -> None:
        for key in ("steps", "batch_size", "eval_every", "log_every"):
            positive(f"{path}.{key}", getattr(self, key))
        if self.steps >= 2**31:
            raise ConfigError(f"{path}.steps: {self.steps} must be below 2**31 (steps are counted in int32)")
        for key in ("eval_batch_size", "eval_examples", "devices", "tbptt"):
            if getattr(self, key) is not None:
                positive(f"{path}.{key}", getattr(self, key))


@dataclass(frozen=True)
class LoggingConfig:
    """What a run shows and writes besides its metrics: progress bar, plot, TensorBoard."""

    progress: bool = True  # live progress bar (on a terminal)
    plot: bool = True  # metrics.png at the end
    tensorboard: bool = False  # also write TensorBoard events (the tensorboard extra)

    def check(self, path: str) -> None:
        from ssm.extras import missing

        message = missing("tensorboard", "tensorboardX") if self.tensorboard else None
        if message is not None:
            raise ConfigError(f"{path}.tensorboard: true needs {message}")


@dataclass(frozen=True)
class CheckpointConfig:
    """How often a run saves a checkpoint, and how many it keeps."""

    every: int = 250  # steps between checkpoints (and one at the end, and one on SIGINT/SIGTERM)
    keep: int = 3  # newest checkpoints kept

    def check(self, path: str) -> None:
        positive(f"{path}.every", self.every)
        positive(f"{path}.keep", self.keep)


@dataclass(frozen=True)
class DistributedConfig:
    """Multi-host: ``jax.distributed.initialize`` before anything else."""

    multihost: bool = False  # call jax.distributed.initialize (one process per host)
    coordinator_address: str | None = None  # host:port; null: auto-detect (TPU, SLURM)
    num_processes: int | None = None  # null: auto-detect
    process_id: int | None = None  # null: auto-detect


@dataclass(frozen=True)
class Config:
    """One experiment: the whole schema, one frozen dataclass per section (``model``,
    ``task``, ``optim``, ``schedule``, ``trainer``, ``logging``, ``checkpoint``,
    ``distributed``); every key, its type, default and meaning are in ``docs/config.md``.
    Made by :func:`load_config` (or ``from_dict``), which checks every value."""

    name: str = "default"  # the experiment's name: its run folder is runs/<name> (plus overrides)
    preset: str | None = None  # an overlay of the file's presets: mapping applied first (e.g. cpu)
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def check(self, path: str) -> None:
        """Raise :class:`ConfigError` unless ``name`` is one folder name (the sections
        check themselves when built)."""
        if not self.name or self.name in (".", "..") or any(c in self.name for c in "/\\\0"):
            raise ConfigError(f"name: {self.name!r} must be one folder name (it names the run folder "
                              f"runs/<name>): no slashes, not empty, not '.' or '..'")


# ----------------------------------------------------------------------------- checks


def choose(path: str, value, choices: tuple) -> None:
    """:func:`ssm.checks.check_choice` raising :class:`ConfigError` for the key ``path``."""
    from ssm.checks import check_choice

    check_choice(path, value, choices, error=ConfigError)


def positive(path: str, value) -> None:
    """Raise :class:`ConfigError` for the key ``path`` unless ``value > 0``."""
    if not value > 0:
        raise ConfigError(f"{path}: {value!r} must be > 0")


def nonnegative(path: str, value) -> None:
    """Raise :class:`ConfigError` for the key ``path`` unless ``value >= 0``."""
    if not value >= 0:
        raise ConfigError(f"{path}: {value!r} must be >= 0")


def rate(path: str, value) -> None:
    """Raise :class:`ConfigError` for the key ``path`` unless ``0 <= value < 1``."""
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{path}: {value!r} must be in [0, 1)")


# ------------------------------------------------------------------------ conversions


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(path: str, value, tp):
    """``value`` as the annotated type ``tp``, or ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(path, value, arg)
            except ConfigError:
                pass
        raise ConfigError(f"{path}: expected {' or '.join(_type_name(a) for a in args)}, "
                          f"got {value!r} ({type(value).__name__})")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads 3e-4 (no dot) as a string
            value = float(value)
        except ValueError:
            pass
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{path}: {value!r} is not a finite number")
    if tp is dict and isinstance(value, dict):
        return dict(value)
    if isinstance(tp, type) and isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def from_dict(cls, data, path: str = ""):
    """Build the dataclass ``cls`` from a mapping, checking keys, types and values."""
    where = path or "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r} ({type(data).__name__})")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise ConfigError(f"{_join(path, key)}: unknown key; valid keys: {tuple(sorted(fields))}")
    values = {k: _convert(_join(path, k), v, hints[k]) for k, v in data.items()}
    obj = cls(**values)
    if hasattr(obj, "check"):
        obj.check(path)
    return obj


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def to_dict(config) -> dict:
    """A config (or any section) as nested plain dicts (``dataclasses.asdict``)."""
    return dataclasses.asdict(config)


# --------------------------------------------------------------------------- YAML


def merge(base: dict, over: dict) -> dict:
    """Deep merge: mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | pathlib.Path, _seen: tuple = ()) -> dict:
    """A YAML experiment with its ``extends:`` chain resolved, and the relative data
    paths each file names (``task.data_dir``, ``task.params.path``) made absolute
    against that file's folder, as ``extends:`` is."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    if path.resolve() in _seen:
        raise ConfigError(f"config file {str(path)!r} extends itself (cycle: {[str(p) for p in _seen]})")
    try:
        data = yaml.load(path.read_text(), Loader=_StrictLoader) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from None
    except _DuplicateKey as e:
        raise ConfigError(f"config file {str(path)!r}, line {e.line}: key {e.key!r} is set twice in one mapping "
                          f"(YAML would keep the last silently)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r}: expected a mapping at the top, got {type(data).__name__}")
    data = _with_data_paths_from(path.parent, data)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(f"config file {str(path)!r}: extends: {parent!r} must be a file name (a string)")
    base = read_yaml(path.parent / parent, (*_seen, path.resolve()))
    return merge(base, data)


class _DuplicateKey(Exception):
    def __init__(self, key, line: int):
        self.key, self.line = key, line


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key set twice in one mapping."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _with_data_paths_from(folder: pathlib.Path, data: dict) -> dict:
    """``data`` (one file's mapping, its presets included) with relative ``task.data_dir``
    and ``task.params.path`` resolved against ``folder``. A ``path`` stays relative where
    the same mapping sets ``data_dir`` (the text task reads it inside ``data_dir``), and
    ``stdlib:`` names are not paths."""

    def absolute(value):
        if not isinstance(value, str) or not value or value.startswith("stdlib:"):
            return value
        p = pathlib.Path(value).expanduser()
        return str(p if p.is_absolute() else (folder / p).resolve())

    def fix(mapping):
        task = mapping.get("task") if isinstance(mapping, dict) else None
        if not isinstance(task, dict):
            return mapping
        task = dict(task)
        if "data_dir" in task:
            task["data_dir"] = absolute(task["data_dir"])
        elif isinstance(task.get("params"), dict) and "path" in task["params"]:
            task["params"] = {**task["params"], "path": absolute(task["params"]["path"])}
        return {**mapping, "task": task}

    data = fix(data)
    if isinstance(data.get("presets"), dict):
        data = {**data, "presets": {name: fix(overlay) for name, overlay in data["presets"].items()}}
    return data


def apply_override(data: dict, assignment: str) -> dict:
    """Apply ``a.b.c=value`` (value parsed as YAML, a mapping merged key by key) to a
    nested mapping, or delete a key with ``~a.b.c`` (Hydra's syntax); to replace a
    whole mapping, delete it and then set it: ``~model.layer_kwargs model.layer_kwargs={...}``."""
    if assignment.startswith("~"):
        return _delete(data, assignment[1:], assignment)
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {assignment!r}: expected key.path=value")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    parts = key.split(".")
    update: Any = value
    for part in reversed(parts):
        update = {part: update}
    return merge(data, update)


def _delete(data: dict, key: str, assignment: str, prefix: str = "") -> dict:
    """``data`` without ``key`` (a dotted path that must exist in it)."""
    head, _, rest = key.partition(".")
    if not isinstance(data, dict) or head not in data:
        there = tuple(data) if isinstance(data, dict) else ()
        raise ConfigError(f"--set {assignment!r}: the config sets no {prefix + head!r} to delete "
                          f"(keys set{' under ' + prefix[:-1] if prefix else ''}: {there})")
    if not rest:
        return {k: v for k, v in data.items() if k != head}
    return {**data, head: _delete(data[head], rest, assignment, f"{prefix}{head}.")}


def load_config(path=None, overrides: list[str] = ()) -> Config:
    """The experiment at ``path`` (or the defaults) with ``--set`` overrides applied.

    A file may define ``presets:``, named overlays merged over it when ``preset`` names
    one (``--set preset=cpu``); the overrides apply after the preset, so they win.

    Args:
      path: a YAML experiment (its ``extends:`` chain followed), or None for the defaults.
      overrides: ``"a.b=value"`` assignments (YAML values), or ``"~a.b"`` to delete a key.

    Returns:
      The checked :class:`Config`; a bad key or value raises :class:`ConfigError`.
    """
    data = read_yaml(path) if path is not None else {}
    chosen = data
    for assignment in overrides:
        chosen = apply_override(chosen, assignment)
    presets = data.pop("presets", None) or {}
    preset = chosen.get("preset")
    if preset is not None:
        if preset not in presets:
            raise ConfigError(f"preset: {preset!r} is not a preset of {str(path) if path else 'the defaults'}; "
                              f"its presets: {tuple(presets) or 'none'}")
        data = merge(data, presets[preset])
    for assignment in overrides:
        data = apply_override(data, assignment)
    data.pop("presets", None)
    return from_dict(Config, data)


def dump(config: Config) -> str:
    """``config`` as YAML text, keys in schema order (what a run folder's ``config.yaml`` holds)."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def with_task_defaults(config: Config) -> Config:
    """``config`` with every task parameter and split size spelled out, the task's
    defaults where the config names none: what a run of it uses (``--print-config``)."""
    from ssm import data

    task = data.get_task(config.task.name)
    params = data.make_params(task, config.task.params)
    sizes, _ = data.split_sizes(task, params, config.task.sizes, config.task.data_dir)
    params = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(params).items()}
    return dataclasses.replace(config, task=dataclasses.replace(config.task, params=params, sizes=sizes))
