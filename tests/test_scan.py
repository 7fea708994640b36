"""Tests for ssm.scan against the float64 references in reference.py.

Values come from ``reference.selective_scan``, a NumPy loop over positions. Gradients
come from ``reference.selective_scan_vjp``, backpropagation through time written out
by hand in NumPy (no autodiff), itself checked here against central finite
differences of ``reference.selective_scan``. The library runs in float64 (under the
``x64`` fixture, float64 inputs) to check the algebra to ~1e-12, and in float32 to
check the precision users get.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference as ref
from ssm import scan

METHODS = ("sequential", "chunked", "associative")
DIFF_ARGS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


def _inputs(rng, b, l, d, n, *, groups=None, D=False, z=False, bias=False, initial=False):
    """Random float64 inputs: decays exp(delta A) in about [0.3, 1), so the state
    remembers tens of positions; with ``bias`` delta is a pre-softplus value."""
    bc = (b, l, n) if groups is None else (b, l, groups, n)
    args = dict(u=rng.standard_normal((b, l, d)),
                delta=rng.standard_normal((b, l, d)) if bias else rng.uniform(0.05, 0.6, (b, l, d)),
                A=-np.exp(rng.uniform(np.log(0.1), np.log(2.0), (d, n))),
                B=rng.standard_normal(bc), C=rng.standard_normal(bc))
    if D:
        args["D"] = rng.standard_normal(d)
    if z:
        args["z"] = rng.standard_normal((b, l, d))
    if bias:
        args["delta_bias"] = rng.uniform(-3, -1, d)
        args["delta"][0, 0, 0] = 25.0  # one step past softplus' threshold (x > 20: x)
    if initial:
        args["initial_state"] = rng.standard_normal((b, d, n))
    return args


def _resets(rng, b, l, p=0.2):
    reset = rng.random((b, l)) < p
    reset[0, 0] = True  # drops the initial state of sequence 0
    return reset


@functools.partial(jax.jit, static_argnames=("opts",))
def _run(args, reset, opts):
    return scan.selective_scan(**args, reset=reset, return_last_state=True, **dict(opts))


@functools.partial(jax.jit, static_argnames=("opts",))
def _run_vjp(args, reset, cotangents, opts):
    def f(a):
        return scan.selective_scan(**a, reset=reset, return_last_state=True, **dict(opts))

    (y, h), vjp = jax.vjp(f, args)
    return y, h, vjp(cotangents)[0]


def _opts(**kw):
    return tuple(sorted(kw.items()))


def _rel(a, b):
    """max |a - b| / max |b| (0 when both vanish)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.max(np.abs(b))
    return float(np.max(np.abs(a - b)) / scale) if scale else float(np.max(np.abs(a)))


def _cast(args, dtype):
    return {k: jnp.asarray(v, dtype) for k, v in args.items()}


# ------------------------------------------------------------------------ the reference


def test_reference_gradients_match_finite_differences(rng):
    b, l, d, n = 2, 9, 4, 3
    args = _inputs(rng, b, l, d, n, groups=2, D=True, z=True, bias=True, initial=True)
    reset = _resets(rng, b, l)
    dy, dh = rng.standard_normal((b, l, d)), rng.standard_normal((b, d, n))
    for reverse in (False, True):
        opts = dict(delta_softplus=True, reset=reset, reverse=reverse)
        grads = ref.selective_scan_vjp(dy, dh, **args, **opts)

        def loss(a):
            y, h = ref.selective_scan(**a, **opts)
            return np.sum(y * dy) + np.sum(h * dh)

        for name in DIFF_ARGS:
            v, eps = rng.standard_normal(np.shape(args[name])), 1e-6
            plus, minus = dict(args), dict(args)
            plus[name], minus[name] = args[name] + eps * v, args[name] - eps * v
            fd = (loss(plus) - loss(minus)) / (2 * eps)
            analytic = np.sum(grads[name] * v)
            assert abs(fd - analytic) <= 1e-7 * max(1.0, abs(analytic)), (reverse, name)


# --------------------------------------------------------- every method vs the reference

