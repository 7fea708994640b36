"""Monarch layers: ``MonarchLinear``, ``from_linear``, the Hyena filter, the M2
sequence mixer, the block's MLP sublayer and M2's own BERT layer (``M2Block``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ssm import monarch
from ssm.groups import param_labels
from ssm.layers import (GatedMLP, HyenaFilter, M2Block, MonarchLinear, MonarchMixer, ResidualBlock,
                        SequenceModel, from_linear)
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


def test_bidirectional_implicit_filters_share_one_frequency(rng, x64):
    """M2's two filter MLPs use one ``Sin`` module, so one frequency vector: one
    parameter (under ``filter``), whose gradient sums both filters' (checked against
    central differences of the reference formula with that one frequency)."""
    layer = mixer(bidirectional=True, filter_emb_dim=5, filter_order=6, l_max=10, param_dtype=jnp.float64)
    assert layer.filter_reverse.freq is layer.filter.freq
    paths = [path for path, _ in nnx.to_flat_state(nnx.state(layer, nnx.Param)) if path[-1] == "freq"]
    assert paths == [("filter", "freq")]
    layer.filter.freq[...] = jnp.asarray(10 + rng.standard_normal(6))
    assert np.array_equal(layer.filter_reverse.freq[...], layer.filter.freq[...])
    w, w_rev = rng.standard_normal((2, 8, 10))

    def taps(f, freq):
        return reference.hyena_filter([np.asarray(lin.kernel[...]) for lin in f.layers],
                                      [np.asarray(lin.bias[...]) for lin in f.layers], freq,
                                      np.asarray(f.out.kernel[...]), l_max=10, emb_dim=5, length=10)

    def loss_ref(freq):
        return np.sum(w * taps(layer.filter, freq)) + np.sum(w_rev * taps(layer.filter_reverse, freq))

    graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

    @jax.jit
    def loss(params):
        K, K_rev = nnx.merge(graphdef, params, rest).kernel(10)
        return jnp.sum(w * K) + jnp.sum(w_rev * K_rev)

    freq = np.asarray(layer.filter.freq[...])
    np.testing.assert_allclose(loss(params), loss_ref(freq), rtol=1e-12)
    grad = np.asarray(jax.grad(loss)(params)["filter"]["freq"][...])
    eps = 1e-6
    fd = [(loss_ref(freq + eps * e) - loss_ref(freq - eps * e)) / (2 * eps) for e in np.eye(6)]
    print("shared freq: gradient vs central differences, max abs error", np.abs(grad - fd).max())
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-7)


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


def test_m2_block_equals_the_reference_bert_layer_formula(rng, x64):
    """M2Block around a bidirectional MonarchMixer against M2's ``BertLayer`` written
    out in NumPy (tests/reference.py): no residual around the mixer, a bias-free gated
    projection, the exact GELU, a post-norm residual around the GLU, both filters
    through one frequency; every parameter drawn at random, one jitted call."""
    d, L = 8, 12
    rngs = nnx.Rngs(0)
    f64 = dict(param_dtype=jnp.float64)
    mix = MonarchMixer(d, l_max=L, bidirectional=True, filter_emb_dim=5, filter_order=8, rngs=rngs, **f64)
    block = M2Block(d, mix, expand=2, linear="monarch", nblocks=2, activation="gelu", norm_eps=1e-5,
                    rngs=rngs, **f64)
    for var in (mix.in_proj.bias, mix.out_proj.bias, block.mlp.down.bias, block.norm.scale, block.norm.bias):
        var[...] = randn(rng, *var.shape, dtype=np.float64)
    mix.filter.freq[...] = jnp.asarray(10 + rng.standard_normal(8))  # the reverse filter's too
    x = randn(rng, 2, L, d, dtype=np.float64)
    y = nnx.jit(lambda block, x: block(x))(block, x)

    def numpy(*variables):
        return [np.asarray(v[...]) for v in variables]

    def taps(f):
        return reference.hyena_filter(numpy(*(lin.kernel for lin in f.layers)), numpy(*(lin.bias for lin in f.layers)),
                                      np.asarray(mix.filter.freq[...]), np.asarray(f.out.kernel[...]), l_max=L,
                                      emb_dim=5, length=L)

    def dense(linear, n_in, n_out):
        return reference.monarch_dense(*numpy(linear.R, linear.L))[:n_in, :n_out]

    p = dict(zip(("W_in", "b_in", "conv_w", "conv_b", "D", "W_out", "b_out", "b_down", "ln_scale", "ln_bias"),
                 numpy(mix.in_proj.kernel, mix.in_proj.bias, mix.conv.kernel, mix.conv.bias, mix.D,
                       mix.out_proj.kernel, mix.out_proj.bias, block.mlp.down.bias, block.norm.scale,
                       block.norm.bias)))
    p.update(K=taps(mix.filter), K_rev=taps(mix.filter_reverse), W_up=dense(block.mlp.up, d, 4 * d),
             W_down=dense(block.mlp.down, 2 * d, d))
    expected = np.stack([reference.m2_bert_layer(np.asarray(x[b]), p, eps=1e-5) for b in range(2)])
    print("M2Block vs the reference layer: max abs error", float(np.abs(y - expected).max()))
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)


def test_m2_block_has_the_reference_parameters_and_biases():
    """M2's layer with dense projections: the gated projection has no bias, ``wo``, the
    mixer's projections and short convolution have one; the count is the reference's
    (which also trains its positional features, l_max x emb_dim, fixed here)."""
    d, e, o, emb, inner = 8, 2, 6, 5, 2
    block = M2Block(d, mixer(bidirectional=True, filter_order=o, filter_emb_dim=emb, filter_inner_mlps=inner),
                    expand=e, rngs=nnx.Rngs(1))
    assert block.mlp.up.bias is None and block.mlp.down.bias is not None
    assert all(m.bias is not None for m in (block.mixer.in_proj, block.mixer.out_proj, block.mixer.conv))
    assert block.mixer.filter.out.bias is None and block.mixer.filter_reverse.out.bias is None
    mlp_filter = (emb * o + o) + inner * (o * o + o) + o * d  # Linear, inner Linears, Linear without bias
    expected = ((d * 3 * d + 3 * d) + (3 * 3 * d + 3 * d)  # in_linear; depthwise short conv (width 3)
                + 2 * mlp_filter + o + d  # forward and reverse filter MLPs, their one Sin frequency, bias (D)
                + (d * d + d)  # out_linear
                + d * 2 * e * d + (e * d * d + d) + 2 * d)  # gated_layers (no bias), wo, LayerNorm
    count = sum(v.size for v in jax.tree.leaves(nnx.state(block, nnx.Param)))
    assert count == expected, (count, expected)


def test_m2_model_parameter_groups_of_every_filter_parameter():
    """SequenceModel(block="m2"): both filters' MLPs, their shared frequency and the skip
    D land in ``ssm`` (AdamW at ssm_lr, no weight decay: tests/test_optimizer.py),
    the gated and output projections' Monarch factors in ``matrix`` (decayed), biases
    and norms in ``no_decay``. M2 itself decays its forward filter's MLP (hyena_wd 0.1)
    and trains the reverse one and D in its base group: a documented choice here."""
    model = SequenceModel(d_model=8, n_layers=1, d_output=3, vocab_size=3, layer="m2", block="m2", prenorm=False,
                          post=None, mlp="monarch", mlp_expand=2, layer_kwargs={"l_max": 8, "bidirectional": True},
                          rngs=nnx.Rngs(0))
    block = model.blocks[0]
    assert isinstance(block, M2Block) and model.final_norm is None
    by_path = {p.removeprefix("['blocks'][0]"): lab for p, lab in labels_by_path(model).items()}
    filters = {p: lab for p, lab in by_path.items() if p.startswith("['mixer']['filter")}
    assert len(filters) == 2 * 7 + 1  # 3 Linears with bias and 1 without, twice; one freq
    assert set(filters.values()) == {"ssm"} and "['mixer']['filter']['freq']" in filters
    assert by_path["['mixer']['D']"] == "ssm"
    mlp = {p: lab for p, lab in by_path.items() if p.startswith("['mlp']")}
    assert mlp == {"['mlp']['up']['R']": "matrix", "['mlp']['up']['L']": "matrix", "['mlp']['down']['R']": "matrix",
                   "['mlp']['down']['L']": "matrix", "['mlp']['down']['bias']": "no_decay"}
    assert by_path["['norm']['scale']"] == by_path["['norm']['bias']"] == "no_decay"


@pytest.mark.parametrize("kw, match", [
    (dict(), r"^prenorm=True with block='m2': M2's layer is post-norm"),
    (dict(prenorm=False, post="glu"), r"^post='glu' with block='m2': .* set post=None"),
    (dict(prenorm=False, post=None, mlp=None), r"^mlp=None with block='m2': .*'dense' or 'monarch'"),
    (dict(prenorm=False, post=None, residual_in_fp32=True), r"^residual_in_fp32=True with block='m2'"),
])
def test_m2_block_refuses_the_arguments_of_the_other_structure(kw, match):
    with pytest.raises(ValueError, match=match):
        SequenceModel(d_model=8, n_layers=1, d_output=3, vocab_size=3, layer="m2", block="m2",
                      **{"mlp": "dense", **kw}, layer_kwargs={"l_max": 8}, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"block='bert'; expected one of \('residual', 'm2'\)"):
        SequenceModel(d_model=8, n_layers=1, d_output=3, vocab_size=3, block="bert", rngs=nnx.Rngs(0))


def test_m2_model_has_no_recurrent_mode():
    model = SequenceModel(d_model=8, n_layers=1, d_output=3, vocab_size=3, layer="m2", post=None,
                          layer_kwargs={"l_max": 8}, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="MonarchMixer has no recurrent mode"):
        model.init_state(2)


@pytest.mark.parametrize("block", ["residual", "m2"])
def test_m2_model_trains_a_step_and_lowers_its_loss(block, rng):
    """SequenceModel(layer="m2", post=None, mlp="monarch"), in the library's block and
    in M2's: gradients reach every parameter and a few Adam steps lower the loss on a
    fixed batch."""
    import optax

    model = SequenceModel(d_model=16, n_layers=2, d_output=5, vocab_size=5, layer="m2", block=block,
                          prenorm=block == "residual", post=None, mlp="monarch", mlp_expand=2,
                          layer_kwargs={"l_max": 16, "bidirectional": block == "m2"}, rngs=nnx.Rngs(0))
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
