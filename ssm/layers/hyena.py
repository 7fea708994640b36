"""Long-convolution filters for the M2 sequence mixer: Hyena's implicit filter (a
small MLP with sine activations over positional features, times an exponential
decay window) and an explicit one (a learned (channels, l_max) array).

Both are called as ``filter(length) -> (channels, length)``: the taps of a causal
convolution, ``K[c, l]`` for lag ``l``. A filter is defined up to ``l_max``; a
shorter length takes the first taps, so it does not depend on the input length.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ssm.checks import check_positive_int
from ssm.groups import ssm_param_dtype
from ssm.layers.init import symmetric_uniform


def positional_features(l_max: int, emb_dim: int) -> np.ndarray:
    """Hyena's positional features z(t), t = 0..l_max−1: (l_max, emb_dim).

    ``[t/(l_max−1), Re e^{−i f_k w_t}, Im e^{−i f_k w_t}]`` with ``w_t = 2πt/l_max``
    and ``(emb_dim − 1)/2`` frequencies ``f_k = linspace(1e−4, bands − 1)``.
    """
    check_positive_int("l_max", l_max)
    if emb_dim < 3 or emb_dim % 2 == 0:
        raise ValueError(f"emb_dim={emb_dim!r} must be an odd integer >= 3 (time plus sine/cosine pairs)")
    bands = (emb_dim - 1) // 2
    t = np.linspace(0.0, 1.0, l_max)[:, None]
    w = 2 * np.pi * np.arange(l_max)[:, None] / l_max
    f = np.linspace(1e-4, bands - 1, bands)[None, :]
    z = np.exp(-1j * f * w)
    return np.concatenate([t, z.real, z.imag], axis=1)


def decay_window(l_max: int, channels: int, *, target: float = 1e-2, fast_decay_pct: float = 0.3,
                 slow_decay_pct: float = 1.5) -> np.ndarray:
    """Hyena's exponential modulation ``exp(−t·|δ_c|)``, t on [0, 1]: (l_max, channels).

    Rates ``δ_c`` are spaced linearly from ``log(target)/slow_decay_pct`` (slowest
    channel) to ``log(target)/fast_decay_pct``: channel c has decayed to ``target``
    after a fraction ``pct_c`` of ``l_max``.
    """
    if not 0 < target < 1:
        raise ValueError(f"target={target!r} must be in (0, 1)")
    if not 0 < fast_decay_pct <= slow_decay_pct:
        raise ValueError(f"need 0 < fast_decay_pct <= slow_decay_pct; got {fast_decay_pct!r}, {slow_decay_pct!r}")
    rates = np.abs(np.linspace(math.log(target) / slow_decay_pct, math.log(target) / fast_decay_pct, channels))
    t = np.linspace(0.0, 1.0, l_max)[:, None]
    return np.exp(-t * rates[None, :])


def _uniform_linear(d_in: int, d_out: int, *, use_bias: bool, param_dtype, rngs: nnx.Rngs) -> nnx.Linear:
    """PyTorch's default ``nn.Linear`` init (kernel and bias U(±1/sqrt(d_in))), group ``ssm``."""
    bound = 1 / math.sqrt(d_in)
    return nnx.Linear(d_in, d_out, use_bias=use_bias, kernel_init=symmetric_uniform(bound),
                      bias_init=symmetric_uniform(bound), kernel_metadata={"group": "ssm"},
                      bias_metadata={"group": "ssm"}, param_dtype=ssm_param_dtype(param_dtype), rngs=rngs)


