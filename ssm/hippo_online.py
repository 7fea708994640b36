"""HiPPO as an online memory: feed a signal through a measure's recurrence, then read
the history back from the state (Gu et al., 2020, "HiPPO: Recurrent Memory with Optimal
Polynomial Projections"), and the band-limited test signal the S4 experiments use.

NumPy float64 on the host, like ``ssm.hippo``. Conventions follow state-spaces/s4
``src/models/hippo/visualizations.py`` (its ``HiPPO``, ``HiPPOScale`` and ``basis``),
except where noted below. Notation: ``l`` is the signal length in samples, ``N`` the state
size (``n`` a basis index), ``theta`` a window or time scale in samples, ``d`` a delay in
samples, ``...`` optional batch axes.

=======  ==============================  ==================  ============================================================
measure  recurrence per sample           remembers           basis (``r = d / theta``)
=======  ==============================  ==================  ============================================================
legs     ``c' = (A c + B f) / t``        the whole history   ``sqrt(2n+1) P_n(2s - 1)``, s in [0, 1], oldest to now
legt     ``c' = (A c + B f) / theta``    last theta samples  ``sqrt(2n+1) (-1)^n P_n(2r - 1)``, r < 1
lagt     ``c' = (A c + B f) / theta``    the whole history   ``L_n(r) exp(-r/2)`` (Laguerre functions)
fout     ``c' = (A c + B f) / theta``    last theta samples  ``1, 0, sqrt2 cos 2 pi r, sqrt2 sin 2 pi r, ...``, r <= 1
=======  ==============================  ==================  ============================================================

``A, B`` are ``ssm.hippo.transition``'s, except that LegT and FouT are **doubled** (S4
halves them; the visualisations do not), so that ``theta`` is exactly the window length.
The reference's ``lagt`` basis is time-reversed (its rows are built forward in time and
then flipped a second time); here every LTI basis is indexed the same way, which the tests
check against the signal.
"""

from __future__ import annotations

import math
import numbers
from typing import Literal

import numpy as np
from numpy.polynomial import legendre
from scipy import linalg

from ssm.checks import check_choice, check_positive_int
from ssm.hippo import transition

__all__ = ["ONLINE_MEASURES", "DISCRETIZATIONS", "POSITIONS", "white_signal", "online_transition",
           "online_coefficients", "reconstruction_basis", "memory_mask", "laguerre_functions"]

OnlineMeasure = Literal["legs", "legt", "lagt", "fout"]
#: The measures with an online memory here (the table above; ``lmu`` has none).
ONLINE_MEASURES: tuple[str, ...] = ("legs", "legt", "lagt", "fout")
#: The ``discretization`` options of :func:`online_coefficients`.
DISCRETIZATIONS: tuple[str, ...] = ("bilinear", "zoh")
#: The ``positions`` options of :func:`reconstruction_basis` and :func:`memory_mask`.
POSITIONS: tuple[str, ...] = ("reference", "midpoint")


