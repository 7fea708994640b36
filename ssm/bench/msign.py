"""Newton–Schulz ``msign`` accuracy and speed, and Muon against AdamW on a toy task.

1. **Error vs steps.** For every schedule in ``linalg.COEFFS`` (Frobenius
   normalization), and ``polar_express`` / ``polar_express_5`` with
   ``normalize="schatten8"``: on a float32 Gaussian 256x512 matrix, for steps 1..10,
   ``max_i |σ_i(msign(M)) - 1|`` with the singular values from numpy's SVD in float64.
   (``jordan`` does not converge by design: it lands in a band around 1; ``su``
   diverges past its 6 rows, so ``linalg.schedule`` refuses more: "—" in the table.)
2. **Speed.** Jitted ``linalg.msign`` (default schedule ``polar_express``, its default
   8 steps) against the SVD polar factor ``linalg.polar``, float32, at (1024, 1024),
   (1024, 4096), (4096, 4096). FLOPs of msign, counted in the wide orientation
   (m <= n): per step ``A = X X^T`` 2 m^2 n, ``A^2`` 2 m^3, ``(bA + cA^2) X`` 2 m^2 n,
   so 4 m^2 n + 2 m^3; the rate is compared with the measured 2048^3 matmul peak. An
   SVD whose time, extrapolated as n^3 from the square 1024 one, exceeds
   ``SVD_LIMIT_S`` is skipped.
3. **mclip.** ``linalg.mclip`` against ``linalg.svd_clip`` at its default 12 steps,
   both forms, float32 and bf16 iterations (see ``mclip_table``).
4. **Muon vs AdamW.** ``SequenceModel`` (s4d, d_model 32, 2 layers, d_state 16) on the
   copying task (l_noise 32, l_memorize 8), batch 32, the same number of steps and
   batches for each optimizer, a few learning rates each (constant; the best by final
   training loss is reported, with its loss curve). Muon: ``ssm.optim.muon`` with
   ``ssm.groups.param_labels(model)`` (its AdamW groups take the same learning rate);
   AdamW: ``optax.adamw`` (weight decay 0 for both). Loss: mean cross-entropy over the
   scored positions (targets != -100), as ``ssm.train.objectives``.

Figures (matplotlib, written to ``--figures``, default ``docs/figures``):
``msign_error_vs_steps.png`` (1, log scale) and ``muon_vs_adamw.png`` (4, the
training loss of every run, a running mean over ``SMOOTH`` steps, log scale).

Run: ``python -m ssm.bench.msign [--repeats 3] [--steps 300] [--out FILE] [--figures DIR]``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ssm import data, groups, linalg
from ssm.bench.common import (cpu_name, emit, fmt_ms, fmt_ratio, markdown_table, matmul_and_read_rates,
                              measure, parser)
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
SMOOTH = 10  # running mean of the plotted loss curves
ERROR_RUNS = [(name, "frobenius") for name in linalg.COEFFS] + [
    ("polar_express", "schatten8"), ("polar_express_5", "schatten8")]
ERROR_FIGURE, LOSS_FIGURE = "msign_error_vs_steps.png", "muon_vs_adamw.png"


# ------------------------------------------------------------------ error vs steps


def msign_errors() -> dict[tuple[str, str], list[float]]:
    """``max_i |σ_i - 1|`` after 1..MAX_STEPS steps per (schedule, normalize) of
    ``ERROR_RUNS``; NaN where the output is not finite (diverged), or where
    ``linalg.schedule`` refuses the step count (a last row that diverges repeated)."""
    M = jax.random.normal(jax.random.PRNGKey(0), ERROR_SHAPE, jnp.float32)
    errors = {}
    for name, normalize in ERROR_RUNS:
        errors[name, normalize] = []
        for steps in range(1, MAX_STEPS + 1):
            try:
                linalg.schedule(name, steps)
            except ValueError:
                errors[name, normalize].append(np.nan)
                continue
            X = np.asarray(linalg.msign(M, steps=steps, coeffs=name, normalize=normalize), np.float64)
            ok = np.all(np.isfinite(X))
            errors[name, normalize].append(float(np.max(np.abs(np.linalg.svd(X, compute_uv=False) - 1))) if ok else np.nan)
    return errors


def _label(name: str, normalize: str, quote: str = "") -> str:
    label = f"{quote}{name}{quote} ({len(linalg.COEFFS[name])} rows)"
    return label if normalize == "frobenius" else f"{label}, {normalize}"


def error_table(errors: dict[tuple[str, str], list[float]]) -> str:
    """The markdown table of msign's error ``max |σ_i − 1|`` per schedule and step count."""
    rows = [[_label(name, normalize, "`")] + ["—" if np.isnan(e) else f"{e:.2g}" for e in errs]
            for (name, normalize), errs in errors.items()]
    return markdown_table(["schedule"] + [str(k) for k in range(1, MAX_STEPS + 1)], rows)


