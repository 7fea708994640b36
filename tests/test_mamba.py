"""The Mamba (selective SSM) block: recurrent inference, padding, initialization."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from stepping import check_bf16_activations, check_distribution, check_padding_either_side, rel, run_steps

import reference as ref

from ssm.groups import param_labels
from ssm.layers.mamba import Mamba
from ssm.layers.mamba2 import Mamba2


def layer(**kw):
    return Mamba(8, **{"d_state": 4, **kw}, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("length", [1, 3, 13])  # 1 and 3 are shorter than d_conv = 4
def test_step_equals_full_forward(length, rng, x64):
    m = layer(param_dtype=jnp.float64)
    x = jnp.asarray(rng.normal(size=(2, length, 8)))
    full = m(x)
    steps, _ = run_steps(m, x)
    err = rel(steps, full)
    print(f"L={length}: step vs full forward, relative error {err:.1e}")
    assert full.dtype == jnp.float64 and err < 1e-10


@pytest.mark.parametrize("bias", [False, True])
def test_forward_equals_float64_reference_of_the_upstream_block(bias, rng, x64):
    """The whole block against a float64 loop written from the reference
    (``mamba_simple.py``): in_proj order [x, z], the causal convolution with its bias,
    x_proj order [dt, B, C], dt_proj with its bias inside the softplus, the recurrence,
    the D skip, the silu(z) gate, out_proj. dt_rank 3 and N 4 differ, so a misplaced
    split shows; every parameter is redrawn at random (D is not all ones, A not 1..N)."""
    m = layer(dt_rank=3, bias=bias, param_dtype=jnp.float64)
    for _, p in nnx.to_flat_state(nnx.state(m, nnx.Param)):
        p.set_value(jnp.asarray(rng.uniform(0.5, 1.5, p.shape) * np.sign(rng.normal(size=p.shape)) * 0.5))
    m.A_log[...] = jnp.asarray(rng.normal(size=m.A_log.shape))
    m.dt_proj.bias[...] = jnp.asarray(rng.uniform(-4, -1, m.d_inner))
    weights = dict(in_kernel=m.in_proj.kernel, conv_kernel=m.conv1d.kernel, conv_bias=m.conv1d.bias,
                   x_kernel=m.x_proj.kernel, dt_kernel=m.dt_proj.kernel, dt_bias=m.dt_proj.bias, A_log=m.A_log,
                   D=m.D, out_kernel=m.out_proj.kernel, in_bias=m.in_proj.bias, out_bias=m.out_proj.bias)
    weights = {k: None if v is None else np.asarray(v[...]) for k, v in weights.items()}
    x = jnp.asarray(rng.normal(size=(2, 11, 8)))
    err = rel(m(x), ref.mamba_forward_loop(weights, x, dt_rank=3, d_state=4))
    print(f"bias={bias}: Mamba forward vs float64 reference loop, relative error {err:.1e}")
    assert err < 1e-12


@pytest.mark.parametrize("prompt", [2, 9])  # a prompt shorter than d_conv, and a longer one
def test_prefill_then_steps_equals_one_pass(prompt, rng, x64):
    m = layer(param_dtype=jnp.float64)
    x = jnp.asarray(rng.normal(size=(2, 14, 8)))
    full = m(x)
    y_prompt, state = m.prefill(x[:, :prompt])
    rest, _ = run_steps(m, x[:, prompt:], state)
    assert rel(jnp.concatenate([y_prompt, rest], 1), full) < 1e-10
    _, stepped = run_steps(m, x[:, :prompt])
    for key in ("conv", "ssm"):
        np.testing.assert_allclose(state[key], stepped[key], rtol=1e-10, atol=1e-12)


def test_step_equals_full_forward_in_float32(rng):
    m = layer()
    x = jnp.asarray(rng.normal(size=(2, 16, 8)), jnp.float32)
    err = rel(run_steps(m, x)[0], m(x))
    print(f"float32 step vs full forward: {err:.1e}")
    assert err < 1e-5


def test_padding_on_either_side_does_not_change_real_outputs(rng):
    x = jnp.asarray(rng.normal(size=(1, 10, 8)), jnp.float32)
    junk = jnp.asarray(rng.normal(size=(1, 4, 8)), jnp.float32)
    check_padding_either_side(layer(), x, junk, rtol=1e-5, atol=1e-6)


def test_padding_is_invisible_with_projection_biases(rng):
    """in_proj's bias must not enter the convolution window at padded positions
    (it did: 0.22 relative error on the real outputs beside the padding)."""
    m = layer(bias=True)
    for p in (m.in_proj.bias, m.out_proj.bias):
        p[...] = jnp.asarray(rng.normal(size=p.shape), jnp.float32)
    x = jnp.asarray(rng.normal(size=(1, 10, 8)), jnp.float32)
    junk = jnp.asarray(rng.normal(size=(1, 4, 8)), jnp.float32)
    check_padding_either_side(m, x, junk, rtol=1e-5, atol=1e-6)


def test_initialization_follows_the_reference():
    """The distributions of mamba_simple.py's initialization, not only their bounds
    (a zero init passes a bound): dt = softplus(dt_proj.bias) log-uniform in [dt_min,
    dt_max]; dt_proj.weight U(+-dt_rank^-1/2); in_proj, x_proj, out_proj PyTorch's Linear
    U(+-fan_in^-1/2); the conv kernel and bias U(+-d_conv^-1/2) (PyTorch's Conv1d);
    A_log = log(1..N); D = 1."""
    small = Mamba(32, rngs=nnx.Rngs(0))
    assert (small.d_inner, small.dt_rank) == (64, 2)  # expand 2, ceil(32 / 16)
    m = Mamba(128, d_state=16, expand=4, dt_min=1e-3, dt_max=0.1, dt_init_floor=1e-4, rngs=nnx.Rngs(0))
    assert m.d_inner == 512 and m.dt_rank == 8
    log_dt = np.log(ref.softplus(np.asarray(m.dt_proj.bias[...], np.float64)))
    check_distribution("log dt", log_dt, ref.uniform_cdf(np.log(1e-3), np.log(0.1)))
    assert log_dt.min() >= np.log(1e-3) - 1e-5 and log_dt.max() <= np.log(0.1) + 1e-5
    for name, w, fan_in in [("dt_proj", m.dt_proj.kernel, 8), ("in_proj", m.in_proj.kernel, 128),
                            ("x_proj", m.x_proj.kernel, 512), ("out_proj", m.out_proj.kernel, 512),
                            ("conv1d.kernel", m.conv1d.kernel, 4), ("conv1d.bias", m.conv1d.bias, 4)]:
        w = np.asarray(w[...])
        check_distribution(name, w, ref.uniform_cdf(-fan_in**-0.5, fan_in**-0.5))
        assert np.abs(w).max() <= fan_in**-0.5
    np.testing.assert_allclose(m.A_log[...], np.log(np.broadcast_to(np.arange(1, 17), (512, 16))), rtol=1e-6)
    np.testing.assert_array_equal(m.D[...], np.ones(512))


def test_dt_init_floor_raises_the_small_steps():
    """dt = max(dt, dt_init_floor): with dt log-uniform in [1e-5, 1e-3] and the floor at
    1e-4, half the steps sit at the floor and the rest are log-uniform above it."""
    m = Mamba(256, d_state=4, dt_min=1e-5, dt_max=1e-3, dt_init_floor=1e-4, rngs=nnx.Rngs(1))
    dt = ref.softplus(np.asarray(m.dt_proj.bias[...], np.float64))
    floored = np.abs(dt / 1e-4 - 1) < 1e-5
    n = dt.size
    print(f"{floored.sum()} of {n} steps at the floor (expected {n // 2}, within {4 * np.sqrt(n / 4):.0f})")
    assert abs(floored.mean() - 0.5) < 4 * np.sqrt(0.25 / n)  # binomial, 4 standard deviations
    check_distribution("log dt above the floor", np.log(dt[~floored]), ref.uniform_cdf(np.log(1e-4), np.log(1e-3)))
    all_floored = Mamba(8, dt_min=1e-6, dt_max=1e-5, dt_init_floor=1e-4, rngs=nnx.Rngs(1))
    np.testing.assert_allclose(jax.nn.softplus(all_floored.dt_proj.bias[...]), 1e-4, rtol=1e-4)


def test_out_init_scale_multiplies_the_out_projection_exactly():
    """out_init_scale (the LM's residual rescaling) scales out_proj's draw and nothing else."""
    plain, scaled = Mamba(16, d_state=4, rngs=nnx.Rngs(3)), Mamba(16, d_state=4, out_init_scale=0.3, rngs=nnx.Rngs(3))
    for (path, a), (_, b) in zip(nnx.to_flat_state(nnx.state(plain, nnx.Param)),
                                 nnx.to_flat_state(nnx.state(scaled, nnx.Param))):
        factor = 0.3 if path == ("out_proj", "kernel") else 1.0
        np.testing.assert_allclose(b.get_value(), factor * a.get_value(), rtol=1e-6, err_msg=str(path))


def test_ssm_parameters_are_routed_to_the_ssm_group():
    m = layer()
    labels = param_labels(m)(nnx.state(m, nnx.Param))
    flat = {tuple(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(labels)}
    assert flat[("A_log",)] == flat[("D",)] == flat[("dt_proj", "bias")] == "ssm"
    assert flat[("conv1d", "kernel")] == "adamw"
    for name in ("in_proj", "x_proj", "out_proj", "dt_proj"):
        assert flat[(name, "kernel")] == "matrix"


def test_bf16_activations_with_float32_state(rng):
    check_bf16_activations(layer, jnp.asarray(rng.normal(size=(2, 32, 8)), jnp.float32))


def test_bf16_step_sizes_add_the_dt_bias_in_float32(rng):
    """delta = softplus(W dt + b) with the bias added in float32, as the reference does
    (dt_proj's matmul without its bias, the bias handed to the scan as a float32
    ``delta_bias``). In bf16 the bias (-2.3 to -6.9) rounds by up to 0.4%: delta was
    1-3% off. W is made of powers of two and dt_rank is 1, so W dt is exact in bf16 and
    only the bias's addition can round."""
    m = Mamba(8, d_state=4, dt_rank=1, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    W = rng.choice([-1.0, 1.0], size=(1, 16)) * 2.0 ** rng.integers(-2, 1, size=(1, 16))
    m.dt_proj.kernel[...] = jnp.asarray(W, jnp.float32)
    u = jnp.asarray(rng.normal(size=(2, 16, 16)), jnp.bfloat16)  # the convolution's output
    delta, _, _ = m._ssm_inputs(u)
    dt = np.asarray(m.x_proj(u)[..., :1], np.float64)  # x_proj's dt part, bf16 values
    pre, b = dt @ W, np.asarray(m.dt_proj.bias[...], np.float64)
    want = ref.softplus(pre + b)
    in_bf16 = ref.softplus(np.asarray(jnp.asarray(pre, jnp.bfloat16) + jnp.asarray(b, jnp.bfloat16), np.float64))
    err, err_bf16 = (float(np.max(np.abs(np.asarray(v, np.float64) - want) / want)) for v in (delta, in_bf16))
    print(f"delta vs softplus(W dt + b), b added in float32: {err:.1e}; the bf16 addition's error: {err_bf16:.1e}")
    assert delta.dtype == jnp.float32 and err < 2e-6
    assert err_bf16 > 1e-3 and float(np.max(np.abs(np.asarray(delta, np.float64) - in_bf16) / want)) > 1e-3


def test_jit_matches_eager(rng):
    m = layer()
    x = jnp.asarray(rng.normal(size=(2, 12, 8)), jnp.float32)
    graphdef, state = nnx.split(m)
    jitted = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, x)
    np.testing.assert_allclose(jitted, m(x), rtol=1e-5, atol=1e-6)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="d_state=0"):
        Mamba(8, d_state=0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="method='cuda'"):
        Mamba(8, scan_method="cuda", rngs=nnx.Rngs(0))
    m = layer()
    with pytest.raises(ValueError, match=r"x has shape \(8,\)"):
        m(jnp.zeros((8,)))
    with pytest.raises(ValueError, match=r"x_t has shape \(2, 3, 8\)"):
        m.step(jnp.zeros((2, 3, 8)), m.init_state(2))


@pytest.mark.parametrize("layer_name, layer_kwargs", [("mamba", {"d_state": 4}),
                                                      ("mamba2", {"d_state": 4, "headdim": 4, "chunk_size": 4})])
def test_mamba_language_model_steps_like_its_full_pass(layer_name, layer_kwargs, rng, x64):
    """The Mamba LM shape of the backbone: embedding, pre-norm RMSNorm residual blocks
    around the mixer alone, tied head; token-by-token decoding equals the full pass."""
    from ssm.layers import SequenceModel

    lm = SequenceModel(vocab_size=11, d_model=8, n_layers=2, d_output=11, layer=layer_name,
                       layer_kwargs=layer_kwargs, norm="rms", post=None, tie_embeddings=True,
                       param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    assert lm.head is None  # tied: logits = h @ embedding^T
    ids = jnp.asarray(rng.integers(0, 11, size=(2, 9)))
    full = lm(ids)
    assert full.shape == (2, 9, 11)
    steps, _ = run_steps(lm, ids)
    assert rel(steps, full) < 1e-10


@pytest.mark.parametrize("cls, kw", [(Mamba, {"d_state": 4}),
                                     (Mamba2, {"d_state": 4, "headdim": 4, "chunk_size": 4})])
def test_conv_activation_is_an_option_and_steps_like_the_full_pass(cls, kw, rng, x64):
    """Hugging Face's ``hidden_act``: the activation after the convolution (the gate stays silu)."""
    x = jnp.asarray(rng.normal(size=(2, 9, 8)))
    silu = cls(8, **kw, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    relu = cls(8, **kw, activation="relu", param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    assert rel(relu(x), silu(x)) > 1e-2  # same weights, another function
    assert rel(run_steps(relu, x)[0], relu(x)) < 1e-10
    with pytest.raises(ValueError, match=r"activation='swish'; expected one of \("):
        cls(8, **kw, activation="swish", rngs=nnx.Rngs(0))
