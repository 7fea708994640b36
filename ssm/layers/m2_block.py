"""``M2Block``: M2's BERT layer (Fu et al., 2023), a sequence mixer without a residual
around it, then a GLU MLP with a post-norm residual."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from ssm.layers.block import max_len_option, state_options
from ssm.layers.mlp import GatedMLP
from ssm.layers.parts import make_norm


class M2Block(nnx.Module):
    """M2's BERT layer (HazyResearch/m2 ``BertLayer`` with Monarch Mixer sequence
    mixing and its ``BertGatedLinearUnitMLP``)::

        h = mixer(x)                                    # no norm before it, no residual around it
        [g, v] = h @ W_up                               # bias-free (M2's gated_layers)
        y = norm(h + (act(g) · v) @ W_down + b_down)    # dropout after the gate; post-norm residual

    The residual of the last line adds the mixer's output ``h``, not the block's input
    ``x``: nothing of ``x`` reaches ``y`` but through the mixer (M2's: through its
    projections, gates and skip ``D``).

    This is not the library's general block: :class:`~ssm.layers.ResidualBlock`
    (``SequenceModel(block="residual")``, the default) puts a residual around every
    sublayer, pre-norm by default (mamba_ssm's ``Block``), which keeps an identity path
    through a deep stack whatever the mixer; ``SequenceModel(block="m2")`` stacks this
    one, M2's own structure, for any sequence layer.

    Not part of this block, but of M2's BERT around it: position and token-type
    embeddings and a LayerNorm on the embeddings before the first layer
    (:class:`~ssm.layers.SequenceModel` has neither).

    Args:
      d_model: width d.
      mixer: a sequence layer ``(batch, length, d) -> (batch, length, d)`` taking
        ``mask=`` (M2's: :class:`~ssm.layers.MonarchMixer`); its
        ``init_state``/``step``/``prefill`` serve the block's own.
      expand: the MLP's hidden width ``expand · d`` (M2's ``intermediate_size``).
      linear: ``"dense"`` or ``"monarch"`` projections of the MLP (M2: one
        block-diagonal factor, ``BlockdiagLinear``; see :class:`~ssm.layers.GatedMLP`).
      nblocks: of Monarch projections.
      activation: of the gate, a name in ``ssm.layers.parts.ACTIVATIONS`` (M2's is the
        exact, erf, GELU).
      dropout: after the gate (M2's ``hidden_dropout_prob``).
      norm: ``"layer"`` (M2's LayerNorm) or ``"rms"``.
      norm_eps: its epsilon (M2's BERT configs: 1e-12).

    Parameters: the MLP's ``up`` (no bias) and ``down`` (with bias) as
    :class:`~ssm.layers.GatedMLP`'s; the norm's scale and bias ``no_decay``.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from flax import nnx
      >>> x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 4)), jnp.float32)  # (batch, length, d_model)
      >>> from ssm.layers import M2Block, MonarchMixer
      >>> rngs = nnx.Rngs(0)
      >>> block = M2Block(4, MonarchMixer(4, l_max=16, rngs=rngs), expand=2, linear="monarch", rngs=rngs)
      >>> block(x).shape, block.mlp.up.bias is None
      ((2, 16, 4), True)
    """

    def __init__(self, d_model: int, mixer: nnx.Module, *, expand: int = 4, linear: str = "dense",
                 nblocks: int | None = None, activation: str = "gelu", dropout: float = 0.0, norm: str = "layer",
                 norm_eps: float = 1e-6, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.mixer = mixer
        self.mlp = GatedMLP(d_model, expand=expand, activation=activation, linear=linear, nblocks=nblocks,
                            dropout=dropout, up_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm = make_norm(norm, d_model, eps=norm_eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def _mlp(self, h):
        """The GLU sublayer on the mixer's output: ``norm(h + mlp(h))``."""
        return self.norm(h + self.mlp(h))

    def __call__(self, x, mask=None, *, segment_ids=None, initial_state=None, return_state=False):
        """The block on a sequence.

        Args:
          x: (batch, length, d).
          mask: (batch, length) bool marking real tokens, or None; handed to the mixer,
            as are ``segment_ids``, ``initial_state`` and ``return_state`` (given only
            when set, so a mixer without them still runs).

        Returns:
          (batch, length, d); with ``return_state``, ``(y, state)``, the mixer's state.
        """
        out = self.mixer(x, mask=mask, **state_options(segment_ids, initial_state, return_state))
        h, state = out if return_state else (out, None)
        return (self._mlp(h), state) if return_state else self._mlp(h)

    def init_state(self, batch_size: int, max_len: int | None = None):
        """The mixer's :meth:`init_state` for ``batch_size`` sequences; ``max_len``:
        positions a KV cache must hold (attention; SSM mixers ignore it)."""
        return self.mixer.init_state(batch_size, **max_len_option(self.mixer, max_len))

    def step(self, x_t, state):
        """One position through the mixer's ``step``: ``x_t`` (batch, d) and the state ->
        ``(y_t (batch, d), state)``."""
        h, state = self.mixer.step(x_t, state)
        return self._mlp(h), state

    def prefill(self, x, max_len: int | None = None):
        """A prompt through the mixer's ``prefill``: ``x`` (batch, length, d) ->
        ``(y (batch, length, d), state)``; ``max_len`` as :meth:`init_state`."""
        h, state = self.mixer.prefill(x, **max_len_option(self.mixer, max_len))
        return self._mlp(h), state
