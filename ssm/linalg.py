"""Matrix functions for Muon-style optimizers: the matrix sign (polar factor) by
Newton–Schulz, singular-value clipping with msign only, and low-rank tools.

Notation (:mod:`ssm.typing`): ``M`` is (..., rows, cols); leading axes are batch axes.
``M = U Σ V^H`` is its (thin) SVD with min(rows, cols) singular values ``σ_i``.

* ``msign(M) = U V^H = (M M^H)^{-1/2} M`` — the polar factor.
* One Newton–Schulz step is ``X <- a X + (b A + c A^2) X`` with ``A = X X^H``;
  each singular value follows ``p(x) = a x + b x^3 + c x^5``. Tall inputs are
  transposed to wide so that ``A`` is (rows, rows) with rows <= cols.

All functions are pure ``jax.numpy`` and work under ``jit`` and ``vmap``. Results keep
the input's dtype (float32 for integer inputs where noted).
"""

from __future__ import annotations

import math
import numbers
from typing import Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np

from ssm.checks import check_choice

__all__ = ["COEFFS", "NORMALIZATION", "NORMALIZES", "MCLIP_FORMS", "MCLIP_STEPS", "mclip_steps", "schedule",
           "msign", "polar", "svd_clip", "mclip", "low_rank", "randomized_svd", "energy_ratio", "spectral_norm"]

# --------------------------------------------------------------------- coefficients

_PE_PAPER = np.array([
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
])
# Polar Express paper, Alg. 1 (arXiv 2505.16932): safety scaling of all rows but the last.
_PE_PAPER[:-1] /= np.array([1.01, 1.01**3, 1.01**5])

