"""A bench record -> bench.json (every figure), bench.md (the tables) and the two plots."""

from __future__ import annotations

from pathlib import Path

from pose_edge.bench.machine import describe_short
from pose_edge.fsutil import atomic_write_json, atomic_write_text

FILES = {"json": "bench.json", "markdown": "bench.md", "ap_vs_latency": "ap_vs_latency.png",
         "latency_vs_people": "latency_vs_people.png"}


def keypoint_ap(config: dict) -> float | None:
    """The AP a configuration is plotted and ranked by: keypoint AP (a top-down pair's on its detector's boxes);
    None for person detectors (box AP is another scale) and where accuracy was not measured."""
    if config["paradigm"] == "detector" or "accuracy" not in config:
        return None
    return config["accuracy"]["stats"]["AP"]


def first_latency(config: dict) -> dict | None:
    """The latency entry at the smallest batch that ran."""
    ran = [e for e in config.get("latency", []) if "skipped" not in e]
    return min(ran, key=lambda e: e["batch"]) if ran else None


def _ms(summary: dict, key: str = "p50") -> str:
    return f"{summary[key]:.1f}"


def _accuracy_cell(config: dict) -> tuple[str, str]:
    acc = config.get("accuracy")
    if acc is None:
        return "-", "-"
    s = acc["stats"]
    if config["paradigm"] == "detector":
        return f"box {s['AP']:.3f}", f"box {s['AR']:.3f}"
    ap = f"{s['AP']:.3f}"
    if "stats_gt_boxes" in acc:
        ap += f" (GT boxes {acc['stats_gt_boxes']['AP']:.3f})"
    return ap, f"{s['AR']:.3f}"


def header(record: dict) -> list[str]:
    m, o = record["machine"], record["options"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    return [
        f"Machine: {describe_short(m)} at the start, {record['load_average_at_end'][0]} at the end (1-minute load "
        f"average; other work on the machine moves absolute times, ratios much less). {m['date']}. {versions}.",
        "",
        f"Latency: percentiles of {o['iters']} timed calls after {o['warmup']} warm-up calls, post-processing "
        f"settings `{o['settings']}`, on the first {record['data']['latency_frames']} val images of "
        f"{record['data']['dir']} ({record['data']['frame_size'][0]}x{record['data']['frame_size'][1]}). Stages and end "
        f"to end on the {record['clock']['stages_and_end_to_end']}; model alone = the backend's run() on the batches "
        "the pipeline prepared, replayed after each call. Top-down models crop each frame's annotated people; their "
        "detector runs on every frame. AP: COCO evaluation settings through the one evaluation path "
        f"(= `pose-edge eval`), {record['data']['images']} val images.",
    ]


def latency_table(record: dict) -> list[str]:
    lines = ["| configuration | batch | AP | AR | end to end p50 / p90 / p99 ms | frames/s | pre ms | inference ms "
             "| post ms | model alone ms | end to end / model | (pre + post) / model |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in record["configurations"]:
        ap, ar = _accuracy_cell(c)
        for e in c.get("latency", []):
            if "skipped" in e:
                lines.append(f"| {c['label']} | {e['batch']} | {ap} | {ar} | skipped: {e['skipped']} |"
                             + " |" * 7)
                continue
            s, t = e["stages"], e["end_to_end"]
            lines.append(f"| {c['label']} | {e['batch']} | {ap} | {ar} | {_ms(t)} / {_ms(t, 'p90')} / "
                         f"{_ms(t, 'p99')} | {e['frames_per_s']:.1f} | {_ms(s['preprocess'])} | "
                         f"{_ms(s['inference'])} | {_ms(s['postprocess'])} | {_ms(e['model_only'])} | "
                         f"{e['end_to_end_over_model']} | {e['pre_plus_post_over_model']} |")
    return lines


def people_table(record: dict) -> list[str]:
    counts = record["options"]["people"]
    if not counts:
        return []
    lines = ["", "End to end p50 ms at batch 1 against people per frame (synthetic frames of exactly that many "
             "people; in brackets: pre + post over the model alone):", "",
             "| configuration | " + " | ".join(f"{p} {'person' if p == 1 else 'people'}" for p in counts) + " |",
             "|---|" + "---|" * len(counts)]
    for c in record["configurations"]:
        cells = {e["people"]: f"{_ms(e['end_to_end'])} ({e['pre_plus_post_over_model']})" for e in c.get("people", [])}
        lines.append(f"| {c['label']} | " + " | ".join(cells.get(p, "-") for p in counts) + " |")
    return lines


def decoder_table(record: dict) -> list[str]:
    lines = ["", "GPU decode kernels against the NumPy decoders on the same raw outputs (p50 ms):", ""]
    rows = []
    for c in record["configurations"]:
        d = c.get("decoders", {})
        if "skipped" in d:
            rows.append(f"| {c['label']} | not measured: {d['skipped']} | | | |")
            continue
        for part, r in d.items():
            if "skipped" in r:
                rows.append(f"| {c['label']} ({part}) | not measured: {r['skipped']} | | | |")
                continue
            on_device = _ms(r["gpu_on_device"]) if "gpu_on_device" in r else "-"
            rows.append(f"| {c['label']} ({part}) | {_ms(r['numpy'])} | {_ms(r['gpu_from_host'])} | {on_device} | "
                        f"{'yes' if r['agree'] else 'NO'} |")
    return lines + ["| configuration | NumPy | CUDA, host arrays | CUDA, engine buffers | same poses |",
                    "|---|---|---|---|---|"] + rows


def to_markdown(record: dict) -> str:
    lines = ["# pose-edge bench", ""] + header(record) + [""] + latency_table(record) + people_table(record)
    lines += decoder_table(record)
    return "\n".join(lines) + "\n"


def write_outputs(record: dict, out: str | Path) -> dict[str, Path]:
    """bench.json, bench.md, ap_vs_latency.png and latency_vs_people.png in `out` (created), each written atomically."""
    from pose_edge.bench.plots import ap_vs_latency, latency_vs_people

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / v for k, v in FILES.items()}
    record = {**record, "files": {k: str(v) for k, v in paths.items()}}
    atomic_write_json(paths["json"], record, indent=1)
    atomic_write_text(paths["markdown"], to_markdown(record))
    ap_vs_latency(record, paths["ap_vs_latency"])
    latency_vs_people(record, paths["latency_vs_people"])
    return paths