CONFIGS = {  # name: (length, input options, scan options)
    "length 1, bare": (1, {}, {}),
    "length 7, bare": (7, {}, {}),
    "length 7, groups D z bias initial resets": (
        7, dict(groups=2, D=True, z=True, bias=True, initial=True), dict(delta_softplus=True)),
    "length 33, all options, reverse, chunk 5": (
        33, dict(groups=4, D=True, z=True, bias=True, initial=True),
        dict(delta_softplus=True, reverse=True, chunk_size=5)),
}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_values_and_all_gradients_match_float64_reference(x64, rng, method, config):
    l, input_opts, scan_opts = CONFIGS[config]
    b, d, n = 2, 8, 3
    args = _inputs(rng, b, l, d, n, **input_opts)
    reset = _resets(rng, b, l) if input_opts else None
    dy, dh = rng.standard_normal((b, l, d)), rng.standard_normal((b, d, n))
    opts = dict(scan_opts, method=method)  # chunk_size matters to "chunked" only
    y, h, grads = _run_vjp(_cast(args, jnp.float64), reset, (jnp.asarray(dy), jnp.asarray(dh)),
                           _opts(**opts))
    ref_opts = {k: v for k, v in scan_opts.items() if k != "chunk_size"}
    y_ref, h_ref = ref.selective_scan(**args, reset=reset, **ref_opts)
    g_ref = ref.selective_scan_vjp(dy, dh, **args, reset=reset, **ref_opts)
    errors = {"y": _rel(y, y_ref), "last_state": _rel(h, h_ref)}
    errors.update({f"d{k}": _rel(grads[k], g_ref[k]) for k in args})
    print(f"{method}, {config}: max rel. error {max(errors.values()):.1e} over {sorted(errors)}")
    assert max(errors.values()) < 1e-11, errors


@pytest.mark.parametrize("method,length,chunk_size", [
    ("sequential", 372, None), ("chunked", 372, 50), ("sequential", 1134, None),
    ("chunked", 1134, None), ("chunked", 1134, 100), ("associative", 7, None),
    ("associative", 1, None), ("chunked", 1, None)])
def test_float32_values_and_state_match_float64_reference(rng, method, length, chunk_size):
    """float32 against float64 on long sequences: chunk sizes 50 and 100 leave 4 and 6
    padded positions; the default (64) cuts 1134 into 18 chunks of 63."""
    b, d, n = 2, 16, 4
    args = _inputs(rng, b, length, d, n, groups=2, D=True, z=True, bias=True, initial=True)
    reset = _resets(rng, b, length, p=0.01)
    y, h = _run(_cast(args, jnp.float32), reset,
                _opts(method=method, chunk_size=chunk_size, delta_softplus=True))
    y_ref, h_ref = ref.selective_scan(**args, reset=reset, delta_softplus=True)
    err_y, err_h = _rel(y, y_ref), _rel(h, h_ref)
    print(f"{method} L={length} chunk={chunk_size}: rel. error y {err_y:.1e}, state {err_h:.1e}")
    # float32 rounds each step at ~6e-8; the state sums ~1/(1 - decay) <= ~30 rounded
    # terms, and y contracts n of them: errors of a few 1e-7 relative to the largest value.
    assert err_y < 2e-6 and err_h < 2e-6


