"""``SequenceModel``: encoder, a stack of residual blocks, and a head."""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
from flax import nnx

from ssm.checks import check_choice, check_positive, check_positive_int
from ssm.layers.attention import Attention
from ssm.layers.block import ResidualBlock
from ssm.layers.lstm import LSTM
from ssm.layers.m2_block import M2Block
from ssm.layers.mamba import Mamba
from ssm.layers.mamba2 import Mamba2
from ssm.layers.mlp import GatedMLP
from ssm.layers.monarch_mixer import MonarchMixer
from ssm.layers.parts import LINEARS, make_norm
from ssm.layers.s4 import S4
from ssm.layers.s4d import S4D
from ssm.layers.unbatched import accepts_unbatched, check_batched

#: Sequence layers a config can name. Each is built as ``cls(d_model, **layer_kwargs, rngs=...)``.
LAYERS: dict[str, type[nnx.Module]] = {"s4": S4, "s4d": S4D, "mamba": Mamba, "mamba2": Mamba2, "m2": MonarchMixer,
                                       "attention": Attention, "lstm": LSTM}
MLPS: tuple[str | None, ...] = (None, *LINEARS)
#: Layers whose models SequenceModel builds as mamba_ssm's language model
#: (``models/mixer_seq_simple.py``): its initialization and norm epsilon.
MAMBA_LM_LAYERS: tuple[str, ...] = ("mamba", "mamba2")
POOLS: tuple[str | None, ...] = (None, "mean", "last")
BLOCKS: tuple[str, ...] = ("residual", "m2")  # the ``block`` structures: ResidualBlock, M2Block


def example_dims(model: SequenceModel) -> tuple:
    """One example of ``model``'s input, without the batch axis: token ids (length,)
    or features (length, d_input)."""
    return ("length",) if isinstance(model.encoder, nnx.Embed) else ("length", model.encoder.in_features)


def _check_m2_block(*, prenorm: bool, post: str | None, mlp: str | None, residual_in_fp32: bool) -> None:
    """A ValueError for each ``SequenceModel`` argument that contradicts ``block="m2"``
    (M2's post-norm layer with its GLU MLP and nothing after its mixer)."""
    if prenorm:
        raise ValueError("prenorm=True with block='m2': M2's layer is post-norm (it normalizes its output); "
                         "set prenorm=False")
    if post is not None:
        raise ValueError(f"post={post!r} with block='m2': M2's layer has no projection after its mixer; set post=None")
    if mlp is None:
        raise ValueError("mlp=None with block='m2': M2's layer ends in its GLU MLP; set mlp='dense' or 'monarch'")
    if residual_in_fp32:
        raise ValueError("residual_in_fp32=True with block='m2': M2's layer keeps no residual stream of its own; "
                         "set residual_in_fp32=False")


