"""Speed and memory of the selective scan's methods against the naive form common JAX
ports use, measured in the same run on the same inputs.

Sizes: batch 4, dim 512, N 16, float32, lengths 1024 and 4096; Mamba's inputs in full
(``delta_bias`` + softplus, ``D``, the ``z`` gate), with Mamba's initializations:
A = -(1..N) per channel, dt = softplus(delta + delta_bias) log-uniform in [1e-3, 0.1].

- ``ssm.scan.selective_scan`` with ``method`` = sequential, chunked (``auto`` on every
  platform) and associative;
- :func:`naive_selective_scan`: materialize deltaA and deltaB_u as (b, l, d, n) and run
  ``lax.associative_scan`` over them (the baseline; ratios are baseline / ours);
- :func:`checkpointed_chunked_scan` (forward + backward only): the chunked method as
  ``jax.checkpoint`` around each chunk with JAX's autodiff, to show what the library's
  hand-written backward buys;
- a sweep of ``chunk_size`` for the chunked method at the longest length.

Work model (the same count for every method; see :func:`cost`): per (b, l, d, n)
element the forward does 6 flops (delta*A, the decay and input products, the update,
the C contraction) and one exp; the backward 15 more (the adjoint update, the four
gradient contractions, dA), the exp reused. Per (b, l, d) element ~10 flops and 3
transcendentals (softplus, silu). An exp counts ``EXP_FLOPS`` = 20 (a range reduction
and a degree-7 polynomial). A recomputing backward does more than this; the extra is
work the algorithm chooses, so it is not counted. Bytes are the minimum: inputs read
once and y (or every gradient) written once. Floor = max(flops / matmul peak, bytes /
read bandwidth), both measured in the same run. Any method that scans position by
position also pays XLA:CPU's cost of one loop iteration per position: "loop ms" is L
times the measured time of the cheapest step on a (b, d, n) state (``h = a h + x_t``),
a practical floor for the sequential and chunked forward.

Run: ``python -m ssm.bench.scan [--lengths 1024 4096] [--repeats 5] [--out FILE]``.
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
from jax import lax

from ssm import scan
from ssm.bench.common import (MiB, Timing, cpu_name, emit, fmt_mib, fmt_ms, fmt_ratio, footnote,
                              markdown_table, matmul_and_read_rates, max_rel_diff, measure, parser,
                              value_and_grad_of)
from ssm.scan.recurrence import time_step
from ssm.scan.sequential import scan_sequential

BATCH, DIM, N = 4, 512, 16
EXP_FLOPS = 20
LENGTHS = (1024, 4096)
CHUNK_SIZES = (16, 32, 64, 128, 256)
METHODS = ("sequential", "chunked", "associative")
ARG_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


# ----------------------------------------------------------------------------- inputs


def inputs(key, length: int):
    """Mamba-like float32 inputs ``(u, delta, A, B, C, D, z, delta_bias)``."""
    k = jax.random.split(key, 6)
    dt = jnp.exp(jax.random.uniform(k[5], (DIM,), minval=math.log(1e-3), maxval=math.log(0.1)))
    return (jax.random.normal(k[0], (BATCH, length, DIM)),
            0.5 * jax.random.normal(k[1], (BATCH, length, DIM)),
            -jnp.tile(jnp.arange(1, N + 1, dtype=jnp.float32), (DIM, 1)),
            jax.random.normal(k[2], (BATCH, length, N)),
            jax.random.normal(k[3], (BATCH, length, N)),
            jnp.ones((DIM,)),
            jax.random.normal(k[4], (BATCH, length, DIM)),
            dt + jnp.log(-jnp.expm1(-dt)))  # softplus^-1(dt), Mamba's dt_proj bias


def ours(method: str, chunk_size: int | None = None) -> Callable:
    """``ssm.scan.selective_scan`` with softplus, fixed to one ``method`` (and chunk size)."""
    return functools.partial(scan.selective_scan, delta_softplus=True, method=method,
                             chunk_size=chunk_size)


# -------------------------------------------------------------------------- baselines


def naive_selective_scan(u, delta, A, B, C, D, z, delta_bias):
    """The selective scan as common JAX ports write it: deltaA and deltaB_u materialized
    as (b, l, d, n), ``lax.associative_scan`` over the length, then the C contraction.
    Same semantics as ``scan.selective_scan(..., delta_softplus=True)``."""
    delta = jax.nn.softplus(delta + delta_bias)
    dA = jnp.exp(delta[..., None] * A)
    dBu = (delta * u)[..., None] * B[:, :, None, :]

    def combine(first, second):
        return second[0] * first[0], second[0] * first[1] + second[1]

    _, h = lax.associative_scan(combine, (dA, dBu), axis=1)
    y = jnp.einsum("bldn,bln->bld", h, C) + D * u
    return y * jax.nn.silu(z)


def checkpointed_chunked_scan(u, delta, A, B, C, D, z, delta_bias, chunk: int = scan.CHUNK):
    """The chunked method as ``jax.checkpoint`` around each chunk's sequential scan (the
    library's own :func:`ssm.scan.sequential.scan_sequential`), differentiated by JAX
    instead of the library's hand-written backward. The length must be a multiple of
    ``chunk``."""
    b, l, d = u.shape
    delta = time_step(delta, delta_bias, True, jnp.float32)
    to_chunks = lambda v: jnp.moveaxis(v.reshape(b, l // chunk, chunk, -1), 1, 0)  # noqa: E731

    @jax.checkpoint
    def chunk_body(h, s):
        delta_c, x_c, B_c, C_c = s
        y, h = scan_sequential(delta_c, x_c, A, B_c, C_c, h, None)
        return h, y

    _, y = lax.scan(chunk_body, jnp.zeros((b, d, A.shape[1])),
                    tuple(map(to_chunks, (delta, delta * u, B, C))))
    y = jnp.moveaxis(y, 0, 1).reshape(b, l, d) + D * u
    return y * jax.nn.silu(z)


# ------------------------------------------------------------------- work and machine


class Cost(NamedTuple):
    """The useful work of one scan: flops (exps included), transcendentals and bytes."""

    flops: float  # exps included, EXP_FLOPS each
    exps: float  # exps and other transcendentals
    bytes: float


def cost(length: int, grad: bool) -> Cost:
    """Useful work of the selective scan (module docstring); ``grad``: forward + backward."""
    state, chan = BATCH * length * DIM * N, BATCH * length * DIM
    exps = state + 3 * chan
    flops = state * (21 if grad else 6) + chan * (20 if grad else 10) + EXP_FLOPS * exps
    inputs = 4 * (3 * chan + 2 * BATCH * length * N + DIM * N + 2 * DIM)
    return Cost(flops, exps, 2 * inputs if grad else inputs + 4 * chan)


class Machine(NamedTuple):
    """Rates measured on this machine: float32 matmul flop/s, read bytes/s, and the time of one ``lax.scan``
    step on the benchmark's state."""

    matmul_flops: float  # float32 2048^3 matmul, flop/s
    read_bytes: float  # summing a 256 MiB float32 array, bytes/s
    step_seconds: float  # one lax.scan iteration h = a h + x_t on a (b, d, n) state


