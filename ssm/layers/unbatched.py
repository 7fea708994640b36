"""One example without its batch axis: a sequence layer's ``__call__`` takes ``x``
(length, d_model) as well as (batch, length, d_model), so ``layer(x_single)`` and
``jax.vmap(lambda x: layer(x))(xs)`` both work.

:func:`accepts_unbatched` decorates ``__call__(self, x, mask=None, **kwargs)``: an
``x`` with one axis fewer than the batched form runs as a batch of one (``mask``
(length,) likewise) and its output comes back without the batch axis. Batched
inputs pass through untouched, so the layer's own checks speak for them.

Recurrent inference (``init_state``/``step``/``prefill``) keeps the batch axis: its
state is built for ``batch_size`` examples (and an attention cache's position is
shared by the batch), so one example there is a batch of one; :func:`check_batched`
says so when the axis is missing.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import numpy as np

Dims = tuple[Any, ...]  # an example's dimensions: names ("length") or sizes (8)


def model_width(layer) -> Dims:
    """The example of a sequence layer: (length, d_model)."""
    return ("length", layer.d_model)


def describe(dims: Dims) -> str:
    """``("length", 8)`` -> ``"(length, 8)"``; one entry keeps Python's comma."""
    return "(" + ", ".join(map(str, dims)) + ("," if len(dims) == 1 else "") + ")"


def _matches(shape: tuple[int, ...], dims: Dims) -> bool:
    """The sizes given in ``dims`` (the ints) are those of ``shape``."""
    return len(shape) == len(dims) and all(not isinstance(d, int) or d == s for s, d in zip(shape, dims))


def check_batched(name: str, x, dims: Dims) -> None:
    """Raise unless ``x`` has the batched shape ``dims`` (its ints exactly): for
    recurrent inference, whose state keeps the batch axis."""
    if not _matches(np.shape(x), dims):
        raise ValueError(f"{name} has shape {np.shape(x)}; expected {describe(dims)} (recurrent inference "
                         "keeps the batch axis, as its state does: one example is a batch of one)")


def accepts_unbatched(example: Callable[[Any], Dims] = model_width):
    """Decorate a layer's ``__call__(self, x, mask=None, **kwargs)`` so it also runs
    on one example.

    Args:
      example: ``layer -> dims`` of one example without the batch axis, e.g.
        ``("length", d_model)`` (the default, from ``layer.d_model``) or
        ``("length",)`` for token ids.

    ``x`` of ``len(dims)`` axes is one example: it must match ``dims``, ``mask`` and
    ``segment_ids`` must be None or (length,), state passing (``initial_state``,
    ``return_state``) is refused (a state keeps its batch axis), and every leaf of the
    output loses its leading batch axis of one. ``x`` of ``len(dims) + 1`` axes is a batch and goes to the layer as it
    is; any other number of axes raises a ``ValueError`` naming both forms.
    """

    def decorate(call):
        @functools.wraps(call)
        def wrapper(self, x, mask=None, **kwargs):
            dims = example(self)
            shape = np.shape(x)
            if len(shape) == len(dims) + 1:
                return call(self, x, mask, **kwargs)
            if not _matches(shape, dims):
                raise ValueError(f"x has shape {shape}; expected {describe(('batch', *dims))} "
                                 f"or, one example, {describe(dims)}")
            for name, value in (("mask", mask), ("segment_ids", kwargs.get("segment_ids"))):
                if value is not None and np.shape(value) != shape[:1]:
                    raise ValueError(f"{name} has shape {np.shape(value)}; expected {shape[:1]} (length,) "
                                     f"for x {shape} without a batch axis")
            for name, given in (("initial_state", kwargs.get("initial_state") is not None),
                                ("return_state", bool(kwargs.get("return_state")))):
                if given:
                    raise ValueError(f"{name} needs the batch axis, as the state keeps it: x has shape {shape}; "
                                     f"pass x[None] {describe(('batch', *dims))}, one example a batch of one")
            if kwargs.get("segment_ids") is not None:
                kwargs = {**kwargs, "segment_ids": jax.numpy.asarray(kwargs["segment_ids"])[None]}
            out = call(self, x[None], None if mask is None else mask[None], **kwargs)
            return jax.tree.map(lambda y: y[0], out)

        return wrapper

    return decorate
