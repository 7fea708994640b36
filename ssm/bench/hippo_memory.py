"""HiPPO online reconstruction: how well each measure's state remembers a signal.

Feed band-limited white noise (``ssm.hippo_online.white_signal``) through the online
recurrence of each measure (``online_coefficients``, bilinear), read the history back from
the last state (``reconstruction_basis``), and report the RMSE over what the measure is
meant to remember (``memory_mask``: LegS and LagT the whole history, LegT and FouT the last
window), averaged over seeds.

The defaults are the setting of ``plot()`` in state-spaces/s4
``src/models/hippo/visualizations.py``: 3000 samples (T = 3), dt = 1e-3, freq = 3, rms 0.5,
window 1 (1000 samples). Seed ``s`` draws as the reference after ``np.random.seed(s)``, so
seed 0 is its signal sample for sample. The reference gives LagT the same time scale as
the window; at 3 Hz that leaves its error above 0.3 up to N = 128, so here LagT has its
own ``lagt_scale`` (0.03: 30 samples, where the Laguerre functions of N >= 32 reach across
the 3000 samples, ``4 N theta`` of them).

Two metrics per (measure, N): ``rmse`` reads sample ``i`` where the reference does
(``positions="reference"``); ``rmse_midpoint`` at the middle of the step it is held over,
which removes the reference's half-sample lag. ``published`` is references.md section 6
(LegS and LegT at N = 16, 32, 64, for ``rmse``), given only when the signal and window are
the defaults' (the setting those numbers claim).

Run: ``python -m ssm.bench.hippo_memory [OUT_DIR]`` (defaults; prints the rows).
"""

from __future__ import annotations

import pathlib
import sys
import time

import numpy as np

from ssm import hippo_online as ho

TASK = "hippo_reconstruction"
METRICS = {"rmse": "reference", "rmse_midpoint": "midpoint"}  # metric -> positions
DEFAULT_SPEC = {
    "measures": list(ho.ONLINE_MEASURES),
    "N": [8, 16, 32, 64, 128],
    "length": 3000,
    "dt": 1e-3,
    "freq": 3.0,
    "rms": 0.5,
    "window": 1.0,  # time units: the LegT and FouT window
    "lagt_scale": 0.03,  # time units: LagT's time scale
    "seeds": [0, 1, 2],
    "position_N": None,  # the N of the error-vs-position and example figures; None: the N nearest 32
}
# references.md section 6, "measured" in an unrecorded setting: plot()'s own (seed 0 here)
# gives LegS 0.23 / 5.9e-3 / 2.6e-3 and LegT 2.1e-3 / 2.1e-3 / 2.1e-3 at N = 16 / 32 / 64.
PUBLISHED = {("legs", 16): 0.12, ("legs", 32): 2.8e-3, ("legs", 64): 5e-3,
             ("legt", 16): 0.21, ("legt", 32): 8.3e-3, ("legt", 64): 8.3e-3}


def run(spec: dict, out_dir) -> list[dict]:
    """Run the benchmark for ``spec`` (keys of ``DEFAULT_SPEC``; missing ones take the
    default) and write ``hippo_error_vs_n.png``, ``hippo_error_vs_position.png`` and
    ``hippo_reconstruction_example.png`` into ``out_dir``.

    Returns:
      one row per (measure, N, metric). ``wall_s`` is the time of that (measure, N):
      the recurrence over all seeds and both readings, so the two metric rows share it.
    """
    spec = _resolve(spec)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    length = spec["length"]
    thetas = {"legs": None, "legt": spec["window"] / spec["dt"], "fout": spec["window"] / spec["dt"],
              "lagt": spec["lagt_scale"] / spec["dt"]}
    signals = np.stack([ho.white_signal(length, spec["dt"], spec["freq"], np.random.RandomState(seed),
                                        rms=spec["rms"]) for seed in spec["seeds"]])  # (seeds, l)
    reference_setting = all(spec[k] == DEFAULT_SPEC[k] for k in ("length", "dt", "freq", "rms", "window"))
    rows, errors = [], {}  # errors[measure]: (seeds, l) at position_N, midpoint reading
    for measure in spec["measures"]:
        th = thetas[measure]
        for N in spec["N"]:
            start = time.perf_counter()
            c = ho.online_coefficients(signals, measure, N, theta=th)[:, -1]  # (seeds, N)
            values = {}
            for metric, positions in METRICS.items():
                err = c @ ho.reconstruction_basis(measure, N, length, th, positions).T - signals
                mask = ho.memory_mask(measure, length, th, positions)
                values[metric] = float(np.mean(np.sqrt(np.mean(err[:, mask] ** 2, axis=-1))))
                if N == spec["position_N"] and positions == "midpoint":
                    errors[measure] = err
            wall = time.perf_counter() - start
            for metric, value in values.items():
                published = PUBLISHED.get((measure, N)) if metric == "rmse" and reference_setting else None
                rows.append(_row(measure, N, metric, value, published, wall, spec["seeds"]))
    _plot_error_vs_n(rows, spec, out_dir / "hippo_error_vs_n.png")
    _plot_error_vs_position(errors, signals, spec, out_dir / "hippo_error_vs_position.png")
    _plot_example(errors, signals, spec, thetas, out_dir / "hippo_reconstruction_example.png")
    return rows


