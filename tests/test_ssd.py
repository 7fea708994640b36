"""The Mamba-2 state-space dual (ssm.ssd) against float64 loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference as ref
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


def test_gradients_of_chunked_equal_sequential_and_finite_differences(rng, x64):
    inputs = ssd_inputs(rng, b=1, L=7, H=2, P=2, G=1, N=3)
    w_y = jnp.asarray(rng.normal(size=(1, 7, 2, 2)))
    w_s = jnp.asarray(rng.normal(size=(1, 2, 2, 3)))

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
    with pytest.raises(ValueError, match="chunk_size=0 must be a positive integer"):
        ssd_chunked(x, dt, A, B, C, 0)
