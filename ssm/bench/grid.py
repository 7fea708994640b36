"""The memory benchmark's grid: a preset (``configs/bench/memory_<preset>.yaml``) expanded
into cells, each one training run with its own config and run folder.

A preset is a mapping::

    name: cpu
    defaults: {trainer: {...}, ...}         # config keys every cell starts from
    models:   {mamba: {model: {...}}, ...}  # name -> config overrides
    tasks:
      mqar:                                 # a task of ssm.data.TASKS (or give task.name)
        config: {task: {params: {...}}, trainer: {...}}
        models: [mamba, attention]          # default: every model
        settings: {L64-kv4: {input_seq_len: 64, num_kv_pairs: 4}}  # task.params per setting
        sweep: {model.d_model: [32, 64]}    # any config keys, every combination
        lr: [1.0e-3, 3.0e-3]                # optim.lr; or {model: [...], "*": [...]}
        seeds: [0]
        metric: accuracy                    # accuracy | loss | mse | bits_per_byte
        published: {mamba: 0.998}           # per model, in the metric's unit
        extrapolate: {param: input_seq_len, factors: [1, 4, 16], examples: 64, batch_size: 16}
    hippo: {...}                            # ssm.bench.hippo_memory.run's spec
    generation: {...}                       # ssm.bench.generation.run's spec

A cell's config is ``defaults``, then the task's ``config``, then the model's, then the
cell's own values (setting, sweep, learning rate, seed), merged key by key.
"""

from __future__ import annotations

import dataclasses
import itertools
import pathlib
import re
from typing import Any

import yaml

from ssm.train.config import Config, ConfigError, apply_override, choose, from_dict, merge
from ssm.train.shipped import configs_dir

PRESETS = ("ci", "cpu", "paper")
METRICS = ("accuracy", "loss", "mse", "bits_per_byte")
TASK_KEYS = ("config", "models", "settings", "sweep", "lr", "seeds", "metric", "published", "extrapolate")
PRESET_KEYS = ("name", "defaults", "models", "tasks", "hippo", "generation")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One training run of the grid.

    Attributes:
      task: the preset's task key. setting: the setting's name ("default" if none).
      sweep: the swept config keys and their values, e.g. ``{"model.d_model": 64}``.
      model, lr, seed: as the names say. config: the merged config mapping.
    """

    task: str
    setting: str
    sweep: tuple[tuple[str, Any], ...]
    model: str
    lr: float
    seed: int
    config: dict = dataclasses.field(compare=False, hash=False, repr=False)

    @property
    def id(self) -> str:
        """The run folder's name: readable, unique within the grid, safe in paths."""
        parts = [self.task, self.setting, *(f"{k.rsplit('.', 1)[-1]}{v}" for k, v in self.sweep),
                 self.model, f"lr{self.lr:g}", f"s{self.seed}"]
        return re.sub(r"[^A-Za-z0-9_.=+-]", "_", "-".join(str(p) for p in parts))

    @property
    def group(self) -> tuple:
        """The cells a best learning rate is chosen among: all but the lr."""
        return self.task, self.setting, self.sweep, self.model, self.seed

    def build(self) -> Config:
        return from_dict(Config, self.config)


def preset_path(preset: str, root: pathlib.Path | None = None) -> pathlib.Path:
    """``configs/bench/memory_<preset>.yaml`` (a path to a YAML file also works)."""
    if preset.endswith((".yaml", ".yml")):
        return pathlib.Path(preset)
    if preset not in PRESETS:
        raise ConfigError(f"--preset {preset!r}: expected one of {PRESETS} or a YAML file")
    root = root or configs_dir()
    return root / "bench" / f"memory_{preset}.yaml"


