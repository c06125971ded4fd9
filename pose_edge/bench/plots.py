"""The two PNGs of a bench record: AP against end-to-end latency with the Pareto frontier, and latency against
people per frame. matplotlib (the Agg backend: no display needed) is imported only here."""

from __future__ import annotations

from pathlib import Path

from pose_edge.bench.machine import describe_short
from pose_edge.bench.pareto import pareto_front
from pose_edge.bench.report import first_latency, keypoint_ap
from pose_edge.errors import PoseEdgeError


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise PoseEdgeError("the bench plots need matplotlib: pip install matplotlib (or 'pose-edge[train]')") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _subtitle(record: dict) -> str:
    return f"{describe_short(record['machine'])}; post-processing settings '{record['options']['settings']}'"


def _alternate_in_bands(ys, band: float = 0.04) -> list[bool]:
    """For each point, whether its label goes below it: points of nearly the same AP (within `band` of the AP range)
    would print their labels on one line, so every second one of them moves below its point."""
    span = (max(ys) - min(ys)) or 1.0
    below = [False] * len(ys)
    order = sorted(range(len(ys)), key=lambda i: ys[i])
    for previous, i in zip(order, order[1:]):
        if ys[i] - ys[previous] < band * span:
            below[i] = not below[previous]
    return below


def ap_vs_latency(record: dict, path: str | Path) -> None:
    """Keypoint AP against end-to-end p50 latency at each configuration's smallest batch; the Pareto frontier (no
    configuration both faster and more accurate) as a line; every point labelled."""
    plt = _pyplot()
    points, labels = [], []
    for c in record["configurations"]:
        ap, lat = keypoint_ap(c), first_latency(c)
        if ap is not None and lat is not None:
            points.append((lat["end_to_end"]["p50"], ap))
            labels.append(f"{c['label']} (batch {lat['batch']})")
    fig, ax = plt.subplots(figsize=(9, 6))
    if points:
        front = pareto_front(points)
        xs, ys = zip(*points)
        ax.scatter(xs, ys, color=["tab:red" if i in front else "tab:blue" for i in range(len(points))], zorder=3)
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], color="tab:red", lw=1.5,
                drawstyle="steps-post", label="Pareto frontier", zorder=2)
        if max(xs) > 10 * min(xs):
            ax.set_xscale("log")
        ax.margins(x=0.1, y=0.15)
        middle = sorted(xs)[len(xs) // 2]
        for (x, y), text, below in zip(points, labels, _alternate_in_bands(ys)):
            right = x > middle or len(xs) == 1  # labels point inwards, so the outermost stay inside the axes
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(-5 if right else 5, -12 if below else 5),
                        fontsize=8, ha="right" if right else "left")
        ax.legend(loc="lower right", title="red: on the frontier", title_fontsize=8)
    else:
        ax.text(0.5, 0.5, "no keypoint AP measured (latency only, or detectors only)", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel("end-to-end latency per call, p50 (ms): preprocess + model + post-processing")
    ax.set_ylabel("COCO keypoint AP (val)")
    ax.set_title(f"AP against end-to-end latency\n{_subtitle(record)}", fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def latency_vs_people(record: dict, path: str | Path) -> None:
    """End-to-end p50 at batch 1 against people per frame, one line per configuration (the model alone dotted)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 6))
    drawn = False
    for c in record["configurations"]:
        rows = sorted(c.get("people", []), key=lambda e: e["people"])
        if not rows:
            continue
        xs = [e["people"] for e in rows]
        line, = ax.plot(xs, [e["end_to_end"]["p50"] for e in rows], marker="o", label=f"{c['label']} end to end")
        ax.plot(xs, [e["model_only"]["p50"] for e in rows], ls=":", color=line.get_color(),
                label=f"{c['label']} model alone")
        drawn = True
    if drawn:
        ax.set_xticks(record["options"]["people"])
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no people-per-frame measurement (--people was empty)", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel("people in the frame")
    ax.set_ylabel("latency at batch 1, p50 (ms)")
    ax.set_title("Latency against people per frame: a top-down model crops each person, a single-stage model "
                 f"does not\n{_subtitle(record)}", fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