@pytest.mark.parametrize("method", METHODS)
def test_float32_gradients_match_float64_reference(rng, method):
    b, l, d, n = 2, 40, 8, 4
    args = _inputs(rng, b, l, d, n, groups=2, D=True, z=True, bias=True, initial=True)
    reset = _resets(rng, b, l, p=0.05)
    dy, dh = rng.standard_normal((b, l, d)), rng.standard_normal((b, d, n))
    opts = _opts(method=method, delta_softplus=True, chunk_size=16)
    _, _, grads = _run_vjp(_cast(args, jnp.float32), reset,
                           (jnp.asarray(dy, jnp.float32), jnp.asarray(dh, jnp.float32)), opts)
    g_ref = ref.selective_scan_vjp(dy, dh, **args, reset=reset, delta_softplus=True)
    errors = {k: _rel(grads[k], g_ref[k]) for k in args}
    print(f"{method} float32 gradients, max rel. error per argument: "
          + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
    # The adjoint recurrence rounds like the forward one; dA and d delta_bias also sum
    # b l = 80 terms (rounding grows like sqrt(b l) ~ 9 ulps at worst).
    assert max(errors.values()) < 2e-6, errors


def test_float32_exp_is_within_one_ulp_of_the_true_exp():
    """The scans' float32 exp on CPU (a polynomial of multiplies and adds) over its range."""
    x = np.concatenate([np.linspace(-110, 90, 400_001), np.linspace(-2, 0, 100_001)])
    x = x.astype(np.float32)
    got = np.asarray(jax.jit(scan._exp_float32)(x), np.float64)
    true = np.exp(x.astype(np.float64))
    normal = (true > np.finfo(np.float32).tiny) & (true < np.finfo(np.float32).max)
    ulps = np.abs(got - true)[normal] / np.spacing(true[normal].astype(np.float32))
    print(f"float32 exp: max error {ulps.max():.2f} ulp over [{x.min()}, {x.max()}]")
    assert ulps.max() < 1
    assert np.all(got[x > 88.8] == np.inf) and np.all(got[x < -104] == 0)
    assert np.isnan(scan._exp_float32(jnp.float32(np.nan)))
    y, dy = jax.jvp(scan._exp_float32, (jnp.float32(0.3),), (jnp.float32(2.0),))
    np.testing.assert_allclose(dy, 2 * y, rtol=1e-7)


# ------------------------------------------------------------------------------ identities


@pytest.mark.parametrize("method", METHODS)
def test_packed_sequences_with_resets_equal_separate_runs(x64, rng, method):
    lengths, b, d, n = (5, 9, 1, 7), 2, 4, 3
    l = sum(lengths)
    args = _cast(_inputs(rng, b, l, d, n, groups=2, D=True, z=True, bias=True, initial=True),
                 jnp.float64)
    starts = np.cumsum((0,) + lengths[:-1])
    reset = np.zeros((b, l), bool)
    reset[:, starts] = True
    reset[:, 0] = False  # the first sequence starts from initial_state
    for reverse in (False, True):
        opts = dict(delta_softplus=True, reverse=reverse)
        y, h = _run(args, reset, _opts(method=method, chunk_size=4, **opts))
        ys, last = [], None
        for i, (s, m) in enumerate(zip(starts, lengths)):
            seg = {k: (v[:, s:s + m] if k in ("u", "delta", "z", "B", "C") else v)
                   for k, v in args.items()}
            # initial_state enters the first sequence scanned: the last one when reverse
            if i != (len(lengths) - 1 if reverse else 0):
                seg.pop("initial_state")
            y_s, h_s = _run(seg, None, _opts(method="sequential", **opts))
            ys.append(y_s)
            if i == (0 if reverse else len(lengths) - 1):
                last = h_s
        err = max(_rel(y, np.concatenate(ys, 1)), _rel(h, last))
        print(f"{method}, reverse={reverse}: packed vs separate runs, max rel. diff {err:.1e}")
        assert err < 1e-13


@pytest.mark.parametrize("method", METHODS)
def test_reverse_equals_scanning_flipped_inputs(x64, rng, method):
    b, l, d, n = 2, 11, 6, 3
    args = _cast(_inputs(rng, b, l, d, n, groups=3, D=True, z=True, bias=True, initial=True),
                 jnp.float64)
    flipped = {k: (jnp.flip(v, 1) if k in ("u", "delta", "z", "B", "C") else v)
               for k, v in args.items()}
    opts = dict(method=method, delta_softplus=True, chunk_size=4)
    y_rev, h_rev = _run(args, None, _opts(reverse=True, **opts))
    y, h = _run(flipped, None, _opts(**opts))
    err = max(_rel(y_rev, jnp.flip(y, 1)), _rel(h_rev, h))
    print(f"{method}: reverse vs flipped, max rel. diff {err:.1e}")
    assert err < 1e-14


def test_state_update_step_by_step_equals_full_scan(rng):
    b, l, d, n = 2, 9, 8, 4
    args = _cast(_inputs(rng, b, l, d, n, groups=2, D=True, z=True, bias=True, initial=True),
                 jnp.float32)
    y_full, h_full = _run(args, None, _opts(delta_softplus=True))
    step = jax.jit(scan.selective_state_update, static_argnames=("delta_softplus",))
    state, ys = args["initial_state"], []
    for t in range(l):
        y_t, state = step(state, args["u"][:, t], args["delta"][:, t], args["A"],
                          args["B"][:, t], args["C"][:, t], args["D"], args["z"][:, t],
                          args["delta_bias"], delta_softplus=True)
        ys.append(y_t)
    assert state.dtype == jnp.float32 and state.shape == (b, d, n)
    err = max(_rel(jnp.stack(ys, 1), y_full), _rel(state, h_full))
    print(f"step by step vs scan (float32): max rel. diff {err:.1e}")
    assert err < 1e-6


def test_bfloat16_inputs_keep_a_float32_state(rng):
    """Activations in bf16, parameters in float32 (Mamba keeps A_log, D, dt_bias in fp32).

    The computation runs in float32 whatever the input dtype, so a bf16 run equals the
    float32 run on the same (bf16-rounded) inputs up to rounding y to bf16 once (half an
    ulp: at most 2^-8 |y|, bf16 having 8 significand bits), and its state equals it to
    float32 rounding. Against float32 inputs
    the difference is the inputs' own bf16 rounding (2^-9 each), amplified by the
    recurrence: checked with upstream's bf16 tolerance (rtol 3e-2, atol 5e-2).
    """
    b, l, d, n = 2, 64, 16, 4
    args = _inputs(rng, b, l, d, n, D=True, z=True, bias=True, initial=True)
    activations = ("u", "delta", "z", "B", "C")
    lo = {k: jnp.asarray(v, jnp.bfloat16 if k in activations else jnp.float32)
          for k, v in args.items()}
    same = {k: v.astype(jnp.float32) for k, v in lo.items()}
    opts = _opts(delta_softplus=True)
    y16, h16 = _run(lo, None, opts)
    y32, h32 = _run(same, None, opts)
    y_full, _ = _run(_cast(args, jnp.float32), None, opts)
    assert y16.dtype == jnp.bfloat16 and h16.dtype == jnp.float32
    half_ulp = np.abs(np.asarray(y32)) * 2.0**-8 + 1e-30  # the largest half ulp at |y|
    err_y = float(np.max(np.abs(np.asarray(y16, np.float32) - np.asarray(y32)) / half_ulp))
    err_h = _rel(h16, h32)
    err_full = float(np.max(np.abs(np.asarray(y16, np.float32) - np.asarray(y_full))
                            / (5e-2 + 3e-2 * np.abs(np.asarray(y_full)))))
    print(f"bf16: y within {err_y:.2f} x 2^-8 |y| of float32 on the same inputs, state rel. "
          f"diff {err_h:.1e}; vs float32 inputs {err_full:.2f} of upstream's bf16 tolerance")
    assert err_y <= 1 and err_h < 1e-6 and err_full < 1


def test_vmap_of_gradients_equals_a_loop(rng):
    b, l, d, n = 1, 12, 4, 3
    args = _cast(_inputs(rng, b, l, d, n, bias=True), jnp.float32)
    batched = {k: jnp.stack([v, 2 * v]) for k, v in args.items()}

    def loss(a):
        return jnp.sum(scan.selective_scan(**a, delta_softplus=True, chunk_size=5) ** 2)

    grads = jax.jit(jax.vmap(jax.grad(loss)))(batched)
    for i in range(2):
        one = jax.jit(jax.grad(loss))({k: v[i] for k, v in batched.items()})
        for k in args:
            np.testing.assert_allclose(grads[k][i], one[k], rtol=1e-6, atol=1e-6, err_msg=k)


# --------------------------------------------------------------------------------- memory


def test_chunked_memory_grows_linearly_and_holds_no_full_state_buffer():
    """XLA's temp allocation of the chunked scan, forward and value-and-gradient, at
    doubling lengths, against one (b, l, d, n) float32 buffer (what the associative scan
    and the sequential scan's autodiff hold)."""
    b, d, n = 2, 16, 64

    def temp_bytes(fn, l):
        s = jax.ShapeDtypeStruct
        args = (s((b, l, d), jnp.float32), s((b, l, d), jnp.float32), s((d, n), jnp.float32),
                s((b, l, n), jnp.float32), s((b, l, n), jnp.float32))
        return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes

    def grad_of(method):
        def loss(*a):
            return jnp.sum(scan.selective_scan(*a, method=method) ** 2)

        return jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4))

    forward = functools.partial(scan.selective_scan, method="chunked")
    lengths = (1024, 2048, 4096)
    rows = []
    for l in lengths:
        full = b * l * d * n * 4
        rows.append((l, full, temp_bytes(forward, l), temp_bytes(grad_of("chunked"), l)))
        print(f"L={l}: one (b, l, d, n) buffer {full / 2**20:.1f} MiB; chunked temp forward "
              f"{rows[-1][2] / 2**20:.2f} MiB, value-and-grad {rows[-1][3] / 2**20:.2f} MiB")
    seq = temp_bytes(grad_of("sequential"), lengths[0])
    print(f"L={lengths[0]}: sequential value-and-grad temp {seq / 2**20:.1f} MiB (for contrast)")
    assert seq > rows[0][1]  # the check below can see a full buffer when there is one
    for (l0, _, f0, g0), (l1, full1, f1, g1) in zip(rows, rows[1:]):
        assert f1 <= 2.1 * f0 and g1 <= 2.1 * g0, "more than linear growth"
        assert f1 < 0.25 * full1 and g1 < 0.25 * full1, "a (b, l, d, n) buffer is held"


