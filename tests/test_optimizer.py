"""The trainer's optimizer: groups get their learning rates and weight decay; the schedule."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from ssm.groups import param_labels
from ssm.layers import SequenceModel
from ssm.train.config import OptimConfig, ScheduleConfig
from ssm.train.optimizer import build_optimizer, schedule


M2_BLOCK = dict(block="m2", prenorm=False, post=None, mlp="monarch", mlp_expand=2)


@pytest.mark.parametrize("layer, kwargs, model_kw", [
    ("mamba", {"d_state": 4}, {"post": None}), ("s4d", {"d_state": 4}, {}),
    ("m2", {"l_max": 8, "bidirectional": True}, M2_BLOCK),
])
def test_weight_decay_skips_ssm_parameters_norms_and_biases(layer, kwargs, model_kw):
    """With zero gradients AdamW moves a parameter only through weight decay: SSM
    dynamics (Mamba A_log, D, dt bias; S4D Lambda, B, dt), M2's filters (both MLPs and
    their shared frequency) and skip, norms and biases must not move."""
    model = SequenceModel(vocab_size=5, d_model=8, n_layers=1, d_output=5, layer=layer, layer_kwargs=kwargs,
                          **model_kw, rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    tx, _ = build_optimizer(model, OptimConfig(lr=0.1, ssm_lr=0.1, weight_decay=0.5, grad_clip=None),
                            ScheduleConfig(warmup_steps=0, decay="constant"), steps=10)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    labels = param_labels(model)(params)
    for (path, u), (_, label) in zip(nnx.to_flat_state(updates), nnx.to_flat_state(labels)):
        moved = bool(jnp.any(u[...] != 0))
        assert moved == (label.get_value() in ("matrix", "adamw")), (path, label.get_value())


def test_warmup_then_cosine_to_the_floor():
    s = schedule(1.0, ScheduleConfig(warmup_steps=10, decay="cosine", min_lr_ratio=0.1), steps=110)
    np.testing.assert_allclose([s(0), s(5), s(10)], [0.0, 0.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(s(60), 0.1 + 0.9 * 0.5, rtol=1e-5)  # half-way down the cosine
    np.testing.assert_allclose(s(110), 0.1, rtol=1e-5)
    linear = schedule(2.0, ScheduleConfig(warmup_steps=0, decay="linear", min_lr_ratio=0.0), steps=100)
    np.testing.assert_allclose([linear(0), linear(50), linear(100)], [2.0, 1.0, 0.0], atol=1e-6)


def test_a_warmup_longer_than_the_run_becomes_a_tenth_of_it_and_says_so():
    config = ScheduleConfig(warmup_steps=500, decay="cosine")
    s = schedule(1.0, config, steps=60)
    np.testing.assert_allclose([s(0), s(3), s(6)], [0.0, 0.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(s(60), 0.0, atol=1e-6)
    assert config.warmup_note(60) == ("schedule.warmup_steps=500 exceeds trainer.steps=60: warming up over "
                                      "6 steps (a tenth of the run) instead")
    assert config.warmup(500) == 500 and config.warmup_note(500) is None  # a warmup that fits is kept


def test_gradients_are_clipped_to_the_global_norm_before_adam():
    """Adam's first moment after one step is (1 - b1) times the gradient it saw: summed
    over every group, its norm is (1 - b1) * grad_clip for a huge gradient."""
    model = SequenceModel(vocab_size=5, d_model=8, n_layers=1, d_output=5, layer_kwargs={"d_state": 4},
                          rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    optim = OptimConfig(grad_clip=0.5, b1=0.9)
    tx, _ = build_optimizer(model, optim, ScheduleConfig(warmup_steps=0), steps=10)
    huge = jax.tree.map(lambda p: jnp.full_like(p, 100.0), params)
    _, state = tx.update(huge, tx.init(params), params)
    adam = [s for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
            if isinstance(s, optax.ScaleByAdamState)]
    assert len(adam) == 4  # one per parameter group
    norm = np.sqrt(sum(float(optax.tree.norm(s.mu)) ** 2 for s in adam))
    np.testing.assert_allclose(norm, (1 - optim.b1) * optim.grad_clip, rtol=1e-4)


def test_muon_option_orthogonalizes_matrices_and_keeps_adamw_for_the_rest(rng):
    """optim.name: muon sends the dense kernels through msign (Jordan's band of singular
    values, scaled by muon_lr) and leaves the SSM group to AdamW at ssm_lr."""
    model = SequenceModel(vocab_size=5, d_model=8, n_layers=1, d_output=5, layer_kwargs={"d_state": 4},
                          rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    tx, _ = build_optimizer(model, OptimConfig(name="muon", muon_lr=0.1, ssm_lr=0.0, weight_decay=0.0,
                                               grad_clip=None),
                            ScheduleConfig(warmup_steps=0, decay="constant"), steps=10)
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
    updates, _ = tx.update(grads, tx.init(params), params)
    kernel = np.asarray(updates["blocks"][0]["out"]["kernel"][...])  # (8, 16): a "matrix" leaf
    s = np.linalg.svd(kernel / 0.1 / np.sqrt(16 / 8), compute_uv=False)
    print(f"Muon update singular values: [{s.min():.3f}, {s.max():.3f}]")
    assert 0.6 < s.min() and s.max() < 1.2  # Jordan's band
    assert float(jnp.abs(updates["blocks"][0]["mixer"]["log_dt"][...]).max()) == 0.0  # ssm_lr = 0
