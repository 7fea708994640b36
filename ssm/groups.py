"""Parameter groups: which update, learning rate and weight decay each parameter gets.

One table serves the optimizers (``ssm.optim``) and the trainer:

==============  ========================================================  ==================  ==========  ============
group           parameters                                                update              lr          weight decay
==============  ========================================================  ==================  ==========  ============
``ssm``         SSM dynamics: Lambda, P, B, log_dt; Mamba A_log, D, ...   AdamW, never Muon   ssm_lr      none
``ssm``         long-convolution filters (M2's Hyena MLP), their skip     AdamW, never Muon   ssm_lr      none
``matrix``      dense matrices: projections, MLPs, Monarch blocks         Muon or AdamW       base        base
``adamw``       S4 C and D, depthwise conv kernels, embeddings, heads     AdamW               base        base
``no_decay``    norms, biases                                             AdamW               base        none
==============  ========================================================  ==================  ==========  ============

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

__all__ = ["GROUPS", "ssm_param_dtype", "default_group", "group_table", "param_labels"]

GROUPS: tuple[str, ...] = ("ssm", "matrix", "adamw", "no_decay")  #: The parameter groups (the table above).


def _check_group(group: str) -> str:
    """``group`` if it is one of :data:`GROUPS`, else a ValueError naming it."""
    return check_choice("group", group, GROUPS)


def ssm_param_dtype(param_dtype):
    """The dtype a layer stores its ``ssm``-group parameters in: ``param_dtype``, but
    float32 at least. Rounding the dynamics (decay rates, step sizes, B, long filters)
    to bfloat16 costs far more than rounding a projection (S4D's output was 50% off),
    so, as Mamba's authors advise, they stay in float32 whatever ``param_dtype`` says.

    Args:
      param_dtype: the layer's parameter dtype.

    Returns:
      A NumPy dtype: float32 or wider.

    Example:
      >>> import jax.numpy as jnp
      >>> from ssm.groups import ssm_param_dtype
      >>> ssm_param_dtype(jnp.bfloat16), ssm_param_dtype(jnp.float64)
      (dtype('float32'), dtype('float64'))
    """
    return jnp.promote_types(param_dtype, jnp.float32)


def default_group(ndim: int) -> str:
    """The group of an untagged parameter with ``ndim`` dimensions: ``"matrix"`` for 2
    or more, else ``"no_decay"`` (a bias, a norm's scale).

    Args:
      ndim: the parameter's number of dimensions.

    Returns:
      A name in :data:`GROUPS`.

    Example:
      >>> from ssm.groups import default_group
      >>> default_group(2), default_group(1)
      ('matrix', 'no_decay')
    """
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
    return None if group is None else _check_group(group)


def group_table(tree) -> dict[tuple, str]:
    """``{path: group}`` for every tagged parameter of an NNX module or state, or of
    a Linen ``params`` tree (whose NNX Variables are boxed as ``NNXMeta``); in an NNX
    module, also the table of every ``nnx.Embed`` that carries no tag: ``adamw``, since
    a lookup table is no linear map for Muon to orthogonalize (Muon's own advice).

    Args:
      tree: an ``nnx.Module``, its ``nnx.State``, or a Linen ``params`` tree.

    Returns:
      A dict from paths (tuples of attribute names and indices, without ``value``) to
      group names; untagged parameters are not in it.

    Example:
      >>> from flax import nnx
      >>> from ssm.groups import group_table
      >>> from ssm.layers import S4D
      >>> table = group_table(S4D(4, d_state=8, rngs=nnx.Rngs(0)))
      >>> table[("B",)], table[("C",)]
      ('ssm', 'adamw')
    """
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

    Example:
      >>> from flax import nnx
      >>> from ssm.groups import param_labels
      >>> from ssm.layers import S4D
      >>> layer = S4D(4, d_state=8, rngs=nnx.Rngs(0))
      >>> labels = param_labels(layer)
      >>> labels(nnx.to_pure_dict(nnx.state(layer, nnx.Param)))  # e.g. for optax.multi_transform
      {'A_imag': 'ssm', 'B': 'ssm', 'C': 'adamw', 'D': 'adamw', 'log_A_real': 'ssm', 'log_dt': 'ssm'}
    """
    table = group_table(model)

    def labels(params):
        def label(path, leaf):
            names = _names(path)
            if override is not None and (chosen := override(names, leaf)) is not None:
                return _check_group(chosen)
            return table.get(names) or default_group(getattr(leaf, "ndim", 0))

        return jax.tree_util.tree_map_with_path(label, params)

    return labels
