"""What a run writes about itself: metrics as JSON lines, a live progress bar,
optional TensorBoard events, and a plot at the end."""

from __future__ import annotations

import json
import math
import pathlib
import sys

from ssm.train.files import read_jsonl, write_atomic

TIMING = ("tokens_per_s", "step_time_s", "wall_time_s", "process")  # fields that differ between identical runs


class MetricsLog:
    """``metrics.jsonl`` in the run folder: one record per line, flushed at once."""

    def __init__(self, path: pathlib.Path, *, tensorboard: bool = False, enabled: bool = True):
        self.path = pathlib.Path(path)
        self.enabled = enabled  # only one process of a multi-host run writes
        self.writer = _tensorboard(self.path.parent) if tensorboard and enabled else None

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step``, and the test record (a resumed run recomputes
        them; from step 0, everything an earlier run left): no step twice, nothing of
        another run. The file is replaced at once (:func:`write_atomic`)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [r for r in read_jsonl(self.path) if r["step"] <= step and r["split"] != "test"]
        write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.writer.add_scalar(f"{record['split']}/{key}", value, record["step"])
            self.writer.flush()

    def read(self) -> list[dict]:
        return read_jsonl(self.path)


def _tensorboard(directory: pathlib.Path):
    from tensorboardX import SummaryWriter  # present: the config check asked (ssm.extras)

    return SummaryWriter(str(directory / "tensorboard"))


class Progress:
    """A tqdm bar over steps showing loss, accuracy and tokens/s; silent off a terminal
    (the trainer then prints its log records as lines)."""

    def __init__(self, total: int, initial: int, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=initial, disable=None if enabled else True,
                        dynamic_ncols=True, unit="step", file=sys.stderr)

    @property
    def shown(self) -> bool:
        """Whether the bar is drawn (a terminal, and progress on)."""
        return not self.bar.disable

    def update(self, n: int, record: dict | None = None) -> None:
        self.bar.update(n)
        if record is not None:
            shown = {"loss": f"{record['loss']:.4f}"}
            if "accuracy" in record:
                shown["acc"] = f"{record['accuracy']:.3f}"
            if "tokens_per_s" in record:
                shown["tok/s"] = f"{record['tokens_per_s']:.3g}"
            self.bar.set_postfix(shown, refresh=False)

    def close(self) -> None:
        self.bar.close()


def plot(records: list[dict], path: pathlib.Path, title: str | None = None, schedules: dict | None = None) -> None:
    """:func:`figure` of ``records``, saved as a PNG at ``path``."""
    import io

    import matplotlib.pyplot as plt

    fig = figure(records, title, schedules)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    write_atomic(path, png.getvalue())  # a kill or a full disk leaves the old plot, never an empty one


def figure(records: list[dict], title: str | None = None, schedules: dict | None = None):
    """Loss (and accuracy, when there is one) against step, train and validation, with
    the test result marked at the last step; then the learning rates: ``schedules``
    (``{name: [(step, lr), ...]}``, the whole schedule) or, without it, the rates the
    records logged. ``title``: above all panels (the trainer passes the run's name and
    its test result)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    keys = ["loss"] + (["accuracy"] if any("accuracy" in r for r in records) else [])
    if schedules is None:
        schedules = {k: [(r["step"], r[k]) for r in records if r["split"] == "train" and k in r] for k in ("lr", "ssm_lr")}
    lrs = [k for k, points in schedules.items() if points]
    panels = keys + (["learning rate"] if lrs else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for split, style in (("train", "-"), ("validation", "o-"), ("test", "*")):
            points = [(r["step"], r[key]) for r in records
                      if r["split"] == split and key in r and math.isfinite(r[key])]
            if points:
                ax.plot(*zip(*points), style, label=split, markersize=9 if split == "test" else 3)
        ax.set_ylabel(key)
        values = [r[key] for r in records if key in r and math.isfinite(r[key]) and r[key] > 0]
        if key == "loss" and values and max(values) > 10 * min(values):  # log only where it spans decades
            ax.set_yscale("log")
        ax.legend()
    if lrs:
        ax = axes[0][-1]
        for key, style in zip(lrs, ("-", "--")):
            ax.plot(*zip(*schedules[key]), style, label=key)
        ax.set_ylabel("learning rate")
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        ax.legend()
    for ax in axes[0]:
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))  # whole steps, even on short runs
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