# ------------------------------------------------------------------------- mclip

MCLIP_INTERVALS = ((0.0, 1.0), (0.1, 1.0), (0.5, 2.0), (1.0, 10.0), (0.1, 10.0))


def _spectrum_matrix(key, m: int, n: int, s) -> jax.Array:
    """``U diag(s) V^T`` (m, n) with Haar-random orthonormal U, V."""
    ku, kv = jax.random.split(key)
    U, _ = jnp.linalg.qr(jax.random.normal(ku, (m, m)))
    V, _ = jnp.linalg.qr(jax.random.normal(kv, (n, n)))
    return (U * jnp.asarray(s, jnp.float32)) @ V[:, :m].T


def mclip_table() -> str:
    """Relative Frobenius error of ``linalg.mclip`` against the clip by NumPy's float64 SVD
    at its default 12 steps: both forms, float32 and bf16 iterations, on a 64x128 matrix
    with σ log-spaced over [1e-2, 1e2] and on a Gaussian 64x128 / 12 (σ about [0.3, 1.6])."""
    wide = _spectrum_matrix(jax.random.key(1), 64, 128, np.geomspace(1e2, 1e-2, 64))
    gauss = jax.random.normal(jax.random.key(2), (64, 128), jnp.float32) / 12
    rows = []
    for label, M, intervals in (("σ in [1e-2, 1e2]", wide, MCLIP_INTERVALS), ("Gaussian", gauss, ((0.0, 1.0),))):
        U, sv, Vh = np.linalg.svd(np.asarray(M, np.float64), full_matrices=False)
        for lo, hi in intervals:
            want = (U * np.clip(sv, lo, hi)) @ Vh
            cells = []
            for dtype in (jnp.float32, jnp.bfloat16):
                for form in linalg.MCLIP_FORMS:
                    out = np.asarray(linalg.mclip(M, lo, hi, form=form, compute_dtype=dtype).astype(jnp.float32),
                                     np.float64)
                    cells.append(f"{np.linalg.norm(out - want) / np.linalg.norm(want):.1e}")
            rows.append([label, f"[{lo:g}, {hi:g}]", *cells])
    header = ["matrix", "clip", *(f"{f} {d}" for d in ("f32", "bf16") for f in linalg.MCLIP_FORMS)]
    return markdown_table(header, rows)


# ------------------------------------------------------------------------- speed


def msign_flops(m: int, n: int, steps: int) -> float:
    """FLOPs of ``steps`` Newton–Schulz steps on an (m, n) matrix (wide: ``A = X X^T`` is min(m, n) square)."""
    m, n = min(m, n), max(m, n)
    return steps * (4 * m * m * n + 2 * m**3)


def speed_table(repeats: int, peak: float) -> tuple[str, list[str]]:
    """The markdown table of msign against the SVD's polar factor per shape, and notes on the shapes the SVD
    was skipped for."""
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


def muon_runs(steps: int) -> tuple[dict, dict, dict]:
    """Per-step losses and wall seconds of every (optimizer, lr) of ``LRS``, and the task's sizes."""
    with tempfile.TemporaryDirectory() as cache:
        ds, info = data.load_task("copying", {"l_noise": 32, "l_memorize": 8}, cache_dir=cache,
                                  sizes={"train": 4096, "validation": 256, "test": 256})
        runs, seconds = {}, {}
        for opt, lrs in LRS.items():
            for lr in lrs:
                start = time.perf_counter()
                runs[opt, lr] = train(ds, info, opt, lr, steps)
                seconds[opt, lr] = time.perf_counter() - start
                print(f"# {opt} lr {lr:g}: {smooth(runs[opt, lr], steps):.3f}", file=sys.stderr, flush=True)
    return runs, seconds, {"seq_len": info.seq_len, "vocab": info.vocab_size}


def best_lrs(runs: dict, steps: int) -> dict[str, float]:
    """Per optimizer, the learning rate with the lowest mean loss over the last ``LOG_EVERY`` steps."""
    return {opt: min(lrs, key=lambda lr: smooth(runs[opt, lr], steps)) for opt, lrs in LRS.items()}


def muon_tables(runs: dict, seconds: dict, steps: int) -> tuple[str, str]:
    """The markdown tables of the Muon/AdamW learning-rate sweep and of the loss curves at each optimizer's
    best rate."""
    sweep_rows = [[opt, f"{lr:g}", f"{smooth(runs[opt, lr], steps):.3f}", f"{runs[opt, lr][-1]:.3f}",
                   f"{seconds[opt, lr]:.1f}"] for opt, lrs in LRS.items() for lr in lrs]
    sweep = markdown_table(["optimizer", "lr", f"mean loss, last {LOG_EVERY} steps", "final-step loss", "s"],
                           sweep_rows)
    best = best_lrs(runs, steps)
    marks = list(range(LOG_EVERY, steps + 1, LOG_EVERY))
    header = ["optimizer (best lr)"] + [f"step {s}" for s in marks]
    rows = [[f"{opt} ({best[opt]:g})"] + [f"{smooth(runs[opt, best[opt]], s):.3f}" for s in marks]
            for opt in LRS]
    curve = markdown_table(header, rows)
    return sweep, curve


