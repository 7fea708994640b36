"""Parameter groups: tagging, labels for Optax, and routing through nnx.Optimizer and Linen."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx

import ssm.linen
from ssm.groups import param_labels
from ssm.layers import SequenceModel

SSM_DYNAMICS = {"log_A_real", "A_imag", "B", "P", "log_dt"}


def small_model(layer="s4"):
    kw = dict(d_state=4, l_max=16) if layer == "s4" else dict(d_state=4)
    return SequenceModel(d_model=4, n_layers=1, d_output=3, vocab_size=5, layer=layer,
                         layer_kwargs=kw, rngs=nnx.Rngs(0))


def flat_labels(model):
    params = nnx.state(model, nnx.Param)
    labels = param_labels(model)(params)
    return {tuple(str(k) for k in path): v.get_value() for path, v in nnx.to_flat_state(labels)}


def test_labels_follow_the_design_table():
    labels = flat_labels(small_model("s4"))
    for path, label in labels.items():
        name = path[-1]
        if path[0] == "blocks" and path[2] == "mixer":
            expected = "ssm" if name in SSM_DYNAMICS else "adamw"  # C and D: readout, decayed
        elif path[0] in ("encoder", "head") and name in ("embedding", "kernel"):
            expected = "adamw"
        elif name in ("bias", "scale"):
            expected = "no_decay"
        else:
            expected = "matrix"  # the block's output projection
        assert label == expected, (path, label)
    assert {"ssm", "adamw", "no_decay", "matrix"} == set(labels.values())


def test_a_feature_encoder_is_adamw_like_an_embedding():
    """A ``d_input`` model's input projection is the embedding of a feature model: AdamW,
    never Muon (Keller Jordan's advice for the first layer; the design's table)."""
    model = SequenceModel(d_input=3, d_model=4, n_layers=1, d_output=2, layer="s4d", layer_kwargs=dict(d_state=4),
                          rngs=nnx.Rngs(0))
    labels = flat_labels(model)
    assert labels[("encoder", "kernel")] == "adamw"
    assert labels[("encoder", "bias")] == "no_decay"


def test_override_wins_and_unknown_groups_fail():
    m = small_model("s4d")
    params = nnx.state(m, nnx.Param)
    labels = param_labels(m, override=lambda path, leaf: "no_decay" if path[-1] == "D" else None)(params)
    flat = {p[-1]: v.get_value() for p, v in nnx.to_flat_state(labels)}
    assert flat["D"] == "no_decay" and flat["log_dt"] == "ssm"
    with pytest.raises(ValueError, match="group='muon'; expected one of"):
        param_labels(m, override=lambda path, leaf: "muon")(params)


def _frozen_ssm_tx():
    """SGD on everything but the SSM group, which must not move at all."""
    sgd = optax.sgd(0.1)
    return {"ssm": optax.set_to_zero(), "matrix": sgd, "adamw": sgd, "no_decay": sgd}


def test_routing_survives_nnx_optimizer(rng):
    m = small_model("s4")
    tx = optax.multi_transform(_frozen_ssm_tx(), param_labels(m))
    optimizer = nnx.Optimizer(m, tx, wrt=nnx.Param)
    before = jax.tree.map(jnp.copy, nnx.state(m, nnx.Param))
    ids = jnp.asarray(rng.integers(0, 5, size=(2, 8)))

    graphdef, params, rest = nnx.split(m, nnx.Param, ...)

    def loss(p):
        return jnp.mean(nnx.merge(graphdef, p, rest)(ids) ** 2)

    grads = jax.jit(jax.grad(loss))(params)
    optimizer.update(m, grads)
    after = nnx.state(m, nnx.Param)
    for (path, b), (_, a) in zip(nnx.to_flat_state(before), nnx.to_flat_state(after)):
        moved = not np.array_equal(b[...], a[...])
        assert moved == (path[-1] not in SSM_DYNAMICS), path


def test_routing_survives_linen_params(rng):
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(ssm.linen.S4D(3, d_state=4)(x).mean(1))

    x = jnp.asarray(rng.normal(size=(2, 8, 3)), jnp.float32)
    params = Net().init(jax.random.key(0), x)["params"]
    tx = optax.multi_transform(_frozen_ssm_tx(), param_labels(params))
    opt_state = tx.init(params)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(Net().apply({"params": p}, x) ** 2)))(params)
    updates, _ = tx.update(grads, opt_state, params)
    new = optax.apply_updates(params, updates)
    s4d_old, s4d_new = nn.unbox(params)["S4D_0"], nn.unbox(new)["S4D_0"]
    for name in s4d_old:
        moved = not np.array_equal(s4d_old[name], s4d_new[name])
        assert moved == (name not in SSM_DYNAMICS), name


def test_a_users_own_embedding_goes_to_adamw_and_a_head_is_marked_by_override():
    class Tagger(nnx.Module):  # a model of one's own, no group tags anywhere
        def __init__(self, rngs):
            self.embed = nnx.Embed(32, 8, rngs=rngs)
            self.mixer = ssm.layers.S4D(8, d_state=4, rngs=rngs)
            self.blocks = nnx.List([nnx.Linear(8, 8, rngs=rngs)])
            self.head = nnx.Linear(8, 32, rngs=rngs)

    model = Tagger(nnx.Rngs(0))

    def groups(labels):
        flat = jax.tree_util.tree_flatten_with_path(labels(nnx.state(model, nnx.Param)))[0]
        return {tuple(getattr(k, "key", getattr(k, "name", None)) for k in path
                      if getattr(k, "name", None) != "value"): group for path, group in flat}

    default = groups(param_labels(model))
    assert default[("embed", "embedding")] == "adamw"  # an nnx.Embed, whatever its name
    assert default[("blocks", 0, "kernel")] == default[("head", "kernel")] == "matrix"
    assert default[("mixer", "log_dt")] == "ssm"  # the layer's own tags stay
    # The README's way to keep a head off Muon:
    marked = groups(param_labels(model, override=lambda path, leaf: "adamw" if path[0] == "head" else None))
    assert marked[("head", "kernel")] == marked[("head", "bias")] == "adamw"
    assert marked[("blocks", 0, "kernel")] == "matrix" and marked[("embed", "embedding")] == "adamw"
