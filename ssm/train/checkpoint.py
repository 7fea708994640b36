"""Checkpoints of a run with Orbax: the training state (parameters, the rest of
the model state such as dropout RNG streams, optimizer state, metric accumulators)
and a JSON record of the step and data position, with a checksum of every array.

A restore verifies the checksum and falls back, newest first, to the latest
checkpoint that reads back whole and matches it, moving each damaged one newer than
it aside (``<run folder>/damaged_checkpoints/``) with a warning that says what was
wrong; with none intact it stops and says so, and moves nothing.
Leftovers of an interrupted save (Orbax's ``*.orbax-checkpoint-tmp*`` folders) and
checkpoints beyond ``keep`` are cleaned up when the run starts.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import shutil
import time

import jax
import numpy as np

TMP_MARK = ".orbax-checkpoint-tmp"


class DamagedCheckpoints(RuntimeError):
    """No checkpoint of the run reads back intact."""


def checksum(state) -> str:
    """A digest of every array of ``state`` (dtype, shape and bytes, in tree order);
    equal for equal values wherever the arrays live. Replicated arrays are read from
    this process's first shard."""
    digest = hashlib.blake2b(digest_size=16)
    for leaf in jax.tree.leaves(state):
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            leaf = leaf.addressable_data(0)
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def record_checksum(meta: dict) -> str:
    """A digest of a checkpoint's JSON record without its own ``record_checksum``."""
    body = json.dumps({k: v for k, v in meta.items() if k != "record_checksum"}, sort_keys=True)
    return hashlib.blake2b(body.encode(), digest_size=16).hexdigest()


class Checkpoints:
    """Keep-last-k verified checkpoints under ``directory``, saved every ``every`` steps.

    ``writer``: this process trains in the folder (and holds its lock): it cleans up at
    start and moves damaged checkpoints aside. A reader (evaluation, ``load_model``)
    changes nothing in the folder: it skips damaged checkpoints with the same warning."""

    def __init__(self, directory: pathlib.Path, *, every: int, keep: int, writer: bool = True):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.every = every
        self.directory = pathlib.Path(directory).absolute()
        self.keep = keep
        self.writer = writer
        if writer:
            self._clean()
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )

    def _clean(self) -> None:
        """Remove what an interrupted save left, and the oldest checkpoints beyond ``keep``."""
        if not self.directory.is_dir():
            return
        for leftover in self.directory.glob(f"*{TMP_MARK}*"):
            print(f"note: removing {leftover.name}, left in {self.directory} by an interrupted save")
            shutil.rmtree(leftover, ignore_errors=True)
        steps = sorted((int(p.name) for p in self.directory.iterdir() if p.name.isdigit()), reverse=True)
        for step in steps[self.keep:]:
            shutil.rmtree(self.directory / str(step), ignore_errors=True)

    def latest_step(self) -> int | None:
        """The newest checkpoint's step, once every save in flight has finished."""
        self.manager.wait_until_finished()
        return self.manager.latest_step()

    def save(self, step: int, state, meta: dict) -> None:
        args = self._ocp.args
        meta = {**meta, "checksum": checksum(state)}
        meta["record_checksum"] = record_checksum(meta)  # so that damage to the record itself shows
        self.manager.save(step, args=args.Composite(state=args.StandardSave(state), meta=args.JsonSave(meta)),
                          force=True)

    def restore(self, like, step: int | None = None) -> tuple[object, dict]:
        """The newest intact checkpoint (or checkpoint ``step``) as ``(state, meta)``;
        ``like`` gives structure and shardings. The damaged ones newer than it are moved
        aside (by a writer) with a warning; with none intact, nothing is moved and
        :class:`DamagedCheckpoints` says what was wrong."""
        self.manager.wait_until_finished()
        steps = sorted(self.manager.all_steps(), reverse=True)
        if step is not None:
            if step not in steps:
                raise DamagedCheckpoints(f"no checkpoint {step} in {self.directory} (there are: {sorted(steps)})")
            steps = [step]
        problems = []
        for step in steps:
            try:
                state, meta = self._read(step, like)
            except Exception as e:  # noqa: BLE001 (any failure to read a checkpoint back is damage)
                problems.append((step, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]))
                continue
            for bad, reason in problems:
                where = f"moved to {self._set_aside(bad)}" if self.writer else "skipped"
                print(f"warning: checkpoint {bad} in {self.directory} is damaged ({reason}); {where}; "
                      f"resuming from checkpoint {step} instead")
            return state, meta
        raise DamagedCheckpoints(
            f"no intact checkpoint in {self.directory} ({'; '.join(f'step {s}: {r}' for s, r in problems)}). "
            f"Move or delete that folder to train from the start.")

    def _read(self, step: int, like) -> tuple[object, dict]:
        """Checkpoint ``step``, verified against its record: its step and checksum."""
        args = self._ocp.args
        abstract = jax.tree.map(self._ocp.utils.to_shape_dtype_struct, like)
        out = self.manager.restore(step, args=args.Composite(state=args.StandardRestore(abstract),
                                                             meta=args.JsonRestore()))
        meta = dict(out.meta)
        if "record_checksum" in meta or "checksum" in meta:  # (older checkpoints carry neither)
            if record_checksum(meta) != meta.get("record_checksum"):
                raise ValueError("its record (meta item) does not match the checksum saved with it")
            if checksum(out.state) != meta.get("checksum"):
                raise ValueError("its arrays do not match the checksum saved with them")
        if meta.get("step") != step:
            raise ValueError(f"its record names step {meta.get('step')!r}")
        return out.state, meta

    def _set_aside(self, step: int) -> pathlib.Path:
        """Move a damaged step out of Orbax's sight (kept for inspection, not deleted)."""
        target = self.directory.parent / "damaged_checkpoints" / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(self.directory / str(step)), target)
        self.manager.reload()
        return target

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
