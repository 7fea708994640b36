"""Argument checks of :func:`ssm.scan.selective_scan` and
:func:`ssm.scan.selective_state_update`, and the dtype they compute in.

Each error names the argument, its shape (or dtype) and what was expected. Shapes in
the notation of :mod:`ssm.typing`: ``b`` batch, ``l`` length, ``h`` channels, ``n``
state size, ``g`` groups.
"""

from __future__ import annotations

import jax.numpy as jnp

from ssm.checks import check_positive_int, concrete


def shape_error(name, x, expected):
    """The ValueError for argument ``name`` of the wrong shape: its shape and the ``expected`` one."""
    return ValueError(f"{name} has shape {tuple(jnp.shape(x))}; expected {expected}")


def compute_dtype(*xs):
    """float32, or float64 if an input is float64 (so x64 tests check the algebra)."""
    return jnp.result_type(jnp.float32, *(jnp.asarray(x).dtype for x in xs if x is not None))


def output_dtype(u, dtype):
    """The dtype of the scan's output: ``u``'s when floating, else the computation's
    (an integer output would truncate it)."""
    u_dtype = jnp.asarray(u).dtype
    return u_dtype if jnp.issubdtype(u_dtype, jnp.floating) else dtype


def check_A_D(A, D, delta_bias, d: int) -> int:
    """A (h, n) real, D and delta_bias (h,) or None; returns n (h is ``d`` here)."""
    if jnp.iscomplexobj(A):
        raise ValueError(f"A has complex dtype {jnp.asarray(A).dtype}; only real A (Mamba's "
                         "A = -exp(A_log)) is supported")
    if jnp.ndim(A) != 2 or jnp.shape(A)[0] != d:
        raise shape_error("A", A, f"(dim, N) = ({d}, N)")
    for name, v in (("D", D), ("delta_bias", delta_bias)):
        if v is not None and jnp.shape(v) != (d,):
            raise shape_error(name, v, f"(dim,) = ({d},)")
    return jnp.shape(A)[1]


def check_stable(A, delta, delta_bias, delta_softplus: bool, delta_name: str = "delta") -> None:
    """A <= 0 and step sizes >= 0, where the values are concrete (an eager call; under
    ``jit`` a violation gives inf or NaN instead): ``exp(delta A)`` > 1 grows the state
    without bound. With ``delta_softplus`` every step size is positive already."""
    values = concrete(A)
    if values is not None and (values > 0).any():
        raise ValueError(f"A has {int((values > 0).sum())} entries > 0 (e.g. {values[values > 0][0]!r}): the state "
                         "would grow without bound; expected A <= 0 (Mamba's A = -exp(A_log))")
    steps = None if delta_softplus else concrete(delta)
    if steps is not None:
        steps = steps + (0 if delta_bias is None else concrete(delta_bias))
        if (steps < 0).any():
            raise ValueError(f"{delta_name} (+ delta_bias) has {int((steps < 0).sum())} entries < 0 without "
                             f"delta_softplus: step sizes must be >= 0 (or pass delta_softplus=True)")


def check_B_C(B, C, lead: tuple, lead_names: str, d: int, n: int, suffix: str = "") -> int:
    """B and C: lead + (n,) or lead + (g, n) with g dividing the channels ``d``; returns g."""
    names = ("B" + suffix, "C" + suffix)
    for name, v in zip(names, (B, C)):
        shape = tuple(jnp.shape(v))
        if len(shape) not in (len(lead) + 1, len(lead) + 2) or shape[:len(lead)] != lead \
                or shape[-1] != n:
            raise shape_error(name, v, f"({lead_names}, N) or ({lead_names}, groups, N) "
                              f"with {lead_names} = {lead} and N = {n} (from A)")
    if jnp.shape(B) != jnp.shape(C):
        raise ValueError(f"{names[0]} has shape {jnp.shape(B)} and {names[1]} {jnp.shape(C)}; "
                         "expected the same")
    g = jnp.shape(B)[-2] if jnp.ndim(B) == len(lead) + 2 else 1
    if g < 1 or d % g:
        raise ValueError(f"{names[0]} and {names[1]} have {g} groups, which does not divide "
                         f"dim = {d}")
    return g


def check_scan_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state, reset, chunk_size):
    """The arguments of :func:`ssm.scan.selective_scan` (arrays already); returns
    ``(b, l, d, n, g)``."""
    if jnp.ndim(u) != 3:
        raise shape_error("u", u, "(batch, length, dim)")
    b, l, d = jnp.shape(u)
    if jnp.iscomplexobj(u):
        raise ValueError(f"u has dtype {jnp.asarray(u).dtype}; expected a real array (the selective scan is real)")
    if l == 0:
        raise shape_error("u", u, "(batch, length, dim) with length >= 1")
    for name, v in (("delta", delta), ("z", z)):
        if v is not None and jnp.shape(v) != (b, l, d):
            raise shape_error(name, v, f"(batch, length, dim) = {(b, l, d)} like u")
    n = check_A_D(A, D, delta_bias, d)
    g = check_B_C(B, C, (b, l), "batch, length", d, n)
    if initial_state is not None and jnp.shape(initial_state) != (b, d, n):
        raise shape_error("initial_state", initial_state, f"(batch, dim, N) = {(b, d, n)}")
    if reset is not None:
        if jnp.shape(reset) != (b, l):
            raise shape_error("reset", reset, f"(batch, length) = {(b, l)}")
        if jnp.asarray(reset).dtype != jnp.bool_:
            raise ValueError(f"reset has dtype {jnp.asarray(reset).dtype}; expected bool")
    if chunk_size is not None:
        check_positive_int("chunk_size", chunk_size)
    return b, l, d, n, g


def check_step_inputs(state, u_t, delta_t, A, B_t, C_t, D, z_t, delta_bias):
    """The arguments of :func:`ssm.scan.selective_state_update` (arrays already);
    returns ``(b, d, n, g)``."""
    if jnp.ndim(u_t) != 2:
        raise shape_error("u_t", u_t, "(batch, dim)")
    b, d = jnp.shape(u_t)
    for name, v in (("delta_t", delta_t), ("z_t", z_t)):
        if v is not None and jnp.shape(v) != (b, d):
            raise shape_error(name, v, f"(batch, dim) = {(b, d)} like u_t")
    n = check_A_D(A, D, delta_bias, d)
    g = check_B_C(B_t, C_t, (b,), "batch", d, n, suffix="_t")
    if jnp.shape(state) != (b, d, n):
        raise shape_error("state", state, f"(batch, dim, N) = {(b, d, n)}")
    return b, d, n, g