def white_signal(length: int, dt: float, freq: float, rng, rms: float = 0.5) -> np.ndarray:
    """Band-limited white noise, as ``whitesignal`` in state-spaces/s4
    (``src/dataloaders/utils/signal.py``, adapted there from nengo).

    Every rfft bin ``k`` with ``0 < k / (length dt) <= freq`` gets an independent complex
    Gaussian coefficient (the Nyquist bin of an even length a real one), the others zero;
    the scale makes the expected mean square ``rms**2``. The signal is then shifted to
    start at 0, as the reference does: that adds the square of the first sample, so the
    output's mean square is ``2 rms**2`` on average while its variance stays ``rms**2``.

    Args:
      length: number of samples ``l``.
      dt: sample step (time units); the signal spans ``length * dt``.
      freq: cut-off frequency (cycles per time unit), in ``[1 / (length dt), 0.5 / dt]``.
      rng: a ``numpy.random.Generator``, a ``numpy.random.RandomState`` or an int seed
        (for ``default_rng``). ``RandomState(s)`` with an even length reproduces the
        reference after ``np.random.seed(s)`` draw for draw (imaginary parts first). For
        an odd length the reference returns ``length + 1`` samples; here ``length``.
      rms: the root mean square before the shift (positive).

    Returns:
      (length,) float64, with ``out[0] == 0``.

    Example:
      >>> from ssm.hippo_online import white_signal
      >>> f = white_signal(64, dt=0.01, freq=3.0, rng=0)
      >>> f.shape, f.dtype, float(f[0])
      ((64,), dtype('float64'), 0.0)
    """
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 2:
        raise ValueError(f"length={length!r} must be an integer >= 2")
    if not (_is_real(dt) and dt > 0):
        raise ValueError(f"dt={dt!r} must be a positive number")
    period, nyquist = length * dt, 0.5 / dt
    if not (_is_real(freq) and 1.0 / period <= freq <= nyquist):
        raise ValueError(f"freq={freq!r} must lie in [1/(length*dt), 0.5/dt] = [{1 / period:.6g}, {nyquist:.6g}]: "
                         "below, no frequency bin is kept; above, it exceeds the Nyquist frequency")
    if not (_is_real(rms) and rms > 0):
        raise ValueError(f"rms={rms!r} must be a positive number")
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        rng = np.random.default_rng(rng)
    if not isinstance(rng, (np.random.Generator, np.random.RandomState)):
        raise ValueError(f"rng={rng!r} must be a numpy Generator, a RandomState or an int seed")
    bins = length // 2 + 1
    sigma = rms * math.sqrt(0.5)
    coef = 1j * rng.normal(0.0, sigma, size=bins)
    if length % 2 == 0:
        coef[-1] = 0.0  # the Nyquist bin of a real signal is real
    coef += rng.normal(0.0, sigma, size=bins)
    coef[0] = 0.0
    cut = np.fft.rfftfreq(length, d=dt) > freq
    coef[cut] = 0.0
    n = bins - 1  # bins that could carry power
    coef /= math.sqrt(1.0 - np.sum(cut) / n)
    coef *= math.sqrt(length**2 / (2 * n))  # E mean square = rms^2 (the reference's sqrt(2n) for even length)
    signal = np.fft.irfft(coef, n=length)
    return signal - signal[0]


def online_transition(measure: OnlineMeasure, N: int) -> tuple[np.ndarray, np.ndarray]:
    """``(A, B)`` of the online memory: :func:`ssm.hippo.transition`'s, with LegT and
    FouT doubled (the un-halved matrices of ``visualizations.py``, window ``theta``).

    Args:
      measure: ``"legs"``, ``"legt"``, ``"lagt"`` or ``"fout"``.
      N: state size (even for ``"fout"``).

    Returns:
      ``(A, B)``: float64 (N, N) and (N,).

    Example:
      >>> import numpy as np
      >>> from ssm import hippo, hippo_online
      >>> A, B = hippo_online.online_transition("legt", 4)
      >>> bool(np.allclose(A, 2 * hippo.transition("legt", 4)[0]))
      True
    """
    _check_online_measure(measure)
    A, B = transition(measure, N)
    return (2 * A, 2 * B) if measure in ("legt", "fout") else (A, B)


