"""``Attention``: causal (or bidirectional) multi-head softmax attention with rotary
position embeddings and a KV cache: the Transformer baseline of the memory benchmarks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import nnx

from ssm.attention import apply_rope, dot_product_attention
from ssm.checks import check_positive_int, check_sequence, check_token
from ssm.layers.segments import check_segment_ids, check_state, last_real
from ssm.layers.unbatched import accepts_unbatched


class Attention(nnx.Module):
    """Multi-head self-attention: ``x`` (batch, length, d_model) or (length, d_model) -> same shape.

    ``qkv`` (d -> 3d) splits into ``n_heads`` heads of ``d / n_heads``; queries and
    keys are rotated by RoPE (:func:`ssm.attention.apply_rope`), so scores depend only
    on distances and any length runs (no maximum, no learned positions); softmax
    attention (:func:`ssm.attention.dot_product_attention`, blocked for long inputs);
    ``out`` (d -> d). In :class:`~ssm.layers.SequenceModel` with ``post=None,
    mlp="dense"`` it makes the usual pre-norm Transformer block.

    Recurrent inference keeps a KV cache of fixed size: ``init_state(batch_size,
    max_len)`` holds ``max_len`` positions, and each :meth:`step` attends over the
    ones filled so far (cost O(max_len) per token, where an SSM's step is O(1)).

    Args:
      d_model: width d.
      n_heads: heads (must divide d; the head width must be even).
      bidirectional: attend to the whole sequence (classification); no recurrence.
      rope_base: RoPE's base wavelength.
      use_bias: biases in the projections (off, as in most current models).

    Parameters: ``qkv.kernel`` (d, 3d), ``out.kernel`` (d, d): group ``matrix``;
    biases ``no_decay``.

    Vaswani et al. (2017), "Attention Is All You Need"; RoPE: Su et al. (2021), RoFormer.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from flax import nnx
      >>> x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 4)), jnp.float32)  # (batch, length, d_model)
      >>> from ssm.layers import Attention
      >>> layer = Attention(4, n_heads=2, rngs=nnx.Rngs(0))
      >>> y = layer(x)
      >>> y.shape, y.dtype
      ((2, 16, 4), dtype('float32'))
    """

    #: Its state is sized by a length (a KV cache of ``max_len`` positions): :meth:`init_state`
    #: and :meth:`prefill` take ``max_len``, and the blocks hand theirs on.
    state_takes_max_len = True

    def __init__(
        self,
        d_model: int,
        *,
        n_heads: int = 4,
        bidirectional: bool = False,
        rope_base: float = 10000.0,
        use_bias: bool = False,
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.d_model = check_positive_int("d_model", d_model)
        self.n_heads = check_positive_int("n_heads", n_heads)
        if d_model % n_heads or (d_model // n_heads) % 2:
            raise ValueError(f"n_heads={n_heads} must divide d_model={d_model} into heads of even width "
                             "(RoPE rotates pairs of features)")
        if not rope_base > 1:
            raise ValueError(f"rope_base={rope_base!r} must be > 1")
        self.head_dim = d_model // n_heads
        self.bidirectional = bool(bidirectional)
        self.rope_base = float(rope_base)
        self.dtype = dtype
        kw = dict(use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.qkv = nnx.Linear(d_model, 3 * d_model, **kw)
        self.out = nnx.Linear(d_model, d_model, **kw)

    def _heads(self, x, positions):
        """x (b, l, d) at ``positions`` (l,) or (b, l) -> rotated q, k and v, (b, l, e, p) each."""
        q, k, v = rearrange(self.qkv(x), "b l (three e p) -> three b l e p", three=3, e=self.n_heads)
        return apply_rope(q, positions, base=self.rope_base), apply_rope(k, positions, base=self.rope_base), v

    def _merge(self, y, dtype):
        """Heads (b, l, e, p) -> the output projection, (b, l, d) in ``dtype``."""
        return self.out(rearrange(y, "b l e p -> b l (e p)")).astype(dtype)

    @accepts_unbatched()
    def __call__(self, x, mask=None, *, segment_ids=None, initial_state=None, return_state=False):
        """Self-attention over the whole sequence (causal unless bidirectional).

        ``mask`` marks real tokens: padded keys are never attended to and padded
        outputs are zero. Positions count from the first column (from the cache's
        ``pos`` with an ``initial_state``); scores depend only on distances, so left
        padding shifts nothing.

        Args:
          x: (batch, length, d_model), or one example (length, d_model).
          mask: (batch, length) (or (length,)) bool, or None.
          segment_ids: (batch, length) (or (length,)) int, or None: packed documents
            (module :mod:`ssm.layers.segments`) never attend to each other.
          initial_state: a KV cache (:meth:`init_state`, :meth:`step`, :meth:`prefill`
            or ``return_state``), or None: the row's first segment also attends to its
            visible positions. The cache grows by ``length`` positions.
          return_state: also return the KV cache: the keys and values of the cache
            and of ``x``, the last segment's real positions visible to what follows.
            It holds exactly these positions: to :meth:`step` on, use
            :meth:`prefill` with a ``max_len``, or pass it back as ``initial_state``.
            Positions are cache slots, shared by the batch: a padded position takes a
            slot too, so after right padding the next tokens sit further (in RoPE
            distance) from the real ones than without it.

        Returns:
          ``x``'s shape, in ``dtype`` (by default ``x``'s float dtype); with
          ``return_state``, ``(y, cache)``, the cache of :meth:`step`'s type.
        """
        x = check_sequence(x, mask, self.d_model)
        b, length = x.shape[:2]
        segment_ids = check_segment_ids(segment_ids, (b, length))
        if initial_state is not None or return_state:
            self._check_causal("initial_state" if initial_state is not None else "return_state")
        x = x.astype(self.dtype or x.dtype)
        real = jnp.ones((b, length), bool) if mask is None else mask
        ids = jnp.zeros((b, length), jnp.int32) if segment_ids is None else segment_ids
        if initial_state is None:
            positions = jnp.arange(length)
            q, k, v = self._heads(x, positions)
            cache = {"k": k, "v": v, "valid": real, "pos": jnp.asarray(length, jnp.int32)}
            key_ids = ids
        else:
            cache = self._check_cache(initial_state, b)
            pos = cache["pos"]
            positions = pos + jnp.arange(length)
            q, k, v = self._heads(x, positions)
            grow = lambda old, new: jax.lax.dynamic_update_slice_in_dim(  # noqa: E731
                jnp.concatenate([old, jnp.zeros((b, length, *old.shape[2:]), old.dtype)], axis=1),
                new.astype(old.dtype), pos, axis=1)
            key_ids = grow(jnp.broadcast_to(ids[:, :1], cache["valid"].shape), ids)  # the cache: the first segment's
            cache = {"k": grow(cache["k"], k), "v": grow(cache["v"], v), "valid": grow(cache["valid"], real),
                     "pos": pos + length}
        y = dot_product_attention(q, cache["k"], cache["v"], q_positions=positions,
                                  k_positions=jnp.arange(cache["k"].shape[1]), key_valid=cache["valid"],
                                  causal=not self.bidirectional,
                                  **({} if segment_ids is None else {"q_segments": ids, "k_segments": key_ids}))
        y = self._merge(y, x.dtype)
        if mask is not None:
            y = jnp.where(mask[..., None], y, 0)
        if not return_state:
            return y
        if segment_ids is not None:  # only the last segment is visible to what follows
            last = last_real(real)
            cache["valid"] = cache["valid"] & (key_ids == jnp.take_along_axis(ids, last[:, None], axis=1))
        dtype = self._cache_dtype()
        return y, {**cache, "k": cache["k"].astype(dtype), "v": cache["v"].astype(dtype)}

    def _check_cache(self, cache, batch_size: int):
        """A KV cache of :meth:`init_state`'s structure for ``batch_size`` sequences, any size."""
        ok = isinstance(cache, dict) and set(cache) == {"k", "v", "valid", "pos"}
        if ok:
            max_len = jnp.shape(cache["k"])[1] if jnp.ndim(cache["k"]) == 4 else 0
            ok = max_len > 0 and check_state(self, cache, batch_size, max_len=max_len) is cache
        if not ok:
            got = jax.tree.map(jnp.shape, cache) if isinstance(cache, dict) else type(cache).__name__
            raise ValueError(f"initial_state is {got}; expected a KV cache as init_state({batch_size}, max_len) "
                             "makes it")
        return cache

    # Recurrent inference ---------------------------------------------------------------
    def _check_causal(self, what: str = "recurrent inference"):
        if self.bidirectional:
            raise ValueError(f"Attention(bidirectional=True) has no recurrent mode, which {what} needs: its "
                             "output at t depends on inputs after t; run the whole sequence with layer(x)")

    def _cache_dtype(self):
        return jnp.promote_types(self.dtype or self.qkv.kernel[...].dtype, jnp.float32)

    def init_state(self, batch_size: int, max_len: int | None = None):
        """An empty KV cache.

        Args:
          batch_size: sequences in the batch.
          max_len: positions the cache holds (prompt plus generated tokens); required.

        Returns:
          ``{"k", "v", "valid", "pos"}``: keys and values (batch, max_len, n_heads,
          head_dim), float32 at least; ``valid`` (batch, max_len) bool, the positions
          the next token may attend to (its own sequence's, filled); ``pos`` () int32,
          the number of positions filled.
        """
        self._check_causal()
        check_positive_int("batch_size", batch_size)
        if max_len is None:
            raise ValueError("Attention.init_state needs max_len, the number of positions its KV cache holds "
                             "(prompt plus generated tokens)")
        check_positive_int("max_len", max_len)
        shape = (batch_size, max_len, self.n_heads, self.head_dim)
        zeros = jnp.zeros(shape, self._cache_dtype())
        return {"k": zeros, "v": zeros, "valid": jnp.zeros((batch_size, max_len), bool), "pos": jnp.zeros((), jnp.int32)}

    def step(self, x_t, state):
        """One token: attends over the cached positions and itself.

        Args:
          x_t: (batch, d_model); the batch axis is required, as the cache's (its
            ``pos`` is shared by the batch): one example is a batch of one.
          state: the KV cache of :meth:`init_state` or :meth:`prefill`, not full.

        Returns:
          ``(y_t, state)``: y_t (batch, d_model), equal to ``layer(x)[:, t]``, and the
          cache with this position added. A full cache raises (eagerly) or gives NaN
          outputs (under ``jit``, where its position is not known).
        """
        self._check_causal()
        x_t = check_token(x_t, self.d_model)
        pos, max_len = state["pos"], state["k"].shape[1]
        if not isinstance(pos, jax.core.Tracer) and int(pos) >= max_len:
            raise ValueError(f"the KV cache is full ({max_len} positions); build it with a larger max_len")
        x = x_t.astype(self.dtype or x_t.dtype)[:, None]
        q, k, v = self._heads(x, pos[None])
        cache = {name: jax.lax.dynamic_update_slice_in_dim(state[name], new.astype(state[name].dtype), pos, axis=1)
                 for name, new in (("k", k), ("v", v), ("valid", jnp.ones((x.shape[0], 1), bool)))}
        y = dot_product_attention(q, cache["k"], cache["v"], q_positions=pos[None], k_positions=jnp.arange(max_len),
                                  key_valid=cache["valid"])
        y = self._merge(y, x.dtype)[:, 0]
        y = jnp.where(pos < max_len, y, jnp.nan)  # a full cache under jit: NaN, not a silently wrong token
        return y, {**cache, "pos": pos + 1}

    def prefill(self, x, max_len: int | None = None):
        """Run a prompt and cache its keys and values.

        Args:
          x: (batch, length, d_model); the batch axis is required, as in :meth:`step`.
          max_len: positions of the cache, >= length (default: the prompt's length).

        Returns:
          ``(y, state)``: the outputs (batch, length, d_model) of ``layer(x)`` and a KV
          cache of ``max_len`` positions holding the prompt, ready for :meth:`step`.
        """
        self._check_causal()
        x = check_sequence(x, None, self.d_model)
        length = x.shape[1]
        max_len = length if max_len is None else check_positive_int("max_len", max_len)
        if max_len < length:
            raise ValueError(f"max_len={max_len} is shorter than the prompt ({length} positions)")
        y, cache = self(x, return_state=True)
        room = lambda a: jnp.pad(a, [(0, 0), (0, max_len - length)] + [(0, 0)] * (a.ndim - 2))  # noqa: E731
        return y, {**{name: room(cache[name]) for name in ("k", "v", "valid")}, "pos": cache["pos"]}
