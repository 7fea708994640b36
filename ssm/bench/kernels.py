"""Speed and memory of the S4D / S4 kernels and the FFT convolution, each against
the naive form common ports use, measured in the same run on the same inputs.

Sizes: H = 256 channels, N = 64 (N/2 = 32 complex pairs), batch 8 for the
convolution; float32 / complex64; everything jitted, on JAX's default backend.

- S4D: ``kernels.diagonal_kernel`` (ZOH; a blocked Vandermonde product, sqrt(L)
  exps per mode) vs :func:`naive_vandermonde_kernel`, which materializes
  ``exp(dt Lambda l)`` as (H, N/2, L) before contracting it.
- S4: ``kernels.dplr_kernel(..., c_tilde=True)`` vs :func:`naive_cauchy_kernel`,
  annotated-s4's Cauchy sums over a materialized (H, 2, 2, N/2, L/2+1) broadcast
  plus the rank-1 Woodbury step; ``kernels.truncate_output`` (the one-off
  C -> C~, O(H N^3 log L)) on its own.
- Forward+backward: ``value_and_grad`` of ``sum(K**2)`` w.r.t. every kernel
  argument; time and XLA temp memory.
- ``kernels.fft_conv`` vs :func:`direct_conv`, a depthwise causal
  ``conv_general_dilated`` (O(L^2); skipped above ``DIRECT_MAX_LENGTH``).

FLOP model (useful work, the same count for ours and the baseline; see the
``*_cost`` functions): a complex exp counts ``CEXP_FLOPS`` = 20 (a real exp plus a
sine and a cosine by polynomial, ~6-7 each), a complex reciprocal 6 (2 mul, 1 add,
1 div, 2 mul), a complex multiply-add 8 (4 when only its real part is kept), a
real FFT of size n 2.5 n log2 n. Bytes are the minimum: inputs read once, outputs
written once. Roofline floor = max(flops / matmul peak, bytes / read bandwidth),
both measured in the same run. On CPU XLA's complex exp and division are far
slower than that flop weight says (sine/cosine are not vectorized), so "op time"
also reports how long the kernel's complex exps or reciprocals alone take at the
rate measured for that op on one chunk-sized block: a practical floor, not a
hard one (the rate depends on the arguments and on fusion).

Run: ``python -m ssm.bench.kernels [--lengths 1024 4096] [--repeats 5] [--out FILE]``.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ssm import hippo, kernels
from ssm.bench.common import (MiB, Timing, cpu_name, emit, fmt_mib, fmt_ms, fmt_ratio, footnote,
                              markdown_table, matmul_and_read_rates, measure, parser)

H, N, BATCH = 256, 64, 8
HALF = N // 2
LENGTHS = (1024, 4096, 16384)
CEXP_FLOPS, CRECIP_FLOPS, CMAC_FLOPS = 20, 6, 8
WOODBURY_FLOPS = 40  # rank-1 correction and the 2/(1+w) factor, per (h, frequency)
DIRECT_MAX_LENGTH = 2048  # direct convolution: ~3 s at L=1024 on 2 CPU cores, x4 per doubling


# ---------------------------------------------------------------------------- timing


def value_and_grad_of(kernel: Callable) -> Callable:
    """``params -> (sum(K**2), grads)`` for ``K = kernel(*params)``."""
    return jax.value_and_grad(lambda params: jnp.sum(kernel(*params) ** 2))


# ------------------------------------------------------------------- machine ceilings


class Machine(NamedTuple):
    """Rates measured on this machine: float32 matmul flop/s, read bytes/s, complex exps/s and complex
    reciprocals/s."""

    matmul_flops: float  # float32 2048^3 matmul, flop/s
    read_bytes: float  # summing a 256 MiB float32 array, bytes/s
    cexp_rate: float  # complex64 exps/s on one (H N/2, CHUNK) block
    crecip_rate: float  # complex64 reciprocals/s on the same block


def measure_machine(repeats: int) -> Machine:
    """The :class:`Machine` rates, each timed ``repeats`` times."""
    matmul_flops, read_bytes = matmul_and_read_rates(repeats)
    # One chunk's worth of S4D-Lin exponents dt lambda l (dt = 0.01, 0 < l <= CHUNK).
    lam = (-0.5 - 1j * math.pi * jnp.arange(HALF)).astype(jnp.complex64)
    block = jnp.tile(0.01 * lam[:, None] * jnp.arange(1, kernels.CHUNK + 1), (H, 1))
    t_exp = measure(jnp.exp, block, repeats=repeats).seconds
    t_recip = measure(lambda x: 1 / x, block, repeats=repeats).seconds
    return Machine(matmul_flops, read_bytes, block.size / t_exp, block.size / t_recip)


# ----------------------------------------------------------------------------- inputs


def _per_channel(x):
    """Copy one channel's parameters (...) to all H channels: complex64 (H, ...)."""
    x = jnp.asarray(x, jnp.complex64)
    return jnp.broadcast_to(x, (H, *x.shape))