class HyenaFilter(nnx.Module):
    """Hyena's implicit long filter (HazyResearch/m2 ``HyenaFilter``).

    ``K = (MLP(z) · window)^T`` with ``MLP = Linear(emb_dim → order), Sin,
    inner_mlps × [Linear(order → order), Sin], Linear(order → channels, no bias)``,
    ``Sin(x) = sin(freq · x)`` with one learned frequency per width (shared by the
    activations, as the reference), and ``window`` from :func:`decay_window`.

    The positional features are fixed (the reference trains them at lr 1e-5).

    Args:
      channels: number of filters C.
      l_max: longest length.
      emb_dim: odd width of the positional features.
      order: MLP width.
      inner_mlps: hidden Linear+Sin layers.
      freq: initial frequency of the sines.
      target, fast_decay_pct, slow_decay_pct: of :func:`decay_window`.

    Parameters: the MLP's kernels, biases and ``freq``, all group ``ssm`` (``ssm_lr``,
    no weight decay, never Muon). The reference gives them their own optimizer group
    too, but with weight decay: lr 1e-3 and ``wd`` (its ``HyenaFilter`` default 0; M2's
    mixer and BERT configs pass ``hyena_wd = 0.1``); see
    :class:`~ssm.layers.MonarchMixer` for what its reverse filter gets.

    Poli et al. (2023), "Hyena Hierarchy: Towards Larger Convolutional Language Models".

    Example:
      >>> from flax import nnx
      >>> from ssm.layers import HyenaFilter
      >>> taps = HyenaFilter(4, l_max=16, rngs=nnx.Rngs(0))(16)
      >>> taps.shape, taps.dtype
      ((4, 16), dtype('float32'))
    """

    def __init__(self, channels: int, *, l_max: int, emb_dim: int = 3, order: int = 16, inner_mlps: int = 2,
                 freq: float = 1.0, target: float = 1e-2, fast_decay_pct: float = 0.3,
                 slow_decay_pct: float = 1.5, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.channels = check_positive_int("channels", channels)
        self.l_max = check_positive_int("l_max", l_max)
        self.emb_dim, self.order = emb_dim, check_positive_int("order", order)
        if isinstance(inner_mlps, bool) or not isinstance(inner_mlps, int) or inner_mlps < 0:
            raise ValueError(f"inner_mlps={inner_mlps!r} must be an integer >= 0")
        positional_features(1, emb_dim)  # checks emb_dim
        self.decay = (target, fast_decay_pct, slow_decay_pct)
        decay_window(1, 1, target=target, fast_decay_pct=fast_decay_pct, slow_decay_pct=slow_decay_pct)
        kw = dict(param_dtype=param_dtype, rngs=rngs)
        self.layers = nnx.List([_uniform_linear(emb_dim, order, use_bias=True, **kw)]
                               + [_uniform_linear(order, order, use_bias=True, **kw) for _ in range(inner_mlps)])
        self.out = _uniform_linear(order, channels, use_bias=False, **kw)
        self.freq = nnx.Param(jnp.full((order,), freq, ssm_param_dtype(param_dtype)), group="ssm")

    def __call__(self, length: int):
        """The first ``length`` taps (1 <= length <= l_max, a static int): (channels,
        length), float32 at least."""
        if not 0 < length <= self.l_max:
            raise ValueError(f"length={length!r} must be in [1, l_max={self.l_max}]")
        dtype = jnp.promote_types(self.freq.dtype, jnp.float32)
        h = jnp.asarray(positional_features(self.l_max, self.emb_dim)[:length], dtype)
        freq = self.freq[...].astype(dtype)
        for layer in self.layers:
            h = jnp.sin(freq * layer(h))
        target, fast, slow = self.decay
        window = decay_window(self.l_max, self.channels, target=target, fast_decay_pct=fast, slow_decay_pct=slow)
        window = jnp.asarray(window[:length], dtype)
        return (self.out(h).astype(dtype) * window).T


class ExplicitFilter(nnx.Module):
    """A learned filter: taps (channels, l_max), drawn N(0, 1) times the decay window
    of :func:`decay_window` divided by sqrt(l_max), so it starts like a Hyena filter
    in scale and reach. Parameter ``taps``, group ``ssm``.

    Args:
      channels: number of filters C.
      l_max: taps per filter.

    Example:
      >>> from flax import nnx
      >>> from ssm.layers import ExplicitFilter
      >>> ExplicitFilter(4, l_max=16, rngs=nnx.Rngs(0))(8).shape  # the first 8 taps
      (4, 8)
    """

    def __init__(self, channels: int, *, l_max: int, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.channels = check_positive_int("channels", channels)
        self.l_max = check_positive_int("l_max", l_max)
        window = jnp.asarray(decay_window(l_max, channels).T, ssm_param_dtype(param_dtype))
        noise = jax.random.normal(rngs.params(), (channels, l_max), ssm_param_dtype(param_dtype))
        self.taps = nnx.Param(noise * window / math.sqrt(l_max), group="ssm")

    def __call__(self, length: int):
        """The first ``length`` taps (1 <= length <= l_max): (channels, length), float32
        at least."""
        if not 0 < length <= self.l_max:
            raise ValueError(f"length={length!r} must be in [1, l_max={self.l_max}]")
        return self.taps[:, :length].astype(jnp.promote_types(self.taps.dtype, jnp.float32))


FILTERS: tuple[str, ...] = ("implicit", "explicit")  # the ``filter`` options of the M2 mixer
