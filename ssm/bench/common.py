"""What every benchmark shares: one timing helper, the machine's matmul and memory
ceilings, and markdown formatting."""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ssm.train.devices import live_bytes

BUDGET_S = 10.0  # seconds of timed runs per measurement before the run count is cut
MiB = 2**20


class Timing(NamedTuple):
    """One :func:`measure` result: compile time, median seconds per run, whether the runs were capped by the
    time budget, XLA's temp and live bytes, the warm-up run's output, and XLA's count of the program's work
    (:func:`xla_cost`)."""

    compile_s: float
    seconds: float  # median over the timed runs
    capped: bool  # fewer runs than asked for, to stay within BUDGET_S
    temp_bytes: int | None  # XLA's temp allocation, None where the backend does not say
    output: Any  # of the warm-up run
    live_bytes: int | None = None  # ssm.train.devices.live_bytes of the compiled program
    flops: float | None = None  # XLA's cost analysis, None where the backend does not say
    bytes_accessed: float | None = None  # likewise


def xla_cost(compiled) -> tuple[float | None, float | None]:
    """XLA's own count of a compiled program's work, from its ``cost_analysis()``:
    ``(flops, bytes accessed)``. Flops count 2 per multiply-add and 1 per elementwise
    arithmetic op (exp and other transcendentals apart, not counted); bytes are every
    operand and result of the program's ops after fusion, read or written. Deterministic
    for a program and backend (no timing); None where the backend gives no analysis."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # one dict per program in older JAX
        analysis = analysis[0] if analysis else None
    if not analysis:
        return None, None
    return analysis.get("flops"), analysis.get("bytes accessed")


def measure(fn: Callable, *args, repeats: int) -> Timing:
    """Compile ``jax.jit(fn)`` for ``args`` (timed), run it once to warm up, then
    time ``repeats`` runs, each waited on with ``block_until_ready``; the median.
    Fewer runs (at least one) where the warm-up says they would exceed ``BUDGET_S``."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    analysis = compiled.memory_analysis()
    live = live_bytes(compiled)
    start = time.perf_counter()
    output = jax.block_until_ready(compiled(*args))
    runs = max(1, min(repeats, int(BUDGET_S / (time.perf_counter() - start))))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    temp = None if analysis is None else analysis.temp_size_in_bytes
    return Timing(compile_s, statistics.median(times), runs < repeats, temp, output, live, *xla_cost(compiled))


def value_and_grad_of(fn: Callable) -> Callable:
    """``*args -> (sum(fn(*args)**2), gradients with respect to every argument)``: the
    forward + backward program a benchmark times."""

    def value_and_grad(*args):
        loss = lambda *a: jnp.sum(fn(*a) ** 2)  # noqa: E731
        return jax.value_and_grad(loss, argnums=tuple(range(len(args))))(*args)

    return value_and_grad


def matmul_and_read_rates(repeats: int) -> tuple[float, float]:
    """The float32 peaks a roofline is drawn from: a 2048^3 matmul (flop/s) and the
    sum of a 256 MiB array (bytes/s), measured now."""
    n = 2048
    square = jnp.ones((n, n), jnp.float32)
    t_matmul = measure(lambda a: a @ a, square, repeats=repeats).seconds
    big = jnp.ones((64 * MiB,), jnp.float32)
    t_read = measure(jnp.sum, big, repeats=repeats).seconds
    return 2 * n**3 / t_matmul, big.nbytes / t_read


def cpu_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``"unknown CPU"`` where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            names = (line.split(":", 1)[1] for line in f if line.startswith("model name"))
            return next(names).strip()
    except (OSError, StopIteration):
        return "unknown CPU"


class Started(NamedTuple):
    """When a benchmark run began (``time.perf_counter``) and the 1-minute load average then."""

    time: float
    load: float


def started() -> Started:
    """Mark the start of a benchmark run, for :func:`run_header`."""
    return Started(time.perf_counter(), os.getloadavg()[0])


def run_header(details: str, run: Started) -> str:
    """The line a benchmark's table is published under: this machine and JAX, the run's
    ``details``, the load average at ``run``'s start and now, and the wall time since."""
    return (f"{cpu_name()}, {os.cpu_count()} cores, jax {jax.__version__}, backend {jax.default_backend()}; "
            f"{details}; load average {run.load:.2f} at start, {os.getloadavg()[0]:.2f} at end; "
            f"wall time {time.perf_counter() - run.time:.0f} s.")


def fmt_ms(t: Timing | None) -> str:
    """Milliseconds, with a dagger where fewer runs than asked were timed."""
    return "—" if t is None else f"{1e3 * t.seconds:.1f}" + ("†" if t.capped else "")


def fmt_mib(t: Timing | None) -> str:
    """A timing's temp allocation in MiB with one decimal, or ``"—"`` when unknown."""
    return "—" if t is None or t.temp_bytes is None else f"{t.temp_bytes / MiB:.1f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    """``a / b`` as ``"2.5×"``, or ``"—"`` when either is missing or zero."""
    return "—" if not a or not b else f"{a / b:.1f}×"


def max_rel_diff(a, b) -> str:
    """``max |a - b| / max |b|`` over the leaves of two pytrees of arrays, worst leaf, as ``"1.2e-07"``."""
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b))
    worst = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))) / np.max(np.abs(np.asarray(y))))
                for x, y in pairs)
    return f"{worst:.1e}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table of ``rows`` (lists of cell strings) under ``header``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def parser(doc: str, repeats: int) -> argparse.ArgumentParser:
    """A benchmark's command line: its docstring as help, ``--repeats`` and ``--out``."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=repeats,
                   help="timed runs per measurement, median reported (default: %(default)s)")
    p.add_argument("--out", help="also write the markdown to this file")
    return p


def footnote(repeats: int, start: float) -> str:
    """The closing line of a report: what † means, and the wall time since ``start``."""
    return (f"† fewer runs than {repeats} (down to one) to keep a measurement within {BUDGET_S:.0f} s. "
            f"Total wall time {time.perf_counter() - start:.0f} s.")


def emit(report: str, out: str | None) -> None:
    """Print a benchmark's markdown and, if asked, write it to ``out``."""
    print(report)
    if out:
        with open(out, "w") as f:
            f.write(report + "\n")
