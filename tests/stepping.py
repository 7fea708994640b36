"""Helpers shared by the layer tests: run a model token by token, compare outputs,
check parameter gradients against finite differences, check an initialization's
distribution."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
from flax import nnx


def run_steps(model, x, state=None, **init):
    """Feed ``x`` (batch, length, ...) one position at a time from ``state`` (default:
    ``model.init_state(batch, **init)``); returns the stacked outputs (batch, length, ...)
    and the state."""
    state = model.init_state(x.shape[0], **init) if state is None else state
    step = nnx.jit(lambda m, x_t, s: m.step(x_t, s))  # compile once, not op by op
    ys = []
    for t in range(x.shape[1]):
        y, state = step(model, x[:, t], state)
        ys.append(y)
    return jnp.stack(ys, 1), state


def rel(a, b):
    """Relative L2 error of ``a`` against ``b``."""
    return float(jnp.linalg.norm((a - b).ravel()) / jnp.linalg.norm(b.ravel()))


def check_distribution(name, samples, cdf, alpha=1e-3):
    """A Kolmogorov-Smirnov test that ``samples`` (any shape, flattened) are draws of the
    distribution with CDF ``cdf`` (a NumPy function): the largest gap between the
    empirical and the given CDF stays below ``sqrt(log(2 / alpha) / (2 n))``, which
    ``n`` true draws exceed with probability at most ``alpha`` (the
    Dvoretzky-Kiefer-Wolfowitz inequality with Massart's constant, for every n)."""
    x = np.sort(np.asarray(samples, np.float64).ravel())
    n = len(x)
    F = cdf(x)
    gap = max(np.max(np.arange(1, n + 1) / n - F), np.max(F - np.arange(n) / n))
    bound = np.sqrt(np.log(2 / alpha) / (2 * n))
    print(f"{name}: KS distance {gap:.3f} over {n} draws (bound {bound:.3f})")
    assert gap < bound, name


def check_gradients(layer, x, rng, n_checks=16, eps=1e-6, **call):
    """Parameter gradients of ``sum(layer(x, **call) * w)`` (random ``w``) against
    central differences at ``n_checks`` random coordinates; run under float64."""
    graphdef, params, rest = nnx.split(layer, nnx.Param, ...)
    w = jnp.asarray(rng.normal(size=x.shape[:-1] + (layer(x, **call).shape[-1],)))

    def loss(p):
        return jnp.sum(nnx.merge(graphdef, p, rest)(x, **call) * w)

    grads = jax.grad(loss)(params)
    flat_p, unravel = jax.flatten_util.ravel_pytree(params)
    flat_g, _ = jax.flatten_util.ravel_pytree(grads)
    assert np.all(np.isfinite(flat_g))
    for i in rng.choice(flat_p.size, size=min(n_checks, flat_p.size), replace=False):
        e = jnp.zeros_like(flat_p).at[i].set(eps)
        fd = (loss(unravel(flat_p + e)) - loss(unravel(flat_p - e))) / (2 * eps)
        np.testing.assert_allclose(flat_g[i], fd, rtol=1e-5, atol=1e-8)


def check_padding_either_side(layer, x, junk, rtol, atol):
    """``layer`` on ``x`` (1, l, d) padded with ``junk`` (1, p, d) on the left, then on
    the right, with the mask marking ``x``: its real outputs equal ``layer(x)`` alone and
    its padded outputs are zero."""
    alone = layer(x)
    p, l = junk.shape[1], x.shape[1]
    real = jnp.arange(p + l)[None] >= p
    left = layer(jnp.concatenate([junk, x], 1), mask=real)
    np.testing.assert_allclose(left[:, p:], alone, rtol=rtol, atol=atol)
    right = layer(jnp.concatenate([x, junk], 1), mask=real[:, ::-1])
    np.testing.assert_allclose(right[:, :l], alone, rtol=rtol, atol=atol)
    return left, right


def check_bf16_activations(make, x, tol=3e-2):
    """``make(dtype=...)`` in bf16 against float32 on ``x``: bf16 outputs within ``tol``
    relative error (bf16 keeps 8 mantissa bits; the layer's state stays float32)."""
    y32 = make()(x)
    y16 = make(dtype=jnp.bfloat16)(x.astype(jnp.bfloat16))
    assert y16.dtype == jnp.bfloat16
    err = rel(y16.astype(jnp.float32), y32)
    print(f"bf16 vs float32: relative error {err:.1e}")
    assert err < tol
