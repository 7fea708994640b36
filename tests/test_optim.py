"""ssm.optim: parity with optax.contrib.muon, the msign band, per-block Monarch
updates, shape scaling, group routing (NNX and Linen), jit, clip_spectral, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx

import ssm.linen
from ssm import linalg
from ssm.groups import param_labels
from ssm.layers import SequenceModel
from ssm.optim import MatrixAxes, clip_spectral, muon, scale_by_msign

# Jordan's schedule, 5 steps: output singular values for inputs with σ/‖M‖_F in
# [1e-2, 1] lie in [0.682, 1.134] (references, measured envelope); a little slack.
JORDAN_BAND = (0.68, 1.14)


def normal(rng, shape):
    return jnp.asarray(rng.normal(size=shape), jnp.float32)


def with_spectrum(rng, shape, lo, hi):
    """(..., m, n) matrices with singular values spread evenly in [lo, hi]."""
    *batch, m, n = shape
    k = min(m, n)
    U = np.linalg.qr(rng.normal(size=(*batch, m, k)))[0]
    V = np.linalg.qr(rng.normal(size=(*batch, n, k)))[0]
    s = np.linspace(lo, hi, k)
    return jnp.asarray((U * s) @ np.swapaxes(V, -1, -2), jnp.float32)


def singular_values(x):
    return np.linalg.svd(np.asarray(x, np.float64), compute_uv=False)


def plain_msign():
    """scale_by_msign reduced to msign: no momentum, no shape factor."""
    return scale_by_msign(5, "jordan", beta=0.0, nesterov=False, bias_correction=False, shape_scaling=None)


@pytest.mark.parametrize("conv", [False, True])
def test_updates_equal_optax_contrib_muon_on_matrices(rng, conv):
    """Same settings (Jordan, 5 steps, Nesterov, bias-corrected momentum, the one eps
    1e-8 in the normalization and in AdamW, decoupled weight decay, NAdamW for the
    rest): our updates equal optax's over several jitted steps. With ``conv``, two
    convolution kernels go to Muon as matrices, (width, in, out) as (width·in, out) and
    torch's (out, in, width) as (in·width, out): our ``matrix_axes`` against optax's
    ``muon_weight_dimension_numbers``.

    Tolerance: both run the same float32 arithmetic except for the order of operations
    (our scan vs optax's unrolled loop, our division by the largest entry before the
    norm); float32 roundoff (1.2e-7) grows by at most |p'| per Newton–Schulz step.
    Measured: ~1e-6 of the update's size; we allow 1e-5."""
    params = {"w": normal(rng, (8, 16)), "v": normal(rng, (24, 12)), "b": normal(rng, (16,)),
              "t": normal(rng, (2, 3, 4))}
    kw = dict(weight_decay=0.1, adam_learning_rate=1e-3, adam_weight_decay=0.01)
    ours, theirs = muon(0.02, **kw), optax.contrib.muon(0.02, **kw)
    if conv:
        from optax.contrib import MuonDimensionNumbers

        params |= {"conv": normal(rng, (3, 4, 8)), "torch": normal(rng, (8, 4, 3))}
        axes = {"conv": MatrixAxes(fan_in=(0, 1), fan_out=2), "torch": MatrixAxes(fan_in=(1, 2), fan_out=0)}
        dims = {"w": MuonDimensionNumbers(), "v": MuonDimensionNumbers(), "b": None, "t": None,
                "conv": MuonDimensionNumbers((0, 1), 2), "torch": MuonDimensionNumbers((1, 2), 0)}
        ours = muon(0.02, matrix_axes=lambda path, x: axes.get(path[-1]), **kw)
        theirs = optax.contrib.muon(0.02, muon_weight_dimension_numbers=dims, **kw)
    s_ours, s_theirs = ours.init(params), theirs.init(params)
    p_ours = p_theirs = params
    worst = 0.0
    for _ in range(4):
        g = jax.tree.map(lambda x: normal(rng, x.shape), params)
        u_ours, s_ours = jax.jit(ours.update)(g, s_ours, p_ours)
        u_theirs, s_theirs = jax.jit(theirs.update)(g, s_theirs, p_theirs)
        for k in params:
            diff = float(jnp.max(jnp.abs(u_ours[k] - u_theirs[k])))
            scale = float(jnp.max(jnp.abs(u_theirs[k])))
            assert diff <= 1e-5 * scale, (k, diff, scale)
            worst = max(worst, diff / scale)
        p_ours, p_theirs = optax.apply_updates(p_ours, u_ours), optax.apply_updates(p_theirs, u_theirs)
    print(f"max |ours - optax| / max |update| over 4 steps: {worst:.2e}")


