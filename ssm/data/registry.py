"""``TASKS``: every task by name (the names configs use), and parameter parsing."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ssm.checks import check_choice
from ssm.data.adding import ADDING
from ssm.data.associative_recall import ASSOCIATIVE_RECALL
from ssm.data.copying import COPYING, SELECTIVE_COPYING
from ssm.data.induction import INDUCTION_HEADS
from ssm.data.listops import LISTOPS
from ssm.data.mqar import MQAR
from ssm.data.task import Task, param_names
from ssm.data.text import TEXT

TASKS: dict[str, Task] = {
    t.name: t
    for t in (COPYING, SELECTIVE_COPYING, INDUCTION_HEADS, ASSOCIATIVE_RECALL, MQAR, ADDING, LISTOPS, TEXT)
}


def get_task(name: str) -> Task:
    """The :class:`~ssm.data.Task` registered as ``name`` (a key of :data:`TASKS`), else a
    ValueError naming the choices."""
    return TASKS[check_choice("task", name, tuple(TASKS))]


def make_params(task: Task, params: Mapping[str, Any] | Any | None = None):
    """``task.params`` from a dict of overrides (None: the defaults), validated."""
    if params is None:
        return task.params()
    if isinstance(params, task.params):
        return params
    if dataclasses.is_dataclass(params):
        raise ValueError(f"params for task {task.name!r} must be a dict or {task.params.__name__}, got {params!r}")
    if not isinstance(params, Mapping):
        raise ValueError(f"params for task {task.name!r} must be a dict, got {type(params).__name__}")
    valid = param_names(task.params)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for task {task.name!r}; expected some of {valid}")
    return task.params(**params)