def measure_machine(repeats: int) -> Machine:
    """The :class:`Machine` rates, each timed ``repeats`` times."""
    matmul_flops, read_bytes = matmul_and_read_rates(repeats)
    steps = 1024
    decay = jnp.full((BATCH, DIM, N), 0.9, jnp.float32)
    xs = jnp.ones((steps, BATCH, DIM, 1), jnp.float32)

    def loop(decay, xs):
        return lax.scan(lambda h, x: (decay * h + x, None), jnp.zeros_like(decay), xs)[0]

    t_loop = measure(loop, decay, xs, repeats=repeats).seconds
    return Machine(matmul_flops, read_bytes, t_loop / steps)


def floor_seconds(c: Cost, machine: Machine) -> float:
    """The time ``c`` needs at best on ``machine``: its flops at the matmul rate or its bytes at the read
    rate, whichever is longer."""
    return max(c.flops / machine.matmul_flops, c.bytes / machine.read_bytes)


# -------------------------------------------------------------------------- reporting


HEADER = ["method", "L", "ms", "baseline/ours time", "temp MiB", "baseline/ours memory",
          "compile s", "GFLOP", "G exp", "min MB", "floor ms", "% of floor", "loop ms",
          "max rel. diff"]


def row(name: str, L: int, t: Timing, base: Timing, c: Cost, machine: Machine) -> list[str]:
    """One table row: a scan's time, memory, compile time, work and floor, against the baseline ``base``."""
    floor = floor_seconds(c, machine)
    return [name, str(L), fmt_ms(t), fmt_ratio(base.seconds, t.seconds), fmt_mib(t),
            fmt_ratio(base.temp_bytes, t.temp_bytes), f"{t.compile_s:.1f}", f"{c.flops / 1e9:.2f}",
            f"{c.exps / 1e9:.3f}", f"{c.bytes / 1e6:.0f}", f"{1e3 * floor:.1f}",
            f"{100 * floor / t.seconds:.1f}", f"{1e3 * L * machine.step_seconds:.1f}",
            "—" if t is base else max_rel_diff(t.output, base.output)]


