"""Linen users: the same layers through ``ssm.linen`` train via ``variables["params"]``."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx

import ssm.linen
from ssm.groups import param_labels
from ssm.layers import S4D, SequenceModel


class Classifier(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = ssm.linen.S4D(4, d_state=4)(x)
        x = ssm.linen.S4(4, d_state=4, l_max=16)(x)
        return nn.Dense(2)(x.mean(1))


def test_linen_model_trains_and_its_ssm_parameters_change(rng):
    x = jnp.asarray(rng.normal(size=(8, 16, 4)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 2, size=8))
    model = Classifier()
    variables = model.init(jax.random.key(0), x)
    assert set(variables) == {"params"}
    params = variables["params"]

    def loss(p):
        logits = model.apply({"params": p}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    tx = optax.adam(3e-2)
    opt_state = tx.init(params)

    @jax.jit
    def train_step(p, s):
        value, grads = jax.value_and_grad(loss)(p)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s, value

    p, losses = params, []
    for _ in range(15):
        p, opt_state, value = train_step(p, opt_state)
        losses.append(float(value))
    print("linen losses:", [round(v, 4) for v in losses])
    assert losses[-1] < 0.8 * losses[0]
    assert set(params) == {"S4D_0", "S4_0", "Dense_0"}
    for layer in ("S4D_0", "S4_0"):
        old, new = nn.unbox(params)[layer], nn.unbox(p)[layer]
        for name in ("log_dt", "log_A_real", "A_imag", "B", "C", "D"):
            assert not np.allclose(old[name], new[name]), (layer, name)


def test_linen_mamba_layers_train_through_params(rng):
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = ssm.linen.Mamba(4, d_state=4)(x)
            x = ssm.linen.Mamba2(4, d_state=4, headdim=4, chunk_size=4)(x)
            return nn.Dense(2)(x.mean(1))

    x = jnp.asarray(rng.normal(size=(2, 8, 4)), jnp.float32)
    params = Net().init(jax.random.key(0), x)["params"]
    grads = jax.jit(jax.grad(lambda p: jnp.sum(Net().apply({"params": p}, x) ** 2)))(params)
    for layer, names in (("Mamba_0", ("A_log", "D")), ("Mamba2_0", ("A_log", "D", "dt_bias"))):
        for name in names:
            assert float(jnp.abs(nn.unbox(grads)[layer][name]).max()) > 0, (layer, name)


def test_linen_layer_equals_the_nnx_layer_with_the_same_parameters(rng):
    x = jnp.asarray(rng.normal(size=(2, 10, 4)), jnp.float32)
    layer = ssm.linen.S4D(4, d_state=4)
    params = layer.init(jax.random.key(1), x)["params"]
    nnx_layer = S4D(4, d_state=4, rngs=nnx.Rngs(5))
    graphdef, state = nnx.split(nnx_layer)
    nnx.replace_by_pure_dict(state, nn.unbox(params))
    np.testing.assert_allclose(layer.apply({"params": params}, x), nnx.merge(graphdef, state)(x),
                               rtol=1e-6, atol=1e-6)


def test_linen_monarch_layers_train_through_params_and_route_by_group(rng):
    """M2's mixer and a Monarch MLP in a Linen model: every parameter gets a gradient;
    the filters go to the ``ssm`` group and the Monarch factors to ``matrix``."""
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = ssm.linen.MonarchMixer(8, l_max=12, projection="monarch", nblocks=2)(x)
            x = ssm.linen.GatedMLP(8, expand=2, linear="monarch")(x)
            return nn.Dense(2)(x.mean(1))

    x = jnp.asarray(rng.normal(size=(2, 12, 8)), jnp.float32)
    params = Net().init(jax.random.key(0), x)["params"]
    grads = jax.jit(jax.grad(lambda p: jnp.sum(Net().apply({"params": p}, x) ** 2)))(params)
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(nn.unbox(grads)))
    labels = param_labels(params)(nn.unbox(params))
    assert labels["MonarchMixer_0"]["filter"]["out"]["kernel"] == "ssm"
    assert labels["MonarchMixer_0"]["in_proj"]["R"] == "matrix"
    assert labels["GatedMLP_0"]["up"]["L"] == "matrix"


# Dropout ------------------------------------------------------------------------------
SEQUENCE_MODEL = dict(d_model=8, n_layers=2, d_output=3, d_input=4, dropout=0.3, mlp="dense", mlp_expand=2,
                      layer="s4d", layer_kwargs={"d_state": 4, "dropout": 0.3})


class DropoutNet(nn.Module):
    """Two S4D layers with dropout; ``train`` sets their ``deterministic`` flag."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = ssm.linen.S4D(4, d_state=4, dropout=0.5)(x, deterministic=not train)
        x = ssm.linen.S4D(4, d_state=4, dropout=0.5)(x, deterministic=not train)
        return nn.Dense(2)(x)


