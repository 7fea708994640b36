"""Mamba-2's chunked SSD with B and C per group, against B and C expanded to every head.

:func:`ssm.ssd.ssd_chunked` keeps B and C at (batch, length, G, N): the scores
``C_t . B_s`` inside each chunk are computed once per group and used by the group's H/G
heads, the chunk states contract B per group and the readout of the entering states C
per group, as state-spaces/mamba's Triton path does (``_bmm_chunk_fwd`` over ``ngroups``,
the chunk scan reading head h's group ``h // (H/G)``). The baseline is what
``ssd_chunked`` did before: B and C repeated to every head, a (batch, length, H, N) copy
of each, and the scores computed H/G times (:func:`expanded_to_heads`: the same
``ssd_chunked`` given one group per head, so the two programs differ by the expansion
alone).

Sizes: the mixer of Mamba-2-130M (d_model 768, expand 2: d_inner 1536; headdim 64: H = 24
heads; ngroups G = 1; d_state N = 128; chunk 256), batch 2, lengths 1024 and 2048,
float32. Inputs as the layer sees them at its initialization: x normal, dt log-uniform
in [1e-3, 0.1] (Mamba-2's dt_min and dt_max), A = -U(1, 16) (its A_init_range), B and C
normal.

Each form is measured forward (y) and forward + backward (``value_and_grad`` of
``sum(y**2)`` with respect to x, dt, A, B and C) by :func:`ssm.bench.common.measure`
(compiled once, one warm-up, median of the timed runs), with the compiled program's
temporaries (XLA's memory analysis) and XLA's own count of its flops and bytes accessed
(:func:`ssm.bench.common.xla_cost`; deterministic, no timing). Ratios are baseline / ours.

    python -m ssm.bench.ssd                     # Mamba-2-130M's sizes, batch 2, lengths 1024 and 2048
    python -m ssm.bench.ssd --groups 4          # four groups of six heads
"""

from __future__ import annotations

import functools
import math
import sys
from typing import Callable

import jax
import jax.numpy as jnp
from einops import repeat

from ssm.bench.common import (Timing, emit, fmt_mib, fmt_ms, fmt_ratio, footnote, markdown_table, max_rel_diff,
                              measure, parser, run_header, started, value_and_grad_of)
from ssm.checks import check_positive_int
from ssm.ssd import ssd_chunked

SEED = 0
#: Mamba-2-130M's SSD: heads, headdim, groups, d_state, chunk size.
SIZES = dict(heads=24, headdim=64, groups=1, d_state=128, chunk_size=256)
BATCH, LENGTHS = 2, (1024, 2048)
FORMS = ("expanded to heads (baseline)", "per group")


def inputs(key, batch: int, length: int, heads: int, headdim: int, groups: int, d_state: int):
    """Float32 SSD inputs ``(x, dt, A, B, C)`` as a freshly initialized Mamba-2 layer makes them.

    Returns:
      x (batch, length, heads, headdim), dt (batch, length, heads) log-uniform in
      [1e-3, 0.1], A (heads,) uniform in [-16, -1], B and C (batch, length, groups, d_state).
    """
    k = jax.random.split(key, 5)
    dt = jnp.exp(jax.random.uniform(k[1], (batch, length, heads), minval=math.log(1e-3), maxval=math.log(0.1)))
    return (jax.random.normal(k[0], (batch, length, heads, headdim)), dt,
            -jax.random.uniform(k[2], (heads,), minval=1.0, maxval=16.0),
            jax.random.normal(k[3], (batch, length, groups, d_state)),
            jax.random.normal(k[4], (batch, length, groups, d_state)))


def per_group(chunk_size: int) -> Callable:
    """``(x, dt, A, B, C) -> y``: :func:`ssm.ssd.ssd_chunked` as it is."""
    return lambda x, dt, A, B, C: ssd_chunked(x, dt, A, B, C, chunk_size)