# Jordan's Newton–Schulz row (references: KellerJordan/Muon muon.py, optax's 'standard'),
# written here, not read from ssm.linalg, for the float64 references below.
JORDAN = (3.4445, -4.7750, 2.0315)


def newton_schulz64(M, eps, steps=5):
    """Jordan's iteration in float64, written out: on the wide side of M,
    X_0 = M / (‖M‖_F + eps), then X <- a X + (b A + c A²) X with A = X Xᵀ."""
    M = np.asarray(M, np.float64)
    tall = M.shape[0] > M.shape[1]
    X = M.T if tall else M
    X = X / (np.linalg.norm(X) + eps)
    a, b, c = JORDAN
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if tall else X


def first_step_direction64(g, beta):
    """Bias-corrected Nesterov momentum at step 1 (Muon's and NAdam's):
    β m̂ + (1 - β) ĝ with m = (1 - β) g, m̂ = m / (1 - β²), ĝ = g / (1 - β)."""
    return (beta / (1 + beta) + 1) * np.asarray(g, np.float64)


def first_muon_update64(g, w, lr, wd, eps, beta=0.95):
    """Muon's first update of a (fan_in, fan_out) matrix in float64:
    -lr (sqrt(max(1, fan_out/fan_in)) NS5(u) + wd W)."""
    u = first_step_direction64(g, beta)
    fan_in, fan_out = u.shape
    return -lr * (max(1.0, fan_out / fan_in) ** 0.5 * newton_schulz64(u, eps) + wd * np.asarray(w, np.float64))


def first_nadamw_update64(g, w, lr, wd, eps, b1=0.9):
    """NAdamW's first update in float64 (v̂ = g² at step 1): -lr (m̂_nesterov / (|g| + eps) + wd w)."""
    g = np.asarray(g, np.float64)
    return -lr * (first_step_direction64(g, b1) / (np.abs(g) + eps) + wd * np.asarray(w, np.float64))


def test_first_update_equals_float64_newton_schulz_of_each_matrix_layout(rng):
    """The first Muon update, against Jordan's iteration written out in NumPy float64 on
    the matrix each layout names: a dense (8, 16); a conv kernel (width 3, in 4, out 8)
    as one (12, 8) matrix; torch's (out 8, in 4, width 3) as (in·width, out), transposed
    back; (in 4, k 2, out 6) with its middle axis batched, one (4, 6) matrix per k. The
    shape factor is the matrix's: sqrt(8/12) < 1 gives 1 for the kernels, sqrt(6/4) for
    the last. Tolerance as for the optax parity test (float32 roundoff grown by the
    iteration, measured ~1e-6 of the update's size)."""
    lr, wd, eps = 0.02, 0.1, 1e-8
    params = {"dense": normal(rng, (8, 16)), "conv": normal(rng, (3, 4, 8)), "torch": normal(rng, (8, 4, 3)),
              "mid": normal(rng, (4, 2, 6))}
    axes = {"conv": MatrixAxes(fan_in=(0, 1), fan_out=2), "torch": MatrixAxes(fan_in=(1, 2), fan_out=0),
            "mid": MatrixAxes(fan_in=0, fan_out=-1)}
    tx = muon(lr, weight_decay=wd, eps=eps, matrix_axes=lambda path, x: axes.get(path[-1]))  # labels: all matrix
    grads = jax.tree.map(lambda x: normal(rng, x.shape), params)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    g, w = ({k: np.asarray(v, np.float64) for k, v in t.items()} for t in (grads, params))
    want = {
        "dense": first_muon_update64(g["dense"], w["dense"], lr, wd, eps),
        "conv": first_muon_update64(g["conv"].reshape(12, 8), w["conv"].reshape(12, 8), lr, wd, eps).reshape(3, 4, 8),
        "torch": first_muon_update64(g["torch"].transpose(1, 2, 0).reshape(12, 8),
                                     w["torch"].transpose(1, 2, 0).reshape(12, 8), lr, wd, eps
                                     ).reshape(4, 3, 8).transpose(2, 0, 1),
        "mid": np.stack([first_muon_update64(g["mid"][:, k], w["mid"][:, k], lr, wd, eps) for k in range(2)], 1),
    }
    errs = {k: float(np.max(np.abs(np.asarray(updates[k], np.float64) - want[k])) / np.max(np.abs(want[k])))
            for k in params}
    print(f"max |update - float64 reference| / max |reference|: { {k: f'{v:.1e}' for k, v in errs.items()} }")
    assert max(errs.values()) < 1e-5, errs
    # Without matrix_axes a (width, in, out) kernel is width separate (in, out) matrices: another update.
    per_tap = muon(lr, weight_decay=wd, labels={"k": "matrix"})
    u_tap, _ = per_tap.update({"k": grads["conv"]}, per_tap.init({"k": params["conv"]}), {"k": params["conv"]})
    apart = np.max(np.abs(np.asarray(u_tap["k"], np.float64) - want["conv"])) / np.max(np.abs(want["conv"]))
    print(f"conv kernel per tap (no matrix_axes) vs as one matrix: {apart:.2f} of the update's size apart")
    assert apart > 1e-2


