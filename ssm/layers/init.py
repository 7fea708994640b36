"""Initializers shared by the Mamba layers, as in state-spaces/mamba."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from ssm import hippo


def symmetric_uniform(bound: float):
    """Initializer drawing U(-bound, bound)."""
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def torch_linear(d_in: int, d_out: int, *, use_bias: bool, scale: float = 1.0, dtype, param_dtype,
                 rngs: nnx.Rngs) -> nnx.Linear:
    """``nnx.Linear`` initialized as the reference: kernel U(+-1/sqrt(d_in)) (PyTorch's
    kaiming-uniform with a = sqrt(5)) times ``scale``, bias zero (its LM zeroes them)."""
    return nnx.Linear(d_in, d_out, use_bias=use_bias, kernel_init=symmetric_uniform(scale / math.sqrt(d_in)),
                      dtype=dtype, param_dtype=param_dtype, rngs=rngs)


def inverse_softplus(x):
    """``softplus^{-1}(x) = x + log(-expm1(-x))``."""
    return x + jnp.log(-jnp.expm1(-x))


def dt_bias_init(key, shape, dt_min: float, dt_max: float, floor: float, dtype=jnp.float32):
    """A bias whose softplus is a step size log-uniform in [dt_min, dt_max], at least ``floor``."""
    dt = jnp.exp(hippo.log_dt_init(key, shape, dt_min, dt_max))
    return inverse_softplus(jnp.maximum(dt, floor)).astype(dtype)
