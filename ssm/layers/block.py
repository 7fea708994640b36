"""Residual block around any sequence layer (a "mixer")."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ssm.checks import check_choice
from ssm.layers.parts import ACTIVATIONS, make_dropout, make_norm

POSTS: tuple[str | None, ...] = ("glu", "linear", None)


def max_len_option(mixer: nnx.Module, max_len: int | None) -> dict:
    """``{"max_len": max_len}`` for a mixer whose state a length sizes (a KV cache; its
    class sets ``state_takes_max_len = True``, as :class:`~ssm.layers.Attention`); SSM
    states need none: ``{}``."""
    return {"max_len": max_len} if getattr(mixer, "state_takes_max_len", False) and max_len is not None else {}


def state_options(segment_ids, initial_state, return_state: bool) -> dict:
    """The keyword arguments a block hands its mixer: ``segment_ids``,
    ``initial_state`` and ``return_state`` only when set, so a mixer without them runs."""
    passing = {name: value for name, value in (("segment_ids", segment_ids), ("initial_state", initial_state))
               if value is not None}
    return {**passing, "return_state": True} if return_state else passing


class ResidualBlock(nnx.Module):
    """``x + post(mixer(norm(x)))`` (pre-norm) or ``norm(x + post(mixer(x)))``,
    then, with an ``mlp``, a second sublayer ``x + mlp(norm2(x))`` (or
    ``norm2(x + mlp(x))``), as mamba_ssm's ``Block``: the library's general block,
    with a residual around every sublayer. M2's BERT layer is another structure (no
    residual around its mixer, a bias-free gated projection): :class:`~ssm.layers.M2Block`.

    ``post`` is what S4 puts after its SSM: activation, dropout, then an output
    projection, ``"glu"`` (Linear d -> 2d and a gated linear unit, S4's default)
    or ``"linear"``; ``None`` for mixers that project their own output (Mamba).

    Args:
      d_model: width d.
      mixer: a sequence layer ``(batch, length, d) -> (batch, length, d)`` taking
        ``mask=``; its ``init_state``/``step``/``prefill`` serve the block's own.
      norm: ``"layer"`` or ``"rms"``.
      prenorm: normalize before the mixer.
      activation: one of :data:`ACTIVATIONS`.
      post: ``"glu"``, ``"linear"`` or None (above).
      dropout: rate after the activation and after the projection.
      mlp: a position-wise module (d -> d), e.g. :class:`~ssm.layers.GatedMLP`, or None.
      norm_eps: epsilon of the norms (Flax's 1e-6; Mamba's references 1e-5).
      residual_in_fp32: the stream ``x`` this block adds to is float32 at least, and
        so is its output, whatever the activations' dtype (mamba_ssm's ``Block``,
        Hugging Face's ``residual_in_fp32``); the norm still hands the mixer
        ``dtype`` activations.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from flax import nnx
      >>> x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 4)), jnp.float32)  # (batch, length, d_model)
      >>> from ssm.layers import ResidualBlock, S4D
      >>> rngs = nnx.Rngs(0)
      >>> block = ResidualBlock(4, S4D(4, d_state=8, rngs=rngs), rngs=rngs)
      >>> block(x).shape
      (2, 16, 4)
    """

    def __init__(
        self,
        d_model: int,
        mixer: nnx.Module,
        *,
        norm: str = "layer",
        prenorm: bool = True,
        activation: str = "gelu",
        post: str | None = "glu",
        dropout: float = 0.0,
        mlp: nnx.Module | None = None,
        norm_eps: float = 1e-6,
        residual_in_fp32: bool = False,
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        check_choice("activation", activation, tuple(ACTIVATIONS))
        check_choice("post", post, POSTS)
        self.mixer = mixer
        self.norm = make_norm(norm, d_model, eps=norm_eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.prenorm = prenorm
        self.residual_in_fp32 = bool(residual_in_fp32)
        self.activation = activation
        self.post = post
        width = 2 * d_model if post == "glu" else d_model
        self.out = (nnx.Linear(d_model, width, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                    if post is not None else None)
        self.dropout = make_dropout(dropout, rngs)
        self.mlp = mlp
        self.norm2 = (make_norm(norm, d_model, eps=norm_eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                      if mlp is not None else None)

    def _post(self, h):
        if self.out is None:
            return self.dropout(h)
        h = self.out(self.dropout(ACTIVATIONS[self.activation](h)))
        if self.post == "glu":
            a, b = jnp.split(h, 2, axis=-1)
            h = a * jax.nn.sigmoid(b)
        return self.dropout(h)

    def _residual(self, x, h, norm):
        """Add a sublayer's output ``h`` to the stream (post-norm: then normalize)."""
        if self.residual_in_fp32:
            x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        x = x + h
        return x if self.prenorm else norm(x)

    def _mlp(self, x):
        """The position-wise sublayer, if any: (..., d) -> (..., d)."""
        if self.mlp is None:
            return x
        h = self.mlp(self.norm2(x) if self.prenorm else x)  # the MLP applies its own dropout
        return self._residual(x, h, self.norm2)

    def __call__(self, x, mask=None, *, segment_ids=None, initial_state=None, return_state=False):
        """The block on a sequence.

        Args:
          x: (batch, length, d).
          mask: (batch, length) bool marking real tokens, or None; handed to the mixer,
            as are ``segment_ids``, ``initial_state`` and ``return_state``
            (module :mod:`ssm.layers.segments`; given only when set, so a mixer
            without them still runs).

        Returns:
          (batch, length, d) (float32 at least with ``residual_in_fp32``); with
          ``return_state``, ``(y, state)``, the mixer's state.
        """
        passing = state_options(segment_ids, initial_state, return_state)
        out = self.mixer(self.norm(x) if self.prenorm else x, mask=mask, **passing)
        h, state = out if return_state else (out, None)
        y = self._mlp(self._residual(x, self._post(h), self.norm))
        return (y, state) if return_state else y

    def init_state(self, batch_size: int, max_len: int | None = None):
        """The mixer's :meth:`init_state` for ``batch_size`` sequences; ``max_len``:
        positions a KV cache must hold (attention; SSM mixers ignore it)."""
        return self.mixer.init_state(batch_size, **max_len_option(self.mixer, max_len))

    def step(self, x_t, state):
        """One position through the mixer's ``step``: ``x_t`` (batch, d) and the state ->
        ``(y_t (batch, d), state)``."""
        h, state = self.mixer.step(self.norm(x_t) if self.prenorm else x_t, state)
        return self._mlp(self._residual(x_t, self._post(h), self.norm)), state

    def prefill(self, x, max_len: int | None = None):
        """A prompt through the mixer's ``prefill``: ``x`` (batch, length, d) ->
        ``(y (batch, length, d), state)``; ``max_len`` as :meth:`init_state`."""
        h, state = self.mixer.prefill(self.norm(x) if self.prenorm else x,
                                      **max_len_option(self.mixer, max_len))
        return self._mlp(self._residual(x, self._post(h), self.norm)), state