def _output_and_dt(key):
    """A random ``C`` complex64 (H, N/2) and ``dt`` float32 (H,), log-uniform in [1e-3, 1e-1]."""
    k_c, k_dt = jax.random.split(key)
    return jax.random.normal(k_c, (H, HALF), jnp.complex64), jnp.exp(hippo.log_dt_init(k_dt, (H,)))


def s4d_inputs(key):
    """S4D-Lin: ``(Lambda, B, C, dt)``, complex64 (H, N/2) and float32 (H,)."""
    Lambda, B = hippo.s4d_init("lin", N)
    return (_per_channel(Lambda), _per_channel(B), *_output_and_dt(key))


def s4_inputs(key):
    """HiPPO-LegS DPLR: ``(Lambda, P, B, C, dt)``; ``P`` (H, 1, N/2), the rest as S4D."""
    Lambda, P, B, _ = hippo.dplr("legs", N)
    return (_per_channel(Lambda), _per_channel(P), _per_channel(B), *_output_and_dt(key))


# -------------------------------------------------------------------------- baselines


def naive_vandermonde_kernel(Lambda, B, C, dt, length: int):
    """S4D ZOH kernel through the materialized Vandermonde matrix, as common ports do.

    Args: ``Lambda``, ``B``, ``C`` complex (H, N/2); ``dt`` (H,).
    Returns: real (H, length); the intermediate ``exp(dt Lambda l)`` is (H, N/2, length).
    """
    dtL = dt[:, None] * Lambda
    W = C * B * jnp.expm1(dtL) / Lambda
    V = jnp.exp(dtL[..., None] * jnp.arange(length, dtype=dt.dtype))
    return 2 * jnp.einsum("hn,hnl->hl", W, V).real


