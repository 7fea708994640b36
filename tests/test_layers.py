"""S4 and S4D layers, the residual block and the SequenceModel backbone."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from stepping import check_distribution, check_gradients, rel, run_steps

import reference as ref

from ssm import hippo, kernels
from ssm.layers import S4, S4D, GatedMLP, SequenceModel
from ssm.layers.parts import ACTIVATIONS

LAYER_KW = {
    "s4d": dict(d_state=8),
    "s4d-bilinear": dict(d_state=8, discretization="bilinear"),
    "s4": dict(d_state=8, l_max=32),
    "s4-legt": dict(d_state=8, l_max=32, measure="legt"),
}


def build(name, d_model=4, **kw):
    cls = S4 if name.startswith("s4-") or name == "s4" else S4D
    return cls(d_model, **{**LAYER_KW[name], **kw}, rngs=nnx.Rngs(0))


def model(layer, **kw):
    base = "s4" if layer.startswith("s4-") or layer == "s4" else "s4d"
    layer_kwargs = {**LAYER_KW[layer], **kw.pop("layer_kwargs", {})}
    args = dict(d_model=6, n_layers=2, d_output=3, d_input=2, layer=base, layer_kwargs=layer_kwargs)
    return SequenceModel(**{**args, **kw}, rngs=nnx.Rngs(1))


@pytest.mark.parametrize("layer", list(LAYER_KW))
def test_step_equals_convolution_for_a_stack(layer, rng, x64):
    m = model(layer, param_dtype=jnp.float64)
    x = jnp.asarray(rng.normal(size=(2, 20, 2)))
    conv = m(x)
    steps, _ = run_steps(m, x)
    err = rel(steps, conv)
    print(f"{layer}: step vs convolution, relative error {err:.2e}")
    assert conv.dtype == jnp.float64
    assert err < 1e-9


@pytest.mark.parametrize("layer", ["s4d", "s4"])
def test_step_equals_convolution_in_float32(layer, rng):
    m = model(layer)
    x = jnp.asarray(rng.normal(size=(2, 24, 2)), jnp.float32)
    err = rel(run_steps(m, x)[0], m(x))
    print(f"{layer}: float32 step vs convolution, relative error {err:.2e}")
    assert err < 1e-4


def test_m2_block_steps_and_prefill_equal_the_full_pass_with_a_recurrent_mixer(rng, x64):
    """block="m2" around a layer with a state (S4D): step and prefill run M2's layer
    structure and give the full pass."""
    m = model("s4d", block="m2", prenorm=False, post=None, mlp="dense", mlp_expand=2, param_dtype=jnp.float64)
    x = jnp.asarray(rng.normal(size=(2, 12, 2)))
    full = m(x)
    steps, _ = run_steps(m, x)
    y_prompt, _ = nnx.jit(lambda m, x: m.prefill(x))(m, x[:, :7])
    errors = rel(steps, full), rel(y_prompt, full[:, :7])
    print("M2Block step, prefill vs the full pass:", errors)
    assert max(errors) < 1e-9


@pytest.mark.parametrize("layer", ["s4d", "s4"])
def test_prefill_then_steps_equals_full_pass(layer, rng, x64):
    m = model(layer, param_dtype=jnp.float64)
    x = jnp.asarray(rng.normal(size=(2, 16, 2)))
    full = m(x)
    y_prompt, state_prefill = nnx.jit(lambda m, x: m.prefill(x))(m, x[:, :10])
    y_rest, _ = run_steps(m, x[:, 10:], state=state_prefill)
    assert rel(jnp.concatenate([y_prompt, y_rest], 1), full) < 1e-9
    _, state_steps = run_steps(m, x[:, :10])
    for a, b in zip(state_prefill, state_steps):
        np.testing.assert_allclose(a["x"], b["x"], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("measure, rank", [("legs", None), ("legt", None), ("fout", None), ("legs", 2)])
def test_s4_linear_step_equals_the_dense_step_in_float64(measure, rank, rng, x64):
    """S4's "linear" step (Woodbury, O(N)) against the dense bilinear step: outputs and
    states after a prompt and a run of steps, float64, from the same parameters."""
    x = jnp.asarray(rng.normal(size=(2, 24, 4)))
    out = {}
    for mode in ("linear", "dense"):
        m = build("s4", param_dtype=jnp.float64, measure=measure, rank=rank, step_mode=mode)
        y_prompt, state = nnx.jit(lambda m, x: m.prefill(x))(m, x[:, :8])
        y_rest, state = run_steps(m, x[:, 8:], state=state)
        out[mode] = jnp.concatenate([y_prompt, y_rest], 1), state["x"]
    y_err, x_err = rel(out["linear"][0], out["dense"][0]), rel(out["linear"][1], out["dense"][1])
    print(f"S4-{measure} rank {rank}: linear vs dense step, outputs {y_err:.1e}, state {x_err:.1e}")
    np.testing.assert_allclose(out["linear"][0], out["dense"][0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out["linear"][1], out["dense"][1], rtol=1e-10, atol=1e-12)


def _primitives(jaxpr):
    """Every primitive name in a closed jaxpr, sub-jaxprs (loops, calls) included."""
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            names |= _primitives(sub)
    return names


@pytest.mark.parametrize("layer, kw", [("s4", dict(step_mode="linear")), ("s4", dict(step_mode="dense")),
                                       ("s4d", {})])
def test_step_does_not_rebuild_the_discrete_system(layer, kw, rng, monkeypatch):
    """The system is made once with the state (init_state/prefill), not per token: no
    discretization or untruncation runs while stepping, and the jitted step's program has
    no loop (the solve behind them is a Gauss-Jordan fori_loop) and no matrix power."""
    m = build(layer, **kw)
    x = jnp.asarray(rng.normal(size=(2, 6, 4)), jnp.float32)
    calls = []
    for name in ("discretize_dplr", "woodbury_step_factors", "untruncate_output", "discretize", "solve"):
        original = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    state = m.init_state(2)
    made = len(calls)
    assert made > 0  # the wrappers see the system being made
    for t in range(x.shape[1]):
        _, state = m.step(x[:, t], state)
    assert len(calls) == made, f"step rebuilt the system: {calls[made:]}"
    names = _primitives(jax.make_jaxpr(lambda x_t, s: m.step(x_t, s))(x[:, 0], state).jaxpr)
    print(f"{layer} {kw}: {made} system calls at init_state, none in {x.shape[1]} steps; step primitives "
          f"{sorted(names)}")
    assert not names & {"while", "scan", "custom_linear_solve", "lu", "triangular_solve"}, names


def test_state_floats_count_the_per_example_state_only():
    """The system a state carries is shared by the batch: the benchmark's per-example count
    is H N/2 complex numbers per layer, for S4 in either step mode and for S4D."""
    from ssm.bench.generation import state_floats

    for layer, kw in (("s4", dict(step_mode="linear")), ("s4", dict(step_mode="dense")), ("s4d", {})):
        m = model(layer, layer_kwargs=kw)
        for batch in (1, 3):
            assert state_floats(m.init_state(batch)) == 2 * 6 * 4 * 2  # layers * H * N/2 * (re, im)


@pytest.mark.parametrize("layer", ["s4d", "s4"])
def test_gradients_match_finite_differences(layer, rng, x64):
    m = build(layer, d_model=2, param_dtype=jnp.float64)
    x = jnp.asarray(rng.normal(size=(1, 8, 2)))
    check_gradients(m, x, rng)


def test_jit_and_vmap_match_eager(rng):
    m = build("s4d")
    x = jnp.asarray(rng.normal(size=(3, 2, 12, 4)), jnp.float32)
    graphdef, state = nnx.split(m)

    @jax.jit
    def apply(state, x):
        return nnx.merge(graphdef, state)(x)

    eager = jnp.stack([m(xi) for xi in x])
    np.testing.assert_allclose(apply(state, x[0]), eager[0], rtol=1e-5, atol=1e-6)
    mapped = jax.vmap(apply, in_axes=(None, 0))(state, x)
    np.testing.assert_allclose(mapped, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layer", ["s4d", "s4"])
def test_bf16_inputs_run_in_float32_inside(layer, rng):
    m = build(layer)
    x = jnp.asarray(rng.normal(size=(2, 16, 4)), jnp.float32)
    y32 = m(x)
    y16 = m(x.astype(jnp.bfloat16))
    assert y16.dtype == jnp.bfloat16
    err = rel(y16.astype(jnp.float32), y32)
    print(f"{layer}: bf16 vs float32 output, relative error {err:.2e}")
    assert err < 2e-2  # bf16 rounding of input and output (8 bits of mantissa)


@pytest.mark.parametrize("layer", ["s4d", "s4"])
def test_padded_positions_do_not_change_real_outputs(layer, rng):
    m = model(layer, pool="mean")
    lengths = [9, 14]
    x = jnp.asarray(rng.normal(size=(2, 16, 2)), jnp.float32)  # garbage beyond each length
    mask = jnp.arange(16)[None] < jnp.asarray(lengths)[:, None]
    padded = m(x, mask=mask)
    for i, n in enumerate(lengths):
        alone = m(x[i : i + 1, :n])
        np.testing.assert_allclose(padded[i], alone[0], rtol=1e-5, atol=1e-5)


def test_padding_on_the_left_and_bidirectional(rng):
    """Zeroed padding is exact on either side, for causal and bidirectional layers."""
    for bidirectional in (False, True):
        m = build("s4d", bidirectional=bidirectional)
        x = jnp.asarray(rng.normal(size=(1, 10, 4)), jnp.float32)
        alone = m(x)
        junk = jnp.asarray(rng.normal(size=(1, 5, 4)), jnp.float32)
        left = jnp.concatenate([junk, x], 1)
        mask = jnp.arange(15)[None] >= 5
        np.testing.assert_allclose(m(left, mask=mask)[:, 5:], alone, rtol=1e-5, atol=1e-5)
        right = jnp.concatenate([x, junk], 1)
        np.testing.assert_allclose(m(right, mask=mask[:, ::-1])[:, :10], alone, rtol=1e-5, atol=1e-5)


def test_bidirectional_output_depends_on_the_future_and_has_no_step(rng):
    m = build("s4", bidirectional=True)
    x = jnp.asarray(rng.normal(size=(1, 12, 4)), jnp.float32)
    x2 = x.at[:, 8:].set(jnp.asarray(rng.normal(size=(1, 4, 4)), jnp.float32))
    assert float(jnp.abs(m(x)[:, :8] - m(x2)[:, :8]).max()) > 1e-4
    causal = build("s4")
    np.testing.assert_allclose(causal(x)[:, :8], causal(x2)[:, :8], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="bidirectional=True.*no recurrent mode"):
        m.init_state(1)


def _complex(pair):
    """A stored real-pair parameter (..., 2) as a NumPy complex array."""
    pair = np.asarray(pair[...], np.float64)
    return pair[..., 0] + 1j * pair[..., 1]


def _plain_output(Lambda, P, B, C_tilde, dt, l_max):
    """S4's stored C~ = C (I - Abar^l_max) back to C (H, N/2), per channel on the dense
    conjugate-completed bilinear system, with an explicit matrix power."""
    C = []
    for h in range(len(dt)):
        A, Bf, Ct = ref.conjugate_completed(Lambda[h], P[h], B[h], C_tilde[h])
        Abar, _ = ref.discretize_bilinear(A, Bf, float(dt[h]))
        C_full = np.linalg.solve((np.eye(len(Ct)) - np.linalg.matrix_power(Abar, l_max)).T, Ct)
        half = len(Ct) // 2
        np.testing.assert_allclose(C_full[half:], np.conj(C_full[:half]), atol=1e-10)  # still conjugate-symmetric
        C.append(C_full[:half])
    return np.stack(C)


@pytest.mark.parametrize("layer, reverse_lag0", [("s4d", False), ("s4d", True), ("s4d-bilinear", False),
                                                 ("s4", False), ("s4", True)])
def test_bidirectional_output_is_both_kernels_of_the_discrete_system(layer, reverse_lag0, rng, x64):
    """A bidirectional layer's output, float64, against the two-sided convolution built
    in NumPy from its parameters: one system (Lambda, B, P, dt), two output matrices C and
    C_reverse, K[l] = C Abar^l Bbar by explicit powers of the conjugate-completed
    discrete system, and

        y[t] = sum_{s <= t} K[t - s] u[s] + sum_{s > t} K_rev[s - t - 1] u[s] + D u[t],

    S4's convention (its kernel's second half flipped and padded: the reverse part has
    no lag 0, safari#7), or with ``reverse_lag0`` ``sum_{s >= t} K_rev[s - t] u[s]``.
    S4's kernels come from its stored C~ (truncated at l_max = 32) turned back into C;
    the input is shorter (16), so the first taps are used."""
    L, H = 16, 3
    m = build(layer, d_model=H, param_dtype=jnp.float64, bidirectional=True, reverse_lag0=reverse_lag0)
    x = rng.normal(size=(2, L, H))
    y = np.asarray(m(jnp.asarray(x)))
    Lambda = -np.exp(np.asarray(m.log_A_real[...])) + 1j * np.asarray(m.A_imag[...])
    B, dt, D = _complex(m.B), np.exp(np.asarray(m.log_dt[...])), np.asarray(m.D[...])
    C, C_rev = _complex(m.C), _complex(m.C_reverse)
    if isinstance(m, S4):
        P = _complex(m.P)  # (H, rank, N/2)
        C, C_rev = (_plain_output(Lambda, P, B, c, dt, m.l_max) for c in (C, C_rev))
        K, K_rev = (ref.ssm_kernel(Lambda, P, B, c, dt, L, "bilinear") for c in (C, C_rev))
    else:
        K, K_rev = (ref.ssm_kernel(Lambda, None, B, c, dt, L, m.discretization) for c in (C, C_rev))
    want = np.zeros_like(x)
    for b in range(2):
        for h in range(H):
            u = x[b, :, h]
            want[b, :, h] = (ref.causal_conv(u, K[h]) + ref.anticausal_conv(u, K_rev[h], reverse_lag0)
                             + D[h] * u)
    err = rel(y, want)
    print(f"{layer} reverse_lag0={reverse_lag0}: output vs float64 two-sided convolution, relative error {err:.1e}; "
          f"|K_rev| up to {np.abs(K_rev).max():.2f}")
    assert err < 1e-10


def test_dropout_only_in_training_mode(rng):
    m = build("s4d", dropout=0.5)
    x = jnp.asarray(rng.normal(size=(2, 8, 4)), jnp.float32)
    a, b = m(x), m(x)
    assert not np.allclose(a, b)
    m.eval()
    np.testing.assert_array_equal(m(x), m(x))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_s4_runs_inputs_longer_than_l_max_with_the_exact_kernel(bidirectional, rng, x64):
    """Evaluation beyond the training length: C~ is re-truncated at the input's length, so
    the kernels equal C Abar^l Bbar (powers of the discrete system) at every lag."""
    m = build("s4", d_model=3, l_max=16, param_dtype=jnp.float64, bidirectional=bidirectional)
    Abar, Bbar, _ = (np.asarray(a) for a in m.discrete_system())
    Lambda, P, B, dt = m._system()
    Ks = m.kernel(40)
    for C_tilde, K in zip((m.C, getattr(m, "C_reverse", None)), Ks):
        if C_tilde is None:
            assert K is None
            continue
        C = np.asarray(kernels.untruncate_output(Lambda, P, B, m.complex(C_tilde), dt, 16))
        C = np.concatenate([C, C.conj()], -1)
        for h in range(3):
            powers = [np.real(C[h] @ np.linalg.matrix_power(Abar[h], l) @ Bbar[h]) for l in range(40)]
            np.testing.assert_allclose(K[h], powers, rtol=1e-8, atol=1e-10)
    if not bidirectional:
        x = jnp.asarray(rng.normal(size=(2, 40, 3)))
        err = rel(run_steps(m, x)[0], m(x))
        print(f"S4 l_max=16 on length 40: convolution vs recurrence, relative error {err:.1e}")
        assert err < 1e-9


def _initial_B(layer):
    """The layer's initial ``B`` as complex numbers: (H, N/2)."""
    B = np.asarray(layer.B[...])
    return B[..., 0] + 1j * B[..., 1]


