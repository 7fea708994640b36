"""``MonarchLinear``: a drop-in for ``nnx.Linear`` whose kernel is a Monarch matrix."""

from __future__ import annotations

import math

import jax.numpy as jnp
from flax import nnx

from ssm import monarch
from ssm.checks import check_positive_int


def default_nblocks(in_features: int, out_features: int) -> int:
    """:func:`ssm.monarch.default_nblocks` (a common divisor, no padding) unless that
    is 1 while the sizes are larger than 3 (a prime or coprime sizes would give one
    dense block): then ``round(sqrt(in_features))`` with padding. Returns an int."""
    nblocks = monarch.default_nblocks(in_features, out_features)
    return nblocks if nblocks > 1 or in_features <= 3 else round(math.sqrt(in_features))


class MonarchLinear(nnx.Module):
    """``y = x @ W + bias`` with ``W`` a Monarch matrix (:mod:`ssm.monarch`).

    Sizes that ``nblocks`` does not divide are zero-padded up to the next multiple
    (inputs) and cut back (outputs), as HazyResearch's ``MonarchLinear`` does.

    Args:
      in_features, out_features: as ``nnx.Linear``.
      nblocks: number of ``R`` blocks (default: :func:`default_nblocks`, which for a
        square ``n = k²`` is ``k``).
      use_bias: add a bias (zeros at init, as ``nnx.Linear``).

    Parameters: ``R`` (k, u, v) and ``L`` (v, k, o), group ``matrix`` (Muon
    orthogonalizes each block); ``bias`` (out_features,). Each factor is drawn
    lecun-normal with its block's fan-in (``u`` for ``R``, ``k`` for ``L``), so every
    entry of ``W = R ⊗ L`` has variance ``1/(k·u) = 1/in_features``: the variance
    of ``nnx.Linear``'s default kernel (with padding, ``R`` is scaled by
    ``sqrt(padded/in_features)`` so that this still holds).

    Dao et al. (2022), "Monarch: Expressive Structured Matrices for Efficient and
    Accurate Training".

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from flax import nnx
      >>> from ssm.layers import MonarchLinear
      >>> layer = MonarchLinear(16, 16, rngs=nnx.Rngs(0))
      >>> x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16)), jnp.float32)
      >>> y = layer(x)
      >>> y.shape, bool(jnp.allclose(y, x @ layer.to_dense() + layer.bias[...], atol=1e-5))
      ((2, 16), True)
    """

    def __init__(self, in_features: int, out_features: int, *, nblocks: int | None = None,
                 use_bias: bool = True, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
        if nblocks is None:
            nblocks = default_nblocks(in_features, out_features)
        self.nblocks = check_positive_int("nblocks", nblocks)
        n_in, n_out = (nblocks * math.ceil(n / nblocks) for n in (in_features, out_features))
        self.padded_sizes = (n_in, n_out)  # (in, out) after zero-padding to multiples of nblocks
        r_shape, l_shape = monarch.factor_shapes(n_in, n_out, nblocks)
        self.dtype = dtype
        init = nnx.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
        # Padded inputs are zeros: scale R so that the real in_features carry variance 1/in_features.
        pad_gain = math.sqrt(n_in / in_features)
        self.R = nnx.Param(init(rngs.params(), r_shape, param_dtype) * pad_gain, group="matrix")
        self.L = nnx.Param(init(rngs.params(), l_shape, param_dtype), group="matrix")
        self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype)) if use_bias else None

    def factors(self, dtype=None):
        """The factors ``(R (k, u, v), L (v, k, o))`` of :mod:`ssm.monarch` (over the
        padded sizes), cast to ``dtype`` if given."""
        return tuple(f[...] if dtype is None else f[...].astype(dtype) for f in (self.R, self.L))

    def __call__(self, x):
        """``x @ W + bias`` without forming ``W`` (:func:`ssm.monarch.matmul`).

        Args:
          x: (..., in_features).

        Returns:
          (..., out_features), in ``dtype`` (by default promoted from ``x`` and ``R``).
        """
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x has shape {x.shape}; expected (..., {self.in_features})")
        dtype = self.dtype or jnp.promote_types(x.dtype, self.R.dtype)
        n_in, _ = self.padded_sizes
        if n_in != self.in_features:
            x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n_in - self.in_features)])
        y = monarch.matmul(x.astype(dtype), self.factors(dtype))[..., : self.out_features]
        return y if self.bias is None else y + self.bias[...].astype(dtype)

    def to_dense(self):
        """The (in_features, out_features) kernel this layer applies, in the parameters'
        dtype."""
        return monarch.to_dense(self.factors())[: self.in_features, : self.out_features]


def from_linear(linear: nnx.Linear, *, nblocks: int | None = None) -> MonarchLinear:
    """A :class:`MonarchLinear` whose kernel is the Frobenius-nearest Monarch matrix
    to ``linear``'s (``ssm.monarch.project``); the bias is copied. Sizes ``nblocks``
    does not divide are zero-padded, which leaves the optimum unchanged.

    Args:
      linear: a trained ``nnx.Linear`` (kernel (in, out)).
      nblocks: as :class:`MonarchLinear`.

    Returns:
      A :class:`MonarchLinear` with ``linear``'s sizes, dtypes and bias.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from ssm import monarch
      >>> from ssm.layers import from_linear
      >>> dense = nnx.Linear(16, 16, rngs=nnx.Rngs(0))
      >>> layer = from_linear(dense)
      >>> error = jnp.linalg.norm(dense.kernel[...] - layer.to_dense())
      >>> bool(jnp.allclose(error, monarch.projection_error(dense.kernel[...]), rtol=1e-4))  # the optimum
      True
    """
    if not isinstance(linear, nnx.Linear):
        raise TypeError(f"linear is a {type(linear).__name__}; expected flax.nnx.Linear")
    kernel = linear.kernel[...]
    n_in, n_out = kernel.shape
    layer = MonarchLinear(n_in, n_out, nblocks=nblocks, use_bias=linear.bias is not None,
                          dtype=linear.dtype, param_dtype=kernel.dtype, rngs=nnx.Rngs(0))
    p_in, p_out = layer.padded_sizes
    padded = jnp.pad(kernel, ((0, p_in - n_in), (0, p_out - n_out)))
    R, L = monarch.project(padded, layer.nblocks)
    layer.R[...], layer.L[...] = R.astype(kernel.dtype), L.astype(kernel.dtype)
    if linear.bias is not None:
        layer.bias[...] = linear.bias[...]
    return layer
