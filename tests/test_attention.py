"""Softmax attention: RoPE and blocked attention against float64 loops, and the
``Attention`` layer's KV-cache inference, padding, precision and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from stepping import check_bf16_activations, check_gradients, check_padding_either_side, rel, run_steps

import ssm.attention
import ssm.linen
from ssm import attention
from ssm.groups import param_labels
from ssm.layers import Attention, SequenceModel

import reference as ref


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 4 queries and at least 4 keys, so short inputs take the blocked path."""
    monkeypatch.setattr(ssm.attention, "BLOCK", 4)
    monkeypatch.setattr(ssm.attention, "SCORES_PER_BLOCK", 16)


def test_rope_equals_complex_rotation_and_depends_only_on_distance(rng, x64):
    x = rng.normal(size=(2, 9, 3, 8))
    positions = rng.integers(0, 5000, size=9)
    ours = attention.apply_rope(jnp.asarray(x), jnp.asarray(positions))
    for i in range(2):
        np.testing.assert_allclose(ours[i], ref.rope(x[i], positions), rtol=1e-12, atol=1e-12)
    q, k = rng.normal(size=(2, 1, 1, 1, 8))
    dots = [float(jnp.sum(attention.apply_rope(jnp.asarray(q), jnp.asarray([p + 7]))
                          * attention.apply_rope(jnp.asarray(k), jnp.asarray([p])))) for p in (0, 100, 4321)]
    print("q.k at distance 7 from positions 0, 100, 4321:", dots)
    np.testing.assert_allclose(dots, dots[0], rtol=1e-10)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("blocked", [False, True])
def test_attention_equals_a_loop_over_queries(causal, blocked, rng, x64, request):
    if blocked:
        request.getfixturevalue("small_blocks")
    b, t, h, d = 2, 11, 2, 4
    q, k, v = (rng.normal(size=(b, t, h, d)) for _ in range(3))
    valid = rng.random((b, t)) < 0.7
    valid[:, 0] = False  # a causal query 0 then sees nothing: zeros
    positions = np.arange(t)
    ours = attention.dot_product_attention(*(jnp.asarray(a) for a in (q, k, v)), q_positions=positions,
                                           k_positions=positions, key_valid=jnp.asarray(valid), causal=causal)
    assert attention.block_sizes(t, t) == ((4, 4) if blocked else (t, t))
    for i in range(b):
        allowed = valid[i][None, :] & ((positions[None, :] <= positions[:, None]) | (not causal))
        np.testing.assert_allclose(ours[i], ref.attention_loop(q[i], k[i], v[i], allowed), rtol=1e-12, atol=1e-12)


def test_blocked_attention_gradients_equal_the_one_block_ones(rng, x64, monkeypatch):
    q, k, v = (jnp.asarray(rng.normal(size=(1, 10, 2, 4))) for _ in range(3))
    w = jnp.asarray(rng.normal(size=(1, 10, 2, 4)))
    pos = jnp.arange(10)

    def grads():
        loss = lambda q, k, v: jnp.sum(w * attention.dot_product_attention(  # noqa: E731
            q, k, v, q_positions=pos, k_positions=pos))
        return jax.grad(loss, argnums=(0, 1, 2))(q, k, v)

    whole = grads()
    monkeypatch.setattr(ssm.attention, "BLOCK", 4)
    monkeypatch.setattr(ssm.attention, "SCORES_PER_BLOCK", 16)
    for a, b in zip(grads(), whole):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def layer(**kw):
    return Attention(8, **{"n_heads": 2, **kw}, rngs=nnx.Rngs(0))


def transformer(**kw):
    """The usual pre-norm Transformer: attention and a dense MLP in every block."""
    return SequenceModel(vocab_size=11, d_model=8, n_layers=2, d_output=11, layer="attention",
                         layer_kwargs=dict(n_heads=2), post=None, mlp="dense", mlp_expand=2,
                         rngs=nnx.Rngs(0), **kw)


