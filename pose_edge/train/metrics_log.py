"""The per-epoch metrics of a run: RUN/metrics.csv (one row per epoch) and RUN/metrics.png (their plot).

Rows are dicts: epoch, lr, train_* (mean losses over the epoch), time_s, images_per_s, and val_* (the evaluation's
statistics, on epochs that evaluated). Both files are rewritten whole, atomically, after every epoch.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from pose_edge.fsutil import atomic_write_bytes, atomic_write_text


def columns(history: list[dict]) -> list[str]:
    """The union of the rows' keys, in first-seen order."""
    return list(dict.fromkeys(k for row in history for k in row))


def write_csv(path: str | Path, history: list[dict]) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns(history), restval="", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, out.getvalue())


def read_csv(path: str | Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: float(v) if v not in ("",) else math.nan for k, v in row.items()} for row in csv.DictReader(f)]


def plot(path: str | Path, history: list[dict]) -> None:
    """Training losses (left) and validation statistics (right) against the epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 4))
    for key in columns(history):
        if key.startswith("train_"):
            ax_loss.plot(epochs, [row.get(key, math.nan) for row in history], label=key[len("train_"):])
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="training")
    ax_loss.set_yscale("log")
    for key in ("val_AP", "val_AP50", "val_AP75", "val_AR"):
        points = [(row["epoch"], row[key]) for row in history if isinstance(row.get(key), float)]
        if points:
            ax_val.plot(*zip(*points), marker="o", label=key[len("val_"):])
    ax_val.set(xlabel="epoch", ylabel="COCO OKS", title="validation", ylim=(0, 1))
    for ax in (ax_loss, ax_val):
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def write_metrics(run_dir: str | Path, history: list[dict]) -> None:
    run_dir = Path(run_dir)
    write_csv(run_dir / "metrics.csv", history)
    plot(run_dir / "metrics.png", history)
