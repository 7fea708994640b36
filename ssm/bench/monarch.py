"""``MonarchLinear`` against ``nnx.Linear`` (the baseline), measured in the same run.

For each width n (square layers, n -> n, with bias) on ``ROWS`` = 4096 rows (batch ·
length) in float32: forward time, and forward + backward time (``jax.vjp`` with a
random cotangent: the gradients of the input, the kernel (or both Monarch factors)
and the bias). Parameters of both, and the FLOP ratio ``n² / (2 n^1.5)`` = the
speedup a kernel with the same efficiency as the dense one would reach.

Work model. Dense: ``2·rows·n²`` flops forward, twice that backward. Monarch: ``2·rows·P``
forward (P = its parameter count, ``2 n·sqrt(n)`` at the default nblocks), twice that
backward. Monarch's minimum bytes: the input, the (rows, n) intermediate written and read
once, and the output (``4·rows·n·4`` forward; about 2.5× that backward). The floor is
max(flops / matmul peak, bytes / read bandwidth), both measured in the same run.

Run: ``python -m ssm.bench.monarch [--widths 1024 4096 16384] [--repeats 3] [--out FILE]``.
"""

from __future__ import annotations

import functools
import os
import sys
import time

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import nnx

from ssm import monarch
from ssm.bench.common import (cpu_name, emit, fmt_ms, fmt_ratio, footnote, markdown_table, matmul_and_read_rates,
                              measure, parser)
from ssm.layers import MonarchLinear

ROWS = 4096
WIDTHS = (1024, 4096, 16384)
F32 = 4


def layer_functions(layer: nnx.Module):
    """``(forward, forward_backward, params)`` of a layer as pure functions of
    ``(params, x)`` and ``(params, x, dy)``."""
    graphdef, params = nnx.split(layer, nnx.Param)

    def forward(params, x):
        return nnx.merge(graphdef, params)(x)

    def forward_backward(params, x, dy):
        y, vjp = jax.vjp(forward, params, x)
        return y, vjp(dy)

    return forward, forward_backward, params


def monarch_bytes(n: int, backward: bool) -> float:
    """Minimum bytes moved by a Monarch layer on (ROWS, n): see the module docstring."""
    forward = 4 * ROWS * n * F32
    return forward * (3.5 if backward else 1.0)


def bench_width(n: int, repeats: int, peaks: tuple[float, float], log) -> list[list[str]]:
    """The table rows of one width ``n``: ``nnx.Linear`` against ``MonarchLinear``, forward and
    forward+backward, with their floors from ``peaks`` (flop/s, bytes/s)."""
    key_x, key_dy = jax.random.split(jax.random.key(n))
    x = jax.random.normal(key_x, (ROWS, n), jnp.float32)
    dy = jax.random.normal(key_dy, (ROWS, n), jnp.float32)
    peak_flops, peak_bytes = peaks
    layers = {"nnx.Linear": nnx.Linear(n, n, rngs=nnx.Rngs(0)), "MonarchLinear": MonarchLinear(n, n, rngs=nnx.Rngs(0))}
    params = {"nnx.Linear": n * n + n, "MonarchLinear": monarch.param_count(n, n) + n}
    flops = {name: 2 * ROWS * (count - n) for name, count in params.items()}
    times = {}
    for name, layer in layers.items():
        forward, forward_backward, p = layer_functions(layer)
        log(f"n={n}: {name} forward ...")
        fwd = measure(forward, p, x, repeats=repeats)
        log(f"n={n}: {name} forward+backward ...")
        both = measure(forward_backward, p, x, dy, repeats=repeats)
        times[name] = (fwd, both)
    rows = []
    for name in layers:
        fwd, both = times[name]
        base_fwd, base_both = times["nnx.Linear"]
        f = flops[name]
        if name == "MonarchLinear":
            floor = [max(f * k / peak_flops, monarch_bytes(n, k > 1) / peak_bytes) for k in (1, 3)]
        else:
            floor = [f * k / peak_flops for k in (1, 3)]
        rows.append([
            str(n), name, f"{params[name]:,}", fmt_ms(fwd), fmt_ms(both),
            fmt_ratio(base_fwd.seconds, fwd.seconds), fmt_ratio(base_both.seconds, both.seconds),
            fmt_ratio(flops["nnx.Linear"], f),
            f"{f / fwd.seconds / 1e9:.0f}", f"{3 * f / both.seconds / 1e9:.0f}",
            f"{1e3 * floor[0]:.1f} / {1e3 * floor[1]:.1f}",
        ])
    return rows