def test_one_eps_reaches_the_normalization_and_adamw(rng):
    """Gradients of size ~1e-8, where eps matters: for eps = 1e-8 and 1e-6 the first
    updates of a matrix (Muon, X_0 = u / (‖u‖_F + eps)) and of a vector (NAdamW,
    m̂ / (|g| + eps)) equal their float64 formulas with that eps, and change with it.
    With eps=None, scale_by_msign's ε is relative (ssm.linalg.msign): the update of the
    tiny gradient is that of the gradient times 1e8. Tolerance as above; NAdamW's
    float32 bias correction 1 - 0.999 (1.3e-5 off) moves |g| / (|g| + eps) by up to
    ~3e-6 where |g| ≈ eps (optax's arithmetic; measured 5e-6)."""
    lr, wd = 0.02, 0.1
    params = {"w": normal(rng, (8, 16)), "b": normal(rng, (16,))}
    grads = {k: 1e-8 * normal(rng, v.shape) for k, v in params.items()}
    g, w = ({k: np.asarray(v, np.float64) for k, v in t.items()} for t in (grads, params))
    out = {}
    for eps in (1e-8, 1e-6):
        tx = muon(lr, weight_decay=wd, adam_weight_decay=wd, eps=eps)
        updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
        want = {"w": first_muon_update64(g["w"], w["w"], lr, wd, eps),
                "b": first_nadamw_update64(g["b"], w["b"], lr, wd, eps)}
        errs = {k: float(np.max(np.abs(np.asarray(updates[k], np.float64) - want[k])) / np.max(np.abs(want[k])))
                for k in params}
        print(f"eps={eps:g}: max |update - float64 formula| / max |formula|: "
              f"{ {k: f'{v:.1e}' for k, v in errs.items()} }")
        assert max(errs.values()) < 1e-5, (eps, errs)
        out[eps] = want
    for k in params:  # eps is not lost in the noise: the two formulas differ by far more than the tolerance
        change = np.max(np.abs(out[1e-8][k] - out[1e-6][k])) / np.max(np.abs(out[1e-8][k]))
        print(f"{k}: eps 1e-8 -> 1e-6 changes the update by {change:.2f} of its size")
        assert change > 1e-2, (k, change)
    tx = scale_by_msign(eps=None)
    tiny, _ = tx.update(grads["w"], tx.init(grads["w"]))
    unit, _ = tx.update(1e8 * grads["w"], tx.init(grads["w"]))
    np.testing.assert_allclose(tiny, unit, rtol=1e-5, atol=1e-6)


def test_orthogonalized_update_is_in_jordans_band(rng):
    g = normal(rng, (16, 32))
    tx = scale_by_msign(5, "jordan", shape_scaling=None)
    u, _ = tx.update(g, tx.init(g))
    s = singular_values(u)
    print(f"singular values of the update: [{s.min():.3f}, {s.max():.3f}]")
    assert JORDAN_BAND[0] <= s.min() and s.max() <= JORDAN_BAND[1]