@pytest.mark.parametrize("cls, kw", [(S4, dict(l_max=16)), (S4D, {})], ids=["s4", "s4d"])
def test_legs_B_is_the_reference_nplr_B_clipped_at_2_by_default(cls, kw, x64):
    """The S4 reference clips Im B~ of LegS to [-2, 2] (``nplr``'s ``B_clip=2.0``; its
    S4D-LegS takes that B too): the layers' default. ``b_clip=None`` keeps V^* B."""
    N = 64
    make = lambda **b: cls(2, d_state=N, param_dtype=jnp.float64, rngs=nnx.Rngs(0), **kw, **b)  # noqa: E731
    V = hippo.dplr("legs", N)[3]  # the eigenvector phases the clip is taken in (ref.legs_nplr checks them)
    _, clipped = ref.legs_nplr(N, b_clip=2.0, basis=V)
    _, exact = ref.legs_nplr(N, basis=V)
    for B, want in ((_initial_B(make()), clipped), (_initial_B(make(b_clip=None)), exact)):
        assert B.shape == (2, N // 2)
        np.testing.assert_allclose(B, np.broadcast_to(want, B.shape), rtol=0, atol=1e-12 * np.abs(want).max())
    outside = np.abs(exact.imag) > 2
    print(f"\nLegS N={N}: the clip moves {outside.mean():.0%} of Im B~ (the largest "
          f"{np.abs(exact.imag).max():.1f}) to +-2")
    assert outside.mean() > 0.3


@pytest.mark.parametrize("measure", ["legt", "lagt"])
def test_s4_clips_B_at_2_by_default_for_the_other_measures_too(measure, x64):
    """The reference's ``nplr`` clips for every measure (FouT's Im B~ stays inside
    [-2, 2], so it is left out: the clip changes nothing there)."""
    N = 16
    _, _, exact, _ = hippo.dplr(measure, N)
    want = exact.real + 1j * np.clip(exact.imag, -2, 2)
    B = _initial_B(S4(2, d_state=N, l_max=16, measure=measure, param_dtype=jnp.float64, rngs=nnx.Rngs(0)))
    np.testing.assert_allclose(B, np.broadcast_to(want, B.shape), rtol=0, atol=1e-12 * np.abs(want).max())
    assert np.any(np.abs(exact.imag) > 2)


def test_each_activation_is_its_float64_formula(rng, x64):
    """``"gelu"`` is the exact x Phi(x) by erf (S4's and M2's ``nn.GELU()``), ``"gelu_tanh"``
    its tanh approximation (``jax.nn.gelu``'s default); the tolerance is far below their gap."""
    formulas = {"gelu": ref.gelu_erf, "gelu_tanh": ref.gelu_tanh, "silu": lambda x: x / (1 + np.exp(-x)),
                "relu": lambda x: np.maximum(x, 0), "tanh": np.tanh, "identity": lambda x: x}
    assert sorted(ACTIVATIONS) == sorted(formulas)
    x = 3 * rng.normal(size=512)
    # atol: jax.nn.gelu's tanh form adds 1 + tanh(u), which cancels for x << 0 (|x| eps absolute).
    for name, f in formulas.items():
        np.testing.assert_allclose(ACTIVATIONS[name](jnp.asarray(x)), f(x), rtol=1e-13, atol=1e-14, err_msg=name)
    gap = np.abs(ref.gelu_erf(x) - ref.gelu_tanh(x)).max()
    print(f"\nmax |gelu - gelu_tanh| on N(0, 9) samples: {gap:.1e}")
    assert gap > 1e-5


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: S4D(4, d_state=7, rngs=nnx.Rngs(0)), "d_state=7 must be even"),
        (lambda: S4D(0, rngs=nnx.Rngs(0)), "d_model=0; expected a positive integer"),
        (lambda: S4D(4, init="fourier", rngs=nnx.Rngs(0)), "kind='fourier'"),
        (lambda: S4D(4, discretization="euler", rngs=nnx.Rngs(0)), "discretization='euler'"),
        (lambda: S4D(4, dropout=1.5, rngs=nnx.Rngs(0)), r"dropout=1.5 must be in \[0, 1\)"),
        (lambda: S4D(4, dt_min=0.1, dt_max=0.01, rngs=nnx.Rngs(0)), "dt_min <= dt_max"),
        (lambda: S4(4, measure="lmu", rngs=nnx.Rngs(0)), "measure='lmu' has no DPLR form"),
        (lambda: S4(4, l_max=0, rngs=nnx.Rngs(0)), "l_max=0"),
        (lambda: S4(4, step_mode="diagonal", rngs=nnx.Rngs(0)), "step_mode='diagonal'"),
        (lambda: SequenceModel(d_model=4, n_layers=1, d_output=2, rngs=nnx.Rngs(0)), "exactly one of"),
        (lambda: SequenceModel(d_model=4, n_layers=1, d_output=2, d_input=3, layer="gru",
                               rngs=nnx.Rngs(0)), "layer='gru'"),
    ],
)
def test_bad_construction_arguments_raise_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_call_arguments_raise_clear_errors():
    m = build("s4d")
    with pytest.raises(ValueError, match=r"x has shape \(4,\); expected \(batch, length, 4\)"):
        m(jnp.zeros((4,)))
    with pytest.raises(ValueError, match=r"x has shape \(1, 8, 3\)"):
        m(jnp.zeros((1, 8, 3)))
    with pytest.raises(ValueError, match=r"mask has shape \(1, 7\)"):
        m(jnp.zeros((1, 8, 4)), mask=jnp.ones((1, 7), bool))
    with pytest.raises(ValueError, match=r"x_t has shape"):
        m.step(jnp.zeros((1, 8, 4)), m.init_state(1))
    pooled = model("s4d", pool="last")
    with pytest.raises(ValueError, match="pool='last'"):
        pooled.init_state(1)


