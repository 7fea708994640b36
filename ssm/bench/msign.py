"""Newton–Schulz ``msign`` accuracy and speed, and Muon against AdamW on a toy task.

1. **Error vs steps.** For every schedule in ``linalg.COEFFS``: on a float32 Gaussian
   256x512 matrix, for steps 1..10, ``max_i |σ_i(msign(M)) - 1|`` with the singular
   values from numpy's SVD in float64. (``jordan`` does not converge by design: it
   lands in a band around 1.)
2. **Speed.** Jitted ``linalg.msign`` (default schedule ``polar_express``, its default
   8 steps) against the SVD polar factor ``linalg.polar``, float32, at (1024, 1024),
   (1024, 4096), (4096, 4096). FLOPs of msign, counted in the wide orientation
   (m <= n): per step ``A = X X^T`` 2 m^2 n, ``A^2`` 2 m^3, ``(bA + cA^2) X`` 2 m^2 n,
   so 4 m^2 n + 2 m^3; the rate is compared with the measured 2048^3 matmul peak. An
   SVD whose time, extrapolated as n^3 from the square 1024 one, exceeds
   ``SVD_LIMIT_S`` is skipped.
3. **Muon vs AdamW.** ``SequenceModel`` (s4d, d_model 32, 2 layers, d_state 16) on the
   copying task (l_noise 32, l_memorize 8), batch 32, the same number of steps and
   batches for each optimizer, a few learning rates each (constant; the best by final
   training loss is reported, with its loss curve). Muon: ``ssm.optim.muon`` with
   ``ssm.groups.param_labels(model)`` (its AdamW groups take the same learning rate);
   AdamW: ``optax.adamw`` (weight decay 0 for both). Loss: mean cross-entropy over the
   scored positions (targets != -100), as ``ssm.train.objectives``.

Run: ``python -m ssm.bench.msign [--repeats 3] [--steps 300] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ssm import data, groups, linalg
from ssm.bench.common import cpu_name, emit, fmt_ms, fmt_ratio, markdown_table, matmul_and_read_rates, measure
from ssm.layers import SequenceModel
from ssm.optim import muon
from ssm.train.objectives import objective

ERROR_SHAPE = (256, 512)
MAX_STEPS = 10
SPEED_SHAPES = ((1024, 1024), (1024, 4096), (4096, 4096))
SVD_LIMIT_S = 60.0
LRS = {"muon": (3e-3, 1e-2, 3e-2), "adamw": (1e-3, 3e-3, 1e-2)}
BATCH = 32
LOG_EVERY = 50


# ------------------------------------------------------------------ error vs steps


def error_table() -> str:
    M = jax.random.normal(jax.random.PRNGKey(0), ERROR_SHAPE, jnp.float32)
    rows = []
    for name in linalg.COEFFS:
        row = [f"`{name}` ({len(linalg.COEFFS[name])} rows)"]
        for steps in range(1, MAX_STEPS + 1):
            X = np.asarray(linalg.msign(M, steps=steps, coeffs=name), np.float64)
            if not np.all(np.isfinite(X)):
                row.append("nan")  # diverged
                continue
            s = np.linalg.svd(X, compute_uv=False)
            row.append(f"{np.max(np.abs(s - 1)):.2g}")
        rows.append(row)
    return markdown_table(["schedule"] + [str(k) for k in range(1, MAX_STEPS + 1)], rows)


# ------------------------------------------------------------------------- speed


def msign_flops(m: int, n: int, steps: int) -> float:
    m, n = min(m, n), max(m, n)
    return steps * (4 * m * m * n + 2 * m**3)


def speed_table(repeats: int, peak: float) -> tuple[str, list[str]]:
    steps = len(linalg.schedule("polar_express")[0])
    rows, notes = [], []
    svd_1024 = None
    for m, n in SPEED_SHAPES:
        M = jax.random.normal(jax.random.PRNGKey(1), (m, n), jnp.float32)
        big = m * n >= 4096 * 4096
        t_ns = measure(linalg.msign, M, repeats=1 if big else repeats)
        t_svd = None
        estimate = None if svd_1024 is None else svd_1024 * (max(m, n) / 1024) ** 3
        if m == n == 1024 or estimate is None or estimate <= SVD_LIMIT_S:
            t_svd = measure(linalg.polar, M, repeats=1 if big else repeats)
            if m == n == 1024:
                svd_1024 = t_svd.seconds
        else:
            notes.append(f"SVD at ({m}, {n}) skipped: extrapolated {estimate:.0f} s > {SVD_LIMIT_S:.0f} s.")
        flops = msign_flops(m, n, steps)
        rate = flops / t_ns.seconds
        rows.append([f"({m}, {n})", fmt_ms(t_ns), fmt_ms(t_svd),
                     fmt_ratio(t_svd and t_svd.seconds, t_ns.seconds),
                     f"{flops / 1e9:.1f}", f"{rate / 1e9:.1f}", f"{100 * rate / peak:.0f}%"])
        print(f"# speed ({m}, {n}) done", file=sys.stderr, flush=True)
    header = ["shape", f"msign ms ({steps} steps)", "SVD polar ms", "SVD / msign",
              "msign GFLOP", "msign GFLOP/s", "% of matmul peak"]
    return markdown_table(header, rows), notes


# -------------------------------------------------------------------- Muon vs AdamW


def train(ds, info, optimizer: str, lr: float, steps: int) -> list[float]:
    """Per-step training losses of a fresh model (seed 0) on the same batches."""
    model = SequenceModel(d_model=32, n_layers=2, d_output=info.d_output, vocab_size=info.vocab_size,
                          layer="s4d", layer_kwargs={"d_state": 16}, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    if optimizer == "muon":
        tx = muon(lr, labels=groups.param_labels(model))
    else:
        tx = optax.adamw(lr, weight_decay=0.0)
    opt_state = tx.init(params)

    def loss_fn(params, batch):
        model = nnx.merge(graphdef, params, rest, copy=True)
        sums = objective("tokens", model(batch["inputs"], mask=batch["mask"]), batch)
        return sums["loss"] / jnp.maximum(sums["count"], 1.0)

    @jax.jit
    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for i in range(steps):
        batch = {k: jnp.asarray(v) for k, v in data.get_batch(ds["train"], i, BATCH, seed=0).items()}
        params, opt_state, loss = step(params, opt_state, batch)
        losses.append(loss)
    return [float(x) for x in losses]


def smooth(losses: list[float], at: int) -> float:
    """Mean training loss over the ``LOG_EVERY`` steps ending at step ``at``."""
    return float(np.mean(losses[max(0, at - LOG_EVERY):at]))


def muon_tables(steps: int) -> tuple[str, str, dict]:
    with tempfile.TemporaryDirectory() as cache:
        ds, info = data.load_task("copying", {"l_noise": 32, "l_memorize": 8}, cache_dir=cache,
                                  sizes={"train": 4096, "validation": 256, "test": 256})
        runs, sweep_rows, seconds = {}, [], {}
        for opt, lrs in LRS.items():
            for lr in lrs:
                start = time.perf_counter()
                losses = train(ds, info, opt, lr, steps)
                seconds[opt, lr] = time.perf_counter() - start
                runs[opt, lr] = losses
                sweep_rows.append([opt, f"{lr:g}", f"{smooth(losses, steps):.3f}", f"{losses[-1]:.3f}",
                                   f"{seconds[opt, lr]:.1f}"])
                print(f"# {opt} lr {lr:g}: {smooth(losses, steps):.3f}", file=sys.stderr, flush=True)
    sweep = markdown_table(["optimizer", "lr", f"mean loss, last {LOG_EVERY} steps", "final-step loss", "s"],
                           sweep_rows)
    best = {opt: min(lrs, key=lambda lr: smooth(runs[opt, lr], steps)) for opt, lrs in LRS.items()}
    marks = list(range(LOG_EVERY, steps + 1, LOG_EVERY))
    header = ["optimizer (best lr)"] + [f"step {s}" for s in marks]
    rows = [[f"{opt} ({best[opt]:g})"] + [f"{smooth(runs[opt, best[opt]], s):.3f}" for s in marks]
            for opt in LRS]
    curve = markdown_table(header, rows)
    return sweep, curve, {"seq_len": info.seq_len, "vocab": info.vocab_size}


# ---------------------------------------------------------------------------- run


def run(repeats: int, steps: int) -> str:
    matmul_peak, _ = matmul_and_read_rates(repeats)
    errors = error_table()
    print("# error table done", file=sys.stderr, flush=True)
    speed, notes = speed_table(repeats, matmul_peak)
    sweep, curve, task = muon_tables(steps)
    parts = [
        f"Machine: {cpu_name()}, {jax.device_count()} {jax.default_backend()} device(s), "
        f"JAX {jax.__version__}; measured float32 matmul peak {matmul_peak / 1e9:.1f} GFLOP/s.",
        "",
        f"### msign error vs steps: max |σ_i − 1|, float32 Gaussian {ERROR_SHAPE[0]}x{ERROR_SHAPE[1]}",
        "",
        "Rows past a schedule's table repeat its last row.",
        "",
        errors,
        "",
        "### msign vs SVD polar factor, float32, jitted (median ms)",
        "",
        speed,
    ]
    if notes:
        parts += [""] + [f"- {note}" for note in notes]
    parts += [
        "",
        f"### Muon vs AdamW: s4d, d_model 32, 2 layers, d_state 16; copying (L = {task['seq_len']}), "
        f"batch {BATCH}, {steps} steps",
        "",
        sweep,
        "",
        f"Loss curve of the best learning rate (mean training loss over the {LOG_EVERY} steps ending at):",
        "",
        curve,
    ]
    return "\n".join(parts)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    parser.add_argument("--steps", type=int, default=300, help="training steps per optimizer run")
    parser.add_argument("--out", help="also write the markdown to this file")
    args = parser.parse_args(argv)
    emit(run(args.repeats, args.steps), args.out)


if __name__ == "__main__":
    main()