def test_monarch_factor_is_orthogonalized_per_block(rng):
    """A (4, 8, 8) factor: each block's update is msign of that block alone."""
    g = with_spectrum(rng, (4, 8, 8), 0.05, 1.0)
    tx = plain_msign()
    u, _ = tx.update(g, tx.init(g))
    per_block = jnp.stack([linalg.msign(g[i], 5, "jordan") for i in range(4)])
    err = float(jnp.max(jnp.abs(u - per_block)))
    s = np.stack([singular_values(u[i]) for i in range(4)])
    print(f"per-block max error {err:.1e}; block singular values in [{s.min():.3f}, {s.max():.3f}]")
    assert err < 1e-5
    assert JORDAN_BAND[0] <= s.min() and s.max() <= JORDAN_BAND[1]
    # Not the msign of the stacked (32, 8) matrix: the blocks are independent.
    assert float(jnp.max(jnp.abs(u.reshape(32, 8) - linalg.msign(g.reshape(32, 8), 5, "jordan")))) > 1e-2


@pytest.mark.parametrize("shape, sqrt_ratio, rms_match", [
    ((8, 32), 2.0, 0.2 * 32**0.5),      # fan_out > fan_in: widened by sqrt(out/in)
    ((32, 8), 1.0, 0.2 * 32**0.5),      # fan_out < fan_in: max(1, ·) keeps 1
    ((4, 8, 18), 1.5, 0.2 * 18**0.5),   # Monarch: per block (8, 18)
])
def test_shape_scaling_values(rng, shape, sqrt_ratio, rms_match):
    g = normal(rng, shape)
    base, _ = plain_msign().update(g, plain_msign().init(g))
    for mode, factor in (("sqrt_ratio", sqrt_ratio), ("rms_match", rms_match)):
        tx = scale_by_msign(5, "jordan", beta=0.0, nesterov=False, bias_correction=False, shape_scaling=mode)
        u, _ = tx.update(g, tx.init(g))
        np.testing.assert_allclose(u, factor * base, rtol=1e-6, atol=1e-7)
    rms = float(jnp.sqrt(jnp.mean((rms_match * base) ** 2)))
    print(f"{shape}: rms_match update RMS {rms:.3f} (Moonshot's target 0.2)")


# ------------------------------------------------------------------------- routing


def _count_msign_calls(monkeypatch):
    shapes = []
    real = linalg.msign

    def spy(M, *args, **kwargs):
        shapes.append(tuple(M.shape))
        return real(M, *args, **kwargs)

    monkeypatch.setattr(linalg, "msign", spy)
    return shapes


@pytest.mark.parametrize("layer", ["mamba", "s4d"])
def test_ssm_parameters_never_reach_msign_through_nnx_optimizer(rng, monkeypatch, layer):
    """SSM group with learning rate 0: it does not move, every matrix moves, and msign
    runs once per matrix leaf (never on SSM dynamics, 2-D as some of them are)."""
    model = SequenceModel(vocab_size=5, d_model=8, n_layers=1, d_output=5, layer=layer,
                          layer_kwargs={"d_state": 4}, post=None if layer == "mamba" else "glu",
                          rngs=nnx.Rngs(0))
    labels = param_labels(model)
    params = nnx.state(model, nnx.Param)
    flat_labels = [v.get_value() for _, v in nnx.to_flat_state(labels(params))]
    assert "ssm" in flat_labels and "matrix" in flat_labels
    assert any(leaf.ndim == 2 for (_, leaf), lab in zip(nnx.to_flat_state(params), flat_labels) if lab == "ssm")
    shapes = _count_msign_calls(monkeypatch)
    optimizer = nnx.Optimizer(model, muon(0.02, adam_learning_rate=1e-2, ssm_learning_rate=0.0, labels=labels),
                              wrt=nnx.Param)
    ids = jnp.asarray(rng.integers(0, 5, size=(2, 8)))

    @nnx.jit
    def step(model, optimizer, ids):
        grads = nnx.grad(lambda m: jnp.mean(m(ids) ** 2))(model)
        optimizer.update(model, grads)

    before = jax.tree.map(jnp.copy, params)
    step(model, optimizer, ids)
    after = nnx.state(model, nnx.Param)
    for (path, b), (_, a), label in zip(nnx.to_flat_state(before), nnx.to_flat_state(after), flat_labels):
        moved = not np.array_equal(b[...], a[...])
        if label == "ssm":
            assert not moved, path
        if label == "matrix":
            assert moved, path
    assert len(shapes) == flat_labels.count("matrix"), (shapes, flat_labels)
    print(f"{layer}: msign ran on {len(shapes)} matrices {sorted(set(shapes))}; "
          f"{flat_labels.count('ssm')} SSM parameters did not move")


