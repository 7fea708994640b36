"""Public array functions take NumPy arrays as well as JAX arrays, with the same results:
every call below runs once on NumPy inputs and once on the same values as JAX arrays,
with only the required arguments (the optional ones default to None inside)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssm import attention, hippo, kernels, linalg, monarch, scan, solve, ssd

rng = np.random.default_rng(0)


def normal(*shape):
    return rng.normal(size=shape).astype(np.float32)


def complex_(*shape):
    return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)


b, l, d, n, H, N2 = 2, 8, 4, 3, 3, 4
Lambda = (-np.abs(rng.normal(size=(H, N2))) - 0.1 + 1j * rng.normal(size=(H, N2))).astype(np.complex64)
dt = np.exp(rng.uniform(np.log(1e-2), np.log(1e-1), H)).astype(np.float32)
A_scan = -np.exp(normal(d, n))
legs = hippo.dplr("legs", 2 * N2)
CALLS = {
    "scan.selective_scan/" + m: (lambda *a, m=m: scan.selective_scan(*a, method=m),
                                 (normal(b, l, d), np.abs(normal(b, l, d)), A_scan, normal(b, l, n), normal(b, l, n)))
    for m in ("sequential", "chunked", "associative")
}
CALLS |= {
    "scan.selective_state_update": (scan.selective_state_update,
                                    (normal(b, d, n), normal(b, d), np.abs(normal(b, d)), A_scan, normal(b, n),
                                     normal(b, n))),
    "ssd.ssd_chunked": (lambda *a: ssd.ssd_chunked(*a, chunk_size=4),
                        (normal(b, l, 2, 2), np.abs(normal(b, l, 2)), -np.abs(normal(2)), normal(b, l, 1, n),
                         normal(b, l, 1, n))),
    "ssd.ssd_sequential": (ssd.ssd_sequential, (normal(b, l, 2, 2), np.abs(normal(b, l, 2)), -np.abs(normal(2)),
                                                normal(b, l, 1, n), normal(b, l, 1, n))),
    "ssd.ssd_step": (ssd.ssd_step, (normal(b, 2, 2, n), normal(b, 2, 2), np.abs(normal(b, 2)), -np.abs(normal(2)),
                                    normal(b, 1, n), normal(b, 1, n))),
    "kernels.diagonal_kernel": (lambda *a: kernels.diagonal_kernel(*a, 16),
                                (Lambda, complex_(H, N2), complex_(H, N2), dt)),
    "kernels.dplr_kernel": (lambda *a: kernels.dplr_kernel(*a, 16),
                            (np.broadcast_to(legs[0], (H, N2)).astype(np.complex64), legs[1].astype(np.complex64),
                             np.broadcast_to(legs[2], (H, N2)).astype(np.complex64), complex_(H, N2), dt)),
    "kernels.discretize_dplr": (kernels.discretize_dplr,
                                (Lambda, complex_(1, N2), complex_(H, N2), dt)),
    "kernels.fft_conv": (kernels.fft_conv, (normal(b, l, H), normal(H, l))),
    "attention.apply_rope": (attention.apply_rope, (normal(b, l, 2, 4), np.arange(l))),
    "attention.dot_product_attention": (
        lambda q, k, v, p: attention.dot_product_attention(q, k, v, q_positions=p, k_positions=p),
        (normal(b, l, 2, 4), normal(b, l, 2, 4), normal(b, l, 2, 4), np.arange(l))),
    "monarch.matmul": (monarch.matmul, (normal(3, 16), (normal(4, 4, 4), normal(4, 4, 4)))),
    "monarch.to_dense": (monarch.to_dense, ((normal(4, 4, 4), normal(4, 4, 4)),)),
    "monarch.project": (monarch.project, (normal(16, 16),)),
    "linalg.msign": (linalg.msign, (normal(6, 4),)),
    "linalg.mclip": (lambda M: linalg.mclip(M, 0.5, 1.5), (normal(6, 4),)),
    "linalg.polar": (linalg.polar, (normal(6, 4),)),
    "solve.solve": (solve.solve, (normal(4, 4) + 4 * np.eye(4, dtype=np.float32), normal(4, 2))),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_numpy_inputs_give_the_results_of_jax_inputs(name):
    fn, args = CALLS[name]
    assert all(isinstance(a, np.ndarray) for a in jax.tree.leaves(args))
    from_numpy = fn(*args)
    from_jax = fn(*jax.tree.map(jnp.asarray, args))
    for x, y in zip(jax.tree.leaves(from_numpy), jax.tree.leaves(from_jax), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-6)
