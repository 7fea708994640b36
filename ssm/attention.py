"""Softmax attention as plain functions: rotary position embeddings (RoPE) and
multi-head dot-product attention that never holds a (length x length) score matrix
longer than one block.

Shapes in the notation of :mod:`ssm.typing`: b batch, l query positions, s key
positions, e heads, p head width.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from ssm.typing import Array, ArrayLike, Bool, Float, Int

__all__ = ["MASKED", "BLOCK", "SCORES_PER_BLOCK", "rope_frequencies", "apply_rope", "block_sizes",
           "dot_product_attention"]

#: Scores of disallowed (query, key) pairs. Finite, so that a query with no allowed key
#: (a padded position) gets finite garbage instead of NaN; its output is then zeroed.
MASKED = -1e30
BLOCK = 256  #: Query positions per block; key blocks hold at least this many.
SCORES_PER_BLOCK = 2**16  #: Query x key scores per (batch, head) held at once.


def rope_frequencies(head_dim: int, base: float = 10000.0, dtype: DTypeLike = jnp.float32,
                     ) -> Float[Array, "headdim//2"]:
    """RoPE's angular frequencies ``base^(-2i / head_dim)`` for i < head_dim / 2 (Su et
    al., 2021, RoFormer: its ``theta_i``).

    Args:
      head_dim: p, even.
      base: the base wavelength.
      dtype: of the result.

    Returns:
      (head_dim // 2,) in ``dtype``.

    Example:
      >>> from ssm.attention import rope_frequencies
      >>> rope_frequencies(8)
      Array([1.   , 0.1  , 0.01 , 0.001], dtype=float32)
    """
    if head_dim % 2:
        raise ValueError(f"head_dim={head_dim} must be even: RoPE rotates pairs of features")
    return base ** (-jnp.arange(0, head_dim, 2, dtype=dtype) / head_dim)


def apply_rope(x: Float[ArrayLike, "batch length heads headdim"], positions: Int[ArrayLike, "*batch length"], *,
               base: float = 10000.0) -> Float[Array, "batch length heads headdim"]:
    """Rotary position embedding (Su et al., 2021, RoFormer) in the half-split layout of
    GPT-NeoX and LLaMA: feature i is paired with feature i + p/2, and the pair at
    position t turns by the angle ``t * base^(-2i/p)``. The dot product of a rotated
    query at t and a rotated key at t' depends only on t - t'.

    Args:
      x: (b, l, e, p) with p even.
      positions: (l,) or (b, l) integer positions.
      base: the base wavelength of :func:`rope_frequencies`.

    Returns:
      (b, l, e, p), in ``x``'s dtype (the rotation is computed in float32 at least).

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm.attention import apply_rope
      >>> rng = np.random.default_rng(0)
      >>> q, k = (jnp.asarray(rng.normal(size=(1, 1, 1, 4)), jnp.float32) for _ in range(2))
      >>> def score(p_q, p_k):
      ...     return jnp.vdot(apply_rope(q, jnp.array([p_q])), apply_rope(k, jnp.array([p_k])))
      >>> bool(jnp.allclose(score(5, 3), score(12, 10), atol=1e-5))  # only the distance matters
      True
    """
    p = x.shape[-1]
    real = jnp.promote_types(x.dtype, jnp.float32)
    angles = jnp.asarray(positions, real)[..., None] * rope_frequencies(p, base, real)  # (.., l, p/2)
    cos, sin = jnp.cos(angles)[..., None, :], jnp.sin(angles)[..., None, :]  # (.., l, 1, p/2)
    if cos.ndim == 3:  # (l, 1, p/2): shared by the batch
        cos, sin = cos[None], sin[None]
    x1, x2 = jnp.split(x.astype(real), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def _pad_to(x, size: int, axis: int, value=0):
    pad = size - x.shape[axis]
    if pad == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, pad)
    return jnp.pad(x, widths, constant_values=value)


def block_sizes(t: int, s: int) -> tuple[int, int]:
    """The block sizes of :func:`dot_product_attention`: whole sequences while t * s
    scores fit in :data:`SCORES_PER_BLOCK`, else :data:`BLOCK` queries against at least
    :data:`BLOCK` keys.

    Args:
      t: the number of query positions (the length l of the queries).
      s: the number of key positions.

    Returns:
      ``(query block, key block)``, two ints.

    Example:
      >>> from ssm.attention import block_sizes
      >>> block_sizes(16, 16), block_sizes(1024, 4096)
      ((16, 16), (256, 256))
    """
    q_block = min(t, BLOCK)
    k_block = min(s, max(BLOCK, SCORES_PER_BLOCK // q_block))
    return q_block, k_block


def dot_product_attention(q: Float[ArrayLike, "batch length heads headdim"],
                          k: Float[ArrayLike, "batch keys heads headdim"],
                          v: Float[ArrayLike, "batch keys heads headdim"], *,
                          q_positions: Int[ArrayLike, "*batch length"], k_positions: Int[ArrayLike, "*batch keys"],
                          key_valid: Bool[ArrayLike, "batch keys"] | None = None, causal: bool = True,
                          q_segments: Int[ArrayLike, "batch length"] | None = None,
                          k_segments: Int[ArrayLike, "batch keys"] | None = None,
                          ) -> Float[Array, "batch length heads headdim"]:
    """``softmax(q k^T / sqrt(p) + mask) v`` per head.

    Query i may attend to key j when ``key_valid[j]``, if ``causal``
    ``k_positions[j] <= q_positions[i]``, and with segments ``k_segments[j] ==
    q_segments[i]`` (packed documents never attend to each other). A query that may
    attend to nothing gets zeros. Long inputs are processed in blocks (:func:`block_sizes`) with an online
    softmax (Rabe & Staats, 2021; FlashAttention): a running maximum and sum per query
    rescale each key block's contribution, so memory is O(b e (l + s) p) plus one block
    of scores, and the result equals the one-shot softmax up to rounding.

    Args:
      q: (b, l, e, p); k, v: (b, s, e, p).
      q_positions: (l,) or (b, l) int; k_positions: (s,) or (b, s) int.
      key_valid: (b, s) bool, or None (all keys valid).
      causal: mask keys after the query.
      q_segments, k_segments: (b, l) and (b, s) int segment ids, both or neither.

    Returns:
      (b, l, e, p) in the promoted dtype of q and v (scores and sums in float32 at least).

    Example:
      >>> import numpy as np, jax, jax.numpy as jnp
      >>> from ssm.attention import dot_product_attention
      >>> rng = np.random.default_rng(0)
      >>> q, k, v = (jnp.asarray(rng.normal(size=(2, 16, 2, 2)), jnp.float32) for _ in range(3))  # (b, l, e, p)
      >>> pos = jnp.arange(16)
      >>> out = dot_product_attention(q, k, v, q_positions=pos, k_positions=pos)
      >>> scores = jnp.einsum("blep,bsep->bels", q, k) / jnp.sqrt(2.0)  # 1/sqrt(p)
      >>> scores = jnp.where(pos[:, None] >= pos[None, :], scores, -jnp.inf)  # causal
      >>> naive = jnp.einsum("bels,bsep->blep", jax.nn.softmax(scores, -1), v)
      >>> out.shape, bool(jnp.allclose(out, naive, atol=1e-5))
      ((2, 16, 2, 2), True)
    """
    b, t, h, dk = q.shape
    s = k.shape[1]
    real = jnp.promote_types(jnp.result_type(q, k, v), jnp.float32)
    q_positions = jnp.broadcast_to(jnp.asarray(q_positions, jnp.int32), (b, t))
    k_positions = jnp.broadcast_to(jnp.asarray(k_positions, jnp.int32), (b, s))
    key_valid = jnp.ones((b, s), bool) if key_valid is None else jnp.asarray(key_valid, bool)
    if (q_segments is None) != (k_segments is None):
        raise ValueError("give both q_segments and k_segments, or neither")
    segmented = q_segments is not None
    if segmented:
        q_segments = jnp.broadcast_to(jnp.asarray(q_segments, jnp.int32), (b, t))
        k_segments = jnp.broadcast_to(jnp.asarray(k_segments, jnp.int32), (b, s))
    else:  # placeholders that keep the blocks one shape; never compared
        q_segments, k_segments = jnp.zeros((b, t), jnp.int32), jnp.zeros((b, s), jnp.int32)
    q_block, k_block = block_sizes(t, s)
    nq, nk = -(-t // q_block), -(-s // k_block)
    scale = dk**-0.5

    def split(x, n, size):  # (b, n * size, ...) -> (n, b, size, ...)
        x = _pad_to(x, n * size, axis=1)
        return jnp.moveaxis(x.reshape(b, n, size, *x.shape[2:]), 1, 0)

    keys = split(k.astype(real), nk, k_block), split(v.astype(real), nk, k_block)
    key_pos, key_ok = split(k_positions, nk, k_block), split(key_valid, nk, k_block)  # padding: invalid
    key_seg = split(k_segments, nk, k_block)

    def one_query_block(args):
        qb, qpos, qseg = args  # (b, q, e, p), (b, q), (b, q): one block of q queries
        qb = qb.astype(real) * scale

        def one_key_block(carry, block):
            m, l, acc = carry  # (b, e, q), (b, e, q), (b, e, q, p)
            kb, vb, kpos, kok, kseg = block
            allowed = kok[:, None, :]
            if segmented:
                allowed = allowed & (kseg[:, None, :] == qseg[:, :, None])  # (b, q, s)
            if causal:
                allowed = allowed & (kpos[:, None, :] <= qpos[:, :, None])  # (b, q, s)
            scores = jnp.einsum("bqep,bsep->beqs", qb, kb)
            scores = jnp.where(allowed[:, None], scores, MASKED)
            m_new = jnp.maximum(m, scores.max(-1))
            weights = jnp.exp(scores - m_new[..., None])
            correction = jnp.exp(m - m_new)
            l = l * correction + weights.sum(-1)
            acc = acc * correction[..., None] + jnp.einsum("beqs,bsep->beqp", weights, vb)
            return (m_new, l, acc), allowed.any(-1)

        tq = qb.shape[1]
        init = (jnp.full((b, h, tq), MASKED, real), jnp.zeros((b, h, tq), real), jnp.zeros((b, h, tq, dk), real))
        if nk == 1:
            (m, l, acc), seen = one_key_block(init, jax.tree.map(lambda x: x[0], (*keys, key_pos, key_ok, key_seg)))
        else:
            (m, l, acc), seen = jax.lax.scan(one_key_block, init, (*keys, key_pos, key_ok, key_seg))
            seen = seen.any(0)
        out = acc / l[..., None]  # l >= 1: the maximum's own term is exp(0)
        out = jnp.where(seen[:, None, :, None], out, 0)  # (b, e, q, p)
        return jnp.moveaxis(out, 1, 2)  # (b, q, e, p)

    queries = split(q, nq, q_block), split(q_positions, nq, q_block), split(q_segments, nq, q_block)
    if nq == 1:
        out = one_query_block(jax.tree.map(lambda x: x[0], queries))[None]
    else:
        out = jax.lax.map(one_query_block, queries)  # (c, b, q, e, p): nq chunks of queries
    out = jnp.moveaxis(out, 0, 1).reshape(b, nq * q_block, h, dk)[:, :t]
    return out.astype(jnp.result_type(q, v))