def online_coefficients(f, measure: OnlineMeasure, N: int, theta: float | None = None,
                        discretization: str = "bilinear") -> np.ndarray:
    """The HiPPO state after every sample of ``f``, from a zero state.

    The discretized HiPPO recurrences of Gu et al. (2020), "HiPPO: Recurrent Memory
    with Optimal Polynomial Projections" (LegS: its scaled recurrence ``c' = (A c + B f)
    / t``). Step ``k`` (0-based) takes the state from time ``k`` to ``k + 1`` (one
    sample = one time unit) with ``f[k]`` held over the step:

    - legs: bilinear with ``A / (k+1)``, ``B / (k+1)``, as ``HiPPOScale``; independent
      of any time scale, so ``theta`` must be None. Taking ``1/t`` at the step's end
      makes this first order: the state approaches the exact projection as ``1/l``.
    - legt, lagt, fout: the same ``Abar, Bbar`` every step from ``A / theta``,
      ``B / theta`` (``HiPPO``, which uses ``scipy.signal.cont2discrete`` with
      ``dt / T``; here ``1 / theta``). ``"bilinear"`` as the reference, or ``"zoh"``
      (exact for the held input).

    Args:
      f: (..., l) samples.
      measure: ``"legs"``, ``"legt"``, ``"lagt"`` or ``"fout"``.
      N: state size (even for ``"fout"``).
      theta: window (legt, fout) or time scale (lagt) in samples; None for legs.
      discretization: ``"bilinear"`` or ``"zoh"`` (``"zoh"`` not for legs: it would need
        a matrix exponential per step).

    Returns:
      (..., l, N) float64: ``c[..., k, :]`` has seen ``f[..., :k+1]``.

    Example:
      >>> import numpy as np
      >>> from ssm.hippo_online import online_coefficients
      >>> f = np.sin(np.linspace(0, 3, 32))
      >>> online_coefficients(f, "legs", 8).shape
      (32, 8)
      >>> online_coefficients(np.stack([f, -f]), "legt", 8, theta=16.0).shape  # a batch of two
      (2, 32, 8)
    """
    _check_online_measure(measure)
    check_choice("discretization", discretization, DISCRETIZATIONS)
    f = np.asarray(f, dtype=np.float64)
    if f.ndim < 1 or f.shape[-1] < 1:
        raise ValueError(f"f has shape {f.shape}; expected (..., length) with length >= 1")
    A, B = online_transition(measure, N)
    _check_theta(measure, theta)
    signals = f.reshape(-1, f.shape[-1])  # (b, l)
    out = np.empty(signals.shape + (N,))
    c = np.zeros((signals.shape[0], N))
    if measure == "legs":
        if discretization != "bilinear":
            raise ValueError(f"discretization={discretization!r} for measure='legs': only 'bilinear' is implemented")
        # (I - A/2t) c' = (I + A/2t) c + (B/t) f, times 2t; lower triangular.
        for k in range(signals.shape[1]):
            t2 = 2.0 * (k + 1)
            rhs = t2 * c + c @ A.T + 2.0 * signals[:, k, None] * B
            c = linalg.solve_triangular(t2 * np.eye(N) - A, rhs.T, lower=True).T
            out[:, k] = c
    else:
        Abar, Bbar = _discretize(A / theta, B / theta, discretization)
        for k in range(signals.shape[1]):
            c = c @ Abar.T + signals[:, k, None] * Bbar
            out[:, k] = c
    return out.reshape(f.shape + (N,))


