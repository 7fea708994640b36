"""Checkpoints of a run with Orbax: the training state (parameters, the rest of
the model state such as dropout RNG streams, optimizer state, metric accumulators)
and a JSON record of the step and data position."""

from __future__ import annotations

import pathlib

import jax


class Checkpoints:
    """Keep-last-k checkpoints under ``directory``, saved every ``every`` steps."""

    def __init__(self, directory: pathlib.Path, *, every: int, keep: int):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.every = every
        self.manager = ocp.CheckpointManager(
            pathlib.Path(directory).absolute(),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )

    def latest_step(self) -> int | None:
        """The newest checkpoint's step, once every save in flight has finished."""
        self.manager.wait_until_finished()
        return self.manager.latest_step()

    def save(self, step: int, state, meta: dict) -> None:
        args = self._ocp.args
        self.manager.save(step, args=args.Composite(state=args.StandardSave(state), meta=args.JsonSave(meta)),
                          force=True)

    def restore(self, like) -> tuple[object, dict]:
        """The latest checkpoint as ``(state, meta)``; ``like`` gives structure and shardings."""
        args = self._ocp.args
        abstract = jax.tree.map(self._ocp.utils.to_shape_dtype_struct, like)
        step = self.latest_step()
        out = self.manager.restore(step, args=args.Composite(state=args.StandardRestore(abstract),
                                                             meta=args.JsonRestore()))
        return out.state, dict(out.meta)

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