def test_sequence_model_pools_and_token_inputs(rng):
    m = SequenceModel(d_model=8, n_layers=1, d_output=5, vocab_size=7, pool=None,
                      layer_kwargs=dict(d_state=4), rngs=nnx.Rngs(0))
    ids = jnp.asarray(rng.integers(0, 7, size=(2, 9)))
    logits = m(ids)
    assert logits.shape == (2, 9, 5) and logits.dtype == jnp.float32
    last = SequenceModel(d_model=8, n_layers=1, d_output=5, vocab_size=7, pool="last",
                         layer_kwargs=dict(d_state=4), rngs=nnx.Rngs(0))
    mask = jnp.arange(9)[None] < jnp.asarray([[4], [9]])
    pooled = last(ids, mask=mask)
    assert pooled.shape == (2, 5)
    # "last" reads the last real token: the first row equals its 4-token prefix run alone.
    np.testing.assert_allclose(pooled[0], last(ids[:1, :4])[0], rtol=1e-5, atol=1e-5)


def _mamba_lm(**kw):
    return SequenceModel(d_model=8, n_layers=2, d_output=7, vocab_size=7, layer="mamba",
                         layer_kwargs=dict(d_state=4), norm="rms", post=None, rngs=nnx.Rngs(0), **kw)


def test_norm_eps_reaches_every_block_norm_and_the_final_norm(rng):
    m = _mamba_lm(norm_eps=1e-4)
    assert [b.norm.epsilon for b in m.blocks] == [1e-4, 1e-4] and m.final_norm.epsilon == 1e-4
    # The default: mamba_ssm's 1e-5 for Mamba models, Flax's 1e-6 for the others.
    m = _mamba_lm(norm_eps=None)
    assert [b.norm.epsilon for b in m.blocks] == [1e-5, 1e-5] and m.final_norm.epsilon == 1e-5
    s4d = SequenceModel(d_model=8, n_layers=1, d_output=7, vocab_size=7, layer_kwargs=dict(d_state=4),
                        rngs=nnx.Rngs(0))
    assert s4d.blocks[0].norm.epsilon == s4d.final_norm.epsilon == 1e-6
    # The final norm is x / sqrt(mean(x^2) + eps) * scale, at a scale where eps matters.
    h = jnp.asarray(rng.normal(size=(2, 8)) * 0.01, jnp.float32)
    want = h / np.sqrt(np.mean(np.square(h), -1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(m.final_norm(h), want, rtol=1e-5)
    with pytest.raises(ValueError, match="norm_eps=0"):
        _mamba_lm(norm_eps=0)


# Flax's lecun-normal kernels: a standard normal truncated to [-2, 2], scaled to std fan_in^-1/2.
LECUN_TRUNCATION_STD = 0.87962566103423978  # the standard deviation of N(0, 1) truncated to [-2, 2]


@pytest.mark.parametrize("layer, layer_kwargs", [("mamba", dict(d_state=4)),
                                                 ("mamba2", dict(d_state=4, headdim=16, chunk_size=8))])
@pytest.mark.parametrize("mlp", [None, "dense"])
def test_mamba_lm_initialization_follows_mixer_seq_simple(layer, layer_kwargs, mlp):
    """mamba_ssm's _init_weights: each residual branch's output projection (the mixer's
    out_proj, the MLP's fc2) is its usual draw divided by sqrt(n_residuals * n_layers),
    2 residuals per block with an MLP, else 1; the embedding is N(0, 0.02^2); the norms'
    epsilon is 1e-5."""
    n_layers, d, expand = 3, 32, 4
    kw = dict(d_model=d, n_layers=n_layers, d_output=256, vocab_size=256, layer=layer, norm="rms", post=None,
              mlp=mlp, mlp_expand=expand)
    lm = SequenceModel(layer_kwargs=layer_kwargs, **kw, rngs=nnx.Rngs(0))
    unscaled = SequenceModel(layer_kwargs={**layer_kwargs, "out_init_scale": 1.0}, **kw, rngs=nnx.Rngs(0))
    factor = 1 / np.sqrt((1 if mlp is None else 2) * n_layers)
    for block, plain in zip(lm.blocks, unscaled.blocks):
        np.testing.assert_allclose(block.mixer.out_proj.kernel[...], factor * plain.mixer.out_proj.kernel[...],
                                   rtol=1e-6)
    if mlp is not None:  # lecun-normal, times the factor
        down = np.stack([np.asarray(b.mlp.down.kernel[...]) for b in lm.blocks])
        std = factor / np.sqrt(expand * d)
        check_distribution("mlp.down", down, ref.normal_cdf(std / LECUN_TRUNCATION_STD, truncate=2))
    check_distribution("embedding", lm.encoder.embedding[...], ref.normal_cdf(0.02))
    norms = [b.norm for b in lm.blocks] + [b.norm2 for b in lm.blocks if b.norm2 is not None] + [lm.final_norm]
    assert {n.epsilon for n in norms} == {1e-5}


def test_other_lms_keep_flax_initialization():
    """Models of other layers: Flax's embedding N(0, 1/d) and an unscaled MLP."""
    d, expand = 32, 4
    lm = SequenceModel(d_model=d, n_layers=3, d_output=256, vocab_size=256, layer="s4d", layer_kwargs=dict(d_state=4),
                       mlp="dense", mlp_expand=expand, rngs=nnx.Rngs(0))
    check_distribution("embedding", lm.encoder.embedding[...], ref.normal_cdf(d**-0.5))
    down = np.stack([np.asarray(b.mlp.down.kernel[...]) for b in lm.blocks])
    check_distribution("mlp.down", down, ref.normal_cdf((expand * d) ** -0.5 / LECUN_TRUNCATION_STD, truncate=2))


def test_embedding_std_sets_the_embedding_draw_for_any_layer():
    """``embedding_std`` overrides both defaults (0.02 for Mamba, Flax's 1/sqrt(d) else);
    a bad value is named."""
    d = 32
    for layer, kw in (("mamba", dict(d_state=4)), ("s4d", dict(d_state=4))):
        lm = SequenceModel(d_model=d, n_layers=1, d_output=256, vocab_size=256, layer=layer, layer_kwargs=kw,
                           embedding_std=0.3, rngs=nnx.Rngs(0))
        check_distribution(f"{layer} embedding", lm.encoder.embedding[...], ref.normal_cdf(0.3))
    with pytest.raises(ValueError, match=r"embedding_std=0; expected a number > 0"):
        SequenceModel(d_model=d, n_layers=1, d_output=4, vocab_size=4, layer="s4d", embedding_std=0,
                      rngs=nnx.Rngs(0))


@pytest.mark.parametrize("linear", ["dense", "monarch"])
def test_gated_mlp_out_init_scale_multiplies_the_down_projection_exactly(linear):
    plain = GatedMLP(16, expand=2, linear=linear, rngs=nnx.Rngs(2))
    scaled = GatedMLP(16, expand=2, linear=linear, out_init_scale=0.25, rngs=nnx.Rngs(2))
    dense = (lambda m: m.down.kernel[...]) if linear == "dense" else (lambda m: m.down.to_dense())
    np.testing.assert_allclose(dense(scaled), 0.25 * dense(plain), rtol=1e-6)
    for (path, a), (_, b) in zip(nnx.to_flat_state(nnx.state(plain.up, nnx.Param)),
                                 nnx.to_flat_state(nnx.state(scaled.up, nnx.Param))):
        np.testing.assert_array_equal(a.get_value(), b.get_value(), err_msg=str(path))


def test_residual_in_fp32_keeps_the_stream_float32_under_bf16_activations(rng):
    ids = jnp.asarray(rng.integers(0, 7, size=(2, 9)))
    kept = _mamba_lm(residual_in_fp32=True, dtype=jnp.bfloat16)
    plain = _mamba_lm(dtype=jnp.bfloat16)
    h = kept.encoder(ids)
    assert h.dtype == jnp.bfloat16
    out = kept.blocks[0](h)
    assert out.dtype == jnp.float32 and plain.blocks[0](h).dtype == jnp.bfloat16
    # The mixer still sees bf16 activations: the norm casts the float32 stream back.
    assert kept.blocks[1].norm(out).dtype == jnp.bfloat16
    ref32 = _mamba_lm()(ids)
    err_kept, err_plain = rel(kept(ids), ref32), rel(plain(ids), ref32)
    print(f"bf16 logits vs float32: residual in float32 {err_kept:.1e}, in bf16 {err_plain:.1e}")
    assert err_kept < 3e-2
    # Recurrent inference follows the same stream.
    steps, _ = run_steps(kept, ids)
    assert rel(steps, kept(ids)) < 3e-2


def test_untied_head_without_a_bias(rng):
    m = _mamba_lm(head_bias=False)
    assert m.head.bias is None and m.head.kernel.shape == (8, 7)
    assert _mamba_lm().head.bias is not None