def test_linen_params_route_matrices_to_msign_and_freeze_ssm(rng):
    """Linen ``params``: the dense kernel's first update is -lr·s·msign(u) with
    u = (β/(1+β) + 1)·g, bias-corrected Nesterov momentum at step 1, and the S4D
    dynamics with learning rate 0 do not move."""

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(6)(ssm.linen.S4D(3, d_state=4)(x).mean(1))

    x = normal(rng, (8, 8, 3))  # batch 8 >= 3: the kernel's gradient has full rank 3
    params = Net().init(jax.random.key(0), x)["params"]
    labels = param_labels(params)
    lr = 0.05
    tx = muon(lr, adam_learning_rate=1e-2, ssm_learning_rate=0.0, labels=labels)
    grads = jax.grad(lambda p: jnp.sum(Net().apply({"params": p}, x) ** 2))(params)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)

    g = nn.unbox(grads)["Dense_0"]["kernel"]  # (3, 6): s = sqrt(6 / 3)
    beta = 0.95
    u = beta * (g * (1 - beta) / (1 - beta**2)) + (1 - beta) * (g / (1 - beta))
    expected = -lr * 2**0.5 * linalg.msign(u, 5, "jordan")
    # float32 roundoff (1.2e-7) grows by at most a = 3.44 per step only along small σ;
    # with a well-conditioned g the two float32 paths agree to ~1e-6 of the entries.
    err = float(jnp.max(jnp.abs(nn.unbox(updates)["Dense_0"]["kernel"] - expected)))
    print(f"Linen dense kernel: max |update - (-lr s msign(u))| = {err:.1e} (entries ~{lr * 2**0.5 / 6**0.5:.2f})")
    assert err <= 1e-5 * float(jnp.max(jnp.abs(expected))), err
    old_s4d, new_s4d = nn.unbox(params)["S4D_0"], nn.unbox(new)["S4D_0"]
    groups = {tuple(str(getattr(k, "key", k)) for k in p): v
              for p, v in jax.tree_util.tree_flatten_with_path(nn.unbox(labels(params)))[0]}
    for name in old_s4d:
        label = groups[("S4D_0", name)]
        moved = not np.array_equal(old_s4d[name], new_s4d[name])
        assert moved == (label != "ssm"), (name, label)


# --------------------------------------------------------------------- clip_spectral


def test_clip_spectral_bounds_the_spectral_norm_after_an_update(rng):
    params = {"w": with_spectrum(rng, (16, 32), 0.1, 3.0), "monarch": with_spectrum(rng, (4, 8, 8), 0.1, 3.0),
              "b": normal(rng, (16,))}
    tx = optax.chain(muon(0.1), clip_spectral(1.0))
    grads = jax.tree.map(lambda x: normal(rng, x.shape), params)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    unclipped = optax.apply_updates(params, muon(0.1).update(grads, muon(0.1).init(params), params)[0])
    for k in ("w", "monarch"):
        top = singular_values(new[k]).max()
        ref = linalg.svd_clip(unclipped[k], 0.0, 1.0)
        err = float(jnp.max(jnp.abs(new[k] - ref)))
        print(f"{k}: spectral norm {singular_values(unclipped[k]).max():.3f} -> {top:.6f}; "
              f"max error vs SVD clipping {err:.1e}")
        assert top <= 1.0 + 1e-4
        assert err < 1e-3
    np.testing.assert_array_equal(new["b"], unclipped["b"])  # vectors pass through


# ----------------------------------------------------------------------- bad input


@pytest.mark.parametrize("make, name", [
    (lambda: scale_by_msign(shape_scaling="spectral"), "shape_scaling"),
    (lambda: scale_by_msign(beta=1.0), "beta"),
    (lambda: scale_by_msign(beta=-0.1), "beta"),
    (lambda: scale_by_msign(rms=0.0), "rms"),
    (lambda: scale_by_msign(coeffs="muon"), "coeffs"),
    (lambda: muon(-0.01), "learning_rate"),
    (lambda: muon(0.01, adam_learning_rate=-1.0), "adam_learning_rate"),
    (lambda: muon(0.01, ssm_learning_rate=-1.0), "ssm_learning_rate"),
    (lambda: muon(0.01, weight_decay=-0.1), "weight_decay"),
    (lambda: muon(0.01, beta=1.5), "beta"),
    (lambda: clip_spectral(0.0), "max_norm"),
    (lambda: scale_by_msign(eps=-1e-8), "eps"),
    (lambda: muon(0.01, eps=-1e-8), "eps"),
    (lambda: muon(0.01, matrix_axes=MatrixAxes()), "matrix_axes"),
    (lambda: MatrixAxes(fan_in=()), "fan_in"),
    (lambda: MatrixAxes(fan_in=1.5), "fan_in"),
    (lambda: MatrixAxes(fan_out=(1, 1)), "fan_out"),
])
def test_bad_input_names_the_argument(make, name):
    with pytest.raises(ValueError, match=f"{name}="):
        make()