#: Newton–Schulz schedules by name, read-only float64 tables (steps, 3) of the rows
#: ``(a, b, c)`` of ``p(x) = a x + b x^3 + c x^5``.
#:
#: :meta hide-value:
COEFFS: dict[str, np.ndarray] = {
    # Newton's cubic iteration; converges for σ in (0, √3).
    "cubic": np.array([(1.5, -0.5, 0.0)]),
    # Keller Jordan, KellerJordan/Muon muon.py (optax 'standard'). Does not converge:
    # the output is U S' V^T with S' in a band around 1, by design.
    "jordan": np.array([(3.4445, -4.7750, 2.0315)] * 5),
    # Franz Cesista (optax 'dion', microsoft/dion).
    "cesista": np.array([
        (4.0848, -6.8946, 2.9270),
        (3.9505, -6.3029, 2.6377),
        (3.7418, -5.5913, 2.3037),
        (2.8769, -3.1427, 1.2046),
        (2.8366, -3.0525, 1.2012),
    ]),
    # YouJiacheng (÷1024).
    "you": np.array([
        (3955, -8306, 5008), (3735, -6681, 3463), (3799, -6499, 3211),
        (4019, -6385, 2906), (2677, -3029, 1162), (2172, -1833, 682),
    ]) / 1024,
    # Su Jianlin 'Ours-X' (kexue.fm 10922) (÷1024).
    "su": np.array([
        (4140, -7553, 3571), (3892, -6637, 2973), (3668, -6456, 3021),
        (3248, -6211, 3292), (2792, -5759, 3796), (3176, -5507, 4048),
    ]) / 1024,
    # Polar Express paper, 8 rows with its 1.01 safety scaling; the first T rows
    # are the optimal T-step method.
    "polar_express": _PE_PAPER,
    # Polar Express, the 5-row set of modded-nanogpt's train_gpt.py and microsoft/dion's
    # polar_express.py; its 1.02 safety factor is baked into the rows.
    "polar_express_5": np.array([
        (8.156554524902461, -22.48329292557795, 15.878769915207462),
        (4.042929935166739, -2.808917465908714, 0.5000178451051316),
        (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
        (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
        (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
    ]),
}
for _table in COEFFS.values():
    _table.setflags(write=False)

#: The ``(scale, eps)`` each schedule expects, with ``X0 = M / (‖M‖_F · scale + eps)``
#: (:func:`msign` takes this eps relative to ``max|M|`` unless it is given an absolute one).
NORMALIZATION: dict[str, tuple[float, float]] = {
    "cubic": (1.0, 1e-7),
    "jordan": (1.0, 1e-7),
    "cesista": (1.0, 1e-7),
    "you": (1.0, 1e-7),
    "su": (1.0, 1e-7),
    "polar_express": (1.01, 1e-7),
    "polar_express_5": (1.02, 1e-6),
}
_USER_NORMALIZATION = (1.0, 1e-7)

Normalize = Literal["frobenius", "schatten4", "schatten8"]
#: The ``normalize`` options of :func:`msign`.
NORMALIZES: tuple[str, ...] = get_args(Normalize)
MclipForm = Literal["interval", "cancelling"]
#: The ``form`` options of :func:`mclip`.
MCLIP_FORMS: tuple[str, ...] = get_args(MclipForm)
#: The default step count of :func:`mclip`. Its msign arguments (M − αO, or the Gram matrix
#: shifted by α²) have a wider spread of singular values than M, so they need more steps
#: than the 8 rows of polar_express (the last row then repeats and converges quadratically).
MCLIP_STEPS = 12


# ---------------------------------------------------------------------------- checks


def _check_matrix(M, name="M"):
    M = jnp.asarray(M)
    if M.ndim < 2:
        raise ValueError(f"{name} has shape {M.shape}; expected (..., rows, cols) with at least 2 axes")
    return M


def _check_int(value, name, lo, hi=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo or (hi is not None and value > hi):
        rng = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name}={value!r} must be an integer {rng} (static, not traced)")
    return int(value)


def mclip_steps(steps):
    """The step count :func:`mclip` runs: ``steps``, or :data:`MCLIP_STEPS` when None.

    Args:
      steps: an int or None.

    Returns:
      An int.

    Example:
      >>> from ssm.linalg import mclip_steps
      >>> mclip_steps(None), mclip_steps(5)
      (12, 5)
    """
    return MCLIP_STEPS if steps is None else steps


def schedule(coeffs="polar_express", steps=None):
    """Resolve a schedule to ``(table (steps, 3), scale, eps)``.

    ``coeffs`` is a name in :data:`COEFFS` or a user (rows, 3) table (normalized by
    ``‖M‖_F + 1e-7``). ``steps=None`` runs all rows; fewer steps take the first rows,
    more steps repeat the last row.

    Repeating the last row ``p`` converges only where ``p`` has an attracting fixed
    point (``p(x*) = x*``, ``|p'(x*)| < 1``) near 1. Of the built-in schedules:
    ``cubic`` and ``polar_express`` end in a row with ``p(1) = 1, p'(1) = 0`` and
    converge to 1; ``cesista``, ``you`` and ``polar_express_5`` settle at the fixed
    point of their last row (0.989, 0.997, 1.035); ``jordan``'s fixed points
    (0.868, 1.264) both repel, and its σ stay in its band; ``su``'s last row
    (``p(1) = 1.68``) has no positive fixed point and **diverges**: the output
    would overflow to inf/NaN within a few extra steps, so asking for more steps than
    such a table has rows (``su``: 6) raises an error instead.

    Args:
      coeffs: a name in :data:`COEFFS` or a (rows, 3) table.
      steps: an int >= 1, or None for every row.

    Returns:
      ``(table, scale, eps)``: a float64 NumPy array (steps, 3) and the normalization
      of :data:`NORMALIZATION` (``(1.0, 1e-7)`` for a user table).

    Example:
      >>> from ssm.linalg import schedule
      >>> table, scale, eps = schedule("polar_express", steps=10)  # 8 rows, the last repeated
      >>> table.shape, scale, eps, bool((table[-1] == table[7]).all())
      ((10, 3), 1.01, 1e-07, True)
    """
    if isinstance(coeffs, str):
        if coeffs not in COEFFS:
            raise ValueError(f"coeffs={coeffs!r} is not a known schedule; expected one of {sorted(COEFFS)} or a (steps, 3) table")
        table, (scale, eps) = COEFFS[coeffs], NORMALIZATION[coeffs]
    else:
        table = np.asarray(coeffs, dtype=np.float64)
        if table.ndim != 2 or table.shape[0] < 1 or table.shape[1] != 3:
            raise ValueError(f"coeffs has shape {table.shape}; expected (steps, 3) rows of (a, b, c)")
        scale, eps = _USER_NORMALIZATION
    if steps is not None:
        steps = _check_int(steps, "steps", 1)
        if steps <= len(table):
            table = table[:steps]
        else:
            if not _repeats_stay_bounded(table[-1]):
                name = coeffs if isinstance(coeffs, str) else "the user table"
                raise ValueError(f"steps={steps} runs past the {len(table)} rows of {name}, and its last row "
                                 f"diverges when repeated (p(1) = {float(np.sum(table[-1])):.3g}); "
                                 f"use steps <= {len(table)}")
            table = np.concatenate([table, np.repeat(table[-1:], steps - len(table), axis=0)])
    return np.asarray(table), scale, eps


def _repeats_stay_bounded(row, iters: int = 50) -> bool:
    """Whether ``x <- a x + b x^3 + c x^5`` stays bounded for x in [1e-3, 1]: the
    condition for repeating a table's last row."""
    a, b, c = (float(v) for v in row)
    x = np.geomspace(1e-3, 1.0, 64)
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(iters):
            x = a * x + b * x**3 + c * x**5
    return bool(np.all(np.isfinite(x)) and np.abs(x).max() < 2)


# ----------------------------------------------------------------------------- msign


def _mT(X):
    return jnp.swapaxes(X, -1, -2)


def _mH(X):
    return jnp.conj(_mT(X)) if jnp.iscomplexobj(X) else _mT(X)


def _fro(X):
    return jnp.sqrt(jnp.sum(jnp.abs(X) ** 2, axis=(-2, -1), keepdims=True))


def _ns_step(X, A, A2, abc):
    """One Newton–Schulz step ``a X + (b A + c A^2) X`` given ``A = X X^H`` and ``A2 = A^2``."""
    a, b, c = abc[0], abc[1], abc[2]
    return a * X + (b * A + c * A2) @ X


def msign(M, steps=None, coeffs="polar_express", *, normalize: Normalize = "frobenius", eps=None,
          compute_dtype=None):
    """Matrix sign ``msign(M) = U V^H`` by Newton–Schulz.

    ``X_0 = M / (‖M‖_F · s + ε)`` with the schedule's scale ``s`` (polar_express:
    s = 1.01; polar_express_5: s = 1.02; the others s = 1), then for each row
    (a, b, c) ``X <- a X + (b A + c A^2) X`` with ``A = X X^H``.

    The epsilon ``ε`` (``eps``): by default the schedule's (:data:`NORMALIZATION`:
    1e-7, polar_express_5 1e-6) times ``M``'s largest absolute entry, so that
    ``msign(cM) = msign(M)`` for every c > 0, even where ``‖M‖_F`` overflows or
    underflows float32 (entries of 1e18 or 1e-20). A number given as ``eps`` is
    absolute, ``ε = eps``, as in optax's Muon and Jordan's ``muon.py`` (1e-8 and 1e-7
    there): a matrix far below ``eps`` in norm then maps to nearly 0. Either way the
    division runs on ``M / max|M|``, so ``‖M‖_F`` itself is never formed.

    Tall matrices are transposed to wide first (``msign(M^T) = msign(M)^T``), so ``A``
    is min(rows, cols) on a side. ``steps`` past the schedule's rows repeat its last
    row, which diverges for ``su`` (see :func:`schedule`).

    Renormalization (``normalize``): a smaller norm than ``‖M‖_F`` that still bounds
    ``σ_max`` starts the small σ larger, so they reach 1 in fewer steps. Step 1 has
    ``A = X_0 X_0^H`` and ``A^2`` in hand; from them, with no extra matmul, it rescales
    ``X_0 <- X_0 / (s ν)``, ``A <- A / (s ν)^2``, ``A^2 <- A^2 / (s ν)^4``, i.e.
    ``X_0 = M / (s ‖M‖_p)``, then takes the step:

    * ``"schatten4"``: ``ν = ‖A‖_F^{1/2} = (Σ σ^4)^{1/4}``, the Schatten-4 norm
      (optax's ``preconditioning='schatten'``).
    * ``"schatten8"``: ``ν = ‖A^2‖_F^{1/4} = (Σ σ^8)^{1/8}``, the Schatten-8 norm: the
      seed's trick ``n = (Σ (A^2)_ij^2)^{1/8}``, with ``A = X X^T``.

    ``σ_max ≤ ‖M‖_{S8} ≤ ‖M‖_{S4} ≤ ‖M‖_F``, so every σ of ``X_0`` stays in [0, 1/s].
    ``ν`` is floored at the square root of the schedule's epsilon (relative to
    ``‖X_0‖_F ≈ 1``) so ``M = 0`` gives 0.

    Args:
      M: (..., rows, cols) real or complex.
      steps: number of steps; ``None`` runs the schedule's rows, more repeat the last row.
      coeffs: schedule name in :data:`COEFFS` or a (rows, 3) table.
      normalize: ``"frobenius"``, ``"schatten4"`` or ``"schatten8"``.
      eps: ``None`` (the schedule's epsilon relative to ``max|M|``) or an absolute
        epsilon, a real number >= 0 (see above).
      compute_dtype: dtype of the iteration (e.g. ``jnp.bfloat16``); the result is
        returned in ``compute_dtype`` if given, else in ``M``'s dtype.

    Returns:
      (..., rows, cols), singular values in the band the schedule promises.

    Newton–Schulz for the polar factor (Higham, 2008, "Functions of Matrices", ch. 8);
    the quintic schedules of Muon (Jordan, 2024) and Polar Express (Amsel et al., 2025,
    arXiv 2505.16932).

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm import linalg
      >>> M = jnp.asarray(np.random.default_rng(0).normal(size=(8, 4)), jnp.float32)
      >>> O = linalg.msign(M)  # polar_express: converges to U V^T
      >>> O.shape, jnp.linalg.svd(O, compute_uv=False).round(3)
      ((8, 4), Array([1., 1., 1., 1.], dtype=float32))
      >>> bool(jnp.allclose(O, linalg.polar(M), atol=1e-4))
      True
    """
    M = _check_matrix(M)
    check_choice("normalize", normalize, NORMALIZES)
    table, scale, floor = schedule(coeffs, steps)
    if eps is not None and not isinstance(eps, jax.Array) and (
            isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps >= 0):
        raise ValueError(f"eps={eps!r}; expected None (the schedule's, relative) or a real number >= 0")
    out_dtype = M.dtype if compute_dtype is None else jnp.dtype(compute_dtype)
    if not jnp.issubdtype(out_dtype, jnp.inexact):
        out_dtype = jnp.float32
    tall = M.shape[-2] > M.shape[-1]
    X = (_mT(M) if tall else M).astype(out_dtype)
    real_dtype = jnp.finfo(out_dtype).dtype
    peak = jnp.max(jnp.abs(X), axis=(-2, -1), keepdims=True).astype(real_dtype)
    peak = jnp.where(peak > 0, peak, 1).astype(real_dtype)
    X = X / peak  # entries at most 1 first, so ‖X‖_F can neither overflow nor underflow
    # ε / max|M| on this scale: the schedule's ε (relative to max|M|) or an absolute one
    rel_eps = floor if eps is None else eps / peak
    denom = (_fro(X).astype(real_dtype) * scale + rel_eps).astype(real_dtype)
    X = X / jnp.where(denom > 0, denom, 1)  # M = 0 with eps = 0 stays 0
    rows = jnp.asarray(table, real_dtype)
    if normalize != "frobenius":
        A = X @ _mH(X)
        A2 = A @ A
        nu = jnp.sqrt(_fro(A)) if normalize == "schatten4" else jnp.sqrt(jnp.sqrt(_fro(A2)))
        r = (jnp.maximum(nu.astype(real_dtype), np.sqrt(floor)) * scale).astype(real_dtype)  # s ‖X_0‖_p
        X = _ns_step(X / r, A / r**2, A2 / r**4, rows[0])
        rows = rows[1:]

    def body(X, abc):
        A = X @ _mH(X)
        return _ns_step(X, A, A @ A, abc), None

    if rows.shape[0]:
        X, _ = jax.lax.scan(body, X, rows)
    return (_mT(X) if tall else X).astype(out_dtype)


# ------------------------------------------------------------------------ references


def polar(M):
    """Exact polar factor ``U V^H`` via the SVD (reference for :func:`msign`).

    Args:
      M: (..., rows, cols).

    Returns:
      (..., rows, cols) in ``M``'s dtype.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm import linalg
      >>> M = jnp.asarray(np.random.default_rng(0).normal(size=(8, 4)), jnp.float32)
      >>> O = linalg.polar(M)
      >>> bool(jnp.allclose(O.T @ O, jnp.eye(4), atol=1e-5))  # orthonormal columns
      True
    """
    M = _check_matrix(M)
    U, _, Vh = jnp.linalg.svd(M, full_matrices=False)
    return U @ Vh


def svd_clip(M, lo, hi):
    """``U clip(Σ, lo, hi) V^H`` via the SVD (reference for :func:`mclip`).

    Args:
      M: (..., rows, cols).
      lo, hi: Python floats, ``0 <= lo <= hi`` (``hi=inf``: no upper clip).

    Returns:
      (..., rows, cols) in ``M``'s dtype.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm import linalg
      >>> M = jnp.asarray(np.random.default_rng(0).normal(size=(8, 4)), jnp.float32)
      >>> [round(float(s), 2) for s in jnp.linalg.svd(M, compute_uv=False)]
      [3.19, 2.54, 1.91, 0.94]
      >>> [round(float(s), 2) for s in jnp.linalg.svd(linalg.svd_clip(M, 1.0, 2.0), compute_uv=False)]
      [2.0, 2.0, 1.91, 1.0]
    """
    M = _check_matrix(M)
    _check_interval(lo, hi)
    U, s, Vh = jnp.linalg.svd(M, full_matrices=False)
    return (U * jnp.clip(s, lo, hi)[..., None, :].astype(U.dtype)) @ Vh


# ----------------------------------------------------------------------------- mclip


def _check_interval(lo, hi):
    for name, v in (("lo", lo), ("hi", hi)):
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or math.isnan(v):
            raise ValueError(f"{name}={v!r} must be a real number (static, not traced, not NaN)")
    if math.isinf(lo):
        raise ValueError(f"lo={lo!r} must be finite (hi=inf is allowed: no upper clip)")
    if lo < 0:
        raise ValueError(f"lo={lo!r} must be >= 0 (singular values are nonnegative)")
    if lo > hi:
        raise ValueError(f"lo={lo!r} > hi={hi!r}; expected 0 <= lo <= hi")


def mclip(M, lo, hi, steps=None, coeffs="polar_express", *, form: MclipForm = "interval",
          normalize: Normalize = "frobenius", compute_dtype=None):
    """Clip singular values to [lo, hi] using only :func:`msign`: ``U clip(Σ, lo, hi) V^H``.

    With ``O = msign(M)`` and, for a wide M, ``G = M M^H`` (tall M is transposed):

    * ``form="interval"`` (default): the general-interval formula (Su's v1, nested
      msign, generalized to [α, β]):
      ``½{(α+β)O + (αI − M O^H) msign(αO − M) − (βI − M O^H) msign(βO − M)}``
      ``= U ½[(α+β) + |α − Σ| − |β − Σ|] V^H``.
    * ``form="cancelling"``: Su's error-cancelling v3 for [0, 1] clipping, scaled to
      [0, t]: ``C_t = ½[msign(G + t²I)(tO + M) + msign(G − t²I)(tO − M)] = U min(Σ, t) V^H``,
      then ``clip(σ, α, β) = min(σ, β) − min(σ, α) + α`` gives ``C_β − C_α + α O``
      (``C_α`` is skipped when lo == 0). Near σ = t the inexact ``msign(G − t²I)``
      multiplies ``tO − M``, which is small there, and for σ < t the errors of the
      two msigns (of ``G ± t²I``) partly cancel.

    Both are exact with exact msign (tests: ~1e-15 in float64 with ``polar``). Which
    is better with Newton–Schulz depends on the precision (measured in the tests):
    ``cancelling`` works on ``G``, whose singular values are σ², so a spectrum
    spanning 4 decades spans 8 in ``G``: with α inside the spectrum it needs more
    steps and ends less accurate in float32 (σ in [1e-2, 1e2], clip [0.1, 1]:
    4e-2 relative error at 12 steps, 8e-4 at 18, then a floor of 4e-4), while
    ``interval`` reaches 3e-5 at 12 steps and < 1e-3 on every interval tried. In
    bf16 on well-conditioned matrices ``cancelling`` is the more accurate (Su's
    claim; 0.03 vs 0.04 on [0, 1]): :func:`ssm.optim.clip_spectral` uses it.

    Each msign call uses the same ``steps``/``coeffs``/``normalize``/``compute_dtype``;
    ``steps=None`` means :data:`MCLIP_STEPS` (12).

    Args:
      M: (..., rows, cols).
      lo, hi: Python floats with 0 <= lo <= hi (``hi=inf``: no upper clip; NaN refused).
      steps, coeffs, normalize, compute_dtype: of each :func:`msign` call.
      form: ``"interval"`` or ``"cancelling"``.

    Returns:
      (..., rows, cols) in M's dtype (or ``compute_dtype``).

    Su (2025), "msign for singular value clipping" (kexue.fm/archives/11059) and its
    follow-ups.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm import linalg
      >>> M = jnp.asarray(np.random.default_rng(0).normal(size=(8, 4)), jnp.float32)
      >>> clipped = linalg.mclip(M, 1.0, 2.0)
      >>> bool(jnp.allclose(clipped, linalg.svd_clip(M, 1.0, 2.0), atol=1e-4))
      True
    """
    M = _check_matrix(M)
    _check_interval(lo, hi)
    check_choice("form", form, MCLIP_FORMS)
    kw = dict(steps=mclip_steps(steps), coeffs=coeffs, normalize=normalize, compute_dtype=compute_dtype)
    out_dtype = M.dtype if compute_dtype is None else jnp.dtype(compute_dtype)
    tall = M.shape[-2] > M.shape[-1]
    X = (_mT(M) if tall else M).astype(out_dtype)
    eye = jnp.eye(X.shape[-2], dtype=out_dtype)
    O = msign(X, **kw)
    if form == "cancelling":
        G = X @ _mH(X)

        def upper(t):  # U min(Σ, t) V^H
            return 0.5 * (msign(G + t * t * eye, **kw) @ (t * O + X) + msign(G - t * t * eye, **kw) @ (t * O - X))

        out = X if math.isinf(hi) else upper(hi)  # min(σ, ∞) = σ
        if lo > 0:
            out = out - upper(lo) + lo * O
    else:
        P = X @ _mH(O)

        def distance(t):  # U |t - Σ| V^H
            return (t * eye - P) @ msign(t * O - X, **kw)

        if math.isinf(hi):  # max(σ, α) = ½(σ + α + |α - σ|)
            out = 0.5 * (X + lo * O + distance(lo)) if lo > 0 else X
        else:
            out = 0.5 * ((lo + hi) * O + distance(lo) - distance(hi))
    return (_mT(out) if tall else out).astype(out_dtype)


# -------------------------------------------------------------------------- low rank


def low_rank(M, r):
    """Best rank-r approximation (Eckart–Young) by truncating the SVD.

    Promise: ``‖M − low_rank(M, r)‖_F = sqrt(Σ_{i>r} σ_i²)`` (the root-sum-square of
    the dropped singular values) and the spectral error is ``σ_{r+1}``; no rank-r
    matrix does better in either norm.

    Args:
      M: (..., rows, cols).
      r: integer rank in [0, min(rows, cols)].

    Returns:
      (..., rows, cols) of rank <= r, in ``M``'s dtype.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm import linalg
      >>> M = jnp.asarray(np.random.default_rng(0).normal(size=(8, 4)), jnp.float32)
      >>> M2 = linalg.low_rank(M, 2)
      >>> s = jnp.linalg.svd(M, compute_uv=False)
      >>> int(jnp.linalg.matrix_rank(M2)), bool(jnp.allclose(jnp.linalg.norm(M - M2), jnp.sqrt(s[2]**2 + s[3]**2)))
      (2, True)
    """
    M = _check_matrix(M)
    r = _check_int(r, "r", 0, min(M.shape[-2:]))
    U, s, Vh = jnp.linalg.svd(M, full_matrices=False)
    return (U[..., :r] * s[..., None, :r].astype(U.dtype)) @ Vh[..., :r, :]


def randomized_svd(M, r, oversample=10, power_iters=2, *, key):
    """Randomized SVD (Halko, Martinsson & Tropp 2011, Alg. 4.4 + 5.1).

    ``Y = (M M^H)^q M Ω`` with Gaussian Ω (n, r + p), re-orthonormalized by QR after
    every product; ``Q = qr(Y)``, ``B = Q^H M``, ``B = Ũ Σ V^H``, ``U = Q Ũ``.
    The expected error approaches ``σ_{r+1}`` as q grows (HMT Cor. 10.10).

    Args:
      M: (..., rows, cols).
      r: rank in [1, min(rows, cols)].
      oversample: p >= 0.
      power_iters: q >= 0.
      key: a ``jax.random`` key.

    Returns:
      ``(U (..., rows, r), s (..., r), Vh (..., r, cols))``; ``s`` real, descending.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm import linalg
      >>> M = jnp.asarray(np.random.default_rng(0).normal(size=(8, 4)), jnp.float32)
      >>> import jax
      >>> U, s, Vh = linalg.randomized_svd(M, 2, key=jax.random.key(0))
      >>> U.shape, s.shape, Vh.shape
      ((8, 2), (2,), (2, 4))
      >>> bool(jnp.allclose(s, jnp.linalg.svd(M, compute_uv=False)[:2], rtol=1e-4))
      True
    """
    M = _check_matrix(M)
    m, n = M.shape[-2:]
    r = _check_int(r, "r", 1, min(m, n))
    oversample = _check_int(oversample, "oversample", 0)
    power_iters = _check_int(power_iters, "power_iters", 0)
    ell = min(r + oversample, m, n)
    omega = jax.random.normal(key, M.shape[:-2] + (n, ell), jnp.finfo(M.dtype).dtype).astype(M.dtype)
    Q, _ = jnp.linalg.qr(M @ omega)
    for _ in range(power_iters):
        W, _ = jnp.linalg.qr(_mH(M) @ Q)
        Q, _ = jnp.linalg.qr(M @ W)
    Ub, s, Vh = jnp.linalg.svd(_mH(Q) @ M, full_matrices=False)
    return (Q @ Ub)[..., :r], s[..., :r], Vh[..., :r, :]


def energy_ratio(s, r):
    """Fraction of the energy ``Σ s²`` held by the top r singular values.

    Args:
      s: (..., min(rows, cols)) singular values in decreasing order.
      r: an int in [0, min(rows, cols)].

    Returns:
      (...,), in ``s``'s real dtype.

    Example:
      >>> import jax.numpy as jnp
      >>> from ssm.linalg import energy_ratio
      >>> energy_ratio(jnp.array([4.0, 3.0]), 1)  # 16 / 25
      Array(0.64, dtype=float32)
    """
    s = jnp.asarray(s)
    if s.ndim < 1:
        raise ValueError(f"s has shape {s.shape}; expected (..., min(rows, cols)) singular values")
    r = _check_int(r, "r", 0, s.shape[-1])
    e = jnp.abs(s) ** 2
    return jnp.sum(e[..., :r], axis=-1) / jnp.sum(e, axis=-1)


def spectral_norm(M, iters=20, *, key):
    """``σ_max(M)`` by power iteration on ``M^H M``: ``v <- M^H M v / ‖·‖``, then ``‖M v‖``.

    A lower bound that converges like ``(σ_2/σ_1)^{2 iters}``.

    Args:
      M: (..., rows, cols).
      iters: power iterations, >= 1.
      key: a ``jax.random`` key (the start vector).

    Returns:
      (...,), in ``M``'s real dtype.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from ssm import linalg
      >>> M = jnp.asarray(np.random.default_rng(0).normal(size=(8, 4)), jnp.float32)
      >>> import jax
      >>> sigma = linalg.spectral_norm(M, key=jax.random.key(0))
      >>> bool(jnp.allclose(sigma, jnp.linalg.norm(M, 2), rtol=1e-4))
      True
    """
    M = _check_matrix(M)
    iters = _check_int(iters, "iters", 1)
    v = jax.random.normal(key, M.shape[:-2] + (M.shape[-1], 1), jnp.finfo(M.dtype).dtype).astype(M.dtype)

    def body(v, _):
        w = _mH(M) @ (M @ v)
        return w / jnp.linalg.norm(w, axis=(-2, -1), keepdims=True), None

    v = v / jnp.linalg.norm(v, axis=(-2, -1), keepdims=True)
    v, _ = jax.lax.scan(body, v, None, length=iters)
    return jnp.linalg.norm(M @ v, axis=(-2, -1))