def reconstruction_basis(measure: OnlineMeasure, N: int, length: int, theta: float | None = None,
                         positions: str = "reference") -> np.ndarray:
    """The measure's basis on the samples of a history, so that
    ``reconstruction_basis(...) @ c[..., -1, :]`` approximates ``f`` (``c`` from
    ``online_coefficients`` over ``length`` samples). Rows outside the window the
    measure remembers (legt, fout) are zero.

    Args:
      measure, N, theta: as for ``online_coefficients``.
      length: history length ``l``; row ``i`` is sample ``i``, row ``l - 1`` the newest.
      positions: where sample ``i`` sits. ``"reference"`` as ``visualizations.py``: at
        delay ``l - 1 - i`` samples (LTI), at ``s = i / (l - 1)`` (LegS, ``linspace``).
        ``"midpoint"``: at the middle of the step its value is held over, delay
        ``l - 1/2 - i`` and ``s = (i + 1/2) / l``. Both recurrences hold ``f[k]`` over
        step ``k``, so the reference's reading lags by half a sample: in the
        visualisation's setting its LegT error stops at ~2e-3 from N = 16 on, where the
        midpoint reading reaches ~4e-5.

    Returns:
      (l, N) float64.

    Example:
      >>> import numpy as np
      >>> from ssm.hippo_online import online_coefficients, reconstruction_basis, white_signal
      >>> f = white_signal(64, dt=0.01, freq=3.0, rng=0)
      >>> c = online_coefficients(f, "legs", 16)
      >>> basis = reconstruction_basis("legs", 16, 64)
      >>> basis.shape
      (64, 16)
      >>> bool(np.abs(basis @ c[-1] - f).max() < 0.01)  # the whole history, read back
      True
    """
    online_transition(measure, N)  # checks measure and N
    x = _positions(measure, length, theta, positions)
    n = np.arange(N)
    if measure == "legs":
        return legendre.legvander(2 * x - 1, N - 1) * np.sqrt(2 * n + 1)
    if measure == "lagt":
        return laguerre_functions(N, x)
    inside = memory_mask(measure, length, theta, positions)
    r = x[inside]
    basis = np.zeros((length, N))
    if measure == "legt":
        basis[inside] = legendre.legvander(2 * r - 1, N - 1) * (np.sqrt(2 * n + 1) * (-1.0) ** n)
    else:  # fout: columns cos_0, sin_0, cos_1, sin_1, ... (sin_0 = 0)
        angle = 2 * np.pi * r[:, None] * np.arange(N // 2)
        basis[inside] = math.sqrt(2.0) * np.stack([np.cos(angle), np.sin(angle)], axis=-1).reshape(len(r), N)
        basis[inside, 0] = 1.0
    return basis


def memory_mask(measure: OnlineMeasure, length: int, theta: float | None = None,
                positions: str = "reference") -> np.ndarray:
    """The samples of a history the last state is meant to reconstruct: (l,) bool.

    LegS and LagT: all of them (LagT's basis functions are orthonormal under the plain
    measure on the whole past, so its projection minimises the unweighted error there; the
    fading ``exp(-r/2)`` belongs to the basis, not to the error). LegT: delay ``r < 1``, FouT:
    ``r <= 1``, as the reference's ``heaviside`` masks (it also drops ``r = 0`` for LegT;
    kept here).

    Args:
      measure, length, theta, positions: as :func:`reconstruction_basis`.

    Returns:
      (l,) bool, True where the sample is remembered.

    Example:
      >>> from ssm.hippo_online import memory_mask
      >>> memory_mask("legt", 8, theta=4.0)  # the last theta samples
      array([False, False, False, False,  True,  True,  True,  True])
    """
    _check_online_measure(measure)
    x = _positions(measure, length, theta, positions)
    if measure in ("legs", "lagt"):
        return np.ones(length, dtype=bool)
    return (x < 1) if measure == "legt" else (x <= 1)


def laguerre_functions(N: int, x: np.ndarray) -> np.ndarray:
    """``L_n(x) exp(-x/2)`` for n < N: the Laguerre functions, orthonormal on [0, inf)
    (the LagT basis of HiPPO). By the three-term recurrence with the exponential
    folded in, so large x underflow to 0 instead of overflowing ``L_n``.

    Args:
      N: number of functions.
      x: points >= 0, any shape ``s``.

    Returns:
      float64 ``s + (N,)``: ``out[..., n] = L_n(x) exp(-x/2)``.

    Example:
      >>> import numpy as np
      >>> from ssm.hippo_online import laguerre_functions
      >>> laguerre_functions(3, np.array([0.0, 1.0])).round(3)  # L_n(0) = 1
      array([[ 1.   ,  1.   ,  1.   ],
             [ 0.607,  0.   , -0.303]])
    """
    x = np.asarray(x, dtype=np.float64)
    out = np.empty(x.shape + (N,))
    prev, cur = np.zeros_like(x), np.exp(-x / 2)
    for k in range(N):
        out[..., k] = cur
        prev, cur = cur, ((2 * k + 1 - x) * cur - k * prev) / (k + 1)
    return out


def _discretize(A: np.ndarray, B: np.ndarray, discretization: str) -> tuple[np.ndarray, np.ndarray]:
    """One unit step of ``x' = A x + B u``: bilinear ``(I - A/2)^-1 (I + A/2)``,
    ``(I - A/2)^-1 B``, or ZOH ``exp(A)``, ``int_0^1 exp(A s) ds B`` (one exponential of
    the block matrix ``[[A, B], [0, 0]]``)."""
    N = A.shape[0]
    if discretization == "bilinear":
        lhs = np.eye(N) - A / 2
        return np.linalg.solve(lhs, np.eye(N) + A / 2), np.linalg.solve(lhs, B)
    block = np.zeros((N + 1, N + 1))
    block[:N, :N], block[:N, N] = A, B
    E = linalg.expm(block)
    return E[:N, :N], E[:N, N]


def _positions(measure: str, length: int, theta, positions: str) -> np.ndarray:
    """Sample positions (l,): ``s`` in [0, 1] for legs, delays ``r`` in windows for the others."""
    check_choice("positions", positions, POSITIONS)
    check_positive_int("length", length)
    _check_theta(measure, theta)
    i = np.arange(length, dtype=np.float64)
    if measure == "legs":
        if positions == "midpoint":
            return (i + 0.5) / length
        return i / (length - 1) if length > 1 else np.zeros(1)
    return (length - 1 - i + (0.5 if positions == "midpoint" else 0.0)) / theta


def _check_online_measure(measure: str) -> None:
    if measure not in ONLINE_MEASURES:
        raise ValueError(f"measure={measure!r} has no online memory here; expected one of {ONLINE_MEASURES}")


def _check_theta(measure: str, theta) -> None:
    if measure == "legs":
        if theta is not None:
            raise ValueError(f"theta={theta!r} for measure='legs': LegS is scale-invariant, pass theta=None")
    elif not (_is_real(theta) and theta > 0):
        raise ValueError(f"theta={theta!r} for measure={measure!r} must be a positive number of samples")


def _is_real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)