def load_preset(path: pathlib.Path) -> dict:
    """A memory benchmark preset (YAML) read and checked: unknown keys, metrics and model names raise
    :class:`~ssm.train.ConfigError`."""
    if not path.is_file():
        raise ConfigError(f"benchmark preset {str(path)!r} does not exist")
    preset = yaml.safe_load(path.read_text()) or {}
    for key in preset:
        if key not in PRESET_KEYS:
            raise ConfigError(f"{path.name}: unknown key {key!r}; valid keys: {PRESET_KEYS}")
    for name, spec in (preset.get("tasks") or {}).items():
        for key in spec or {}:
            if key not in TASK_KEYS:
                raise ConfigError(f"{path.name}: tasks.{name}.{key}: unknown key; valid keys: {TASK_KEYS}")
        choose(f"{path.name}: tasks.{name}.metric", (spec or {}).get("metric", "accuracy"), METRICS)
        for model in (spec or {}).get("models", []):
            if model not in preset.get("models", {}):
                raise ConfigError(f"{path.name}: tasks.{name}.models: {model!r} is not in models "
                                  f"{tuple(preset.get('models', {}))}")
    return preset


def _learning_rates(spec: dict, model: str) -> list[float]:
    lr = spec.get("lr")
    if lr is None:
        return [None]
    if isinstance(lr, dict):
        lr = lr.get(model, lr.get("*"))
        if lr is None:
            raise ConfigError(f"lr: no entry for model {model!r} and no '*' default")
    return [float(v) for v in (lr if isinstance(lr, list) else [lr])]


def expand(preset: dict) -> list[Cell]:
    """Every cell of the preset, in the order of its tasks, settings, sweeps, models,
    learning rates and seeds. Each cell's config is checked here, before any work."""
    cells = []
    defaults = preset.get("defaults") or {}
    for task, spec in (preset.get("tasks") or {}).items():
        spec = spec or {}
        base = merge(defaults, merge({"task": {"name": task}}, spec.get("config") or {}))
        settings = spec.get("settings") or {"default": {}}
        sweep = spec.get("sweep") or {}
        for setting, params in settings.items():
            for values in itertools.product(*sweep.values()):
                swept = tuple(zip(sweep, values))
                for model in spec.get("models") or list(preset["models"]):
                    for lr in _learning_rates(spec, model):
                        for seed in spec.get("seeds") or [0]:
                            config = merge(merge(base, preset["models"][model]), {"task": {"params": params or {}}})
                            for key, value in swept:
                                config = merge(config, apply_override({}, f"{key}={yaml.safe_dump(value).strip()}"))
                            if lr is not None:
                                config = merge(config, {"optim": {"lr": lr}})
                            config = merge(config, {"trainer": {"seed": seed}, "task": {"seed": seed}})
                            cell = Cell(task, setting, swept, model, lr if lr is not None else 0.0, seed, config)
                            config["name"] = cell.id
                            try:
                                cell.build()
                            except ConfigError as e:
                                raise ConfigError(f"cell {cell.id}: {e}") from None
                            cells.append(cell)
    ids = [c.id for c in cells]
    if len(set(ids)) != len(ids):
        raise ConfigError("two cells of the grid have the same id; give settings distinct names")
    return cells


def parse_only(only: str) -> dict[str, set[str]]:
    """``--only``'s ``key=value`` pairs as key -> the values it accepts."""
    wanted: dict[str, set[str]] = {}
    for part in only.split(","):
        key, sep, value = part.partition("=")
        if not sep or key not in ("task", "setting", "model", "lr", "seed"):
            raise ConfigError(f"--only {only!r}: expected key=value pairs with keys task, setting, model, lr, seed")
        wanted.setdefault(key, set()).add(value)
    return wanted


def select(cells: list[Cell], only: str | None) -> list[Cell]:
    """The cells ``--only`` names: ``key=value`` pairs separated by commas, keys among
    task, setting, model, lr, seed; a key given twice accepts either value."""
    if not only:
        return cells
    wanted = parse_only(only)

    def matches(cell: Cell) -> bool:
        fields = {"task": cell.task, "setting": cell.setting, "model": cell.model,
                  "lr": f"{cell.lr:g}", "seed": str(cell.seed)}
        return all(fields[k] in values or (k == "lr" and any(_same_float(v, cell.lr) for v in values))
                   for k, values in wanted.items())

    chosen = [c for c in cells if matches(c)]
    if not chosen:
        raise ConfigError(f"--only {only!r} matches no cell of the grid")
    return chosen


def _same_float(text: str, value: float) -> bool:
    try:
        return abs(float(text) - value) <= 1e-12 * max(1.0, abs(value))
    except ValueError:
        return False
