"""Packed sequences and state passing (issue #16): every causal layer and SequenceModel
against independent references: the documents of a packed row run one by one, the
sequence run whole, the recurrence fed token by token."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ssm.attention import dot_product_attention
from ssm.layers import LSTM, S4, S4D, Attention, Mamba, Mamba2, MonarchMixer, SequenceModel
from ssm.layers.segments import boundaries, recurrent_scan
from ssm.ssd import ssd_chunked
from stepping import run_steps

F64 = dict(param_dtype=jnp.float64)
LAYERS = {
    "s4": lambda **kw: S4(4, d_state=8, l_max=16, **kw),
    "s4d": lambda **kw: S4D(4, d_state=8, **kw),
    "mamba": lambda **kw: Mamba(4, d_state=4, d_conv=3, **kw),
    "mamba2": lambda **kw: Mamba2(4, d_state=4, headdim=4, chunk_size=4, d_conv=3, **kw),
    "attention": lambda **kw: Attention(4, n_heads=2, **kw),
    "lstm": lambda **kw: LSTM(4, **kw),
}
# Row 0 packs three documents (one shorter than the convolution's width), row 1 holds one.
LENGTHS = (6, 2, 5)
SEGMENTS = np.array([[3] * 6 + [5] * 2 + [9] * 5, [4] * 13])


@functools.lru_cache(maxsize=None)
def layer(name):
    """One float64 layer per name for the whole module (no test changes it; building S4
    eagerly takes seconds)."""
    with jax.enable_x64(True):
        return LAYERS[name](**F64, rngs=nnx.Rngs(0))


@functools.lru_cache(maxsize=None)
def compiled(m):
    """``m``'s call, compiled (once per shape and options): eager calls would compile
    every operation on its own."""
    @functools.partial(nnx.jit, static_argnames=("return_state",))
    def call(m, x, mask=None, segment_ids=None, initial_state=None, return_state=False):
        return m(x, mask=mask, segment_ids=segment_ids, initial_state=initial_state, return_state=return_state)

    return functools.partial(call, m)


def with_room(state, n):
    """A KV cache (attention) with ``n`` more empty positions, for ``step``: the cache
    ``return_state`` gives holds exactly what it saw. Other states unchanged."""
    if not (isinstance(state, dict) and "valid" in state):
        return state
    room = lambda a: jnp.pad(a, [(0, 0), (0, n)] + [(0, 0)] * (a.ndim - 2))  # noqa: E731
    return {**state, **{k: room(state[k]) for k in ("k", "v", "valid")}}


def documents(x):
    """Row 0 of ``x`` (2, 13, ...) cut into the documents of SEGMENTS, each (1, l, ...)."""
    edges = np.cumsum((0,) + LENGTHS)
    return [x[:1, a:b] for a, b in zip(edges[:-1], edges[1:])]


def loss_weights(rng, shape):
    return jnp.asarray(rng.normal(size=shape))


@pytest.mark.parametrize("name", list(LAYERS))
def test_a_packed_row_equals_its_documents_run_one_by_one(name, rng, x64):
    """Outputs, and gradients with respect to the parameters and the inputs: a packed row
    is its documents run alone (separate calls), to rounding."""
    m = layer(name)
    x = jnp.asarray(rng.normal(size=(2, 13, 4)))
    w = loss_weights(rng, (2, 13, 4))
    graphdef, params, rest = nnx.split(m, nnx.Param, ...)

    def packed(p, x):
        y = nnx.merge(graphdef, p, rest)(x, segment_ids=SEGMENTS)
        return jnp.sum(y * w), y

    def one_by_one(p, x):
        model = nnx.merge(graphdef, p, rest)
        y = jnp.concatenate([jnp.concatenate([model(doc) for doc in documents(x)], 1), model(x[1:])])
        return jnp.sum(y * w), y

    (got, y), (want, expected) = (jax.jit(jax.grad(f, (0, 1), has_aux=True))(params, x) for f in (packed, one_by_one))
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, e, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", list(LAYERS))
def test_state_out_then_in_continues_the_sequence(name, rng, x64):
    """``layer(x[:, :t], return_state=True)`` then ``layer(x[:, t:], initial_state=s)`` is
    ``layer(x)``, the final states agree, and the returned state drives ``step``. The
    split at t = 2 leaves the first part shorter than the convolutions' width."""
    t = 2
    m = layer(name)
    call = compiled(m)
    x = jnp.asarray(rng.normal(size=(2, 11, 4)))
    full, last = call(x, return_state=True)
    y1, s = call(x[:, :t], return_state=True)
    y2, s2 = call(x[:, t:], initial_state=s, return_state=True)
    np.testing.assert_allclose(jnp.concatenate([y1, y2], 1), full, rtol=1e-10, atol=1e-12)
    for a, b in zip(jax.tree.leaves(s2), jax.tree.leaves(last)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    stepped, _ = run_steps(m, x[:, t:], with_room(s, 11 - t))  # the state is step's type
    np.testing.assert_allclose(stepped, full[:, t:], rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", list(LAYERS))
def test_gradients_flow_through_the_passed_state(name, rng, x64):
    """The gradient of the second window's loss with respect to the first window's
    inputs, through the state, equals the gradient through the whole sequence."""
    m = layer(name)
    x = jnp.asarray(rng.normal(size=(2, 9, 4)))
    w = loss_weights(rng, (2, 5, 4))

    def through_state(x1):
        _, s = m(x1, return_state=True)
        return jnp.sum(m(x[:, 4:], initial_state=s) * w)

    def whole(x1):
        return jnp.sum(m(jnp.concatenate([x1, x[:, 4:]], 1))[:, 4:] * w)

    g = jax.jit(jax.grad(through_state))(x[:, :4])
    assert float(jnp.abs(g).max()) > 1e-6  # the state does carry the past
    np.testing.assert_allclose(g, jax.jit(jax.grad(whole))(x[:, :4]), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", list(LAYERS))
def test_packing_and_state_passing_together(name, rng, x64):
    """A packed row split inside its second document: the state carries that document
    across the split; documents before it stay invisible."""
    call = compiled(layer(name))
    x = jnp.asarray(rng.normal(size=(2, 13, 4)))
    whole = call(x, segment_ids=SEGMENTS)
    y1, s = call(x[:, :7], segment_ids=SEGMENTS[:, :7], return_state=True)
    y2 = call(x[:, 7:], segment_ids=SEGMENTS[:, 7:], initial_state=s)
    np.testing.assert_allclose(jnp.concatenate([y1, y2], 1), whole, rtol=1e-10, atol=1e-12)


# Not attention: its cache positions are slots shared by the batch, so right padding
# moves the next tokens away from the real ones (its docstring says so).
@pytest.mark.parametrize("name", [n for n in LAYERS if n != "attention"])
def test_the_returned_state_skips_right_padding(name, rng, x64):
    """With a mask padding row 0 on the right, the returned state is the one after its
    last real position: continuing from it equals continuing the unpadded row."""
    call = compiled(layer(name))
    x = jnp.asarray(rng.normal(size=(2, 10, 4)))
    nxt = jnp.asarray(rng.normal(size=(2, 3, 4)))
    real = np.ones((2, 10), bool)
    real[0, 7:] = False
    _, padded = call(x.at[0, 7:].set(99.0), mask=jnp.asarray(real), return_state=True)
    _, s0 = call(x[:1, :7], return_state=True)
    _, s1 = call(x[1:], return_state=True)
    got = call(nxt, initial_state=padded)
    np.testing.assert_allclose(got[:1], call(nxt[:1], initial_state=s0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got[1:], call(nxt[1:], initial_state=s1), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["s4d", "attention", "lstm"])
def test_sequence_model_packs_and_passes_its_blocks_states(name, rng, x64):
    kw = {"s4d": dict(d_state=8), "attention": dict(n_heads=2), "lstm": {}}[name]
    m = SequenceModel(d_model=4, n_layers=2, d_output=7, vocab_size=7, layer=name, layer_kwargs=kw, **F64,
                      rngs=nnx.Rngs(0))
    call = compiled(m)
    ids = jnp.asarray(rng.integers(0, 7, size=(2, 13)))
    packed = call(ids, segment_ids=SEGMENTS)
    np.testing.assert_allclose(packed[:1], jnp.concatenate([call(doc) for doc in documents(ids)], 1),
                               rtol=1e-10, atol=1e-12)
    y1, s = call(ids[:, :5], return_state=True)
    assert isinstance(s, list) and len(s) == 2  # one state per block, as init_state makes it
    y2 = call(ids[:, 5:], initial_state=s)
    np.testing.assert_allclose(jnp.concatenate([y1, y2], 1), call(ids), rtol=1e-10, atol=1e-12)
    stepped, _ = run_steps(m, ids[:, 5:], [with_room(b, 8) for b in s])
    np.testing.assert_allclose(stepped, y2, rtol=1e-9, atol=1e-11)


def test_one_example_takes_segment_ids_without_the_batch_axis(rng):
    m = Mamba(4, d_state=4, rngs=nnx.Rngs(0))
    x = jnp.asarray(rng.normal(size=(13, 4)))
    np.testing.assert_array_equal(m(x, segment_ids=SEGMENTS[0]), m(x[None], segment_ids=SEGMENTS[:1])[0])
    with pytest.raises(ValueError, match="return_state needs the batch axis"):
        m(x, return_state=True)


def test_layers_without_a_recurrence_refuse_clearly(rng):
    x = jnp.asarray(rng.normal(size=(1, 8, 4)), jnp.float32)
    m2 = MonarchMixer(4, l_max=8, rngs=nnx.Rngs(0))
    for kw in (dict(segment_ids=np.ones((1, 8), int)), dict(return_state=True)):
        with pytest.raises(ValueError, match="long convolution has no finite state"):
            m2(x, **kw)
    s4d = S4D(4, d_state=8, bidirectional=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"bidirectional=True\) has no recurrent mode, which segment_ids needs"):
        s4d(x, segment_ids=np.ones((1, 8), int))
    with pytest.raises(ValueError, match=r"bidirectional=True\) has no recurrent mode, which return_state needs"):
        s4d(x, return_state=True)
    attn = Attention(4, n_heads=2, bidirectional=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"no recurrent mode, which return_state needs"):
        attn(x, return_state=True)
    pooled = SequenceModel(d_model=4, n_layers=1, d_output=3, vocab_size=5, pool="mean", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="segment_ids with pool='mean'"):
        pooled(np.zeros((1, 8), int), segment_ids=np.ones((1, 8), int))


def test_bad_segment_ids_and_states_are_named():
    m = Mamba(4, d_state=4, rngs=nnx.Rngs(0))
    x = jnp.ones((2, 8, 4))
    with pytest.raises(ValueError, match=r"segment_ids has shape \(2, 7\); expected \(2, 8\)"):
        m(x, segment_ids=np.ones((2, 7), int))
    with pytest.raises(ValueError, match="segment_ids has dtype float32; expected integers"):
        m(x, segment_ids=np.ones((2, 8), np.float32))
    with pytest.raises(ValueError, match=r"initial_state has shapes .*Mamba.init_state\(2\)"):
        m(x, initial_state=m.init_state(3))
    with pytest.raises(ValueError, match="initial_state is .*x \\(2, 4, 4\\)"):
        S4D(4, d_state=8, rngs=nnx.Rngs(0))(x, initial_state={"x": jnp.zeros((2, 4, 3))})


def test_boundaries_ignore_padding_and_position_zero():
    ids = jnp.array([[1, 1, 2, 0, 0, 2, 3]])
    real = jnp.array([[True, True, True, False, False, True, True]])
    np.testing.assert_array_equal(boundaries(ids, real), [[False, False, True, False, False, True, True]])


@pytest.mark.parametrize("chunk", [None, 3, 4])
def test_recurrent_scan_resets_holds_and_checkpoints_exactly(chunk, rng, x64):
    """Against a Python loop: a linear recurrence with resets and held positions, outputs
    and gradients, for plain and checkpointed chunks (10 positions: a ragged last chunk)."""
    a = jnp.asarray(rng.uniform(0.5, 0.9, size=(3,)))
    xs = jnp.asarray(rng.normal(size=(2, 10, 3)))
    reset = jnp.asarray(rng.random((2, 10)) < 0.3)
    keep = jnp.asarray(rng.random((2, 10)) < 0.8)
    h0 = jnp.asarray(rng.normal(size=(2, 3)))

    def loop(a, xs):
        h, out = h0, []
        for t in range(10):
            new = jnp.where(reset[:, t, None], 0, h) * a + xs[:, t]
            h = jnp.where(keep[:, t, None], new, h)
            out.append(new**2)
        return jnp.stack(out, 1), h

    def scanned(a, xs):
        return recurrent_scan(lambda h, x: (h * a + x, (h * a + x) ** 2), h0, xs, reset=reset, keep=keep, chunk=chunk)

    for got, want in zip(scanned(a, xs), loop(a, xs)):
        np.testing.assert_allclose(got, want, rtol=1e-13)
    total = lambda f: lambda a, xs: sum(jnp.sum(v) for v in f(a, xs))  # noqa: E731
    for g, e in zip(jax.grad(total(scanned), (0, 1))(a, xs), jax.grad(total(loop), (0, 1))(a, xs)):
        np.testing.assert_allclose(g, e, rtol=1e-12)


def test_ssd_resets_at_and_inside_chunk_boundaries(rng, x64):
    """ssd_chunked with resets equals the pieces run separately (chunk 4: a reset on a
    chunk edge, inside one, two in a row); its gradients are finite."""
    starts = (4, 6, 9, 10)
    b, length, h, p, n = 1, 12, 2, 3, 4
    x = jnp.asarray(rng.normal(size=(b, length, h, p)))
    dt = jnp.asarray(rng.uniform(0.05, 0.5, size=(b, length, h)))
    A = -jnp.asarray(rng.uniform(0.5, 2.0, size=(h,)))
    B, C = (jnp.asarray(rng.normal(size=(b, length, 1, n))) for _ in range(2))
    h0 = jnp.asarray(rng.normal(size=(b, h, p, n)))
    reset = jnp.zeros((b, length), bool).at[0, list(starts)].set(True)
    ssd = jax.jit(ssd_chunked, static_argnums=5, static_argnames="return_last_state")
    y, last = ssd(x, dt, A, B, C, 4, initial_state=h0, reset=reset, return_last_state=True)
    edges = (0, *starts, length)
    pieces, state = [], h0
    for lo, hi in zip(edges[:-1], edges[1:]):
        out, state = ssd(x[:, lo:hi], dt[:, lo:hi], A, B[:, lo:hi], C[:, lo:hi], 4,
                                 initial_state=state if lo == 0 else None, return_last_state=True)
        pieces.append(out)
    np.testing.assert_allclose(y, jnp.concatenate(pieces, 1), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(last, state, rtol=1e-11, atol=1e-13)
    grads = jax.jit(jax.grad(lambda x, dt: jnp.sum(ssd_chunked(x, dt, A, B, C, 4, reset=reset) ** 2), (0, 1)))(x, dt)
    assert all(bool(jnp.isfinite(g).all()) for g in grads)


def test_attention_segments_against_a_naive_masked_softmax(rng, x64):
    q, k, v = (jnp.asarray(rng.normal(size=(2, 9, 2, 4))) for _ in range(3))
    ids = jnp.asarray(rng.integers(0, 3, size=(2, 9)))
    pos = jnp.arange(9)
    for causal in (True, False):
        out = dot_product_attention(q, k, v, q_positions=pos, k_positions=pos, causal=causal,
                                    q_segments=ids, k_segments=ids)
        allowed = ids[:, :, None] == ids[:, None, :]
        if causal:
            allowed = allowed & (pos[:, None] >= pos[None, :])
        scores = jnp.where(allowed[:, None], jnp.einsum("bthk,bshk->bhts", q, k) / 2.0, -jnp.inf)
        naive = jnp.einsum("bhts,bshk->bthk", jax.nn.softmax(scores, -1), v)
        np.testing.assert_allclose(out, naive, rtol=1e-12)
