"""Optax transforms for Muon-style optimizers, routed by parameter group.

The matrix functions (``msign``, ``mclip``, the coefficient schedules) live in
:mod:`ssm.linalg`; this file is Optax plumbing only. Every public function returns
an ``optax.GradientTransformation`` and composes with ``optax.chain``.

Shapes: a "matrix" leaf is ``(..., fan_in, fan_out)`` in Flax's ``x @ W`` layout;
leading axes are batch axes, so a Monarch factor ``(k, block_in, block_out)`` is
orthogonalized (and clipped) per block. :class:`MatrixAxes` names other layouts for
Muon, e.g. a convolution kernel ``(width, in, out)`` as one ``(width·in, out)`` matrix.

* :func:`scale_by_msign`: momentum, Nesterov, ``msign`` over the last two axes
  (or the :class:`MatrixAxes` given), shape scaling.
* :func:`muon`: Muon on the ``matrix`` group, AdamW on the others (the design's
  parameter-groups table, :mod:`ssm.groups`).
* :func:`clip_spectral`: a weight constraint, singular values of the new
  parameters clipped to ``max_norm``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ssm import linalg
from ssm.checks import check_choice
from ssm.groups import _names

__all__ = ["SHAPE_SCALINGS", "MatrixAxes", "ScaleByMsignState", "scale_by_msign", "muon", "clip_spectral"]

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


# ----------------------------------------------------------------------- matrix axes


def _axes_tuple(value, name):
    """``value`` (an int or a sequence of ints) as a non-empty tuple of ints."""
    items = (value,) if isinstance(value, numbers.Integral) else value
    try:
        axes = tuple(items)
    except TypeError:
        axes = None
    if not axes or any(isinstance(a, bool) or not isinstance(a, numbers.Integral) for a in axes):
        raise ValueError(f"{name}={value!r}; expected an axis (int) or a non-empty tuple of axes")
    axes = tuple(int(a) for a in axes)
    if len(set(axes)) != len(axes):
        raise ValueError(f"{name}={value!r} names an axis twice; expected distinct axes")
    return axes


@dataclasses.dataclass(frozen=True)
class MatrixAxes:
    """Which axes of a parameter make the matrix that Muon orthogonalizes (optax's
    ``MuonDimensionNumbers(reduction_axis, output_axis)``).

    A parameter ``W`` of ``y = x @ W`` sums the input over its ``fan_in`` axes and
    indexes the output by its ``fan_out`` axes; the remaining axes are batch axes, one
    independent matrix each. The update is transposed to ``(*batch, *fan_in,
    *fan_out)`` (batch axes in their order, the others in the order given), reshaped
    to ``(*batch, prod(fan_in), prod(fan_out))``, orthogonalized there (msign, and the
    shape factor of :func:`scale_by_msign` from that matrix's ``fan_in`` and
    ``fan_out``), then reshaped and transposed back.

    ``MatrixAxes()`` is the rule without one: the last two axes, any leading ones
    batched (a Monarch factor ``(k, block_in, block_out)`` per block). A convolution
    kernel ``(width, in, out)`` (Flax's layout) under that rule is ``width``
    separate ``(in, out)`` matrices; ``MatrixAxes(fan_in=(0, 1), fan_out=2)`` makes it
    the one ``(width·in, out)`` matrix that maps a receptive field to an output, as
    Jordan's Muon flattens convolution filters.

    Args:
      fan_in: an axis or a tuple of axes (ints; negative ones count from the end).
      fan_out: likewise, disjoint from ``fan_in``.

    Stored as tuples; axes are checked against a parameter's shape where they are
    used (:meth:`split`), with an error naming the shape.

    Example:
      >>> from ssm.optim import MatrixAxes
      >>> conv = MatrixAxes(fan_in=(0, 1), fan_out=2)  # a (width, in, out) kernel
      >>> conv
      MatrixAxes(fan_in=(0, 1), fan_out=(2,))
      >>> conv.split((3, 4, 8)), MatrixAxes().split((4, 8, 16))  # (batch, fan_in, fan_out)
      (((), (0, 1), (2,)), ((0,), (1,), (2,)))
    """

    fan_in: int | tuple[int, ...] = -2
    fan_out: int | tuple[int, ...] = -1

    def __post_init__(self):
        object.__setattr__(self, "fan_in", _axes_tuple(self.fan_in, "fan_in"))
        object.__setattr__(self, "fan_out", _axes_tuple(self.fan_out, "fan_out"))

    def split(self, shape) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """The batch, fan-in and fan-out axes of an array of ``shape``.

        Args:
          shape: a tuple of ints, the parameter's shape.

        Returns:
          ``(batch, fan_in, fan_out)``: tuples of non-negative axes, ``batch`` the
          axes in neither, in increasing order.
        """
        ndim = len(shape)
        for name, axes in (("fan_in", self.fan_in), ("fan_out", self.fan_out)):
            if any(not -ndim <= a < ndim for a in axes):
                raise ValueError(f"{self} does not fit a parameter of shape {tuple(shape)}: {name}={axes} "
                                 f"has an axis outside [-{ndim}, {ndim})")
        fan_in, fan_out = (tuple(a % ndim for a in axes) for axes in (self.fan_in, self.fan_out))
        if set(fan_in) & set(fan_out) or len(set(fan_in)) < len(fan_in) or len(set(fan_out)) < len(fan_out):
            raise ValueError(f"{self} does not fit a parameter of shape {tuple(shape)}: fan_in {fan_in} and "
                             f"fan_out {fan_out} (as non-negative axes) must be distinct axes")
        batch = tuple(a for a in range(ndim) if a not in fan_in + fan_out)
        return batch, fan_in, fan_out


MatrixAxesFn = Callable[[tuple, jax.Array], "MatrixAxes | None"]


def _check_matrix_axes(matrix_axes):
    if matrix_axes is not None and not callable(matrix_axes):
        raise ValueError(f"matrix_axes={matrix_axes!r}; expected None or a function (path, leaf) -> "
                         "MatrixAxes or None")
    return matrix_axes


def _leaf_axes(matrix_axes, path, leaf) -> MatrixAxes:
    """The :class:`MatrixAxes` of the leaf at ``path``: ``matrix_axes``'s, or the default."""
    axes = None if matrix_axes is None else matrix_axes(_names(path), leaf)
    if axes is None:
        return MatrixAxes()
    if not isinstance(axes, MatrixAxes):
        raise ValueError(f"matrix_axes returned {axes!r}; expected a MatrixAxes or None")
    return axes


def _as_matrix(u, axes: MatrixAxes):
    """``u`` as ``(*batch, fan_in, fan_out)`` (:class:`MatrixAxes`), and the function
    that takes an array of that shape back to ``u``'s layout."""
    batch, fan_in, fan_out = axes.split(u.shape)
    order = batch + fan_in + fan_out
    sizes = tuple(u.shape[a] for a in order)
    nb, ni = len(batch), len(fan_in)
    matrix = jnp.transpose(u, order).reshape(*sizes[:nb], math.prod(sizes[nb:nb + ni]), math.prod(sizes[nb + ni:]))

    def back(m):
        return jnp.transpose(m.reshape(sizes), tuple(order.index(a) for a in range(u.ndim)))

    return matrix, back


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
    eps: float | None = 1e-8,
    matrix_axes: MatrixAxesFn | None = None,
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
    axes (:func:`ssm.linalg.msign`; leading axes are batched), or on the matrix that
    ``matrix_axes`` makes of the leaf (:class:`MatrixAxes`); its Newton–Schulz
    iteration starts from ``X_0 = u_t / (‖u_t‖_F · c + eps)`` (``c`` the schedule's
    scale: 1 for ``jordan``), with ``eps`` absolute as in optax's ``scale_by_muon``.
    The shape factor ``s`` of a ``(..., fan_in, fan_out)`` leaf (of that matrix) is

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
      eps: the normalization's epsilon, absolute (>= 0; optax's 1e-8); ``None``:
        the schedule's, relative to the largest entry, so that the update does not
        depend on the gradient's scale (:func:`ssm.linalg.msign`).
      matrix_axes: ``None`` (every leaf's last two axes), or a function
        ``(path, leaf) -> MatrixAxes | None`` (``path`` a tuple of names, as
        :func:`ssm.groups.param_labels`'s ``override`` sees it; ``None``: the last two
        axes), e.g. ``lambda path, x: MatrixAxes((0, 1), 2) if x.ndim == 3 else None``
        for 1-D convolution kernels.
      compute_dtype: dtype of the iteration (e.g. ``jnp.bfloat16``); the update is
        returned in the gradient's dtype.

    Returns:
      An ``optax.GradientTransformation`` with state :class:`ScaleByMsignState`; its
      updates have the gradients' tree structure, shapes and dtypes. ``init`` checks
      every leaf's matrix axes (a ValueError naming its path and shape).

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
    if eps is not None:
        _check_real(eps, "eps", lo=0.0)
    _check_matrix_axes(matrix_axes)
    linalg.schedule(coeffs, steps)  # validates coeffs and steps now, not at the first update

    def as_matrix(path, u):
        if u.ndim < 2:
            raise ValueError(f"scale_by_msign got a leaf of shape {u.shape} at {_names(path)}; expected "
                             "(..., fan_in, fan_out) with at least 2 axes (route vectors to AdamW, e.g. with "
                             "ssm.optim.muon's labels)")
        try:
            return _as_matrix(u, _leaf_axes(matrix_axes, path, u))
        except ValueError as error:
            raise ValueError(f"{error} (the parameter at {_names(path)})") from None

    def init_fn(params):
        jax.tree_util.tree_map_with_path(as_matrix, params)  # bad matrix axes fail here, not at the first update
        return ScaleByMsignState(count=jnp.zeros([], jnp.int32), mu=optax.tree.zeros_like(params))

    def orthogonalize(path, u):
        matrix, back = as_matrix(path, u)
        O = linalg.msign(matrix, steps, coeffs, normalize=normalize, eps=eps, compute_dtype=compute_dtype)
        return back((_shape_scale(matrix.shape, shape_scaling, rms) * O).astype(u.dtype))

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
        return jax.tree_util.tree_map_with_path(orthogonalize, u), ScaleByMsignState(count=count, mu=mu)

    return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------- muon


def _default_labels(matrix_axes):
    """optax.contrib.muon's rule: 2-D leaves, and those ``matrix_axes`` names axes
    for, are matrices; the rest go to AdamW."""

    def labels(params):
        def label(path, x):
            named = matrix_axes is not None and matrix_axes(_names(path), x) is not None
            return "matrix" if x.ndim == 2 or named else "adamw"

        return jax.tree_util.tree_map_with_path(label, params)

    return labels


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
    matrix_axes: MatrixAxesFn | None = None,
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
    ``nesterov``, as in optax's Muon). One ``eps``, as in optax, serves AdamW and the
    Newton–Schulz normalization ``X_0 = u / (‖u‖_F · c + eps)`` of
    :func:`scale_by_msign`:

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
      matrix_axes: of :func:`scale_by_msign`: how a ``matrix`` leaf is made a matrix
        (see ``labels``).
      weight_decay: decoupled weight decay of the matrices (>= 0).
      adam_learning_rate: AdamW's learning rate (default ``learning_rate``).
      adam_b1, adam_b2: AdamW's moment decays.
      eps: AdamW's epsilon and the Newton–Schulz normalization's (absolute, >= 0;
        optax's 1e-8 for both).
      adam_weight_decay: AdamW's weight decay for the ``adamw`` group (>= 0).
      ssm_learning_rate: learning rate of the ``ssm`` group (default
        ``adam_learning_rate``).
      labels: a tree of group names or a function of the params returning one, e.g.
        ``ssm.groups.param_labels(model)``. ``None``: optax's rule, 2-D leaves (and
        those ``matrix_axes`` gives a :class:`MatrixAxes`) are ``matrix`` and the rest
        ``adamw``, so that with ``coeffs="jordan", steps=5`` this equals
        ``optax.contrib.muon`` (with ``muon_weight_dimension_numbers`` for the
        leaves ``matrix_axes`` names). Labels decide the group; ``matrix_axes`` only
        how a ``matrix`` leaf is made a matrix.

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
    _check_matrix_axes(matrix_axes)
    if adam_learning_rate is None:
        adam_learning_rate = learning_rate
    if ssm_learning_rate is None:
        ssm_learning_rate = adam_learning_rate

    def adamw(lr, wd):
        return optax.adamw(lr, b1=adam_b1, b2=adam_b2, eps=eps, weight_decay=wd, nesterov=nesterov)

    matrix = optax.chain(
        scale_by_msign(steps, coeffs, beta=beta, nesterov=nesterov, bias_correction=bias_correction,
                       shape_scaling=shape_scaling, rms=rms, normalize=normalize, eps=eps, matrix_axes=matrix_axes,
                       compute_dtype=compute_dtype),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )
    transforms = {
        "matrix": matrix,
        "ssm": adamw(ssm_learning_rate, 0.0),
        "adamw": adamw(adam_learning_rate, adam_weight_decay),
        "no_decay": adamw(adam_learning_rate, 0.0),
    }
    return optax.multi_transform(transforms, _default_labels(matrix_axes) if labels is None else labels)


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
