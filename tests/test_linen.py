"""Linen users: the same layers through ``ssm.linen`` train via ``variables["params"]``."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from flax import nnx

import ssm.linen
from ssm.groups import param_labels
from ssm.layers import S4D


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
    for layer in ("ToLinen_0", "ToLinen_1"):
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
    for layer, names in (("ToLinen_0", ("A_log", "D")), ("ToLinen_1", ("A_log", "D", "dt_bias"))):
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
    assert labels["ToLinen_0"]["filter"]["out"]["kernel"] == "ssm"
    assert labels["ToLinen_0"]["in_proj"]["R"] == "matrix"
    assert labels["ToLinen_1"]["up"]["L"] == "matrix"