class SequenceModel(nnx.Module):
    """Embedding (or linear encoder) -> ``n_layers`` residual blocks -> head.

    Token ids must lie in [0, vocab_size): the embedding is a ``jnp.take``, which
    gives NaN for an id beyond the vocabulary and wraps -1 to its last row (the
    trainer checks every dataset's ids once, when it is built).

    Inputs are token ids (batch, length) when ``vocab_size`` is set, else
    features (batch, length, d_input). With ``pool=None`` the output is per
    position, (batch, length, d_output) (language modelling, sequence-to-sequence);
    with ``"mean"`` (over real tokens) or ``"last"`` (last real token) it is
    (batch, d_output) (classification, regression). One example without the batch
    axis, (length,) ids or (length, d_input), gives the output without it.

    Args:
      d_model: width of the residual stream.
      n_layers: residual blocks.
      d_output: outputs per position (or per sequence when pooled).
      vocab_size: token inputs: ids in [0, vocab_size); give it or ``d_input``.
      d_input: feature inputs of this width; give it or ``vocab_size``.
      layer: a name in :data:`LAYERS`.
      layer_kwargs: its options (an ``out_init_scale`` given here overrides the
        rescaling below for the layer, not for the MLP).
      block: ``"residual"``: every block a :class:`ResidualBlock`, the library's
        general block (a residual around each sublayer, pre-norm by default, as
        mamba_ssm's); ``"m2"``: every block an :class:`M2Block`, M2's BERT layer (no
        residual around the mixer, then a post-norm GLU MLP with a bias-free gated
        projection). ``"m2"`` needs ``prenorm=False`` (the layer normalizes its
        output; no final norm), ``post=None``, an ``mlp`` and no ``residual_in_fp32``;
        M2's BERT: ``layer="m2", block="m2", prenorm=False, post=None,
        mlp="monarch"``, the exact GELU and ``norm_eps=1e-12``.
      norm, prenorm, activation, post, dropout: of each :class:`ResidualBlock`
        (a Mamba LM: ``norm="rms", post=None``); of an :class:`M2Block`, ``norm``,
        ``activation`` (of its gate) and ``dropout``.
      mlp: None, or a :class:`GatedMLP` sublayer in every block with ``"dense"`` or
        ``"monarch"`` projections (M2 in the library's block: ``layer="m2", post=None,
        mlp="monarch"``).
      mlp_expand: its hidden width in multiples of d_model.
      pool: ``None``, ``"mean"`` or ``"last"``.
      tie_embeddings: the head is the transposed embedding (token inputs and
        ``d_output == vocab_size`` only), as in the Mamba LM.
      head_bias: an untied head has a bias (Hugging Face's untied ``lm_head`` has none).
      norm_eps: epsilon of every block's norms and of the final norm; None: 1e-5 for
        ``layer="mamba"`` and ``"mamba2"`` (mamba_ssm's and Hugging Face's), else 1e-6
        (Flax's default).
      embedding_std: the token embedding's initial standard deviation; None: 0.02 for
        ``layer="mamba"`` and ``"mamba2"`` (below), else Flax's default, 1/sqrt(d_model).
        Small Mamba models may learn faster from the larger one: at width 64,
        ``notebooks/selective_scan.ipynb`` copies 60% after 700 steps with 0.02 and 77%
        with 1/sqrt(64).
      residual_in_fp32: of each :class:`ResidualBlock`: the residual stream stays in
        float32 when activations are bf16 (mamba_ssm's and Hugging Face's option).

    Parameter groups: the embedding (or the feature encoder's matrix) and the head are
    ``adamw`` (never Muon).

    Mamba and Mamba-2 models (``layer="mamba"`` or ``"mamba2"``) start as mamba_ssm's
    language model (``mixer_seq_simple.py``, ``_init_weights``): the embedding is drawn
    N(0, 0.02^2) (unless ``embedding_std`` says otherwise), and the output projection of every residual branch (the layer's
    ``out_proj`` and the MLP's ``down``) is its usual draw divided by
    ``sqrt(n_residuals * n_layers)``, with 2 residuals per block with an MLP, else 1
    (GPT-2's rescaling of pre-norm residual branches). Other layers keep Flax's
    embedding, N(0, 1/d_model), and unscaled projections: changing them would change
    their shipped results with no reference to match. The MLP itself is
    this library's :class:`GatedMLP` (Flax's lecun-normal projections, ``[gate,
    value]``), not mamba_ssm's (PyTorch's uniform ones, ``[value, gate]``, SiLU).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from ssm.layers import SequenceModel
      >>> model = SequenceModel(d_model=4, n_layers=2, d_output=10, vocab_size=10, layer="s4d",
      ...                       layer_kwargs=dict(d_state=8), rngs=nnx.Rngs(0))
      >>> ids = jnp.arange(32).reshape(2, 16) % 10  # (batch, length) token ids
      >>> logits = model(ids)
      >>> logits.shape, logits.dtype
      ((2, 16, 10), dtype('float32'))
    """

    def __init__(
        self,
        *,
        d_model: int,
        n_layers: int,
        d_output: int,
        vocab_size: int | None = None,
        d_input: int | None = None,
        layer: str = "s4d",
        layer_kwargs: dict[str, Any] | None = None,
        block: str = "residual",
        norm: str = "layer",
        prenorm: bool = True,
        activation: str = "gelu",
        post: str | None = "glu",
        dropout: float = 0.0,
        mlp: str | None = None,
        mlp_expand: int = 4,
        pool: str | None = None,
        tie_embeddings: bool = False,
        head_bias: bool = True,
        norm_eps: float | None = None,
        embedding_std: float | None = None,
        residual_in_fp32: bool = False,
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        check_positive_int("d_model", d_model)
        check_positive_int("n_layers", n_layers)
        check_positive_int("d_output", d_output)
        if (vocab_size is None) == (d_input is None):
            raise ValueError(f"give exactly one of vocab_size={vocab_size!r} and d_input={d_input!r}")
        check_choice("layer", layer, LAYERS)
        check_choice("mlp", mlp, MLPS)
        check_choice("pool", pool, POOLS)
        check_choice("block", block, BLOCKS)
        if block == "m2":
            _check_m2_block(prenorm=prenorm, post=post, mlp=mlp, residual_in_fp32=residual_in_fp32)
        if tie_embeddings and (vocab_size is None or d_output != vocab_size):
            raise ValueError(f"tie_embeddings needs token inputs and d_output == vocab_size; got "
                             f"vocab_size={vocab_size!r}, d_output={d_output!r}")
        layer_kwargs = dict(layer_kwargs or {})
        mamba_lm = layer in MAMBA_LM_LAYERS
        if norm_eps is None:
            norm_eps = 1e-5 if mamba_lm else 1e-6
        residual_scale = 1 / math.sqrt((1 if mlp is None else 2) * n_layers) if mamba_lm else 1.0
        if mamba_lm:
            layer_kwargs.setdefault("out_init_scale", residual_scale)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        if vocab_size is not None:
            if embedding_std is None:
                embedding_std = 0.02 if mamba_lm else None
            else:
                embedding_std = check_positive("embedding_std", embedding_std)
            embedding_init = ({} if embedding_std is None else
                              {"embedding_init": nnx.initializers.normal(embedding_std)})
            self.encoder = nnx.Embed(check_positive_int("vocab_size", vocab_size), d_model,
                                     embedding_metadata={"group": "adamw"}, **embedding_init, **kw)
        else:
            self.encoder = nnx.Linear(check_positive_int("d_input", d_input), d_model,
                                      kernel_metadata={"group": "adamw"}, **kw)

        def make_mlp():
            if mlp is None:
                return None
            return GatedMLP(d_model, expand=mlp_expand, activation=activation, linear=mlp, dropout=dropout,
                            out_init_scale=residual_scale, **kw)

        def make_block():
            mixer = LAYERS[layer](d_model, **layer_kwargs, **kw)
            if block == "m2":
                return M2Block(d_model, mixer, expand=mlp_expand, linear=mlp, activation=activation, dropout=dropout,
                               norm=norm, norm_eps=norm_eps, **kw)
            return ResidualBlock(d_model, mixer, norm=norm, prenorm=prenorm, activation=activation, post=post,
                                 dropout=dropout, mlp=make_mlp(), norm_eps=norm_eps,
                                 residual_in_fp32=residual_in_fp32, **kw)

        self.blocks = nnx.List([make_block() for _ in range(n_layers)])
        self.final_norm = make_norm(norm, d_model, eps=norm_eps, **kw) if prenorm else None
        self.head = (None if tie_embeddings else
                     nnx.Linear(d_model, d_output, use_bias=head_bias, kernel_metadata={"group": "adamw"}, **kw))
        self.pool = pool

    def _logits(self, h):
        """Final norm and head; logits in float32 at least (float64 if h is)."""
        if self.final_norm is not None:
            h = self.final_norm(h)
        h = self.encoder.attend(h) if self.head is None else self.head(h)
        return h.astype(jnp.promote_types(h.dtype, jnp.float32))

    @accepts_unbatched(example_dims)
    def __call__(self, x, mask=None, *, segment_ids=None, initial_state=None, return_state=False):
        """The model on a batch (or one example).

        Args:
          x: (batch, length) int ids, or (batch, length, d_input) features; one
            example: (length,) ids or (length, d_input).
          mask: (batch, length) (or (length,)) bool marking real tokens, or None.
          segment_ids: (batch, length) (or (length,)) int, or None: packed documents,
            which never see each other (module :mod:`ssm.layers.segments`); every
            layer but M2's takes them. ``pool=None`` only.
          initial_state: the state before position 0, as :meth:`init_state`,
            :meth:`step` or :meth:`prefill` make it (one per block), or None;
            ``pool=None`` only.
          return_state: also return the state after the last real position.

        Returns:
          (batch, length, d_output), or (batch, d_output) when pooled; float32 at
          least. One example gives (length, d_output) or (d_output,). With
          ``return_state``, ``(logits, state)``, the state of :meth:`step`'s type:
          ``y1, s = model(x[:, :t], return_state=True)`` then
          ``model(x[:, t:], initial_state=s)`` gives ``model(x)[:, t:]``.
        """
        if segment_ids is not None and self.pool is not None:
            raise ValueError(f"segment_ids with pool={self.pool!r}: a pooled output would mix the packed "
                             "documents; pack per-position models (pool=None)")
        if initial_state is not None or return_state:
            self._check_recurrent()
        if initial_state is not None and (not isinstance(initial_state, (list, tuple))
                                          or len(initial_state) != len(self.blocks)):
            raise ValueError(f"initial_state must hold one state per block ({len(self.blocks)}), as init_state "
                             f"makes it; got {type(initial_state).__name__}")
        h = self.encoder(x)
        states = []
        for i, block in enumerate(self.blocks):
            out = block(h, mask=mask, segment_ids=segment_ids, return_state=return_state,
                        initial_state=None if initial_state is None else initial_state[i])
            h, s = out if return_state else (out, None)
            states.append(s)
        if return_state:
            return self._logits(h), states
        if self.pool == "mean":
            w = jnp.ones(h.shape[:2], h.dtype) if mask is None else mask.astype(h.dtype)
            h = jnp.einsum("bl,bld->bd", w, h) / jnp.maximum(w.sum(1, keepdims=True), 1)
        elif self.pool == "last":
            last = h.shape[1] - 1 if mask is None else jnp.maximum(mask.sum(1) - 1, 0)
            h = h[jnp.arange(h.shape[0]), last]
        return self._logits(h)

    # Recurrent inference (pool=None only) -------------------------------------------
    def _check_recurrent(self):
        if self.pool is not None:
            raise ValueError(f"pool={self.pool!r}: a pooled model has no per-step output; use pool=None")

    def init_state(self, batch_size: int, max_len: int | None = None):
        """One state per block (a list), for ``batch_size`` sequences; ``max_len``: the
        longest sequence (prompt plus generated tokens) a KV cache must hold, needed by
        attention layers only. ``pool=None`` only."""
        self._check_recurrent()
        return [block.init_state(batch_size, max_len) for block in self.blocks]

    def step(self, x_t, state):
        """One position through every block.

        Args:
          x_t: (batch,) int ids or (batch, d_input); the batch axis is required, as the
            state's (see :meth:`init_state`): one example is a batch of one.
          state: as :meth:`init_state` or :meth:`prefill` makes it.

        Returns:
          ``(logits, state)``: logits (batch, d_output), float32 at least.
        """
        self._check_recurrent()
        check_batched("x_t", x_t, ("batch", *example_dims(self)[1:]))
        h = self.encoder(x_t)
        new_state = []
        for block, s in zip(self.blocks, state):
            h, s = block.step(h, s)
            new_state.append(s)
        return self._logits(h), new_state

    def prefill(self, x, max_len: int | None = None):
        """Run a prompt: ``x`` (batch, length) ids or (batch, length, d_input) ->
        ``(logits (batch, length, d_output), state)``, float32 logits at least; ``max_len``
        as :meth:`init_state` (attention: default the prompt's length). The batch axis
        is required, as in :meth:`step`."""
        self._check_recurrent()
        check_batched("x", x, ("batch", *example_dims(self)))
        h = self.encoder(x)
        state = []
        for block in self.blocks:
            h, s = block.prefill(h, max_len)
            state.append(s)
        return self._logits(h), state