def naive_cauchy_kernel(Lambda, P, B, C_tilde, dt, length: int):
    """S4 rank-1 DPLR kernel as annotated-s4 computes it: textbook nodes
    ``z = 2 (1 - w)/(1 + w)``, every Cauchy sum ``r_xy = sum_n dt x_n y_n / (z - dt lambda_n)``
    (plus its conjugate term) over a full broadcast, then Woodbury
    ``k = 2/(1+w) (r_CB - r_Cp r_pB / (1 + r_pp))`` and an irfft.

    Args: ``Lambda``, ``B``, ``C_tilde`` complex (H, N/2); ``P`` (H, 1, N/2); ``dt`` (H,).
    Returns: real (H, length); the broadcast is (H, 2, 2, N/2, length//2 + 1), twice.
    """
    if P.shape[-2] != 1:
        raise ValueError(f"P has shape {P.shape}; the naive baseline handles rank 1 only")
    omega = np.exp(-2j * np.pi * np.arange(length // 2 + 1) / length)  # float64 on the host
    z = jnp.asarray(2 * (1 - omega) / (1 + omega), jnp.complex64)
    X = jnp.concatenate([C_tilde[:, None], P.conj()], 1)  # (H, 2, N/2): rows C~, q^*
    Y = jnp.concatenate([B[:, None], P], 1)  # (H, 2, N/2): columns B, p
    W = dt[:, None, None, None] * X[:, :, None] * Y[:, None, :]  # (H, 2, 2, N/2)
    dtL = dt[:, None] * Lambda

    def cauchy(W, dtL):  # (H, 2, 2, N/2, L/2+1) -> (H, 2, 2, L/2+1)
        return jnp.sum(W[..., None] / (z - dtL[:, None, None, :, None]), axis=-2)

    r = cauchy(W, dtL) + cauchy(W.conj(), dtL.conj())
    k_hat = r[:, 0, 0] - r[:, 0, 1] * r[:, 1, 0] / (1 + r[:, 1, 1])
    return jnp.fft.irfft(jnp.asarray(2 / (1 + omega), jnp.complex64) * k_hat, n=length)


def direct_conv(u, K):
    """Causal depthwise convolution ``y[t] = sum_{l<=t} K[l] u[t-l]`` in O(L^2).

    Args: ``u`` (batch, L, H); ``K`` (H, L). Returns: (batch, L, H).
    """
    L, channels = u.shape[1:]
    taps = K[:, ::-1].T[:, None, :]  # (L, 1, H), flipped: XLA's convolution is a correlation
    return jax.lax.conv_general_dilated(u, taps, (1,), [(L - 1, 0)],
                                        dimension_numbers=("NWC", "WIO", "NWC"),
                                        feature_group_count=channels)


# ------------------------------------------------------------------------ work model


class Cost(NamedTuple):
    """The useful work of one kernel evaluation: flops, bytes moved, complex exps and reciprocals."""

    flops: float
    bytes: float
    cexps: float = 0  # complex exps (for the op time)
    crecips: float = 0  # complex reciprocals (for the op time)


def fft_flops(n: int) -> float:
    """A real FFT of size n: half a complex one, 2.5 n log2 n."""
    return 2.5 * n * math.log2(n)


def vandermonde_cost(L: int) -> Cost:
    """The blocked Vandermonde sum (l = jT + t, T = ceil(sqrt L)): H N/2 (J + T) complex
    exps with their arguments (2 each) and the W multiply on the J outer ones (8), then
    one real (H, J, N) @ (H, N, T) product, 2 H N J T flops. The naive form's
    H N/2 L exps are work this algorithm shows to be unnecessary, so they are not
    counted. Bytes: Lambda, B, C (H, N/2) and dt in, K (H, L) out."""
    T = math.isqrt(L - 1) + 1
    J = -(-L // T)
    exps = H * HALF * (J + T)
    flops = exps * (2 + CEXP_FLOPS) + 8 * H * HALF * J + 2 * H * N * J * T
    return Cost(flops, 8 * 3 * H * HALF + 4 * H + 4 * H * L, cexps=exps)


def cauchy_cost(L: int, rank: int = 1) -> Cost:
    """Per (h, n, frequency), twice (the conjugate half): the denominator (2), one
    reciprocal shared by the (r+1)^2 numerators, (r+1)^2 complex multiply-adds; then
    the Woodbury step per (h, frequency) and an irfft of size L per channel."""
    freqs = L // 2 + 1
    count = 2 * H * HALF * freqs
    flops = (count * (2 + CRECIP_FLOPS + CMAC_FLOPS * (rank + 1) ** 2)
             + H * freqs * WOODBURY_FLOPS + H * fft_flops(L))
    return Cost(flops, 8 * (3 + rank) * H * HALF + 4 * H + 4 * H * L, crecips=count)


def truncate_cost(L: int, rank: int = 1) -> Cost:
    """Complex N x N products per channel: log2 L squarings, popcount(L) - 1 extra
    multiplies, ~5/3 of a product for the solve that forms ``Abar - I`` (LU plus N + 1
    right-hand sides); 8 N^3 flops each."""
    products = (L.bit_length() - 1) + (bin(L).count("1") - 1) + 5 / 3
    return Cost(H * CMAC_FLOPS * N**3 * products, 8 * (3 + rank) * H * HALF + 4 * H + 8 * H * HALF)


def fft_conv_cost(L: int, batch: int = BATCH) -> Cost:
    """rfft of u (batch H of them), of K (H), irfft of the product (batch H), all of size
    n = fft_length(2L), plus the complex pointwise product. Bytes: u, K in, y out."""
    n = kernels.fft_length(2 * L)
    flops = (2 * batch + 1) * H * fft_flops(n) + 6 * batch * H * (n // 2 + 1)
    return Cost(flops, 4 * (2 * batch * L * H + H * L))


# -------------------------------------------------------------------------- reporting


def _compile(ours: Timing, naive: Timing | None) -> str:
    return f"{ours.compile_s:.1f}" + ("" if naive is None else f" / {naive.compile_s:.1f}")


def _rel_diff(ours: Timing, naive: Timing | None) -> str:
    if naive is None:
        return "—"
    a, b = np.asarray(ours.output), np.asarray(naive.output)
    return f"{np.max(np.abs(a - b)) / np.max(np.abs(a)):.1e}"


def _roofline(t: Timing, cost: Cost, machine: Machine) -> tuple[str, str, str]:
    """(achieved GFLOP/s, % of the roofline floor, op time in ms)."""
    floor = max(cost.flops / machine.matmul_flops, cost.bytes / machine.read_bytes)
    op_time = cost.cexps / machine.cexp_rate + cost.crecips / machine.crecip_rate
    return (f"{cost.flops / t.seconds / 1e9:.1f}", f"{100 * floor / t.seconds:.1f}",
            f"{1e3 * op_time:.0f}" if op_time else "—")


FORWARD_HEADER = ["kernel", "L", "ours ms", "naive ms", "naive/ours", "compile s (ours / naive)",
                  "GFLOP", "ours GFLOP/s", "% of roofline", "op time ms",
                  "temp MiB (ours / naive)", "max rel. diff"]
GRAD_HEADER = ["kernel", "L", "ours ms", "naive ms", "naive/ours", "ours temp MiB",
               "naive temp MiB", "naive/ours memory", "compile s (ours / naive)"]
CONV_HEADER = ["L", "fft_conv ms", "direct ms", "direct/fft", "compile s (fft / direct)",
               "GFLOP", "min MB", "GFLOP/s", "% of roofline", "max rel. diff"]


def bench_kernel(name: str, L: int, ours: Callable, naive: Callable | None, args: tuple,
                 cost: Cost, machine: Machine, repeats: int, grad: bool = True):
    """Time ``ours`` and ``naive`` (``args -> K (H, L)``) forward and, if ``grad``,
    forward+backward. Returns (forward row, gradient row or None, ours' output)."""
    fwd = measure(ours, *args, repeats=repeats)
    base = None if naive is None else measure(naive, *args, repeats=repeats)
    gflops, roof, op_time = _roofline(fwd, cost, machine)
    forward = [name, str(L), fmt_ms(fwd), fmt_ms(base), fmt_ratio(base and base.seconds, fwd.seconds),
               _compile(fwd, base), f"{cost.flops / 1e9:.2f}", gflops, roof, op_time,
               f"{fmt_mib(fwd)} / {fmt_mib(base)}", _rel_diff(fwd, base)]
    if not grad:
        return forward, None, fwd.output
    g = measure(value_and_grad_of(ours), args, repeats=repeats)
    g_base = measure(value_and_grad_of(naive), args, repeats=repeats)
    backward = [name, str(L), fmt_ms(g), fmt_ms(g_base), fmt_ratio(g_base.seconds, g.seconds), fmt_mib(g),
                fmt_mib(g_base), fmt_ratio(g_base.temp_bytes, g.temp_bytes), _compile(g, g_base)]
    return forward, backward, fwd.output


def bench_conv(L: int, K, machine: Machine, repeats: int) -> list[str]:
    """``fft_conv`` vs ``direct_conv`` on u (BATCH, L, H) with the kernel ``K`` (H, L)."""
    u = jax.random.normal(jax.random.key(2), (BATCH, L, H), jnp.float32)
    fft = measure(kernels.fft_conv, u, K, repeats=repeats)
    direct = measure(direct_conv, u, K, repeats=repeats) if L <= DIRECT_MAX_LENGTH else None
    cost = fft_conv_cost(L)
    gflops, roof, _ = _roofline(fft, cost, machine)
    return [str(L), fmt_ms(fft), fmt_ms(direct) if direct else "skipped (O(L²))",
            fmt_ratio(direct and direct.seconds, fft.seconds), _compile(fft, direct),
            f"{cost.flops / 1e9:.2f}", f"{cost.bytes / 1e6:.1f}", gflops, roof,
            _rel_diff(fft, direct)]


def run(lengths, repeats: int) -> str:
    """The whole benchmark; returns its markdown."""
    start, load = time.perf_counter(), os.getloadavg()
    log = functools.partial(print, file=sys.stderr, flush=True)
    log("measuring the machine's ceilings ...")
    machine = measure_machine(repeats)
    s4d, s4 = s4d_inputs(jax.random.key(0)), s4_inputs(jax.random.key(1))
    forward, backward, conv = [], [], []
    for L in lengths:
        log(f"L={L}: S4D ...")
        row, grad_row, K = bench_kernel(
            "S4D diagonal_kernel (ZOH)", L, functools.partial(kernels.diagonal_kernel, length=L),
            functools.partial(naive_vandermonde_kernel, length=L), s4d, vandermonde_cost(L),
            machine, repeats)
        forward.append(row)
        backward.append(grad_row)
        log(f"L={L}: S4 ...")
        row, grad_row, _ = bench_kernel(
            "S4 dplr_kernel (c_tilde)", L,
            functools.partial(kernels.dplr_kernel, length=L, c_tilde=True),
            functools.partial(naive_cauchy_kernel, length=L), s4, cauchy_cost(L), machine, repeats)
        forward.append(row)
        backward.append(grad_row)
        row, _, _ = bench_kernel(
            "S4 truncate_output (one-off)", L, functools.partial(kernels.truncate_output, length=L),
            None, s4, truncate_cost(L), machine, repeats, grad=False)
        forward.append(row)
        log(f"L={L}: convolution ...")
        conv.append(bench_conv(L, K, machine, repeats))
    device = jax.devices()[0]
    return "\n".join([
        f"Backend `{jax.default_backend()}` ({device.device_kind}), {cpu_name()}, "
        f"{os.cpu_count()} cores, jax {jax.__version__}; H={H}, N={N}, batch {BATCH}, "
        f"float32/complex64, median of {repeats} runs after compile and one warm-up.",
        "",
        f"Measured ceilings: float32 matmul {machine.matmul_flops / 1e9:.0f} GFLOP/s, "
        f"read bandwidth {machine.read_bytes / 1e9:.1f} GB/s, complex64 exp "
        f"{machine.cexp_rate / 1e9:.3f} G/s, complex64 reciprocal "
        f"{machine.crecip_rate / 1e9:.3f} G/s "
        f"(the last two elementwise on a ({H * HALF}, {kernels.CHUNK}) block). "
        f"Load average at start {load[0]:.2f}, at end {os.getloadavg()[0]:.2f}.",
        "",
        "**Kernel generation (forward).** Roofline floor = max(GFLOP / matmul peak, "
        "min bytes / bandwidth); op time = the kernel's complex exps (S4D) or "
        "reciprocals (S4, conjugate half included) alone at the measured rates above.",
        "",
        markdown_table(FORWARD_HEADER, forward),
        "",
        "**Forward + backward** (`value_and_grad` of `sum(K**2)` w.r.t. all kernel arguments).",
        "",
        markdown_table(GRAD_HEADER, backward),
        "",
        f"**FFT convolution** (batch {BATCH}, H={H}, float32; direct = depthwise "
        f"`conv_general_dilated`, timed up to L={DIRECT_MAX_LENGTH}).",
        "",
        markdown_table(CONV_HEADER, conv),
        "",
        footnote(repeats, start),
    ])


def main(argv=None) -> None:
    """Command line: time the S4D and S4 kernels at each ``--lengths`` and print the tables."""
    cli = parser(__doc__, repeats=5)
    cli.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS), help="kernel lengths L (default: %(default)s)")
    args = cli.parse_args(argv)
    if args.repeats < 1 or any(L < 2 for L in args.lengths):
        cli.error("--repeats must be >= 1 and every length >= 2")
    emit(run(args.lengths, args.repeats), args.out)


if __name__ == "__main__":
    main()