def bench_length(L: int, machine: Machine, repeats: int, log) -> tuple[list, list]:
    """The forward and forward+backward table rows of every method at length ``L``."""
    args = inputs(jax.random.key(L), L)
    forward, backward = [], []
    for grad, rows in ((False, forward), (True, backward)):
        wrap = value_and_grad_of if grad else (lambda f: f)
        c = cost(L, grad)
        log(f"L={L} {'forward+backward' if grad else 'forward'}: baseline ...")
        base = measure(wrap(naive_selective_scan), *args, repeats=repeats)
        rows.append(row("baseline (materialized, associative)", L, base, base, c, machine))
        candidates = [(m, ours(m)) for m in METHODS]
        if grad:
            candidates.append(("chunked via jax.checkpoint (autodiff)", checkpointed_chunked_scan))
        for name, fn in candidates:
            log(f"L={L} {'forward+backward' if grad else 'forward'}: {name} ...")
            label = "chunked (auto)" if name == scan.resolve_method("auto") else name
            rows.append(row(label, L, measure(wrap(fn), *args, repeats=repeats), base, c, machine))
    return forward, backward


def bench_chunk_sizes(L: int, sizes, repeats: int, log) -> list[list[str]]:
    """The table rows of the chunked scan at length ``L`` for each chunk size."""
    args = inputs(jax.random.key(L), L)
    rows = []
    for size in sizes:
        log(f"L={L} chunk_size={size} ...")
        fwd = measure(ours("chunked", size), *args, repeats=repeats)
        grad = measure(value_and_grad_of(ours("chunked", size)), *args, repeats=repeats)
        rows.append([str(size), fmt_ms(fwd), fmt_ms(grad), fmt_mib(fwd), fmt_mib(grad),
                     f"{BATCH * DIM * N * 4 * -(-L // size) / MiB:.1f}"])
    return rows


def run(lengths, repeats: int, chunk_sizes) -> str:
    """The whole benchmark; returns its markdown."""
    start, load = time.perf_counter(), os.getloadavg()
    log = functools.partial(print, file=sys.stderr, flush=True)
    log("measuring the machine's ceilings ...")
    machine = measure_machine(repeats)
    forward, backward = [], []
    for L in lengths:
        f, b = bench_length(L, machine, repeats, log)
        forward += f
        backward += b
    sweep = bench_chunk_sizes(max(lengths), chunk_sizes, repeats, log) if chunk_sizes else []
    device = jax.devices()[0]
    lines = [
        f"Backend `{jax.default_backend()}` ({device.device_kind}), {cpu_name()}, "
        f"{os.cpu_count()} cores, jax {jax.__version__}; batch {BATCH}, dim {DIM}, N {N}, "
        f"float32, `delta_softplus=True` with D, z and delta_bias; median of {repeats} runs "
        "after compile and one warm-up.",
        "",
        f"Measured ceilings: float32 matmul {machine.matmul_flops / 1e9:.0f} GFLOP/s, read "
        f"bandwidth {machine.read_bytes / 1e9:.1f} GB/s, one scan step on a (b, d, n) state "
        f"{1e6 * machine.step_seconds:.1f} µs. Load average at start {load[0]:.2f}, at end "
        f"{os.getloadavg()[0]:.2f}. `auto` resolves to `{scan.resolve_method('auto')}` here.",
        "",
        "**Forward.** Ratios are baseline / ours (higher is better for ours); floor = "
        "max(GFLOP / matmul peak, min bytes / bandwidth); loop ms = L scan steps at the "
        "measured cost of one; max rel. diff = max |ours − baseline| / max |baseline| over y.",
        "",
        markdown_table(HEADER, forward),
        "",
        "**Forward + backward** (`value_and_grad` of `sum(y**2)` w.r.t. all eight inputs; "
        "max rel. diff over the loss and every gradient).",
        "",
        markdown_table(HEADER, backward),
    ]
    if sweep:
        lines += ["", f"**Chunk size** of the chunked method at L={max(lengths)} "
                  f"(default {scan.CHUNK}).", "",
                  markdown_table(["chunk_size", "forward ms", "fwd+bwd ms", "forward temp MiB",
                                  "fwd+bwd temp MiB", "boundary states MiB"], sweep)]
    lines += ["", footnote(repeats, start)]
    return "\n".join(lines)


def main(argv=None) -> None:
    """Command line: time the scan methods at each ``--lengths`` (and the chunk sizes) and print the tables."""
    cli = parser(__doc__, repeats=5)
    cli.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS), help="sequence lengths L (default: %(default)s)")
    cli.add_argument("--chunk-sizes", type=int, nargs="*", default=list(CHUNK_SIZES),
                     help="chunk sizes swept at the longest length; none to skip (default: %(default)s)")
    args = cli.parse_args(argv)
    if args.repeats < 1 or any(L < 1 for L in args.lengths) or any(c < 1 for c in args.chunk_sizes):
        cli.error("--repeats, every length and every chunk size must be >= 1")
    emit(run(args.lengths, args.repeats, args.chunk_sizes), args.out)


if __name__ == "__main__":
    main()