def test_layer_equals_the_formula(rng, x64):
    m = layer(param_dtype=jnp.float64)
    x = rng.normal(size=(1, 7, 8))
    qkv = x[0] @ np.asarray(m.qkv.kernel[...])
    q, k, v = (a.reshape(7, 2, 4) for a in np.split(qkv, 3, axis=-1))
    pos = np.arange(7)
    y = ref.attention_loop(ref.rope(q, pos), ref.rope(k, pos), v, pos[None, :] <= pos[:, None])
    want = y.reshape(7, 8) @ np.asarray(m.out.kernel[...])
    np.testing.assert_allclose(m(jnp.asarray(x))[0], want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("length", [1, 6, 13])
def test_step_with_a_kv_cache_equals_the_parallel_pass(length, rng, x64, small_blocks):
    m = transformer(param_dtype=jnp.float64)
    ids = jnp.asarray(rng.integers(0, 11, size=(2, length)))
    full = m(ids)
    steps, state = run_steps(m, ids, max_len=16)
    err = rel(steps, full)
    print(f"L={length}: KV-cache steps vs parallel pass, relative error {err:.1e}")
    assert err < 1e-12
    assert int(state[0]["pos"]) == length


def test_prefill_then_steps_equals_one_pass(rng, x64):
    m = transformer(param_dtype=jnp.float64)
    ids = jnp.asarray(rng.integers(0, 11, size=(2, 12)))
    full = m(ids)
    y_prompt, state = m.prefill(ids[:, :5], max_len=12)
    rest, _ = run_steps(m, ids[:, 5:], state)
    assert rel(jnp.concatenate([y_prompt, rest], 1), full) < 1e-12
    _, stepped = run_steps(m, ids[:, :5], max_len=12)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(stepped)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_step_in_float32_and_jit(rng):
    m = layer()
    x = jnp.asarray(rng.normal(size=(2, 10, 8)), jnp.float32)
    err = rel(run_steps(m, x, max_len=10)[0], m(x))
    print(f"float32 steps vs parallel: {err:.1e}")
    assert err < 1e-5
    graphdef, state = nnx.split(m)
    np.testing.assert_allclose(jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, x), m(x),
                               rtol=1e-5, atol=1e-6)


def test_padding_on_either_side_does_not_change_real_outputs(rng, small_blocks):
    for bidirectional in (False, True):
        x = jnp.asarray(rng.normal(size=(1, 9, 8)), jnp.float32)
        junk = jnp.asarray(rng.normal(size=(1, 5, 8)), jnp.float32)
        left, right = check_padding_either_side(layer(bidirectional=bidirectional), x, junk, rtol=1e-5, atol=1e-5)
        assert float(jnp.abs(left[:, :5]).max()) == float(jnp.abs(right[:, 9:]).max()) == 0


def test_causal_ignores_the_future_and_bidirectional_has_no_step(rng):
    x = jnp.asarray(rng.normal(size=(1, 12, 8)), jnp.float32)
    x2 = x.at[:, 8:].set(jnp.asarray(rng.normal(size=(1, 4, 8)), jnp.float32))
    causal, both = layer(), layer(bidirectional=True)
    np.testing.assert_allclose(causal(x)[:, :8], causal(x2)[:, :8], rtol=1e-6, atol=1e-6)
    assert float(jnp.abs(both(x)[:, :8] - both(x2)[:, :8]).max()) > 1e-3
    with pytest.raises(ValueError, match="bidirectional=True.*no recurrent mode"):
        both.init_state(1, 8)


def test_bf16_activations(rng):
    check_bf16_activations(layer, jnp.asarray(rng.normal(size=(2, 16, 8)), jnp.float32))
    state = layer(dtype=jnp.bfloat16).init_state(2, 4)
    assert state["k"].dtype == jnp.float32  # the cache keeps float32


def test_gradients_match_finite_differences(rng, x64):
    m = layer(param_dtype=jnp.float64, use_bias=True)
    x = jnp.asarray(rng.normal(size=(1, 6, 8)))
    mask = jnp.asarray([[False, True, True, True, True, False]])
    check_gradients(m, x, rng, mask=mask)


def test_long_inputs_run_without_a_maximum_length(rng):
    """RoPE has no table to outgrow: a length far beyond anything seen runs, blocked."""
    m = layer()
    x = jnp.asarray(rng.normal(size=(1, 1100, 8)), jnp.float32)
    assert attention.block_sizes(1100, 1100) == (256, 256)
    y = m(x)
    np.testing.assert_allclose(y[:, :300], m(x[:, :300]), rtol=1e-4, atol=1e-5)


def test_groups_and_linen(rng):
    m = layer(use_bias=True)
    labels = param_labels(m)(nnx.state(m, nnx.Param))
    flat = {tuple(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(labels)}
    assert flat[("qkv", "kernel")] == flat[("out", "kernel")] == "matrix"
    assert flat[("qkv", "bias")] == "no_decay"
    x = jnp.asarray(rng.normal(size=(2, 6, 8)), jnp.float32)
    linen = ssm.linen.Attention(8, n_heads=2)
    params = linen.init(jax.random.key(0), x)["params"]
    grads = jax.grad(lambda p: jnp.sum(linen.apply({"params": p}, x) ** 2))(params)
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="n_heads=3 must divide d_model=8"):
        Attention(8, n_heads=3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="n_heads=8 must divide d_model=8 into heads of even width"):
        Attention(8, n_heads=8, rngs=nnx.Rngs(0))
    m = layer()
    with pytest.raises(ValueError, match="needs max_len"):
        m.init_state(2)
    with pytest.raises(ValueError, match="max_len=2 is shorter than the prompt"):
        m.prefill(jnp.zeros((1, 3, 8)), max_len=2)
    state = m.init_state(1, 2)
    for _ in range(2):
        _, state = m.step(jnp.ones((1, 8)), state)
    with pytest.raises(ValueError, match=r"KV cache is full \(2 positions\)"):
        m.step(jnp.ones((1, 8)), state)
    with pytest.raises(ValueError, match=r"x has shape \(8,\)"):
        m(jnp.zeros((8,)))