# --------------------------------------------------------------------------------- errors


def test_resolve_method():
    for platform in ("cpu", "gpu", "tpu"):
        assert scan.resolve_method("auto", platform) == "chunked"
    assert scan.resolve_method("associative") == "associative"
    with pytest.raises(ValueError, match="method='fast'.*expected one of"):
        scan.resolve_method("fast")


BAD = {  # name: (changes to valid inputs, error pattern)
    "u rank": (dict(u=np.zeros((2, 5))), r"u has shape \(2, 5\); expected \(batch, length, dim\)"),
    "delta shape": (dict(delta=np.zeros((2, 5, 3))), r"delta has shape \(2, 5, 3\); expected"),
    "z shape": (dict(z=np.zeros((2, 4, 4))), r"z has shape \(2, 4, 4\)"),
    "A dim": (dict(A=np.zeros((3, 2))), r"A has shape \(3, 2\); expected \(dim, N\) = \(4, N\)"),
    "A complex": (dict(A=np.zeros((4, 2), complex)), "A has complex dtype.*only real A"),
    "B rank": (dict(B=np.zeros((2, 5))), r"B has shape \(2, 5\); expected"),
    "C state size": (dict(C=np.zeros((2, 5, 3))), r"C has shape \(2, 5, 3\).*N = 2"),
    "B vs C": (dict(B=np.zeros((2, 5, 1, 2))), r"B has shape \(2, 5, 1, 2\) and C \(2, 5, 2\)"),
    "groups": (dict(B=np.zeros((2, 5, 3, 2)), C=np.zeros((2, 5, 3, 2))),
               "3 groups, which does not divide dim = 4"),
    "D shape": (dict(D=np.zeros(3)), r"D has shape \(3,\); expected \(dim,\) = \(4,\)"),
    "delta_bias shape": (dict(delta_bias=np.zeros((4, 1))), r"delta_bias has shape \(4, 1\)"),
    "initial_state": (dict(initial_state=np.zeros((2, 4))), r"initial_state has shape \(2, 4\)"),
    "reset shape": (dict(reset=np.zeros((2, 4), bool)), r"reset has shape \(2, 4\); expected"),
    "reset dtype": (dict(reset=np.zeros((2, 5))), "reset has dtype float.*expected bool"),
    "method": (dict(method="parallel"), "method='parallel'"),
    "chunk_size": (dict(chunk_size=0), "chunk_size=0; expected a positive integer"),
    "chunk_size float": (dict(chunk_size=8.0), "chunk_size=8.0"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_raises_a_clear_error(case):
    b, l, d, n = 2, 5, 4, 2
    kw = dict(u=np.zeros((b, l, d)), delta=np.zeros((b, l, d)), A=-np.ones((d, n)),
              B=np.zeros((b, l, n)), C=np.zeros((b, l, n)))
    changes, pattern = BAD[case]
    kw.update(changes)
    with pytest.raises(ValueError, match=pattern):
        scan.selective_scan(**kw)


def test_state_update_bad_input_raises_a_clear_error():
    b, d, n = 2, 4, 3
    ok = dict(state=np.zeros((b, d, n)), u_t=np.zeros((b, d)), delta_t=np.zeros((b, d)),
              A=-np.ones((d, n)), B_t=np.zeros((b, n)), C_t=np.zeros((b, n)))
    for changes, pattern in [(dict(state=np.zeros((b, d))), r"state has shape \(2, 4\)"),
                             (dict(u_t=np.zeros((b, 1, d))), r"u_t has shape \(2, 1, 4\)"),
                             (dict(delta_t=np.zeros((b, 3))), r"delta_t has shape \(2, 3\)"),
                             (dict(B_t=np.zeros((b, 2, n))),
                              r"B_t has shape \(2, 2, 3\) and C_t \(2, 3\)")]:
        with pytest.raises(ValueError, match=pattern):
            scan.selective_state_update(**{**ok, **changes})
