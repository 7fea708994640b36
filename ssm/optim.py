"""Optax transforms for Muon-style optimizers, routed by parameter group.

The matrix functions (``msign``, ``mclip``, the coefficient schedules) live in
:mod:`ssm.linalg`; this file is Optax plumbing only. Every public function returns
an ``optax.GradientTransformation`` and composes with ``optax.chain``.

Shapes: a "matrix" leaf is ``(..., fan_in, fan_out)`` in Flax's ``x @ W`` layout;
leading axes are batch axes, so a Monarch factor ``(k, block_in, block_out)`` is
orthogonalized (and clipped) per block.

* :func:`scale_by_msign`: momentum, Nesterov, ``msign`` over the last two axes,
  shape scaling.
* :func:`muon`: Muon on the ``matrix`` group, AdamW on the others (the design's
  parameter-groups table, :mod:`ssm.groups`).
* :func:`clip_spectral`: a weight constraint, singular values of the new
  parameters clipped to ``max_norm``.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ssm import linalg
from ssm.checks import check_choice

__all__ = ["SHAPE_SCALINGS", "ScaleByMsignState", "scale_by_msign", "muon", "clip_spectral"]

SHAPE_SCALINGS = ("sqrt_ratio", "rms_match", None)  #: The ``shape_scaling`` options of :func:`scale_by_msign`.


class ScaleByMsignState(NamedTuple):
    """State of :func:`scale_by_msign`: the step count ``count`` (() int32, the updates
    taken so far) and the momentum ``mu`` (a tree with the parameters' structure, shapes
    and dtypes).

    Example:
      >>> import jax.numpy as jnp
      >>> from ssm.optim import scale_by_msign
      >>> state = scale_by_msign().init({"w": jnp.zeros((8, 4))})
      >>> type(state).__name__, int(state.count), state.mu["w"].shape
      ('ScaleByMsignState', 0, (8, 4))
    """

    count: jax.Array  # (), int32
    mu: optax.Updates


# ---------------------------------------------------------------------------- checks


def _check_real(value, name, *, lo=None, lo_open=False, hi=None, hi_open=False):
    """A static real number in the interval given (schedules and arrays pass unchecked)."""
    if callable(value) or isinstance(value, jax.Array):
        return value
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok and (lo is None or (value > lo if lo_open else value >= lo))
    ok = ok and (hi is None or (value < hi if hi_open else value <= hi))
    if not ok:
        left = "(-inf" if lo is None else ("(" if lo_open else "[") + f"{lo}"
        right = "inf)" if hi is None else f"{hi}" + (")" if hi_open else "]")
        raise ValueError(f"{name}={value!r}; expected a real number in {left}, {right}")
    return value


def _check_lr(value, name):
    if value is None:
        return value
    return _check_real(value, name, lo=0.0)


def _shape_scale(shape, shape_scaling, rms):
    """The factor of an update of shape (..., fan_in, fan_out)."""
    fan_in, fan_out = shape[-2], shape[-1]
    if shape_scaling == "sqrt_ratio":
        return max(1.0, fan_out / fan_in) ** 0.5
    if shape_scaling == "rms_match":
        return rms * max(fan_in, fan_out) ** 0.5
    return 1.0


# ------------------------------------------------------------------- scale_by_msign


def scale_by_msign(
    steps: int | None = 5,
    coeffs: str | Any = "jordan",
    *,
    beta: float = 0.95,
    nesterov: bool = True,
    bias_correction: bool = True,
    shape_scaling: str | None = "sqrt_ratio",
    rms: float = 0.2,
    normalize: linalg.Normalize = "frobenius",
    compute_dtype=None,
) -> optax.GradientTransformation:
    r"""Orthogonalized momentum: the direction of Muon.

    With gradient ``g_t`` at step ``t = 1, 2, ...``:

    .. math::
      m_t = \beta m_{t-1} + (1 - \beta) g_t, \qquad
      u_t = \beta \hat m_t + (1 - \beta) \hat g_t \quad\text{(Nesterov)}, \qquad
      O_t = s \cdot \mathrm{msign}(u_t)

    where, with ``bias_correction``, ``\hat m_t = m_t / (1 - \beta^{t+1})`` and
    ``\hat g_t = g_t / (1 - \beta^t)`` (exactly ``optax.contrib.scale_by_muon``);
    without it, ``u_t = \beta m_t + (1 - \beta) g_t`` (Keller Jordan's ``muon.py``).
    Without Nesterov, ``u_t = \hat m_t`` (or ``m_t``). ``msign`` acts on the last two
    axes (:func:`ssm.linalg.msign`; leading axes are batched), and the shape factor
    ``s`` of a ``(..., fan_in, fan_out)`` leaf is

    * ``"sqrt_ratio"``: ``sqrt(max(1, fan_out / fan_in))`` (Keller Jordan; optax's
      default; his torch ``(out, in)`` layout reads ``fan_out/fan_in`` the same way),
    * ``"rms_match"``: ``rms * sqrt(max(fan_in, fan_out))`` (Moonshot: update RMS
      about ``rms``, so AdamW's learning rate and weight decay carry over),
    * ``None``: 1.

    Every leaf must have at least 2 axes; route vectors elsewhere (:func:`muon`).

    Args:
      steps: Newton–Schulz steps (``None``: all rows of the schedule).
      coeffs: a schedule name in :data:`ssm.linalg.COEFFS` or a (rows, 3) table.
      beta: momentum decay, in [0, 1).
      nesterov: Nesterov momentum.
      bias_correction: optax's bias-corrected momentum (Keller's is not).
      shape_scaling: ``"sqrt_ratio"``, ``"rms_match"`` or ``None``.
      rms: target update RMS for ``"rms_match"`` (> 0).
      normalize: ``"frobenius"``, ``"schatten4"`` or ``"schatten8"`` (see
        :func:`ssm.linalg.msign`).
      compute_dtype: dtype of the iteration (e.g. ``jnp.bfloat16``); the update is
        returned in the gradient's dtype.

    Returns:
      An ``optax.GradientTransformation`` with state :class:`ScaleByMsignState`; its
      updates have the gradients' tree structure, shapes and dtypes.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm.optim import scale_by_msign
      >>> g = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(8, 4)), jnp.float32)}
      >>> tx = scale_by_msign()
      >>> updates, state = tx.update(g, tx.init(g))
      >>> updates["w"].shape, int(state.count)
      ((8, 4), 1)
      >>> s = jnp.linalg.svd(updates["w"], compute_uv=False)  # orthogonalized: jordan's band around 1
      >>> bool(jnp.all((s > 0.6) & (s < 1.3)))
      True

    References:
      Jordan, `Muon: An optimizer for hidden layers in neural networks
      <https://kellerjordan.github.io/posts/muon/>`_, 2024.
      Liu et al., `Muon is Scalable for LLM Training
      <https://arxiv.org/abs/2502.16982>`_, 2025.
    """
    _check_real(beta, "beta", lo=0.0, hi=1.0, hi_open=True)
    check_choice("shape_scaling", shape_scaling, SHAPE_SCALINGS)
    _check_real(rms, "rms", lo=0.0, lo_open=True)
    check_choice("normalize", normalize, linalg.NORMALIZES)
    linalg.schedule(coeffs, steps)  # validates coeffs and steps now, not at the first update

    def init_fn(params):
        return ScaleByMsignState(count=jnp.zeros([], jnp.int32), mu=optax.tree.zeros_like(params))

    def orthogonalize(u):
        if u.ndim < 2:
            raise ValueError(f"scale_by_msign got a leaf of shape {u.shape}; expected (..., fan_in, fan_out) "
                             "with at least 2 axes (route vectors to AdamW, e.g. with ssm.optim.muon's labels)")
        O = linalg.msign(u, steps, coeffs, normalize=normalize, compute_dtype=compute_dtype)
        return (_shape_scale(u.shape, shape_scaling, rms) * O).astype(u.dtype)

    def update_fn(updates, state, params=None):
        del params
        mu = optax.tree.update_moment(updates, state.mu, beta, 1)
        count = optax.safe_increment(state.count)
        if bias_correction:
            m_hat = optax.tree.bias_correction(mu, beta, optax.safe_increment(count) if nesterov else count)
            g_hat = optax.tree.bias_correction(updates, beta, count)
        else:
            m_hat, g_hat = mu, updates
        if nesterov:
            u = jax.tree.map(lambda m, g: beta * m + (1 - beta) * g, m_hat, g_hat)
        else:
            u = m_hat
        return jax.tree.map(orthogonalize, u), ScaleByMsignState(count=count, mu=mu)

    return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------- muon


def _default_labels(params):
    """optax.contrib.muon's rule: 2-D leaves are matrices, the rest go to AdamW."""
    return jax.tree.map(lambda x: "matrix" if x.ndim == 2 else "adamw", params)


