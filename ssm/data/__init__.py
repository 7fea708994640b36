"""Tasks -> Hugging Face ``datasets`` on disk -> numpy batches with fixed shapes.

For example::

    ds, info = load_task("selective_copying", {"l_noise": 200}, seed=0, cache_dir="data_cache")
    batch = get_batch(ds["train"], step, batch_size=32, seed=0)   # pure in (step, seed)
    for batch in eval_batches(ds["validation"], 64): ...          # last batch padded, `valid`

Tasks (``TASKS``; one file each, with its published source and layout in the docstring):
copying, selective_copying, induction_heads, associative_recall, mqar, adding, listops,
text. Every split has the columns ``inputs``, ``targets`` (``IGNORE`` = -100 where not
scored) and ``length``; shapes are in ``ssm.data.task``. ``datasets`` is imported only
when a dataset is built or loaded.
"""

from ssm.data import listops, registry, task
from ssm.data.batches import epoch_permutation, eval_batches, get_batch, take
from ssm.data.cache import derive_seed, features, load_task, split_sizes
from ssm.data.registry import get_task, make_params
from ssm.data.task import Task, TaskInfo

__all__ = [
    "IGNORE",
    "SPLITS",
    "TASKS",
    "Task",
    "TaskInfo",
    "derive_seed",
    "epoch_permutation",
    "eval_batches",
    "features",
    "get_batch",
    "get_task",
    "load_task",
    "make_params",
    "split_sizes",
    "take",
]

#: Target value at positions that are not scored (-100, the PyTorch/Hugging Face convention).
IGNORE: int = task.IGNORE
#: The splits every task has, in this order (``"train"``, ``"validation"``, ``"test"``).
SPLITS: tuple[str, ...] = task.SPLITS
#: Every task by the name configs use, a dict from names to :class:`Task`.
#:
#: :meta hide-value:
TASKS: dict[str, Task] = registry.TASKS
