"""``MonarchMixer``: the M2 sequence mixer (Fu et al., 2023), a gated long
convolution that takes the place of attention (or of any sequence layer here)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ssm import kernels
from ssm.checks import check_choice, check_positive_int, check_sequence
from ssm.groups import ssm_param_dtype
from ssm.layers.conv1d import CausalConv1d
from ssm.layers.hyena import FILTERS, ExplicitFilter, HyenaFilter
from ssm.layers.parts import make_dropout, make_linear
from ssm.layers.unbatched import accepts_unbatched


class MonarchMixer(nnx.Module):
    """M2's sequence mixer (HazyResearch/m2 ``MonarchMixerSequenceMixing``):

    1. ``in_proj``: d → 3d, then a short causal depthwise convolution (width
       ``d_conv``) over all 3d channels; split into ``x1, x2, v``;
    2. ``v <- v · x1``;
    3. long convolution by FFT: ``y = K * v + D · v`` with taps ``K`` (d, L) from the
       ``filter`` (Hyena's implicit MLP filter or an explicit one), causal, or over
       both directions when ``bidirectional`` (a second filter for the lags after t;
       two implicit filters share one ``freq``, as M2's share their ``Sin`` module);
    4. ``y <- y · x2``, dropout, ``out_proj``: d → d.

    M2's own BERT layer (:class:`~ssm.layers.M2Block`) feeds the mixer's output to a
    post-norm GLU MLP with no residual around the mixer:
    ``SequenceModel(layer="m2", block="m2", prenorm=False, post=None, mlp="monarch")``.
    In the library's pre-norm :class:`~ssm.layers.ResidualBlock` (``block="residual"``)
    it is one more sequence layer, with a residual around it and a pre-norm MLP:
    ``SequenceModel(layer="m2", post=None, mlp="monarch")``.

    Args:
      d_model: width d.
      l_max: the filter's length (taps); longer inputs run with the lags beyond it at
        zero.
      filter: ``"implicit"`` (:class:`~ssm.layers.hyena.HyenaFilter`) or
        ``"explicit"`` (:class:`~ssm.layers.hyena.ExplicitFilter`).
      filter_order, filter_emb_dim, filter_inner_mlps, filter_freq: ``order``,
        ``emb_dim``, ``inner_mlps`` and ``freq`` of the implicit filter; the
        defaults are M2's (``hyena_w = 10``). More positional bands (a larger odd
        ``filter_emb_dim``) let it form sharper taps, which memory tasks need.
      bidirectional: also convolve with the future (a second filter).
      d_conv: width of the short convolution (the reference: 3).
      projection: ``"dense"`` or ``"monarch"`` for ``in_proj``/``out_proj``;
      nblocks: of Monarch projections.
      dropout: before ``out_proj``.

    Parameters: projections group ``matrix`` (biases ``no_decay``); the short
    convolution ``adamw``; both filters (their one shared ``freq`` under ``filter``)
    and the skip ``D`` (d,) group ``ssm``: ``ssm_lr``, no weight decay, never Muon.
    That is this library's choice, not M2's: M2's BERT configs give the forward
    filter's MLP and the shared frequency their own group at lr 1e-3 with weight
    decay ``hyena_wd = 0.1``, and leave the reverse filter's MLP and the skip (its
    ``bias``) in the base group (M2-BERT-base pretraining: lr 8e-4, weight decay
    1e-5); ``param_labels(..., override=...)`` regroups them.

    The long convolution has no finite state, so this layer has no ``step``: it
    raises a clear error.

    Fu et al. (2023), "Monarch Mixer: A Simple Sub-Quadratic GEMM-Based Architecture".

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from flax import nnx
      >>> x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 4)), jnp.float32)  # (batch, length, d_model)
      >>> from ssm.layers import MonarchMixer
      >>> layer = MonarchMixer(4, l_max=16, rngs=nnx.Rngs(0))
      >>> layer(x).shape
      (2, 16, 4)
      >>> layer.step(x[:, 0], None)
      Traceback (most recent call last):
      ...
      ValueError: MonarchMixer has no recurrent mode: its long convolution has no finite state; ...
    """

    def __init__(
        self,
        d_model: int,
        *,
        l_max: int = 1024,
        filter: str = "implicit",
        filter_order: int = 16,
        filter_emb_dim: int = 3,
        filter_inner_mlps: int = 2,
        filter_freq: float = 10.0,
        bidirectional: bool = False,
        d_conv: int = 3,
        projection: str = "dense",
        nblocks: int | None = None,
        dropout: float = 0.0,
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.d_model = check_positive_int("d_model", d_model)
        self.l_max = check_positive_int("l_max", l_max)
        check_choice("filter", filter, FILTERS)
        self.bidirectional = bool(bidirectional)
        self.dtype = dtype
        kw = dict(param_dtype=param_dtype, rngs=rngs)
        proj = dict(nblocks=nblocks, dtype=dtype, **kw)
        self.in_proj = make_linear(projection, d_model, 3 * d_model, **proj)
        self.conv = CausalConv1d(3 * d_model, d_conv, dtype=dtype, **kw)

        def make_filter():
            if filter == "explicit":
                return ExplicitFilter(d_model, l_max=l_max, **kw)
            return HyenaFilter(d_model, l_max=l_max, order=filter_order, emb_dim=filter_emb_dim,
                               inner_mlps=filter_inner_mlps, freq=filter_freq, **kw)

        self.filter = make_filter()
        self.filter_reverse = make_filter() if self.bidirectional else None
        if isinstance(self.filter_reverse, HyenaFilter):  # one Sin module serves both of M2's MLPs
            self.filter_reverse.freq = self.filter.freq
        self.D = nnx.Param(jax.random.normal(rngs.params(), (d_model,), ssm_param_dtype(param_dtype)), group="ssm")
        self.dropout = make_dropout(dropout, rngs)
        self.out_proj = make_linear(projection, d_model, d_model, **proj)

    def kernel(self, length: int):
        """``(K, K_reverse)``: taps (d, length) each; ``K_reverse`` (lags 1, 2, ...
        into the future) is None unless bidirectional.

        A filter has ``l_max`` taps: an input longer than that (a model evaluated
        beyond its training length) is convolved with the same taps, the lags from
        ``l_max`` on being zero (a finite impulse response).

        Args:
          length: L, a static int.

        Returns:
          ``(K, K_reverse)``: (d, L) each, float32 at least; ``K_reverse`` None unless
          bidirectional.
        """
        check_positive_int("sequence length", length)
        n = min(length, self.l_max)
        taps = lambda f: jnp.pad(f(n), ((0, 0), (0, length - n)))  # noqa: E731
        return taps(self.filter), None if self.filter_reverse is None else taps(self.filter_reverse)

    def long_conv(self, v):
        """``y[t] = sum_{l <= t} K[l] v[t − l] (+ sum_{m >= 1} K_rev[m−1] v[t + m]) + D v[t]``.

        Args:
          v: (batch, length, d).

        Returns:
          (batch, length, d), float32 at least.
        """
        K, K_reverse = self.kernel(v.shape[1])
        real = jnp.promote_types(K.dtype, v.dtype)
        y = kernels.fft_conv(v.astype(real), K, K_reverse)
        return y + v.astype(real) * self.D[...].astype(real)

    @accepts_unbatched()
    def __call__(self, x, mask=None, *, segment_ids=None, initial_state=None, return_state=False):
        """The mixer over the whole sequence (steps 1-4 of the class docstring).

        ``mask`` marks real tokens: the projected inputs and the gated values are
        zeroed at padded positions, so padding on either side leaves real outputs
        unchanged.

        Args:
          x: (batch, length, d_model), or one example (length, d_model).
          mask: (batch, length) (or (length,)) bool, or None.
          segment_ids, initial_state, return_state: refused with a ``ValueError``
            (given): the long convolution can neither restart at a segment boundary
            nor carry a finite state.

        Returns:
          ``x``'s shape, in ``dtype`` (by default ``x``'s float dtype).
        """
        for name, given in (("segment_ids", segment_ids is not None), ("initial_state", initial_state is not None),
                            ("return_state", return_state)):
            if given:
                raise ValueError(f"{name}: {type(self).__name__}'s long convolution has no finite state and cannot "
                                 "restart at a segment boundary; pack and pass states with S4, S4D, Mamba, Mamba-2, "
                                 "attention or the LSTM")
        x = check_sequence(x, mask, self.d_model)
        dtype = self.dtype or x.dtype
        keep = (lambda h: h) if mask is None else (lambda h: jnp.where(mask[..., None], h, 0))
        u = self.conv(keep(self.in_proj(x.astype(dtype))))
        x1, x2, v = jnp.split(u, 3, axis=-1)
        y = self.long_conv(keep(v * x1)).astype(dtype) * x2
        return self.out_proj(self.dropout(y)).astype(dtype)

    def _no_recurrence(self, *_):
        """No recurrent mode (``init_state``, ``step``, ``prefill``): raises a ValueError
        that says so; run the whole sequence with ``layer(x)``."""
        raise ValueError(f"{type(self).__name__} has no recurrent mode: its long convolution has no finite "
                         "state; run the whole sequence with layer(x)")

    init_state = step = prefill = _no_recurrence