def breakdown(n: int, repeats: int, read_bytes: float) -> list[list[str]]:
    """Time of each step of ``ssm.monarch.matmul`` on (ROWS, n), run alone: the three
    rearranges (data moves) and the two batched block products."""
    (b, p, q), (_, _, s) = monarch.factor_shapes(n, n)
    x = jax.random.normal(jax.random.key(0), (ROWS, n), jnp.float32)
    R = jax.random.normal(jax.random.key(1), (b, p, q), jnp.float32)
    L = jax.random.normal(jax.random.key(2), (q, b, s), jnp.float32)
    xt = rearrange(x, "r (a c) -> a r c", a=b)
    h = jnp.einsum("arc,acj->arj", xt, R)
    ht = rearrange(h, "a r j -> j r a")
    z = jnp.einsum("jra,jat->jrt", ht, L)
    steps = [
        ("rearrange x: r (a c) -> a r c", lambda x: rearrange(x, "r (a c) -> a r c", a=b), (x,), 0),
        ("blocks of R: arc,acj->arj", lambda xt, R: jnp.einsum("arc,acj->arj", xt, R), (xt, R), b * p * q),
        ("rearrange h: a r j -> j r a", lambda h: rearrange(h, "a r j -> j r a"), (h,), 0),
        ("blocks of L: jra,jat->jrt", lambda ht, L: jnp.einsum("jra,jat->jrt", ht, L), (ht, L), q * b * s),
        ("rearrange z: j r t -> r (t j)", lambda z: rearrange(z, "j r t -> r (t j)"), (z,), 0),
        ("all of matmul", monarch.matmul, (x, (R, L)), monarch.param_count(n, n)),
    ]
    rows = []
    for name, fn, args, macs in steps:
        t = measure(fn, *args, repeats=repeats)
        moved = 2 * ROWS * n * F32  # one activation read and one written
        rows.append([name, fmt_ms(t), f"{2 * ROWS * macs / t.seconds / 1e9:.0f}" if macs else "—",
                     f"{moved / t.seconds / 1e9:.1f}", f"{1e3 * moved / read_bytes:.1f}"])
    return rows


def run(widths, repeats: int) -> str:
    """The whole benchmark; returns its markdown."""
    start, load = time.perf_counter(), os.getloadavg()
    log = functools.partial(print, file=sys.stderr, flush=True)
    log("measuring the machine's ceilings ...")
    peaks = matmul_and_read_rates(repeats)
    rows = [row for n in widths for row in bench_width(n, repeats, peaks, log)]
    split_n = 4096 if 4096 in widths else widths[0]
    log(f"n={split_n}: breakdown ...")
    split = breakdown(split_n, repeats, peaks[1])
    header = ["n", "layer", "params", "forward ms", "fwd+bwd ms", "speedup fwd", "speedup fwd+bwd",
              "FLOP ratio", "fwd GFLOP/s", "fwd+bwd GFLOP/s", "floor ms fwd / fwd+bwd"]
    device = jax.devices()[0]
    return "\n".join([
        f"Backend `{jax.default_backend()}` ({device.device_kind}), {cpu_name()}, {os.cpu_count()} cores, "
        f"jax {jax.__version__}; {ROWS} rows, float32, square layers with bias, default nblocks "
        f"(sqrt n); median of {repeats} runs after compile and one warm-up.",
        "",
        f"Measured ceilings: float32 matmul {peaks[0] / 1e9:.0f} GFLOP/s, read bandwidth "
        f"{peaks[1] / 1e9:.1f} GB/s. Load average at start {load[0]:.2f}, at end {os.getloadavg()[0]:.2f}.",
        "",
        "Speedups are nnx.Linear time / this layer's time; the FLOP ratio is the speedup at equal "
        "efficiency. Floor = max(flops / matmul peak, min bytes / bandwidth).",
        "",
        markdown_table(header, rows),
        "",
        f"**Where the forward time goes** at n = {split_n} (each step of `ssm.monarch.matmul` "
        "compiled and run alone; GB/s counts one (rows, n) activation read and one written, "
        "and the last column is that traffic's time at the measured read bandwidth).",
        "",
        markdown_table(["step", "ms", "GFLOP/s", "GB/s moved", "ms at read bandwidth"], split),
        "",
        footnote(repeats, start),
    ])


def main(argv=None) -> None:
    """Command line: time Monarch against dense layers at each ``--widths`` and print the tables."""
    cli = parser(__doc__, repeats=3)
    cli.add_argument("--widths", type=int, nargs="+", default=list(WIDTHS), help="layer widths n (default: %(default)s)")
    args = cli.parse_args(argv)
    if args.repeats < 1 or any(n < 1 for n in args.widths):
        cli.error("--repeats and every width must be >= 1")
    emit(run(args.widths, args.repeats), args.out)


if __name__ == "__main__":
    main()
