"""The Mamba-2 state-space dual (ssm.ssd) and the Mamba2 layer, against float64 loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import reference as ref
from ssm.groups import param_labels
from ssm.layers.block import ResidualBlock
from ssm.layers.mamba2 import Mamba2
from ssm.ssd import segsum, ssd_chunked, ssd_sequential, ssd_step


# Jitted once per shape: eager dispatch would compile every small op for every shape.
chunked = jax.jit(ssd_chunked, static_argnums=5, static_argnames="return_last_state")
sequential = jax.jit(ssd_sequential, static_argnames="return_last_state")


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm((a - b).ravel()) / np.linalg.norm(b.ravel()))


def ssd_inputs(rng, b=2, L=11, H=4, P=3, G=2, N=5, dtype=np.float64):
    """Random SSD inputs: dt = softplus(normal - 1) (about 0.1 to 1), A in [-4.5, -1]."""
    x = rng.normal(size=(b, L, H, P))
    dt = np.log1p(np.exp(rng.normal(size=(b, L, H)) - 1))
    A = -np.exp(rng.uniform(0, 1.5, size=H))
    B = rng.normal(size=(b, L, G, N))
    C = rng.normal(size=(b, L, G, N))
    h0 = rng.normal(size=(b, H, P, N))
    return [jnp.asarray(v, dtype) for v in (x, dt, A, B, C, h0)]


# ------------------------------------------------------------------------- segsum


def test_segsum_equals_double_loop(rng, x64):
    a = rng.normal(size=(2, 3, 7))
    out = np.asarray(segsum(jnp.asarray(a)))
    assert out.shape == (2, 3, 7, 7)
    err = 0.0
    for idx in np.ndindex(2, 3):
        expected = ref.ssd_segsum_loop(a[idx])
        assert np.array_equal(np.isinf(out[idx]), np.isinf(expected))  # -inf exactly above the diagonal
        finite = np.isfinite(expected)
        err = max(err, np.abs(out[idx][finite] - expected[finite]).max())
    print(f"segsum vs double loop: max abs error {err:.1e}")
    assert err < 1e-14


def test_segsum_is_stable_where_a_difference_of_cumsums_is_not(rng):
    """Long runs of strong decay: prefix sums reach -3e4, and their differences lose
    ~1e-3 in float32; the masked cumsum keeps short segments accurate."""
    a = jnp.asarray(-rng.uniform(0, 100, size=600), jnp.float32)
    exact = np.asarray(a, np.float64)[1:]  # segments of one step: out[i, i-1] = a[i]
    stable = np.diagonal(np.asarray(segsum(a)), offset=-1)
    cums = np.asarray(jnp.cumsum(a))
    unstable = cums[1:] - cums[:-1]
    err_stable, err_unstable = np.abs(stable - exact).max(), np.abs(unstable - exact).max()
    print(f"one-step segments in float32: masked cumsum error {err_stable:.1e}, "
          f"difference of cumsums {err_unstable:.1e}")
    assert err_stable < 1e-5 < err_unstable


# ------------------------------------------------------------------ SSD algorithms


@pytest.mark.parametrize("L, chunk", [(12, 4), (11, 4), (5, 8), (13, 1)])
def test_chunked_equals_sequential_equals_float64_loop(L, chunk, rng, x64):
    """Groups of 2 heads, an initial state; lengths that do and do not divide the chunk."""
    x, dt, A, B, C, h0 = ssd_inputs(rng, L=L)
    y_ref, s_ref = ref.ssd_loop(x, dt, A, B, C, initial_state=np.asarray(h0))
    y_c, s_c = chunked(x, dt, A, B, C, chunk, initial_state=h0, return_last_state=True)
    y_s, s_s = sequential(x, dt, A, B, C, initial_state=h0, return_last_state=True)
    errs = {name: (rel(y, y_ref), rel(s, s_ref)) for name, y, s in
            [("chunked", y_c, s_c), ("sequential", y_s, s_s)]}
    print(f"L={L} chunk={chunk}: " + ", ".join(f"{k} y {e[0]:.1e} state {e[1]:.1e}" for k, e in errs.items()))
    assert y_c.shape == x.shape and s_c.shape == h0.shape and y_c.dtype == jnp.float64
    assert max(max(e) for e in errs.values()) < 1e-12
    # Without an initial state, and without asking for the last state.
    y0_ref, _ = ref.ssd_loop(x, dt, A, B, C)
    assert rel(chunked(x, dt, A, B, C, chunk), y0_ref) < 1e-12


@pytest.mark.parametrize("G", [1, 4])
def test_one_group_and_one_group_per_head_equal_float64_loop(G, rng, x64):
    """B and C shared by all four heads (Mamba-2's G = 1) and one pair per head (G = H),
    beside the two groups of two above: chunks of 4 over 11 positions, steps by ssd_step."""
    x, dt, A, B, C, h0 = ssd_inputs(rng, L=11, H=4, G=G)
    y_ref, s_ref = ref.ssd_loop(x, dt, A, B, C, initial_state=np.asarray(h0))
    y_c, s_c = chunked(x, dt, A, B, C, 4, initial_state=h0, return_last_state=True)
    y_s, s_s = sequential(x, dt, A, B, C, initial_state=h0, return_last_state=True)
    errs = [rel(y_c, y_ref), rel(s_c, s_ref), rel(y_s, y_ref), rel(s_s, s_ref)]
    print(f"G={G}: chunked y {errs[0]:.1e} state {errs[1]:.1e}, sequential y {errs[2]:.1e} state {errs[3]:.1e}")
    assert max(errs) < 1e-12


def test_chunked_in_float32_matches_float64_loop(rng):
    x, dt, A, B, C, h0 = ssd_inputs(rng, L=37, dtype=np.float32)
    y_ref, s_ref = ref.ssd_loop(x, dt, A, B, C, initial_state=np.asarray(h0))
    y, s = chunked(x, dt, A, B, C, 8, initial_state=h0, return_last_state=True)
    assert y.dtype == s.dtype == jnp.float32
    errs = rel(y, y_ref), rel(s, s_ref)
    print(f"float32 chunked vs float64 loop: y {errs[0]:.1e}, state {errs[1]:.1e}")
    assert max(errs) < 1e-5


def test_bf16_inputs_are_computed_in_float32(rng):
    x, dt, A, B, C, _ = ssd_inputs(rng, L=9, dtype=np.float32)
    x, B, C = (v.astype(jnp.bfloat16) for v in (x, B, C))
    y = chunked(x, dt, A, B, C, 4)
    assert y.dtype == jnp.float32
    y_ref, _ = ref.ssd_loop(*(np.asarray(v.astype(jnp.float32)) for v in (x, dt, A, B, C)))
    err = rel(y, y_ref)
    print(f"bf16 inputs (exact in float32) vs float64 loop: {err:.1e}")
    assert err < 1e-5


def test_ssd_equals_mamba1_selective_scan_with_A_per_head(rng, x64):
    """SSD is the selective scan with A = A_h on every channel and state entry of
    head h, and dt_h repeated over its channels; B and C grouped the same way."""
    x, dt, A, B, C, _ = ssd_inputs(rng, L=10, H=4, P=3, G=2, N=5)
    H, P, N = 4, 3, 5
    u = np.asarray(x).reshape(2, 10, H * P)  # channel d = h P + p
    delta = np.repeat(np.asarray(dt), P, axis=-1)
    A_channels = np.repeat(np.asarray(A), P)[:, None] * np.ones((1, N))
    y_mamba1 = ref.selective_scan_loop(u, delta, A_channels, B, C)
    y = chunked(x, dt, A, B, C, 4).reshape(2, 10, H * P)
    err = rel(y, y_mamba1)
    print(f"SSD chunked vs Mamba-1 selective scan (loop): {err:.1e}")
    assert err < 1e-12


def test_ssd_step_advances_the_state_once(rng, x64):
    x, dt, A, B, C, h0 = ssd_inputs(rng, L=1)
    y_ref, s_ref = ref.ssd_loop(x, dt, A, B, C, initial_state=np.asarray(h0))
    y, s = ssd_step(h0, x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0])
    assert rel(y, y_ref[:, 0]) < 1e-14 and rel(s, s_ref) < 1e-14


@pytest.mark.parametrize("H, G", [(2, 1), (4, 2)])
def test_gradients_of_chunked_equal_sequential_and_finite_differences(H, G, rng, x64):
    """Heads sharing one B and C, and two groups of two: B's and C's gradients sum over
    the heads of their group."""
    inputs = ssd_inputs(rng, b=1, L=7, H=H, P=2, G=G, N=3)
    w_y = jnp.asarray(rng.normal(size=(1, 7, H, 2)))
    w_s = jnp.asarray(rng.normal(size=(1, H, 2, 3)))

    def loss(fn):
        def f(args):
            x, dt, A, B, C, h0 = args
            y, s = fn(x, dt, A, B, C, initial_state=h0, return_last_state=True)
            return jnp.sum(y * w_y) + jnp.sum(s * w_s)
        return f

    loss_chunked = jax.jit(loss(lambda *a, **k: ssd_chunked(*a, 3, **k)))  # chunks 3 + 3 + 1
    g_c = jax.jit(jax.grad(loss_chunked))(inputs)
    g_s = jax.jit(jax.grad(loss(ssd_sequential)))(inputs)
    names = ["x", "dt", "A", "B", "C", "initial_state"]
    errs = {n: rel(a, b) for n, a, b in zip(names, g_c, g_s)}
    print("grad chunked vs sequential: " + ", ".join(f"{n} {e:.1e}" for n, e in errs.items()))
    assert max(errs.values()) < 1e-12
    eps = 1e-6
    for _ in range(4):
        v = [jnp.asarray(rng.normal(size=a.shape)) for a in inputs]
        fd = (loss_chunked([a + eps * d for a, d in zip(inputs, v)])
              - loss_chunked([a - eps * d for a, d in zip(inputs, v)])) / (2 * eps)
        ad = sum(jnp.vdot(g, d) for g, d in zip(g_c, v))
        print(f"directional derivative: autodiff {float(ad):.10f}, finite differences {float(fd):.10f}")
        np.testing.assert_allclose(ad, fd, rtol=1e-7, atol=1e-9)


def test_ssd_bad_inputs_raise_clear_errors(rng):
    x, dt, A, B, C, h0 = ssd_inputs(rng, dtype=np.float32)
    with pytest.raises(ValueError, match=r"x has shape \(2, 11, 12\); expected \(batch, length, heads, headdim\)"):
        ssd_chunked(x.reshape(2, 11, 12), dt, A, B, C, 4)
    with pytest.raises(ValueError, match=r"dt has shape \(2, 11\); expected \(2, 11, 4\)"):
        ssd_chunked(x, dt[..., 0], A, B, C, 4)
    with pytest.raises(ValueError, match=r"A has shape \(4, 5\); expected \(4,\)"):
        ssd_sequential(x, dt, jnp.ones((4, 5)), B, C)
    with pytest.raises(ValueError, match="heads=4 must be a multiple of groups=3"):
        ssd_chunked(x, dt, A, jnp.ones((2, 11, 3, 5)), jnp.ones((2, 11, 3, 5)), 4)
    with pytest.raises(ValueError, match=r"C has shape \(2, 11, 2, 4\); expected B's shape"):
        ssd_chunked(x, dt, A, B, C[..., :4], 4)
    with pytest.raises(ValueError, match=r"initial_state has shape \(2, 4, 3, 4\)"):
        ssd_chunked(x, dt, A, B, C, 4, initial_state=h0[..., :4])
    with pytest.raises(ValueError, match="chunk_size=0; expected a positive integer"):
        ssd_chunked(x, dt, A, B, C, 0)


# ------------------------------------------------------------------- Mamba2 layer

# d_model 8: d_inner 16, 4 heads in 2 groups, chunks of 4. Steps of 0.1 to 1 and decays
# of 0.05 to 0.5 (instead of 1e-3..0.1 and 1..16) make the SSD carry about half of the
# output (a tenth at the default init) and keep its state alive across chunks.
SMALL = dict(d_state=4, headdim=4, ngroups=2, chunk_size=4, dt_min=0.1, dt_max=1.0, A_init_range=(0.05, 0.5))


def build(d_model=8, seed=0, **kw):
    return Mamba2(d_model, **{**SMALL, **kw}, rngs=nnx.Rngs(seed))


# The layer's modes under jit (one compilation per shape, as a user would run them).
call = nnx.jit(lambda m, x, mask=None: m(x, mask=mask))
step = nnx.jit(lambda m, x_t, state: m.step(x_t, state))
prefill = nnx.jit(lambda m, x: m.prefill(x))


def run_steps(m, x):
    """Feed x (batch, length, d_model) one position at a time; stack the outputs."""
    state = m.init_state(x.shape[0])
    ys = []
    for t in range(x.shape[1]):
        y, state = step(m, x[:, t], state)
        ys.append(y)
    return jnp.stack(ys, 1), state


@pytest.mark.parametrize("dt_limit", [(0.0, float("inf")), (0.2, 0.5)])
def test_mamba2_forward_equals_float64_reference_of_the_upstream_layer(dt_limit, rng, x64):
    """The whole mixer (in_proj order [z, x, B, C, dt], conv, SSD, D skip, grouped
    gated RMSNorm, out_proj) against a float64 loop written from the reference;
    with and without a dt_limit that clips (initial dt spans 0.1 to 1)."""
    m = build(param_dtype=jnp.float64, dt_limit=dt_limit)
    weights = dict(in_kernel=m.in_proj.kernel, conv_kernel=m.conv1d.kernel, conv_bias=m.conv1d.bias,
                   dt_bias=m.dt_bias, A_log=m.A_log, D=m.D, norm_scale=m.norm.scale,
                   out_kernel=m.out_proj.kernel)
    weights = {k: np.asarray(v[...]) for k, v in weights.items()}
    weights["norm_scale"] = rng.uniform(0.5, 1.5, size=16)  # not all ones, to see the grouping
    m.norm.scale[...] = jnp.asarray(weights["norm_scale"])
    x = jnp.asarray(rng.normal(size=(2, 11, 8)))
    err = rel(call(m, x), ref.mamba2_forward_loop(weights, x, headdim=4, ngroups=2, dt_limit=dt_limit))
    print(f"dt_limit={dt_limit}: Mamba2 forward vs float64 reference loop, relative error {err:.1e}")
    assert err < 1e-12


def test_mamba2_step_equals_full_forward_in_float64(rng, x64):
    m = build(param_dtype=jnp.float64)
    x = jnp.asarray(rng.normal(size=(2, 11, 8)))
    full = call(m, x)
    steps, _ = run_steps(m, x)
    err = rel(steps, full)
    print(f"float64: step vs chunked forward, relative error {err:.1e}")
    assert full.dtype == steps.dtype == jnp.float64 and full.shape == x.shape
    assert err < 1e-12


def test_mamba2_step_equals_full_forward_in_float32(rng):
    m = build()
    x = jnp.asarray(rng.normal(size=(2, 11, 8)), jnp.float32)
    err = rel(run_steps(m, x)[0], call(m, x))
    print(f"float32: step vs chunked forward, relative error {err:.1e}")
    assert err < 1e-5


@pytest.mark.parametrize("prompt", [2, 7])  # shorter and longer than d_conv = 4
def test_mamba2_prefill_then_steps_equals_full_pass(prompt, rng, x64):
    m = build(param_dtype=jnp.float64)
    x = jnp.asarray(rng.normal(size=(2, 10, 8)))
    full = call(m, x)
    y, state = prefill(m, x[:, :prompt])
    ys = [y]
    for t in range(prompt, 10):
        y_t, state = step(m, x[:, t], state)
        ys.append(y_t[:, None])
    err = rel(jnp.concatenate(ys, 1), full)
    _, stepped = run_steps(m, x[:, :prompt])
    state_err = max(rel(a, b) for a, b in zip(jax.tree.leaves(prefill(m, x[:, :prompt])[1]),
                                              jax.tree.leaves(stepped)))
    print(f"prompt {prompt}: prefill + steps vs full pass {err:.1e}; prefill state vs stepped state {state_err:.1e}")
    assert err < 1e-12 and state_err < 1e-12


def test_mamba2_in_a_residual_block_steps_and_prefills_like_its_forward(rng):
    """As the backbone will hold it: RMSNorm, pre-norm, no post-projection."""
    block = ResidualBlock(8, build(), norm="rms", post=None, rngs=nnx.Rngs(1))
    x = jnp.asarray(rng.normal(size=(2, 9, 8)), jnp.float32)
    full = call(block, x)
    y, state = prefill(block, x[:, :3])
    ys = [y]
    for t in range(3, 9):
        y_t, state = step(block, x[:, t], state)
        ys.append(y_t[:, None])
    err = rel(jnp.concatenate(ys, 1), full)
    print(f"residual block: prefill + steps vs forward {err:.1e}")
    assert err < 1e-5


def test_mamba2_padding_left_and_right_does_not_change_real_outputs(rng):
    m = build()
    x = jnp.asarray(rng.normal(size=(1, 10, 8)), jnp.float32)
    alone = call(m, x)
    junk = jnp.asarray(rng.normal(size=(1, 5, 8)), jnp.float32)
    mask = jnp.arange(15)[None] >= 5
    left = call(m, jnp.concatenate([junk, x], 1), mask=mask)
    right = call(m, jnp.concatenate([x, junk], 1), mask=mask[:, ::-1])
    err_left, err_right = rel(left[:, 5:], alone), rel(right[:, :10], alone)
    print(f"padding: left {err_left:.1e}, right {err_right:.1e}")
    assert err_left < 1e-5 and err_right < 1e-5
    assert not left[:, :5].any() and not right[:, 10:].any()  # padded outputs are zero
    unmasked = rel(call(m, jnp.concatenate([junk, x], 1))[:, 5:], alone)
    print(f"without the mask, left padding changes real outputs by {unmasked:.1e}")
    assert unmasked > 1e-2
    # A batch of different lengths, right-padded: each row equals its prefix alone.
    lengths = [6, 10]
    xb = jnp.asarray(rng.normal(size=(2, 10, 8)), jnp.float32)
    out = call(m, xb, mask=jnp.arange(10)[None] < jnp.asarray(lengths)[:, None])
    for i, n in enumerate(lengths):
        np.testing.assert_allclose(out[i, :n], call(m, xb[i : i + 1, :n])[0], rtol=1e-5, atol=1e-6)


def test_mamba2_init_invariants_and_parameter_groups():
    m = Mamba2(16, d_state=8, headdim=4, ngroups=2, dt_min=1e-5, dt_max=1e-3, dt_init_floor=1e-4,
               A_init_range=(2, 5), bias=True, rngs=nnx.Rngs(3))
    assert (m.d_inner, m.nheads) == (32, 8)
    dt = np.asarray(jax.nn.softplus(m.dt_bias[...]))
    A = np.asarray(-jnp.exp(m.A_log[...]))
    print(f"softplus(dt_bias) in [{dt.min():.3e}, {dt.max():.3e}]; A in [{A.min():.3f}, {A.max():.3f}]")
    assert np.all(dt >= 1e-4 * (1 - 1e-5)) and np.all(dt <= 1e-3 * (1 + 1e-5))
    assert np.any(np.isclose(dt, 1e-4, rtol=1e-5))  # the floor bites for draws below it
    assert np.all(A <= -2) and np.all(A >= -5)
    np.testing.assert_array_equal(m.D[...], 1.0)
    np.testing.assert_array_equal(m.norm.scale[...], 1.0)
    assert m.in_proj.kernel.shape == (16, 2 * 32 + 2 * 2 * 8 + 8)  # [z, x, B, C, dt]
    assert m.conv1d.kernel.shape == (4, 32 + 2 * 2 * 8)
    # The default dt range: softplus(dt_bias) within [dt_min, dt_max].
    dt = np.asarray(jax.nn.softplus(build(dt_min=1e-3, dt_max=0.1, d_model=64).dt_bias[...]))
    assert np.all(dt >= 1e-3 * (1 - 1e-5)) and np.all(dt <= 0.1 * (1 + 1e-5))

    params = nnx.state(m, nnx.Param)
    labels = {tuple(str(k) for k in path): v.get_value()
              for path, v in nnx.to_flat_state(param_labels(m)(params))}
    expected = {
        ("A_log",): "ssm", ("D",): "ssm", ("dt_bias",): "ssm",
        ("conv1d", "kernel"): "adamw", ("conv1d", "bias"): "no_decay",
        ("in_proj", "kernel"): "matrix", ("in_proj", "bias"): "no_decay",
        ("out_proj", "kernel"): "matrix", ("out_proj", "bias"): "no_decay",
        ("norm", "scale"): "no_decay",
    }
    assert labels == expected


def test_mamba2_bf16_activations_keep_float32_state(rng):
    m32, m16 = build(), build(dtype=jnp.bfloat16)
    x = jnp.asarray(rng.normal(size=(2, 12, 8)), jnp.float32)
    y32 = call(m32, x)
    y16, state = prefill(m16, x.astype(jnp.bfloat16))
    assert y16.dtype == jnp.bfloat16
    assert state["ssm"].dtype == state["conv"].dtype == jnp.float32
    err = rel(y16.astype(jnp.float32), y32)
    y_t, _ = step(m16, x[:, 0].astype(jnp.bfloat16), m16.init_state(2))
    step_err = rel(y_t.astype(jnp.float32), y32[:, 0])
    print(f"bf16 activations vs float32: forward {err:.1e}, first step {step_err:.1e}")
    assert y_t.dtype == jnp.bfloat16
    assert err < 3e-2 and step_err < 3e-2  # a few bf16 roundings of 8-bit mantissas


def test_mamba2_under_jit_matches_eager_and_has_finite_gradients(rng):
    m = build()
    x = jnp.asarray(rng.normal(size=(2, 9, 8)), jnp.float32)
    graphdef, params, rest = nnx.split(m, nnx.Param, ...)

    @jax.jit
    def apply(params, x):
        return nnx.merge(graphdef, params, rest)(x)

    @jax.jit
    def step(params, x_t, state):
        return nnx.merge(graphdef, params, rest).step(x_t, state)

    eager = m(x)
    np.testing.assert_allclose(apply(params, x), eager, rtol=1e-5, atol=1e-6)
    y_t, state = step(params, x[:, 0], m.init_state(2))
    np.testing.assert_allclose(y_t, eager[:, 0], rtol=1e-5, atol=1e-6)
    grads = jax.grad(lambda p: jnp.sum(apply(p, x) ** 2))(params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(d_model=0), "d_model=0; expected a positive integer"),
        (dict(headdim=5), r"d_inner = expand \* d_model = 16 must be a multiple of headdim=5"),
        (dict(ngroups=3), "nheads = d_inner / headdim = 4 must be a multiple of ngroups=3"),
        (dict(expand=0), "expand=0 must be a positive number"),
        (dict(d_state=2.5), "d_state=2.5; expected a positive integer"),
        (dict(chunk_size=0), "chunk_size=0; expected a positive integer"),
        (dict(d_conv=-1), "d_conv=-1; expected a positive integer"),
        (dict(dt_min=0.1, dt_max=0.01), "dt range.*0 < dt_min <= dt_max"),
        (dict(A_init_range=(0, 16)), r"A_init_range=\(0, 16\) must satisfy 0 < lo <= hi"),
        (dict(dt_limit=(0.1, 0.01)), r"dt_limit=\(0.1, 0.01\) must satisfy 0 <= lo <= hi"),
        (dict(norm_eps=0.0), "norm_eps=0.0 must be > 0"),
        (dict(activation="swish"), r"activation='swish'; expected one of \("),
    ],
)
def test_mamba2_bad_construction_arguments_raise_clear_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        build(**kw)


def test_mamba2_bad_call_arguments_raise_clear_errors():
    m = build()
    with pytest.raises(ValueError, match=r"x has shape \(8,\); expected \(batch, length, 8\)"):
        m(jnp.zeros((8,)))
    with pytest.raises(ValueError, match=r"mask has shape \(1, 7\); expected \(1, 8\)"):
        m(jnp.zeros((1, 8, 8)), mask=jnp.ones((1, 7), bool))
    with pytest.raises(ValueError, match=r"x_t has shape \(1, 3, 8\); expected \(batch, 8\)"):
        m.step(jnp.zeros((1, 3, 8)), m.init_state(1))
    with pytest.raises(ValueError, match="batch_size=0; expected a positive integer"):
        m.init_state(0)
