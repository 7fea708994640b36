"""Parameter groups: which update, learning rate and weight decay each parameter gets.

One table serves the optimizers (``ssm.optim``) and the trainer:

| group      | parameters                                              | update            | lr     | weight decay |
|------------|---------------------------------------------------------|-------------------|--------|--------------|
| ``ssm``    | SSM dynamics: Lambda, P, B, log_dt; Mamba A_log, D, ... | AdamW, never Muon | ssm_lr | none         |
| ``ssm``    | long-convolution filters (M2's Hyena MLP), their skip  | AdamW, never Muon | ssm_lr | none         |
| ``matrix`` | dense matrices: projections, MLPs, Monarch blocks       | Muon or AdamW     | base   | base         |
| ``adamw``  | S4 C and D, depthwise conv kernels, embeddings, heads   | AdamW             | base   | base         |
| ``no_decay`` | norms, biases                                         | AdamW             | base   | none         |

Layers declare a parameter's group as Variable metadata,
``nnx.Param(value, group="ssm")``; untagged parameters fall back to the shape
rule (2-D or more: ``matrix``; else ``no_decay``). Optax never sees that metadata
reliably (``nnx.Optimizer`` and Linen hand it arrays), so :func:`param_labels` reads
the groups once from the model (an NNX module, its state, or a Linen ``params``
tree made through ``ssm.linen``) and returns a function that labels any tree with
the same paths: what ``optax.multi_transform`` takes.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from ssm.checks import check_choice

GROUPS: tuple[str, ...] = ("ssm", "matrix", "adamw", "no_decay")


def check_group(group: str) -> str:
    return check_choice("group", group, GROUPS)


def ssm_param_dtype(param_dtype):
    """The dtype a layer stores its ``ssm``-group parameters in: ``param_dtype``, but
    float32 at least. Rounding the dynamics (decay rates, step sizes, B, long filters)
    to bfloat16 costs far more than rounding a projection (S4D's output was 50% off),
    so, as Mamba's authors advise, they stay in float32 whatever ``param_dtype`` says."""
    return jnp.promote_types(param_dtype, jnp.float32)


def default_group(ndim: int) -> str:
    """The group of an untagged parameter with ``ndim`` dimensions."""
    return "matrix" if ndim >= 2 else "no_decay"


def _names(keypath) -> tuple:
    """A JAX key path as plain names, without the ``.value`` of Variables and boxes."""
    out = []
    for key in keypath:
        name = getattr(key, "key", getattr(key, "idx", getattr(key, "name", key)))
        if name != "value":
            out.append(name)
    return tuple(out)


def _is_variable_like(x) -> bool:
    from flax import nnx
    from flax.core import meta

    return isinstance(x, (nnx.Variable, meta.AxisMetadata))


def _group_of(leaf) -> str | None:
    metadata = leaf.get_metadata() if hasattr(leaf, "get_metadata") else getattr(leaf, "metadata", {})
    group = (metadata or {}).get("group")
    return None if group is None else check_group(group)


def group_table(tree) -> dict[tuple, str]:
    """``{path: group}`` for every tagged parameter of an NNX module or state, or of
    a Linen ``params`` tree (whose NNX Variables are boxed as ``NNXMeta``); in an NNX
    module, also the table of every ``nnx.Embed`` that carries no tag: ``adamw``, since
    a lookup table is no linear map for Muon to orthogonalize (Muon's own advice)."""
    from flax import nnx

    embeddings = []
    if isinstance(tree, nnx.Module):
        embeddings = [(*path, "embedding") for path, node in nnx.iter_graph(tree) if isinstance(node, nnx.Embed)]
        tree = nnx.state(tree, nnx.Param)
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_variable_like)[0]
    table = {}
    for path, leaf in leaves:
        group = _group_of(leaf)
        if group is not None:
            table[_names(path)] = group
    for path in embeddings:
        table.setdefault(path, "adamw")
    return table


def param_labels(model, override: Callable[[tuple, Any], str | None] | None = None):
    """A labelling function for ``optax.multi_transform``.

    Args:
      model: an NNX module or state, or a Linen ``params`` tree.
      override: optional ``(path, leaf) -> group or None``; a group it returns wins
        over the table (``None`` keeps the table's choice).

    Returns:
      ``labels(params)``: the tree of group names with ``params``' structure, for
      ``params`` as Optax sees it (plain arrays, NNX state, or Linen params).
    """
    table = group_table(model)

    def labels(params):
        def label(path, leaf):
            names = _names(path)
            if override is not None and (chosen := override(names, leaf)) is not None:
                return check_group(chosen)
            return table.get(names) or default_group(getattr(leaf, "ndim", 0))

        return jax.tree_util.tree_map_with_path(label, params)

    return labels
