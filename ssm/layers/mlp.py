"""``GatedMLP``: the channel mixer of a block (M2's dimension mixer, with Monarch
projections in place of its block-diagonal ones)."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from ssm.checks import check_choice, check_positive_int
from ssm.layers.parts import ACTIVATIONS, make_dropout, make_linear


class GatedMLP(nnx.Module):
    """``down(act(gate) * value)`` with ``[gate, value] = up(x)``: a GLU MLP mixing
    the features of each position (M2's ``BertGatedLinearUnitMLP``).

    Args:
      d_model: width d.
      expand: hidden width ``expand · d``.
      activation: a name in ``ssm.layers.parts.ACTIVATIONS`` (default ``"gelu"``, the exact
        erf form, as M2).
      linear: ``"dense"`` (``nnx.Linear``) or ``"monarch"`` (:class:`MonarchLinear`;
        M2 itself uses one block-diagonal factor without the permutation, a
        Monarch matrix with ``L = I``).
      nblocks: of the Monarch projections.
      dropout: after the gate (the only dropout of the sublayer, as M2).
      out_init_scale: multiplies ``down``'s initial kernel (of a Monarch ``down``, its
        ``R`` factor: ``W`` is linear in it). :class:`~ssm.layers.SequenceModel` sets it for
        Mamba language models (mamba_ssm's rescaling of ``fc2``).
      up_bias: ``up`` has a bias (M2's ``gated_layers`` has none; ``down`` always has one).

    Parameters: ``up`` (d → 2·expand·d) and ``down`` (expand·d → d), group
    ``matrix``; their biases ``no_decay``.

    Dauphin et al. (2017), "Language Modeling with Gated Convolutional Networks" (the
    GLU); Fu et al. (2023), "Monarch Mixer".

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from flax import nnx
      >>> x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 4)), jnp.float32)  # (batch, length, d_model)
      >>> from ssm.layers import GatedMLP
      >>> mlp = GatedMLP(4, expand=2, linear="monarch", rngs=nnx.Rngs(0))
      >>> mlp(x).shape  # position-wise: any leading axes
      (2, 16, 4)
    """

    def __init__(self, d_model: int, *, expand: int = 4, activation: str = "gelu", linear: str = "dense",
                 nblocks: int | None = None, dropout: float = 0.0, out_init_scale: float = 1.0,
                 up_bias: bool = True, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.d_model = check_positive_int("d_model", d_model)
        self.hidden = d_model * check_positive_int("expand", expand)
        check_choice("activation", activation, ACTIVATIONS)
        self.activation = activation
        kw = dict(nblocks=nblocks, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.up = make_linear(linear, d_model, 2 * self.hidden, use_bias=bool(up_bias), **kw)
        self.down = make_linear(linear, self.hidden, d_model, **kw)
        if out_init_scale != 1:
            kernel = self.down.kernel if linear == "dense" else self.down.R
            kernel[...] = kernel[...] * out_init_scale
        self.dropout = make_dropout(dropout, rngs)

    def __call__(self, x):
        """Mix the features of each position.

        Args:
          x: (..., d_model).

        Returns:
          (..., d_model), in ``dtype`` (by default promoted from ``x`` and the parameters).
        """
        if x.ndim < 1 or x.shape[-1] != self.d_model:
            raise ValueError(f"x has shape {x.shape}; expected (..., {self.d_model})")
        gate, value = jnp.split(self.up(x), 2, axis=-1)
        return self.down(self.dropout(ACTIVATIONS[self.activation](gate) * value))
