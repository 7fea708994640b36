"""The notation of the whole library: one letter and one name per dimension, and the
array types of its shape annotations.

A letter names an axis in a docstring's shapes, ``u`` (b, l, h), and in an einsum or
einops pattern, ``"...hn,...n->...h"``; the name is the same axis in a shape annotation,
``Float[ArrayLike, "batch length channels"]``. A dimension with no letter (—) is
written out. Where a formula uses sizes it writes them as capitals: L, S, H, N, N/2,
G, Q.

Conventions beyond the table:

- ``t`` is one position (an index: ``u_t``, ``y[t]``), never an axis.
- ``i``, ``j`` are the two axes of one square matrix in an einsum: ``Abar`` (h, n, n)
  is ``"hij"``.
- ``[g,]`` is an axis that may be absent; ``h/g`` and ``e/g`` are the channels and the
  heads of one group, so a grouped (b, l, g, h/g) is (b, l, h) when g = 1.
- ``...`` is any number of leading axes, ``*batch`` in annotations; there a starred
  name (``"batch length *groups state"``) is an axis that may be absent, and
  ``"channels length//2+1"`` a size computed from another.
- Indices in a formula that follows a paper (``W[a·u + c, t·v + j]``, ``w_k``) keep the
  paper's letters; the table names axes.

Annotations use jaxtyping's dtype markers, which the package imports from here:
``Float``, ``Complex``, ``Inexact`` (either), ``Real``, ``Num`` (any number), ``Bool``,
``Int``, over ``ArrayLike`` for what a function accepts (a JAX or a NumPy array) and
``Array`` for what it returns. They are documentation and a help to static type
checkers: nothing checks them at run time, so a function accepts exactly what it did
without them. The table as data is :data:`DIMENSIONS`.

The table:
"""

from __future__ import annotations

from jaxtyping import Array, ArrayLike, Bool, Complex, Float, Inexact, Int, Num, Real  # noqa: F401  (for the package)

__all__ = ["DIMENSIONS"]

#: The notation table, ``(letter, name, meaning)`` per dimension (letter ``""``: written out).
DIMENSIONS: tuple[tuple[str, str, str], ...] = (
    ("b", "batch", "examples in a batch"),
    ("l", "length", "positions of a sequence, L (and of the S4 kernels made for it); the queries of attention"),
    ("s", "keys", "key positions of attention, S (a cache's length when decoding); the source positions of "
                  "an SSD chunk's quadratic form"),
    ("d", "d_model", "model width: the features of a layer's input and output"),
    ("h", "channels", "independent SSM channels, H: d_model in S4 and S4D, d_inner = expand·d_model in Mamba"),
    ("e", "heads", "heads of Mamba-2 and of attention"),
    ("p", "headdim", "features of one head (Mamba-2's d_inner = heads·headdim)"),
    ("n", "state", "state size of a channel, N (Mamba's d_state); S4's real or conjugate-completed state"),
    ("m", "modes", "the complex modes a conjugate-symmetric state keeps, N/2 (S4 and S4D)"),
    ("r", "rank", "rank of DPLR's low-rank term, of a low-rank approximation"),
    ("g", "groups", "groups sharing B and C, G: each serves h/g channels or e/g heads"),
    ("c", "chunks", "chunks of a sequence"),
    ("q", "chunk", "positions of one chunk, Q (or of one block of queries)"),
    ("w", "taps", "taps of a convolution kernel: a depthwise kernel's width (d_conv); an FFT convolution's "
                  "kernel, cut to the length"),
    ("k", "blocks", "blocks of a Monarch factor R (nblocks)"),
    ("u", "block_in", "inputs of one R block: n_in = k·u"),
    ("v", "block_mid", "outputs of one R block, which is the number of L blocks"),
    ("o", "block_out", "outputs of one L block: n_out = v·o"),
    ("", "n_in", "input features of a linear map"),
    ("", "n_out", "output features of a linear map"),
    ("", "rows", "rows of a matrix (:mod:`ssm.linalg`'s M is (..., rows, cols))"),
    ("", "cols", "columns of a matrix"),
    ("", "vocab", "vocabulary size: token ids are in [0, vocab)"),
)


def _table(rows) -> str:
    """``rows`` as an reST simple table (its last column may run past the rule)."""
    cells = [("letter", "name", "meaning")] + [(f"``{a}``" if a else "—", f"``{b}``", c) for a, b, c in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(2)] + [len("meaning")]
    rule = "  ".join("=" * w for w in widths)
    line = lambda row: "  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip()  # noqa: E731
    return "\n".join([rule, line(cells[0]), rule, *map(line, cells[1:]), rule, ""])


__doc__ = (__doc__ or "") + "\n" + _table(DIMENSIONS)