@pytest.mark.parametrize("axes, match", [
    (MatrixAxes(fan_in=0, fan_out=3), r"fan_out=\(3,\) has an axis outside \[-3, 3\)"),
    (MatrixAxes(fan_in=(0, 1), fan_out=-2), r"fan_in \(0, 1\) and fan_out \(1,\) .*must be distinct"),
    ((0, 1), r"matrix_axes returned \(0, 1\); expected a MatrixAxes or None"),
])
def test_matrix_axes_that_do_not_fit_a_parameter_are_refused_at_init(axes, match):
    """The error comes from ``init``, names the shape (3, 4, 8) and the parameter's path."""
    tx = muon(0.02, matrix_axes=lambda path, x: axes if path == ("conv",) else None)
    params = {"conv": jnp.ones((3, 4, 8)), "w": jnp.ones((4, 8))}
    with pytest.raises(ValueError, match=match) as error:
        tx.init(params)
    assert "('conv',)" in str(error.value)
    if isinstance(axes, MatrixAxes):
        assert "shape (3, 4, 8)" in str(error.value)


def test_vector_leaf_in_scale_by_msign_is_refused():
    tx = scale_by_msign()
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        tx.update(jnp.ones(4), tx.init(jnp.ones(4)))


# -------------------------------------------------------------------------- sharding


def test_muon_on_sharded_parameters_equals_unsharded(rng):
    """Over a mesh of 8 devices: a (16, 32) matrix (4 columns each), a Monarch-like
    (4, 8, 8) stack (each block's columns spread, 1 per device) and a (32,) bias (AdamW).
    3 jitted Muon steps give the same updates as on one device, and the new parameters
    keep their sharding. Tolerance: the sharded Gram matrices sum in another order
    (float32 roundoff 1.2e-7), grown by up to a = 3.44 per Jordan step along small σ, as
    in the optax parity test above; measured ~1e-6 of the update's size, allowed 1e-5."""
    devices = jax.devices()
    assert len(devices) == 8, "tests/conftest.py sets 8 host CPU devices"
    mesh = jax.sharding.Mesh(np.array(devices), ("x",))
    P = jax.sharding.PartitionSpec
    spec = {"w": P(None, "x"), "stack": P(None, None, "x"), "b": P("x")}
    shardings = {k: jax.sharding.NamedSharding(mesh, p) for k, p in spec.items()}
    params = {"w": normal(rng, (16, 32)), "stack": normal(rng, (4, 8, 8)), "b": normal(rng, (32,))}
    labels = {"w": "matrix", "stack": "matrix", "b": "no_decay"}
    tx = muon(0.02, weight_decay=0.1, adam_learning_rate=1e-3, labels=labels)
    grads = [jax.tree.map(lambda x: normal(rng, x.shape), params) for _ in range(3)]

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, updates

    runs = {}
    for name, place in (("one device", lambda t: jax.device_put(t, devices[0])),
                        ("sharded", lambda t: jax.device_put(t, shardings))):
        p = place(params)
        state = jax.jit(tx.init)(p)
        updates = []
        for g in grads:
            p, state, u = step(p, state, place(g))
            updates.append(jax.tree.map(np.asarray, u))
        runs[name] = p, updates
    p_sharded, u_sharded = runs["sharded"]
    p_single, u_single = runs["one device"]
    worst = {k: max(float(np.max(np.abs(a[k] - b[k])) / np.max(np.abs(b[k]))) for a, b in zip(u_sharded, u_single))
             for k in params}
    print(f"max |sharded - one device| / max |update| over 3 steps: { {k: f'{v:.1e}' for k, v in worst.items()} }; "
          f"shardings after: { {k: v.sharding.spec for k, v in p_sharded.items()} }")
    assert max(worst.values()) < 1e-5, worst
    for k in params:
        assert p_sharded[k].sharding.is_equivalent_to(shardings[k], p_sharded[k].ndim), (k, p_sharded[k].sharding)