def _resolve(spec: dict) -> dict:
    unknown = sorted(set(spec) - set(DEFAULT_SPEC))
    if unknown:
        raise ValueError(f"spec key {unknown[0]!r} is not one of {sorted(DEFAULT_SPEC)}")
    spec = DEFAULT_SPEC | dict(spec)
    bad = [m for m in spec["measures"] if m not in ho.ONLINE_MEASURES]
    if bad or not spec["measures"]:
        raise ValueError(f"spec measures={spec['measures']!r}; expected a non-empty subset of {ho.ONLINE_MEASURES}")
    if not spec["N"] or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in spec["N"]):
        raise ValueError(f"spec N={spec['N']!r}; expected a non-empty list of positive integers")
    if not spec["seeds"] or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in spec["seeds"]):
        raise ValueError(f"spec seeds={spec['seeds']!r}; expected a non-empty list of integers >= 0")
    if spec["position_N"] is None:
        spec["position_N"] = min(spec["N"], key=lambda n: (abs(n - 32), n))
    if spec["position_N"] not in spec["N"]:
        raise ValueError(f"spec position_N={spec['position_N']!r}; expected one of N={spec['N']!r}")
    for key in ("dt", "window", "lagt_scale"):
        if not (isinstance(spec[key], (int, float)) and spec[key] > 0):
            raise ValueError(f"spec {key}={spec[key]!r}; expected a positive number")
    return spec


def _row(measure, N, metric, value, published, wall, seeds) -> dict:
    return {"model": f"hippo-{measure}", "task": TASK, "setting": f"N={N}", "metric": metric, "value": value,
            "published": published, "params": N, "train_tokens_per_s": None, "peak_memory_mib": None,
            "wall_s": wall, "steps": None, "seed": _seed_label(seeds)}


def _seed_label(seeds) -> str:
    seeds = sorted(seeds)
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_error_vs_n(rows, spec, path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for i, measure in enumerate(spec["measures"]):
        color = f"C{i}"
        for metric, style in (("rmse", "-o"), ("rmse_midpoint", ":s")):
            mine = [r for r in rows if r["model"] == f"hippo-{measure}" and r["metric"] == metric]
            label = measure + ("" if metric == "rmse" else " (midpoint reading)")
            ax.plot([r["params"] for r in mine], [r["value"] for r in mine], style, color=color, ms=4, label=label)
        pub = [(N, v) for (m, N), v in PUBLISHED.items() if m == measure]
        if pub:
            ax.plot(*zip(*pub), "x", color=color, ms=9, mew=2, label=f"{measure} references.md")
    ax.set(xscale="log", yscale="log", xlabel="state size N", ylabel="RMSE over the remembered samples",
           title=f"HiPPO reconstruction, white noise {spec['freq']:g} Hz, T={spec['length'] * spec['dt']:g}")
    ax.legend(fontsize="x-small", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_error_vs_position(errors, signals, spec, path, smooth: int = 25) -> None:
    """RMS over seeds of the error at each sample (midpoint reading), smoothed by a moving
    RMS, against the delay from now: where each measure remembers (legt and fout read 0
    outside the window, so there the error is the signal)."""
    plt = _pyplot()
    length, dt = spec["length"], spec["dt"]
    delay = (length - 1 - np.arange(length)) * dt
    kernel = np.ones(smooth)
    count = np.convolve(np.ones(length), kernel, mode="same")

    def moving_rms(x):
        return np.sqrt(np.convolve(np.mean(x**2, axis=0), kernel, mode="same") / count)

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (measure, err) in enumerate(errors.items()):
        ax.plot(delay, moving_rms(err), color=f"C{i}", lw=1, label=measure)
    ax.plot(delay, moving_rms(signals), "k:", lw=1, label="signal (error of forgetting)")
    ax.axvline(spec["window"], color="0.6", lw=0.8)
    ax.set(yscale="log", xlabel="delay from now (time units; window marked)", ylabel="|error|, moving RMS",
           title=f"Where each measure remembers: N={spec['position_N']}, last state, midpoint reading")
    ax.invert_xaxis()
    ax.legend(fontsize="x-small", loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_example(errors, signals, spec, thetas, path) -> None:
    plt = _pyplot()
    length, dt = spec["length"], spec["dt"]
    t = np.arange(length) * dt
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(t, signals[0], "k", lw=1.5, label="signal")
    for i, (measure, err) in enumerate(errors.items()):
        shown = np.where(ho.memory_mask(measure, length, thetas[measure]), signals[0] + err[0], np.nan)
        ax.plot(t, shown, color=f"C{i}", lw=1, label=measure)
    ax.set(xlabel="time", title=f"Reconstruction from the last state, N={spec['position_N']}, seed {spec['seeds'][0]}")
    ax.legend(fontsize="x-small", ncol=5)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    """Command line: run the HiPPO reconstruction benchmark, print its table and write its figures to the
    folder given (default ``hippo_memory``)."""
    argv = sys.argv[1:] if argv is None else argv
    out_dir = argv[0] if argv else "hippo_memory"
    start = time.perf_counter()
    rows = run({}, out_dir)
    print("| model | setting | metric | value | published | wall s |\n|---|---|---|---|---|---|")
    for r in rows:
        pub = "—" if r["published"] is None else f"{r['published']:.2g}"
        print(f"| {r['model']} | {r['setting']} | {r['metric']} | {r['value']:.3g} | {pub} | {r['wall_s']:.2f} |")
    print(f"\nseeds {rows[0]['seed']}; figures in {out_dir}; {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
