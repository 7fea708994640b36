"""Monarch layers: ``MonarchLinear``, ``from_linear``, the Hyena filter, the M2
sequence mixer and the block's MLP sublayer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ssm import monarch
from ssm.groups import param_labels
from ssm.layers import (GatedMLP, HyenaFilter, MonarchLinear, MonarchMixer, ResidualBlock, SequenceModel,
                        from_linear)
from ssm.layers.hyena import decay_window
from tests import reference
from tests.stepping import rel


def randn(rng, *shape, dtype=np.float32):
    return jnp.asarray(rng.standard_normal(shape), dtype)


def labels_by_path(module) -> dict[str, str]:
    """``{"['in_proj']['R']": group, ...}`` for every parameter of ``module``."""
    state = nnx.state(module, nnx.Param)
    labels = jax.tree.leaves(param_labels(module)(state))
    paths = [jax.tree_util.keystr(p).removesuffix(".value")
             for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
    return dict(zip(paths, labels))


# ------------------------------------------------------------------ MonarchLinear


@pytest.mark.parametrize("n_in, n_out, nblocks", [(16, 16, None), (12, 18, 3), (10, 7, 4)])
def test_monarch_linear_applies_its_dense_kernel_plus_bias(n_in, n_out, nblocks, rng, x64):
    layer = MonarchLinear(n_in, n_out, nblocks=nblocks, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    layer.bias[...] = randn(rng, n_out, dtype=np.float64)
    x = randn(rng, 2, 5, n_in, dtype=np.float64)
    W = reference.monarch_dense(np.asarray(layer.R[...]), np.asarray(layer.L[...]))[:n_in, :n_out]
    np.testing.assert_allclose(layer(x), x @ W + layer.bias[...], rtol=0, atol=1e-12)
    np.testing.assert_allclose(layer.to_dense(), W, rtol=0, atol=1e-13)


def test_monarch_linear_init_has_the_variance_of_nnx_linear():
    """Every kernel entry R[a,c,j]·L[j,a,t] has variance 1/in_features, as lecun-normal."""
    n = 1024
    W = MonarchLinear(n, n, rngs=nnx.Rngs(1)).to_dense()
    assert W.shape == (n, n)
    np.testing.assert_allclose(float(jnp.var(W)) * n, 1.0, rtol=0.03)
    dense = nnx.Linear(n, n, rngs=nnx.Rngs(1)).kernel[...]
    np.testing.assert_allclose(float(jnp.var(W)), float(jnp.var(dense)), rtol=0.05)
    # Padded (1000 -> 1024 inputs, nblocks 32): the real inputs still carry 1/in_features.
    padded = MonarchLinear(1000, 1000, nblocks=32, rngs=nnx.Rngs(2))
    assert padded.padded_sizes == (1024, 1024)
    np.testing.assert_allclose(float(jnp.var(padded.to_dense())) * 1000, 1.0, rtol=0.03)


def test_prime_sizes_get_padded_blocks_not_one_dense_block():
    layer = MonarchLinear(97, 97, rngs=nnx.Rngs(0))
    assert layer.nblocks == 10 and layer.padded_sizes == (100, 100)
    assert layer.R.size + layer.L.size < 97 * 97 / 4


def test_monarch_linear_is_a_drop_in_for_nnx_linear(rng):
    x = randn(rng, 3, 7, 64)
    for layer in (MonarchLinear(64, 32, rngs=nnx.Rngs(0)), MonarchLinear(64, 32, use_bias=False, rngs=nnx.Rngs(0))):
        y = jax.jit(lambda x, layer=layer: layer(x))(x)
        assert y.shape == (3, 7, 32) and y.dtype == jnp.float32
    bf = MonarchLinear(64, 32, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    assert bf(x).dtype == jnp.bfloat16
    assert rel(bf(x), MonarchLinear(64, 32, rngs=nnx.Rngs(0))(x)) < 2e-2
    assert labels_by_path(bf) == {"['R']": "matrix", "['L']": "matrix", "['bias']": "no_decay"}
    with pytest.raises(ValueError, match=r"x has shape \(3, 7, 63\); expected \(\.\.\., 64\)"):
        bf(x[..., :63])
    with pytest.raises(ValueError, match="in_features=0; expected a positive integer"):
        MonarchLinear(0, 4, rngs=nnx.Rngs(0))


def test_from_linear_projects_a_trained_dense_layer(rng, x64):
    """A dense layer holding a Monarch kernel converts exactly; any other converts to
    the Frobenius-optimal one (error = ``projection_error``); the bias is copied."""
    source = MonarchLinear(16, 24, nblocks=4, param_dtype=jnp.float64, rngs=nnx.Rngs(2))
    dense = nnx.Linear(16, 24, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    dense.kernel[...] = source.to_dense()
    dense.bias[...] = randn(rng, 24, dtype=np.float64)
    x = randn(rng, 4, 16, dtype=np.float64)
    converted = from_linear(dense, nblocks=4)
    np.testing.assert_allclose(converted(x), dense(x), rtol=0, atol=1e-12)

    dense.kernel[...] = randn(rng, 16, 24, dtype=np.float64)
    converted = from_linear(dense, nblocks=4)
    np.testing.assert_allclose(jnp.linalg.norm(converted.to_dense() - dense.kernel[...]),
                               monarch.projection_error(dense.kernel[...], 4), rtol=1e-12)
    np.testing.assert_allclose(converted.bias[...], dense.bias[...], rtol=0, atol=0)

    # Sizes nblocks does not divide: the padded kernel is projected, the result cut back.
    dense = nnx.Linear(10, 7, param_dtype=jnp.float64, rngs=nnx.Rngs(1))
    converted = from_linear(dense, nblocks=4)
    padded = jnp.pad(dense.kernel[...], ((0, 2), (0, 1)))
    np.testing.assert_allclose(jnp.linalg.norm(converted.to_dense() - dense.kernel[...]),
                               monarch.projection_error(padded, 4), rtol=1e-12)
    x = randn(rng, 3, 10, dtype=np.float64)
    np.testing.assert_allclose(converted(x), x @ converted.to_dense() + dense.bias[...], rtol=0, atol=1e-12)
    with pytest.raises(TypeError, match="expected flax.nnx.Linear"):
        from_linear(converted)


# --------------------------------------------------------------------- filters


def test_hyena_filter_follows_its_formula(rng, x64):
    f = HyenaFilter(6, l_max=40, emb_dim=5, order=8, inner_mlps=2, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    f.freq[...] = jnp.asarray(1 + 0.3 * rng.standard_normal(8))
    weights = [np.asarray(layer.kernel[...]) for layer in f.layers]
    biases = [np.asarray(layer.bias[...]) for layer in f.layers]
    expected = reference.hyena_filter(weights, biases, np.asarray(f.freq[...]), np.asarray(f.out.kernel[...]),
                                      l_max=40, emb_dim=5, length=33)
    K = f(33)
    assert K.shape == (6, 33)
    np.testing.assert_allclose(K, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(f(40)[:, :33], K, rtol=0, atol=0)  # a shorter length is a prefix


def test_decay_window_reaches_its_target_at_each_channels_fraction():
    w = decay_window(101, 5, target=1e-2, fast_decay_pct=0.3, slow_decay_pct=1.5)
    assert np.all(np.diff(w, axis=0) < 0)  # decays along time
    np.testing.assert_allclose(w[30, -1], 1e-2, rtol=1e-12)  # fastest: 1e-2 at 30% of the length
    np.testing.assert_allclose(w[100, 0], 1e-2 ** (1 / 1.5), rtol=1e-12)  # slowest: at 150%


# ------------------------------------------------------------------ MonarchMixer


def mixer(**kw):
    kw.setdefault("rngs", nnx.Rngs(0))
    return MonarchMixer(8, l_max=kw.pop("l_max", 24), **kw)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("filter", ["implicit", "explicit"])
def test_long_convolution_equals_the_direct_convolution(filter, bidirectional, rng, x64):
    layer = mixer(filter=filter, bidirectional=bidirectional, param_dtype=jnp.float64)
    v = randn(rng, 2, 19, 8, dtype=np.float64)
    K, K_rev = (np.asarray(k) if k is not None else None for k in layer.kernel(19))
    D = np.asarray(layer.D[...])
    expected = np.zeros(v.shape)
    for b in range(2):
        for c in range(8):
            u = np.asarray(v[b, :, c])
            expected[b, :, c] = reference.causal_conv(u, K[c]) + D[c] * u
            if bidirectional:
                expected[b, :, c] += reference.anticausal_conv(u, K_rev[c], lag0=False)
    np.testing.assert_allclose(layer.long_conv(v), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("filter", ["implicit", "explicit"])
def test_inputs_longer_than_l_max_are_convolved_with_the_l_max_taps(filter, rng, x64):
    layer = mixer(filter=filter, bidirectional=True, param_dtype=jnp.float64)  # l_max = 24
    K, K_rev = (np.asarray(k) for k in layer.kernel(37))
    np.testing.assert_array_equal(K[:, 24:], 0)
    np.testing.assert_array_equal(K_rev[:, 24:], 0)
    np.testing.assert_array_equal(K[:, :24], layer.filter(24))
    v = randn(rng, 1, 37, 8, dtype=np.float64)
    D = np.asarray(layer.D[...])
    expected = np.stack([reference.causal_conv(np.asarray(v[0, :, c]), K[c])
                         + reference.anticausal_conv(np.asarray(v[0, :, c]), K_rev[c], lag0=False)
                         + D[c] * np.asarray(v[0, :, c]) for c in range(8)], -1)
    np.testing.assert_allclose(layer.long_conv(v)[0], expected, rtol=0, atol=1e-12)


def test_mixer_is_causal_and_the_bidirectional_one_is_not(rng, x64):
    """d y[t] / d x[t'] for t' > t is zero up to the FFT's rounding (float64)."""
    x = randn(rng, 1, 16, 8, dtype=np.float64)
    t = 9
    for bidirectional in (False, True):
        layer = mixer(bidirectional=bidirectional, param_dtype=jnp.float64, rngs=nnx.Rngs(3))
        jac = jax.jacrev(lambda x: layer(x)[0, t])(x)  # (d, 1, L, d)
        future = float(jnp.abs(jac[:, :, t + 1:]).max())
        past = float(jnp.abs(jac[:, :, :t]).max())
        assert past > 1e-3
        assert (future > 1e-3 * past) if bidirectional else (future < 1e-15 * past)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_on_either_side_leaves_real_outputs_unchanged(bidirectional, rng):
    layer = mixer(bidirectional=bidirectional, rngs=nnx.Rngs(4))
    x = randn(rng, 2, 12, 8)
    y = layer(x)
    junk = randn(rng, 2, 5, 8) * 10
    right = layer(jnp.concatenate([x, junk], 1), mask=jnp.arange(17)[None].repeat(2, 0) < 12)
    left = layer(jnp.concatenate([junk, x], 1), mask=jnp.arange(17)[None].repeat(2, 0) >= 5)
    assert rel(right[:, :12], y) < 1e-6
    assert rel(left[:, 5:], y) < 1e-6


def test_mixer_jit_bf16_monarch_projections_and_errors(rng):
    x = randn(rng, 2, 20, 8)
    layer = mixer(projection="monarch", nblocks=2, rngs=nnx.Rngs(5))
    assert isinstance(layer.in_proj, MonarchLinear) and layer.in_proj.R.shape == (2, 4, 12)
    y = layer(x)
    np.testing.assert_allclose(nnx.jit(lambda m, x: m(x))(layer, x), y, rtol=2e-5, atol=2e-6)
    bf = mixer(projection="monarch", nblocks=2, dtype=jnp.bfloat16, rngs=nnx.Rngs(5))
    y16 = bf(x.astype(jnp.bfloat16))
    assert y16.dtype == jnp.bfloat16 and rel(y16, y) < 5e-2
    with pytest.raises(ValueError, match="no recurrent mode"):
        layer.step(x[:, 0], None)
    with pytest.raises(ValueError, match="filter='fir'; expected one of"):
        mixer(filter="fir")
    with pytest.raises(ValueError, match="emb_dim=4 must be an odd integer"):
        mixer(filter_emb_dim=4)


def test_filters_and_skip_are_ssm_group_projections_matrix(rng):
    layer = mixer(projection="monarch", nblocks=2)
    by_path = labels_by_path(layer)
    assert all(lab == "ssm" for p, lab in by_path.items() if "filter" in p or "'D'" in p)
    assert all(lab == "matrix" for p, lab in by_path.items() if "proj" in p and ("'R'" in p or "'L'" in p))
    assert by_path["['conv']['kernel']"] == "adamw"


# ------------------------------------------------------------ block and model


def test_block_mlp_sublayer_is_a_second_prenorm_residual(rng):
    d = 8
    block = ResidualBlock(d, mixer(), post=None, mlp=GatedMLP(d, expand=2, linear="monarch", rngs=nnx.Rngs(1)),
                          rngs=nnx.Rngs(2))
    x = randn(rng, 2, 10, d)
    h = x + block.mixer(block.norm(x))
    np.testing.assert_allclose(block(x), h + block.mlp(block.norm2(h)), rtol=1e-6, atol=1e-6)
    gate, value = jnp.split(block.mlp.up(x), 2, -1)
    want = block.mlp.down(jax.nn.gelu(gate, approximate=False) * value)  # "gelu": the exact erf form
    np.testing.assert_allclose(block.mlp(x), want, rtol=1e-6, atol=1e-6)


def test_block_mlp_sublayer_post_norm(rng):
    d = 8
    block = ResidualBlock(d, mixer(), prenorm=False, post=None, mlp=GatedMLP(d, expand=2, rngs=nnx.Rngs(1)),
                          rngs=nnx.Rngs(2))
    x = randn(rng, 2, 10, d)
    h = block.norm(x + block.mixer(x))
    np.testing.assert_allclose(block(x), block.norm2(h + block.mlp(h)), rtol=1e-6, atol=1e-6)


def test_m2_model_has_no_recurrent_mode():
    model = SequenceModel(d_model=8, n_layers=1, d_output=3, vocab_size=3, layer="m2", post=None,
                          layer_kwargs={"l_max": 8}, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="MonarchMixer has no recurrent mode"):
        model.init_state(2)


def test_m2_model_trains_a_step_and_lowers_its_loss(rng):
    """SequenceModel(layer="m2", post=None, mlp="monarch"): gradients reach every
    parameter and a few Adam steps lower the loss on a fixed batch."""
    import optax

    model = SequenceModel(d_model=16, n_layers=2, d_output=5, vocab_size=5, layer="m2", post=None, mlp="monarch",
                          mlp_expand=2, layer_kwargs={"l_max": 16}, rngs=nnx.Rngs(0))
    tokens = jnp.asarray(rng.integers(0, 5, (4, 16)))
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        def loss_fn(model):
            logits = model(tokens)
            return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.roll(tokens, -1, 1)).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss, grads

    loss0, grads = step(model, optimizer)
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))
    for _ in range(10):
        loss, _ = step(model, optimizer)
    assert float(loss) < 0.9 * float(loss0)


def test_gated_mlp_dense_and_monarch_in_float32_and_bf16(rng):
    x = randn(rng, 2, 6, 16)
    for linear in ("dense", "monarch"):
        mlp = GatedMLP(16, expand=2, linear=linear, rngs=nnx.Rngs(0))
        y = mlp(x)
        assert y.shape == (2, 6, 16) and y.dtype == jnp.float32
        bf = GatedMLP(16, expand=2, linear=linear, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
        y16 = bf(x.astype(jnp.bfloat16))
        assert y16.dtype == jnp.bfloat16 and rel(y16, y) < 3e-2
    assert isinstance(GatedMLP(16, linear="monarch", rngs=nnx.Rngs(0)).up, MonarchLinear)
    with pytest.raises(ValueError, match="linear='sparse'; expected one of"):
        GatedMLP(16, linear="sparse", rngs=nnx.Rngs(0))
