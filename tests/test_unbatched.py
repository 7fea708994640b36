"""One example without its batch axis: every sequence layer and ``SequenceModel`` take
``x`` (length, d_model) (ids (length,)), with ``mask`` (length,), and give the batched
call's row; ``jax.vmap`` over examples gives the batched call."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import ssm.linen
from ssm.layers import LAYERS, SequenceModel

D, L, BATCH = 8, 16, 3
SMALL = {"s4": dict(d_state=4, l_max=L), "s4d": dict(d_state=4), "mamba": dict(d_state=4),
         "mamba2": dict(d_state=4, headdim=4, chunk_size=8), "m2": dict(l_max=L), "attention": dict(n_heads=2),
         "lstm": {}}
MODELS = {
    "tokens": dict(vocab_size=11),
    "features, mean pool": dict(d_input=5, pool="mean"),
    "features, last pool": dict(d_input=5, pool="last", layer="mamba", layer_kwargs=SMALL["mamba"]),
}


def padding_mask(rng, batch: int, length: int):
    """Real tokens in a random window of each row (padding on both sides, 4 real at least)."""
    left = rng.integers(0, length // 4, size=(batch, 1))
    right = rng.integers(length - length // 4, length + 1, size=(batch, 1))
    return jnp.asarray((np.arange(length) >= left) & (np.arange(length) < right))


def build_layer(name):
    return LAYERS[name](D, **SMALL[name], rngs=nnx.Rngs(0))


def build_model(kind):
    kw = {"layer": "s4d", "layer_kwargs": SMALL["s4d"], **MODELS[kind]}
    return SequenceModel(d_model=D, n_layers=2, d_output=4, **kw, rngs=nnx.Rngs(0))


def inputs(rng, kind=None):
    if kind == "tokens":
        return jnp.asarray(rng.integers(0, 11, size=(BATCH, L)))
    width = D if kind is None else MODELS[kind]["d_input"]
    return jnp.asarray(rng.normal(size=(BATCH, L, width)), jnp.float32)


def check_examples_and_vmap(module, x, mask):
    """``module(x[b], mask[b])`` is row b of ``module(x, mask)``, and ``jax.vmap`` over
    the examples is the batched call; without a mask, then with it."""
    errs = []
    for m in (None, mask):
        batched = module(x, m)
        for b in range(x.shape[0]):
            one = module(x[b], None if m is None else m[b])
            assert one.shape == batched.shape[1:]
            errs.append(float(jnp.max(jnp.abs(one - batched[b]))))
            np.testing.assert_allclose(one, batched[b], rtol=1e-5, atol=1e-5)
        vmapped = (jax.vmap(lambda x: module(x))(x) if m is None
                   else jax.vmap(lambda x, m: module(x, mask=m))(x, m))
        errs.append(float(jnp.max(jnp.abs(vmapped - batched))))
        np.testing.assert_allclose(vmapped, batched, rtol=1e-5, atol=1e-5)
    return max(errs)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_on_one_example_equals_its_row_of_the_batch_and_vmap_equals_the_batch(name, rng):
    err = check_examples_and_vmap(build_layer(name), inputs(rng), padding_mask(rng, BATCH, L))
    print(f"{name}: max |one example - its row|, |vmap - batch| = {err:.1e}")


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_sequence_model_on_one_example_equals_its_row_and_vmap_equals_the_batch(kind, rng):
    err = check_examples_and_vmap(build_model(kind), inputs(rng, kind), padding_mask(rng, BATCH, L))
    print(f"SequenceModel ({kind}): max |one example - its row|, |vmap - batch| = {err:.1e}")


def test_linen_layer_on_one_example_equals_its_row_of_the_batch(rng):
    x = inputs(rng)
    layer = ssm.linen.S4D(D, d_state=4)
    variables = layer.init(jax.random.key(0), x)
    batched = layer.apply(variables, x)
    np.testing.assert_allclose(layer.apply(variables, x[1]), batched[1], rtol=1e-5, atol=1e-5)


def test_wrong_shapes_name_both_forms_and_recurrence_keeps_the_batch_axis():
    layer = build_layer("mamba")
    with pytest.raises(ValueError, match=r"x has shape \(8,\); expected \(batch, length, 8\) or, one example, "
                                         r"\(length, 8\)"):
        layer(jnp.ones((D,)))
    with pytest.raises(ValueError, match=r"x has shape \(16, 7\); expected \(batch, length, 8\) or, one example, "
                                         r"\(length, 8\)"):
        layer(jnp.ones((L, 7)))
    with pytest.raises(ValueError, match=r"mask has shape \(1, 16\); expected \(16,\) \(length,\)"):
        layer(jnp.ones((L, D)), mask=jnp.ones((1, L), bool))
    with pytest.raises(ValueError, match=r"x_t has shape \(8,\); expected \(batch, 8\)"):
        layer.step(jnp.ones((D,)), layer.init_state(1))
    for name in ("s4d", "mamba", "mamba2", "attention", "lstm"):
        with pytest.raises(ValueError, match=r"x has shape \(16, 8\); expected \(batch, length, 8\)"):
            build_layer(name).prefill(jnp.ones((L, D)))
    tokens = build_model("tokens")
    with pytest.raises(ValueError, match=r"x has shape \(\); expected \(batch, length\) or, one example, "
                                         r"\(length,\)"):
        tokens(jnp.zeros((), int))
    with pytest.raises(ValueError, match=r"x_t has shape \(\); expected \(batch,\) \(recurrent inference keeps "
                                         r"the batch axis"):
        tokens.step(jnp.zeros((), int), tokens.init_state(1))
    with pytest.raises(ValueError, match=r"x has shape \(16,\); expected \(batch, length\)"):
        tokens.prefill(jnp.zeros((L,), int))
    features = SequenceModel(d_model=D, n_layers=1, d_output=4, d_input=5, layer_kwargs=SMALL["s4d"],
                             rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"x_t has shape \(3, 4\); expected \(batch, 5\)"):
        features.step(jnp.zeros((3, 4)), features.init_state(3))
