"""The configs that ship with the package: ``configs/`` in a clone, ``ssm/configs`` in
an installed wheel; and how ``--config`` finds one by its name."""

from __future__ import annotations

import os
import pathlib

from ssm.train.config import ConfigError

DEFAULT_CONFIG = "default.yaml"


def configs_dir() -> pathlib.Path:
    """The shipped configs: ``ssm/configs`` in an installed wheel, ``configs/`` beside
    the package in a clone."""
    package = pathlib.Path(__file__).resolve().parents[1]
    installed = package / "configs"
    return installed if installed.is_dir() else package.parent / "configs"


def shipped_configs() -> list[str]:
    """Names of the shipped experiment configs, relative to :func:`configs_dir`."""
    root = configs_dir()
    names = (p.relative_to(root).as_posix() for p in root.rglob("*.yaml"))
    return sorted(n for n in names if not n.startswith("bench/"))


def resolve_config(path: str | os.PathLike | None) -> pathlib.Path:
    """The YAML file ``--config`` names: ``path`` if it exists, else the shipped config
    of that name (``copying/s4.yaml`` or ``configs/copying/s4.yaml``); None: the default."""
    if path is None:
        return configs_dir() / DEFAULT_CONFIG
    given = pathlib.Path(path)
    if given.is_file():
        return given
    name = given.as_posix().removeprefix("configs/")
    shipped = configs_dir() / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    if shipped.is_file():
        return shipped
    raise ConfigError(f"--config {str(path)!r}: no such file, and no shipped config of that name "
                      f"in {configs_dir()} (--help lists them)")


def shipped_summary() -> str:
    """The shipped configs, one line per folder: ``copying/: attention lstm ... (task.yaml)``."""
    folders: dict[str, list[str]] = {}
    for name in sorted(shipped_configs(), key=lambda n: ("/" in n, n)):
        folder, _, stem = name.rpartition("/")
        folders.setdefault(folder, []).append(stem.removesuffix(".yaml"))
    return "\n".join(f"{folder + '/' if folder else '(top)'}: {' '.join(stems)}" for folder, stems in folders.items())