def test_linen_layers_are_named_after_their_class_as_native_modules():
    x = jnp.ones((1, 8, 4))
    params = DropoutNet().init(jax.random.key(0), x)["params"]
    print("params tree:", list(params))
    assert list(params) == ["S4D_0", "S4D_1", "Dense_0"]
    assert type(ssm.linen.S4D(4)).__name__ == "S4D" and isinstance(ssm.linen.S4D(4), nn.Module)


def test_linen_init_with_only_a_params_rng_builds_layers_with_dropout(rng):
    x = jnp.asarray(rng.normal(size=(2, 16, 4)), jnp.float32)
    variables = DropoutNet().init(jax.random.key(0), x)
    assert set(variables) == {"params"}
    variables = ssm.linen.SequenceModel(**SEQUENCE_MODEL).init(jax.random.key(0), x)
    assert set(variables) == {"params"}


def test_linen_apply_without_a_dropout_rng_equals_the_nnx_model_in_eval_mode(rng):
    """No ``dropout`` rng: evaluation mode, exactly the NNX model's ``eval()`` output
    with the same parameters, and the same output on every call."""
    x = jnp.asarray(rng.normal(size=(2, 16, 4)), jnp.float32)
    linen = ssm.linen.SequenceModel(**SEQUENCE_MODEL)
    params = linen.init(jax.random.key(0), x)["params"]
    y = jax.jit(linen.apply)({"params": params}, x)
    model = SequenceModel(**SEQUENCE_MODEL, rngs=nnx.Rngs(5))
    graphdef, state = nnx.split(model)
    nnx.replace_by_pure_dict(state, nn.unbox(params))
    model = nnx.merge(graphdef, state)
    model.eval()
    err = float(jnp.max(jnp.abs(y - nnx.jit(lambda m, x: m(x))(model, x))))  # compiled, as y: like with like
    print(f"Linen (no dropout rng) vs NNX eval: max |diff| = {err:.1e}")
    assert err == 0.0
    np.testing.assert_allclose(linen.apply({"params": params}, x), y, rtol=1e-5, atol=1e-5)
    # deterministic=True given with a dropout rng: still no dropout
    y_det = linen.apply({"params": params}, x, deterministic=True, rngs={"dropout": jax.random.key(1)})
    np.testing.assert_allclose(y_det, y, rtol=1e-5, atol=1e-5)


def test_linen_dropout_applies_with_deterministic_false_and_a_dropout_rng(rng):
    x = jnp.asarray(rng.normal(size=(2, 16, 4)), jnp.float32)
    net = DropoutNet()
    variables = net.init(jax.random.key(0), x)
    train = jax.jit(lambda v, x, key: net.apply(v, x, train=True, rngs={"dropout": key}))
    evaluated = net.apply(variables, x)
    a, b, c = (train(variables, x, jax.random.key(k)) for k in (1, 1, 2))
    print(f"train vs eval: max |diff| = {float(jnp.max(jnp.abs(a - evaluated))):.2f}; "
          f"two dropout keys: {float(jnp.max(jnp.abs(a - c))):.2f}")
    np.testing.assert_array_equal(a, b)  # the same key, the same masks
    assert not np.allclose(a, c)  # another key, other masks
    assert not np.allclose(a, evaluated)


def test_linen_deterministic_attribute_and_call_argument():
    """The call argument wins over the attribute; unset, dropout is on exactly when a
    ``dropout`` rng is given; deterministic=False without one says what is missing."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 16, 4)), jnp.float32)
    layer = ssm.linen.S4D(4, d_state=4, dropout=0.5)
    variables = layer.init(jax.random.key(0), x)
    key = {"dropout": jax.random.key(1)}
    evaluated = layer.apply(variables, x)
    trained = layer.apply(variables, x, deterministic=False, rngs=key)
    assert not np.allclose(trained, evaluated)
    np.testing.assert_array_equal(layer.apply(variables, x, rngs=key), trained)
    np.testing.assert_array_equal(ssm.linen.S4D(4, d_state=4, dropout=0.5, deterministic=True).apply(
        variables, x, rngs=key), evaluated)
    np.testing.assert_array_equal(ssm.linen.S4D(4, d_state=4, dropout=0.5, deterministic=True).apply(
        variables, x, deterministic=False, rngs=key), trained)
    with pytest.raises(ValueError, match="deterministic=False applies dropout, which needs a 'dropout' rng"):
        layer.apply(variables, x, deterministic=False)