def muon(
    learning_rate: optax.ScalarOrSchedule,
    *,
    steps: int | None = 5,
    coeffs: str | Any = "jordan",
    beta: float = 0.95,
    nesterov: bool = True,
    bias_correction: bool = True,
    shape_scaling: str | None = "sqrt_ratio",
    rms: float = 0.2,
    normalize: linalg.Normalize = "frobenius",
    compute_dtype=None,
    weight_decay: float = 0.0,
    adam_learning_rate: optax.ScalarOrSchedule | None = None,
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    eps: float = 1e-8,
    adam_weight_decay: float = 0.0,
    ssm_learning_rate: optax.ScalarOrSchedule | None = None,
    labels: Any | Callable[[optax.Params], Any] | None = None,
) -> optax.GradientTransformation:
    r"""Muon on dense matrices, AdamW on everything else.

    The ``matrix`` group gets

    .. math::
      \Delta W = -\eta_t \,(O_t + \lambda W), \qquad O_t = \text{scale\_by\_msign}(g)_t

    (decoupled weight decay ``λ = weight_decay`` multiplied by the learning rate, as
    ``optax.contrib.muon``: chain ``scale_by_msign -> add_decayed_weights ->
    scale_by_learning_rate``). The other groups of :mod:`ssm.groups` get
    ``optax.adamw(b1=adam_b1, b2=adam_b2, eps=eps, nesterov=nesterov)`` (NAdamW when
    ``nesterov``, as in optax's Muon):

    ============  ==================  ========================  =======================
    group         update              learning rate             weight decay
    ============  ==================  ========================  =======================
    ``matrix``    Muon                ``learning_rate``         ``weight_decay``
    ``ssm``       AdamW (never Muon)  ``ssm_learning_rate``     none
    ``adamw``     AdamW               ``adam_learning_rate``    ``adam_weight_decay``
    ``no_decay``  AdamW               ``adam_learning_rate``    none
    ============  ==================  ========================  =======================

    Args:
      learning_rate: Muon's learning rate (float or schedule, >= 0).
      steps, coeffs, beta, nesterov, bias_correction, shape_scaling, rms, normalize, compute_dtype: of
        :func:`scale_by_msign`.
      weight_decay: decoupled weight decay of the matrices (>= 0).
      adam_learning_rate: AdamW's learning rate (default ``learning_rate``).
      adam_b1, adam_b2, eps: AdamW's moment decays and epsilon.
      adam_weight_decay: AdamW's weight decay for the ``adamw`` group (>= 0).
      ssm_learning_rate: learning rate of the ``ssm`` group (default
        ``adam_learning_rate``).
      labels: a tree of group names or a function of the params returning one, e.g.
        ``ssm.groups.param_labels(model)``. ``None``: optax's rule, 2-D leaves are
        ``matrix`` and the rest ``adamw`` (so that with ``coeffs="jordan", steps=5``
        this equals ``optax.contrib.muon``).

    Returns:
      An ``optax.GradientTransformation`` (an ``optax.multi_transform``).

    Example:
      >>> import numpy as np, jax, jax.numpy as jnp, optax
      >>> from ssm.optim import muon
      >>> rng = np.random.default_rng(0)
      >>> params = {"w": jnp.asarray(rng.normal(size=(8, 4)), jnp.float32), "b": jnp.zeros(4)}
      >>> grads = {"w": jnp.asarray(rng.normal(size=(8, 4)), jnp.float32), "b": jnp.ones(4)}
      >>> tx = muon(0.02)  # w (2-D): Muon; b: AdamW
      >>> updates, state = tx.update(grads, tx.init(params), params)
      >>> params = optax.apply_updates(params, updates)
      >>> jax.tree.map(jnp.shape, params)
      {'b': (4,), 'w': (8, 4)}

    References:
      Jordan, `Muon: An optimizer for hidden layers in neural networks
      <https://kellerjordan.github.io/posts/muon/>`_, 2024.
      Liu et al., `Muon is Scalable for LLM Training
      <https://arxiv.org/abs/2502.16982>`_, 2025.
    """
    _check_lr(learning_rate, "learning_rate")
    _check_lr(adam_learning_rate, "adam_learning_rate")
    _check_lr(ssm_learning_rate, "ssm_learning_rate")
    _check_real(weight_decay, "weight_decay", lo=0.0)
    _check_real(adam_weight_decay, "adam_weight_decay", lo=0.0)
    _check_real(adam_b1, "adam_b1", lo=0.0, hi=1.0, hi_open=True)
    _check_real(adam_b2, "adam_b2", lo=0.0, hi=1.0, hi_open=True)
    _check_real(eps, "eps", lo=0.0)
    if adam_learning_rate is None:
        adam_learning_rate = learning_rate
    if ssm_learning_rate is None:
        ssm_learning_rate = adam_learning_rate

    def adamw(lr, wd):
        return optax.adamw(lr, b1=adam_b1, b2=adam_b2, eps=eps, weight_decay=wd, nesterov=nesterov)

    matrix = optax.chain(
        scale_by_msign(steps, coeffs, beta=beta, nesterov=nesterov, bias_correction=bias_correction,
                       shape_scaling=shape_scaling, rms=rms, normalize=normalize, compute_dtype=compute_dtype),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )
    transforms = {
        "matrix": matrix,
        "ssm": adamw(ssm_learning_rate, 0.0),
        "adamw": adamw(adam_learning_rate, adam_weight_decay),
        "no_decay": adamw(adam_learning_rate, 0.0),
    }
    return optax.multi_transform(transforms, _default_labels if labels is None else labels)