# -------------------------------------------------------------------------- figures


def write_figures(errors: dict, runs: dict, steps: int, directory: str) -> list[str]:
    """The two PNGs (error vs steps, loss curves) in ``directory``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    paths = [os.path.join(directory, ERROR_FIGURE), os.path.join(directory, LOSS_FIGURE)]

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ks = np.arange(1, MAX_STEPS + 1)
    colors = {name: f"C{i}" for i, name in enumerate(linalg.COEFFS)}  # a renormalized run: its schedule's color
    for (name, normalize), errs in errors.items():
        frob = normalize == "frobenius"
        ax.semilogy(ks, errs, color=colors[name], marker="o" if frob else "x", markersize=3 if frob else 6,
                    linestyle="-" if frob else "--", label=_label(name, normalize))
    ax.set_ylim(1e-7, 10)  # a diverging schedule leaves the plot upwards
    ax.set_xticks(ks)
    ax.set_xlabel("Newton–Schulz steps (past a table's rows: its last row repeated)")
    ax.set_ylabel("max |σ_i − 1|")
    ax.set_title(f"msign error, float32 Gaussian {ERROR_SHAPE[0]}x{ERROR_SHAPE[1]}")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(paths[0], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    best = best_lrs(runs, steps)
    colors = {"muon": "tab:blue", "adamw": "tab:orange"}
    styles = (":", "--", "-")  # by the learning rate's place in LRS, ascending
    for (opt, lr), losses in runs.items():
        mean = np.convolve(losses, np.ones(SMOOTH) / SMOOTH, mode="valid")
        is_best = lr == best[opt]
        ax.semilogy(np.arange(SMOOTH, len(losses) + 1), mean, color=colors[opt], linewidth=2 if is_best else 1,
                    linestyle=styles[sorted(LRS[opt]).index(lr) % len(styles)], alpha=1.0 if is_best else 0.6,
                    label=f"{opt} lr {lr:g}" + (" (best)" if is_best else ""))
    ax.set_xlabel("training step")
    ax.set_ylabel(f"training loss (running mean of {SMOOTH})")
    ax.set_title("Muon vs AdamW: s4d on the copying task")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(paths[1], dpi=100)
    plt.close(fig)
    return paths


# ---------------------------------------------------------------------------- run


def run(repeats: int, steps: int, figures: str | None) -> str:
    """Every section of the msign benchmark as markdown (and its figures, if ``figures`` names a folder)."""
    matmul_peak, _ = matmul_and_read_rates(repeats)
    errors = msign_errors()
    clips = mclip_table()
    print("# error tables done", file=sys.stderr, flush=True)
    speed, notes = speed_table(repeats, matmul_peak)
    runs, seconds, task = muon_runs(steps)
    sweep, curve = muon_tables(runs, seconds, steps)
    paths = write_figures(errors, runs, steps, figures) if figures else None
    parts = [
        f"Machine: {cpu_name()}, {jax.device_count()} {jax.default_backend()} device(s), "
        f"JAX {jax.__version__}; measured float32 matmul peak {matmul_peak / 1e9:.1f} GFLOP/s.",
        "",
        f"### msign error vs steps: max |σ_i − 1|, float32 Gaussian {ERROR_SHAPE[0]}x{ERROR_SHAPE[1]}",
        "",
        "Rows past a schedule's table repeat its last row; — where that diverges (`su`, refused by `linalg.schedule`).",
        "",
        error_table(errors),
        "",
        f"### mclip vs SVD clip: relative error at the default {linalg.MCLIP_STEPS} steps (`polar_express`)",
        "",
        clips,
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
    if paths:
        parts += ["", f"![msign error vs steps]({paths[0]})", "", f"![Muon vs AdamW training loss]({paths[1]})"]
    return "\n".join(parts)


def main(argv=None) -> None:
    """Command line: run the msign benchmark and print (or ``--out``) its report."""
    cli = parser(__doc__, repeats=3)
    cli.add_argument("--steps", type=int, default=300, help="training steps per optimizer run")
    cli.add_argument("--figures", default="docs/figures", metavar="DIR",
                     help="write the PNG plots to this folder ('' for none; default docs/figures)")
    args = cli.parse_args(argv)
    if args.repeats < 1 or args.steps < 1:
        cli.error("--repeats and --steps must be >= 1")
    emit(run(args.repeats, args.steps, args.figures), args.out)


if __name__ == "__main__":
    main()
