"""The LSTM baseline: against a float64 loop, recurrent inference, padding, precision,
gradients, groups and Linen."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from stepping import check_bf16_activations, check_gradients, check_padding_either_side, rel, run_steps

import reference as ref
import ssm.linen
from ssm.groups import param_labels
from ssm.layers import LSTM, SequenceModel


def layer(**kw):
    return LSTM(6, **kw, rngs=nnx.Rngs(0))


def test_layer_equals_a_loop_over_time(rng, x64):
    m = layer(param_dtype=jnp.float64)
    x = rng.normal(size=(2, 9, 6))
    ours = m(jnp.asarray(x))
    W_i, W_h = np.asarray(m.cell.dense_i.kernel[...]), np.asarray(m.cell.dense_h.kernel[...])
    bias = np.asarray(m.cell.dense_h.bias[...])
    np.testing.assert_array_equal(bias[6:12], 1.0)  # forget gates start open
    for i in range(2):
        np.testing.assert_allclose(ours[i], ref.lstm_loop(x[i], W_i, W_h, bias)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("length", [1, 10])
def test_step_equals_the_parallel_pass_for_a_stack(length, rng, x64):
    m = SequenceModel(vocab_size=7, d_model=6, n_layers=2, d_output=7, layer="lstm", post=None,
                      param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    ids = jnp.asarray(rng.integers(0, 7, size=(2, length)))
    err = rel(run_steps(m, ids)[0], m(ids))
    print(f"L={length}: steps vs scan, relative error {err:.1e}")
    assert err < 1e-12


def test_prefill_then_steps_equals_one_pass(rng, x64):
    m = layer(param_dtype=jnp.float64)
    x = jnp.asarray(rng.normal(size=(2, 11, 6)))
    y_prompt, state = m.prefill(x[:, :4])
    rest, _ = run_steps(m, x[:, 4:], state)
    assert rel(jnp.concatenate([y_prompt, rest], 1), m(x)) < 1e-12
    _, stepped = run_steps(m, x[:, :4])
    for a, b in zip(state, stepped):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_padding_on_either_side_does_not_change_real_outputs(rng):
    x = jnp.asarray(rng.normal(size=(1, 8, 6)), jnp.float32)
    junk = jnp.asarray(rng.normal(size=(1, 3, 6)), jnp.float32)
    left, right = check_padding_either_side(layer(), x, junk, rtol=1e-6, atol=1e-6)
    assert float(jnp.abs(left[:, :3]).max()) == float(jnp.abs(right[:, 8:]).max()) == 0


def test_jit_and_bf16(rng):
    m = layer()
    x = jnp.asarray(rng.normal(size=(2, 12, 6)), jnp.float32)
    graphdef, state = nnx.split(m)
    np.testing.assert_allclose(jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, x), m(x),
                               rtol=1e-6, atol=1e-6)
    check_bf16_activations(layer, x)
    c, h = layer(dtype=jnp.bfloat16).init_state(2)
    assert c.dtype == h.dtype == jnp.float32


def test_gradients_match_finite_differences(rng, x64):
    m = layer(param_dtype=jnp.float64)
    x = jnp.asarray(rng.normal(size=(1, 5, 6)))
    check_gradients(m, x, rng, mask=jnp.asarray([[False, True, True, True, False]]))


def test_groups_and_linen(rng):
    m = layer()
    labels = param_labels(m)(nnx.state(m, nnx.Param))
    flat = {tuple(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(labels)}
    assert flat[("cell", "dense_i", "kernel")] == flat[("cell", "dense_h", "kernel")] == "matrix"
    assert flat[("cell", "dense_h", "bias")] == "no_decay"
    x = jnp.asarray(rng.normal(size=(2, 5, 6)), jnp.float32)
    linen = ssm.linen.LSTM(6)
    params = linen.init(jax.random.key(0), x)["params"]
    grads = jax.grad(lambda p: jnp.sum(linen.apply({"params": p}, x) ** 2))(params)
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="d_model=0"):
        LSTM(0, rngs=nnx.Rngs(0))
    m = layer()
    with pytest.raises(ValueError, match=r"x has shape \(6,\)"):
        m(jnp.zeros((6,)))
    with pytest.raises(ValueError, match=r"x_t has shape \(2, 3, 6\)"):
        m.step(jnp.zeros((2, 3, 6)), m.init_state(2))