def expanded_to_heads(chunk_size: int) -> Callable:
    """``(x, dt, A, B, C) -> y``: the baseline, B and C repeated to one group per head
    (head h reads group ``h // (H/G)``) before :func:`ssm.ssd.ssd_chunked`; B's and C's
    gradients sum over the copies. Equal to :func:`per_group`'s result."""

    def fn(x, dt, A, B, C):
        B, C = (repeat(v, "b l g n -> b l (g r) n", r=x.shape[2] // v.shape[2]) for v in (B, C))
        return ssd_chunked(x, dt, A, B, C, chunk_size)

    return fn


def measure_length(length: int, batch: int, sizes: dict, repeats: int, log) -> list[dict]:
    """Both forms, forward and forward + backward, at one length: one dict per mode and
    form, ``{"length", "mode", "form", "timing"}`` (a :class:`~ssm.bench.common.Timing`),
    the baseline first in each mode."""
    chunk = sizes["chunk_size"]
    args = inputs(jax.random.key(SEED), batch, length, sizes["heads"], sizes["headdim"], sizes["groups"],
                  sizes["d_state"])
    results = []
    for mode, wrap in (("fwd", lambda f: f), ("fwd+bwd", value_and_grad_of)):
        for form, fn in zip(FORMS, (expanded_to_heads(chunk), per_group(chunk))):
            log(f"L={length} {mode}: {form} ...")
            results.append({"length": length, "mode": mode, "form": form,
                            "timing": measure(wrap(fn), *args, repeats=repeats)})
    return results


def _giga(value: float | None) -> str:
    return "—" if value is None else f"{value / 1e9:.2f}"


HEADER = ["B and C", "L", "mode", "ms", "baseline/ours time", "temp MiB", "baseline/ours memory",
          "XLA GFLOP", "baseline/ours GFLOP", "XLA GB accessed", "baseline/ours GB", "max rel. diff"]


def table_row(result: dict, base: Timing) -> list[str]:
    """One result of :func:`measure_length` as a table row, against its mode's baseline ``base``."""
    t = result["timing"]
    return [result["form"], str(result["length"]), result["mode"], fmt_ms(t), fmt_ratio(base.seconds, t.seconds),
            fmt_mib(t), fmt_ratio(base.temp_bytes, t.temp_bytes), _giga(t.flops), fmt_ratio(base.flops, t.flops),
            _giga(t.bytes_accessed), fmt_ratio(base.bytes_accessed, t.bytes_accessed),
            "—" if t is base else max_rel_diff(t.output, base.output)]


def main(argv=None) -> list[dict]:
    """Command line: both forms' time, temporaries and XLA cost at each ``--lengths``, as
    a markdown table. Returns the results of :func:`measure_length`, in the table's order."""
    p = parser(__doc__, repeats=5)
    p.add_argument("--batch", type=int, default=BATCH, help="rows (default: %(default)s)")
    p.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS), help="sequence lengths (default: %(default)s)")
    for name, value in SIZES.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=value, help=f"(default: {value}, Mamba-2-130M)")
    args = p.parse_args(argv)
    for flag in ("batch", "repeats", *SIZES):
        check_positive_int(f"--{flag.replace('_', '-')}", getattr(args, flag))
    for length in args.lengths:
        check_positive_int("--lengths", length)
    sizes = {name: getattr(args, name) for name in SIZES}
    if sizes["heads"] % sizes["groups"]:
        raise ValueError(f"--heads={sizes['heads']} must be a multiple of --groups={sizes['groups']}")
    run = started()
    log = functools.partial(print, file=sys.stderr, flush=True)
    results, rows = [], []
    for length in args.lengths:
        measured = measure_length(length, args.batch, sizes, args.repeats, log)
        for i, result in enumerate(measured):
            rows.append(table_row(result, measured[i - i % len(FORMS)]["timing"]))
        results += measured
    details = (f"batch {args.batch}, {sizes['heads']} heads of {sizes['headdim']}, {sizes['groups']} group(s), "
               f"d_state {sizes['d_state']}, chunk {sizes['chunk_size']}, float32; median of {args.repeats} runs")
    report = f"{run_header(details, run)}\n\n{markdown_table(HEADER, rows)}"
    if any(r["timing"].capped for r in results):
        report += "\n\n" + footnote(args.repeats, run.time)
    emit(report, args.out)
    return results


if __name__ == "__main__":
    main()