# ---------------------------------------------------------------------- clip_spectral


def clip_spectral(
    max_norm: float,
    steps: int | None = None,
    coeffs: str | Any = "polar_express",
    *,
    form: linalg.MclipForm = "cancelling",
    normalize: linalg.Normalize = "frobenius",
    compute_dtype=None,
) -> optax.GradientTransformation:
    r"""Weight constraint: the new parameters' singular values are at most ``max_norm``.

    Place it last in an ``optax.chain`` (after the learning rate). For each leaf with
    at least two axes, ``(..., fan_in, fan_out)``, with ``W' = W + Δ``:

    .. math::
      \Delta \leftarrow \mathrm{mclip}(W', 0, \text{max\_norm}) - W
      = U \min(\Sigma', \text{max\_norm}) V^\top - W

    so that ``optax.apply_updates`` yields the clipped ``W'`` (per block for leading
    axes; :func:`ssm.linalg.mclip`, matmuls only). Leaves with fewer than two axes
    pass through unchanged. Every leaf of two or more axes is clipped; to restrict it
    to the ``matrix`` group, wrap it:
    ``optax.masked(clip_spectral(1.0), lambda p: jax.tree.map(lambda g: g == "matrix", labels(p)))``.
    Needs ``params`` in ``update``. Stateless.

    Accuracy is that of ``mclip`` (default 12 steps). The form defaults to Su's
    error-cancelling one, the more accurate for clipping [0, max_norm] in bf16 on
    well-conditioned weights (see :func:`ssm.linalg.mclip`).

    Args:
      max_norm: the bound on the spectral norm (> 0).
      steps, coeffs, form, normalize, compute_dtype: of :func:`ssm.linalg.mclip`.

    Returns:
      An ``optax.GradientTransformation`` (stateless); its updates have the parameters'
      shapes and dtypes.

    Example:
      >>> import numpy as np, jax.numpy as jnp, optax
      >>> from ssm.optim import clip_spectral
      >>> w = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(8, 4)), jnp.float32)}
      >>> tx = optax.chain(optax.sgd(1.0), clip_spectral(1.0))
      >>> updates, _ = tx.update({"w": -w["w"]}, tx.init(w), w)  # a step to 2 w, then clipped
      >>> new = optax.apply_updates(w, updates)
      >>> bool(jnp.all(jnp.linalg.svd(new["w"], compute_uv=False) < 1.01))
      True

    References:
      Su, `Higher-order muP: a more concise but more sophisticated model
      parametrization <https://kexue.fm/archives/11006>`_ and
      `msign for singular value clipping <https://kexue.fm/archives/11059>`_, 2025.
    """
    _check_real(max_norm, "max_norm", lo=0.0, lo_open=True)
    max_norm = float(max_norm)
    linalg.schedule(coeffs, linalg.mclip_steps(steps))
    check_choice("form", form, linalg.MCLIP_FORMS)

    def clip(delta, w):
        if delta.ndim < 2:
            return delta
        new = w + delta
        clipped = linalg.mclip(new, 0.0, max_norm, steps, coeffs, form=form, normalize=normalize,
                               compute_dtype=compute_dtype)
        return (clipped.astype(new.dtype) - w).astype(delta.dtype)

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("clip_spectral needs params: call update(updates, state, params)")
        return jax.tree.map(clip, updates, params), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)
