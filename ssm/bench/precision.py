"""Mixed precision against float32: one experiment trained twice from the same seed,
once in float32 and once with ``model.dtype=bfloat16`` (bf16 activations; float32
parameters, optimizer state, SSM state and loss), the loss curves side by side.

    python -m ssm.bench.precision                       # configs/default.yaml
    python -m ssm.bench.precision --config configs/mqar/mamba.yaml --set trainer.steps=300

Each run is a normal run folder under ``--workdir`` (``float32/`` and ``bfloat16/``),
so a second call reuses finished runs. Prints a markdown table (train loss at every
logged step, validation and test results, throughput) and writes ``precision.png``.
"""

from __future__ import annotations

import json
import pathlib
import time

from ssm.bench.common import emit, markdown_table, parser

DTYPES = ("float32", "bfloat16")


def run_pair(config_path: str, overrides: list[str], workdir: pathlib.Path) -> dict[str, dict]:
    """Train the experiment once per entry of :data:`DTYPES`; their summaries and records."""
    from ssm.train import load_config, train_and_evaluate

    out = {}
    for dtype in DTYPES:
        config = load_config(config_path, [*overrides, f"model.dtype={dtype}"])
        folder = workdir / dtype
        summary = train_and_evaluate(config, folder)
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        out[dtype] = {"summary": summary, "records": rows}
    return out


def curve(records: list[dict], split: str, key: str = "loss") -> dict[int, float]:
    """``{step: value}`` of ``key`` in the metric records of ``split``."""
    return {r["step"]: r[key] for r in records if r["split"] == split and key in r}


def report(runs: dict[str, dict], command: str) -> str:
    """The markdown report of a float32/bf16 pair of runs: losses per step, their ratio, accuracies and
    totals."""
    f32, bf16 = (runs[d] for d in DTYPES)
    train = [curve(r["records"], "train") for r in (f32, bf16)]
    validation = [curve(r["records"], "validation", "accuracy") for r in (f32, bf16)]
    rows = []
    for step in sorted(train[0]):
        acc = [v.get(step) for v in validation]
        rows.append([str(step), *(f"{t.get(step, float('nan')):.4g}" for t in train),
                     f"{train[1].get(step, float('nan')) / train[0][step]:.2f}",
                     *("" if a is None else f"{a:.4f}" for a in acc)])
    table = markdown_table(["step", "float32 train loss", "bf16 train loss", "bf16 / float32",
                            "float32 val. acc", "bf16 val. acc"], rows)
    facts = []
    for dtype, run in runs.items():
        s = run["summary"]
        test = s["final"]["test"]
        facts.append(f"- `{dtype}`: test loss {test['loss']:.4g}"
                     + (f", accuracy {test['accuracy']:.4f}" if "accuracy" in test else "")
                     + f"; {s['train_tokens_per_s']:,.0f} train tokens/s; {s['wall_time_s']:.0f} s in all.")
    return "\n".join([f"Command: `{command}`.", "", table, "", *facts])


def plot(runs: dict[str, dict], path: pathlib.Path) -> None:
    """Plot the training loss of both runs to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for dtype, style in zip(DTYPES, ("-", "--")):
        points = sorted(curve(runs[dtype]["records"], "train").items())
        ax.plot(*zip(*points), style, label=f"{dtype} (train)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"{runs[DTYPES[0]]['summary']['name']}: float32 vs bf16 activations")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> None:
    """Command line: train a config with float32 and bf16 activations and report the difference."""
    p = parser(__doc__, repeats=1)
    p.add_argument("--config", default=None, help="YAML experiment (default: the shipped default config)")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--workdir", default="runs/bench/precision", help="where the two run folders go")
    args = p.parse_args(argv)
    from ssm.train.shipped import resolve_config

    start = time.perf_counter()
    workdir = pathlib.Path(args.workdir)
    runs = run_pair(str(resolve_config(args.config)), args.set, workdir)
    plot(runs, workdir / "precision.png")
    command = " ".join(["python -m ssm.bench.precision", *(["--config", args.config] if args.config else []),
                        *(["--set", *args.set] if args.set else [])])
    emit(report(runs, command) + f"\n\nPlot: {workdir / 'precision.png'}. Wall time {time.perf_counter() - start:.0f} s.",
         args.out)


if __name__ == "__main__":
    main()
