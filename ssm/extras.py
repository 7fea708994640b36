"""Optional dependencies: which extra brings a module, and the error that says so.

The core (``jax``, ``flax``, ``optax``, ``einops``) is all a layer needs; training,
tensorboard logging and the rest come with extras of the package (``pip install
'ssm-jax[train]'``). A feature whose extra is missing fails at once with that command,
not with a bare ``ModuleNotFoundError`` from deep inside a run.
"""

from __future__ import annotations

import importlib.util

__all__ = ["PACKAGE", "missing", "require"]

PACKAGE = "ssm-jax"  #: The distribution name ``pip install`` knows the package by.


def missing(extra: str, *modules: str) -> str | None:
    """None when every module is importable; else the sentence naming the missing ones
    and the ``pip install`` of ``extra`` that brings them (modules are found, not imported).

    Args:
      extra: the package extra that brings the modules, e.g. ``"train"``.
      *modules: importable names (``"orbax.checkpoint"``: its top package is looked for).

    Returns:
      None, or a str such as ``"datasets, which is not installed: pip install 'ssm-jax[train]'"``.
    """
    absent = [m for m in modules if importlib.util.find_spec(m.split(".")[0]) is None]
    if not absent:
        return None
    verb = "is" if len(absent) == 1 else "are"
    return f"{', '.join(absent)}, which {verb} not installed: pip install '{PACKAGE}[{extra}]'"


def require(extra: str, *modules: str, what: str) -> None:
    """Raise ModuleNotFoundError for ``what`` (a feature) unless ``modules`` are
    importable; its message is ``"<what> needs <missing(extra, *modules)>"``.

    Args:
      extra: as :func:`missing`.
      *modules: as :func:`missing`.
      what: the feature that needs them, e.g. ``"ssm.train"``.
    """
    message = missing(extra, *modules)
    if message is not None:
        raise ModuleNotFoundError(f"{what} needs {message}")
