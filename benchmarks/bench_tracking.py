"""Tracking benchmark: PoseTracker (ByteTrack) against frame-by-frame greedy IoU matching, and keypoint smoothing
(One Euro) against none, on the synthetic video clips.

    python benchmarks/bench_tracking.py [--clips 20] [--tune-clips 20] [--frames 150] [--out benchmarks/results]

Clips: what `pose-edge data synth --out DIR --train 0 --val 0 --video FRAMES --size 320x240 --seed S` writes
(write_dataset, the function behind that command): seeds 0 .. clips-1 for the figures; seeds 1000 .. 1019 chose the
One Euro parameters (the grid below) and, while the tracker was written, its Kalman noise and oks_weight, so the
figures are not measured on the clips that chose them. 1 to 4 people per clip walk across (crossing each other) or
wave in place, at 15 fps.
Detections: the demo's small models are too weak to give meaningful detections, so each frame's detections are the
ground truth corrupted with a seeded detector model (simulate_detections): box and keypoint noise (white plus a slow
drift, and outliers), scores that fall with occlusion, random misses, dropouts of 2-10 frames, people with fewer than
3 visible keypoints not detected, single-frame false positives and persistent ones.
Metrics: MOTA, IDF1, ID switches from py-motmetrics (a hypothesis matches a ground-truth box at IoU >= 0.5; the
hypotheses are the detections that carry a track id). Keypoint jitter: the mean norm of the frame-to-frame
acceleration x[t+1] - 2 x[t] + x[t-1] (pixels per frame^2) of each person's keypoints, and the error against the
true keypoints, over tracked detections of real people, keypoints found and labelled.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from pose_edge.data.synth import write_dataset
from pose_edge.data.synth.video import FPS
from pose_edge.fsutil import atomic_write_json, atomic_write_text
from pose_edge.keypoints import NUM_KEYPOINTS, OKS_SIGMAS
from pose_edge.runtime.smoothing import KeypointSmoother
from pose_edge.runtime.tracking import PoseTracker, box_iou

SIZE = (320, 240)
TUNE_SEED = 1000
MOT_IOU = 0.5


# -------------------------------------------------------------------------------------------------------- clips

@dataclass
class Truth:
    """One frame's people: track ids int [G], boxes float64 [G, 4] xyxy (visible pixels), keypoints [G, K, 3]
    (x, y, COCO visibility)."""
    ids: np.ndarray
    boxes: np.ndarray
    keypoints: np.ndarray


def render_clip(out: Path, seed: int, frames: int) -> list[Truth]:
    """Write a clip as `pose-edge data synth --video` does and read its ground truth back, frame by frame."""
    write_dataset(out, num_train=0, num_val=0, seed=seed, size=SIZE, video_frames=frames, progress=False)
    return load_clip(out / "annotations" / "person_keypoints_video.json")


def load_clip(annotation_file: Path) -> list[Truth]:
    coco = json.loads(Path(annotation_file).read_text())
    by_image: dict[int, list[dict]] = {im["id"]: [] for im in coco["images"]}
    for ann in coco["annotations"]:
        by_image[ann["image_id"]].append(ann)
    frames = []
    for image in sorted(coco["images"], key=lambda im: im["frame_id"]):
        anns = by_image[image["id"]]
        boxes = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        frames.append(Truth(np.array([a["track_id"] for a in anns], np.int64), boxes,
                            np.array([a["keypoints"] for a in anns], np.float64).reshape(-1, NUM_KEYPOINTS, 3)))
    return frames


# -------------------------------------------------------------------------------------------------------- detections

@dataclass(frozen=True)
class DetectorModel:
    """How simulate_detections corrupts the ground truth; lengths are fractions of the person's box height."""
    box_std: float = 0.04  # centre (fraction of width / height) and log-size noise
    keypoint_std: float = 0.02  # white noise, scaled per keypoint by its OKS sigma over the mean sigma
    keypoint_drift_std: float = 0.01  # a slow bias on top, AR(1) with 0.9 per frame
    outlier_rate: float = 0.02  # keypoints thrown up to 0.3 box heights off
    miss_rate: float = 0.05  # detections lost at random
    dropout_rate: float = 0.02  # per person and frame: the chance a dropout of 2-10 frames begins
    min_visible: int = 3  # people with fewer visible keypoints are not detected
    score_std: float = 0.1
    false_rate: float = 0.3  # single-frame false positives per frame (Poisson)
    ghost_rate: float = 0.03  # per frame: the chance a false positive that stays 3-15 frames appears


@dataclass
class Detections:
    """One frame: boxes float64 [P, 4] xyxy, scores [P], keypoints [P, K, 3] (x, y, score), source int [P] (the
    true person's track id, -1 for a false positive)."""
    boxes: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray
    source: np.ndarray


def simulate_detections(clip: list[Truth], seed: int, model: DetectorModel = DetectorModel()) -> list[Detections]:
    rng = np.random.default_rng([seed, 7])
    k_scale = OKS_SIGMAS / OKS_SIGMAS.mean()
    drift: dict[int, np.ndarray] = {}
    dropout_until: dict[int, int] = {}
    ghosts: list[dict] = []
    width, height = SIZE
    out = []
    for t, truth in enumerate(clip):
        rows = []
        for person, box, kps in zip(truth.ids.tolist(), truth.boxes, truth.keypoints):
            h = box[3] - box[1]
            d = drift.get(person, np.zeros((NUM_KEYPOINTS, 2)))
            drift[person] = 0.9 * d + rng.normal(0, model.keypoint_drift_std * np.sqrt(1 - 0.81), d.shape) * h
            if rng.uniform() < model.dropout_rate and dropout_until.get(person, -1) < t:
                dropout_until[person] = t + int(rng.integers(2, 11))
            visible = int((kps[:, 2] == 2).sum())
            if visible < model.min_visible or dropout_until.get(person, -1) >= t or rng.uniform() < model.miss_rate:
                continue
            rows.append((_noisy_box(rng, box, model.box_std), _noisy_keypoints(rng, kps, h, k_scale, drift[person],
                                                                               model),
                         0.3 + 0.65 * visible / NUM_KEYPOINTS + rng.normal(0, model.score_std), person))
        for _ in range(rng.poisson(model.false_rate)):
            rows.append(_false_positive(rng, width, height, rng.uniform(0.05, 0.6)))
        if rng.uniform() < model.ghost_rate:
            ghost_box, ghost_keypoints, _, _ = _false_positive(rng, width, height, 0)
            ghosts.append({"box": ghost_box, "keypoints": ghost_keypoints, "score": rng.uniform(0.3, 0.75),
                           "until": t + int(rng.integers(3, 16))})
        ghosts = [g for g in ghosts if g["until"] >= t]
        for g in ghosts:  # something person-like that stays: the same box and keypoints, a little noise
            box, keypoints = g["box"] + rng.normal(0, 1, 4), g["keypoints"].copy()
            keypoints[:, :2] += rng.normal(0, 1, (NUM_KEYPOINTS, 2))
            rows.append((box, keypoints, g["score"] + rng.normal(0, 0.05), -1))
        order = rng.permutation(len(rows))  # no meaning in the row order
        out.append(Detections(np.array([rows[i][0] for i in order], np.float64).reshape(-1, 4),
                              np.clip([rows[i][2] for i in order], 0.01, 0.99).astype(np.float64).reshape(-1),
                              np.array([rows[i][1] for i in order], np.float64).reshape(-1, NUM_KEYPOINTS, 3),
                              np.array([rows[i][3] for i in order], np.int64).reshape(-1)))
    return out


def _noisy_box(rng, box, std):
    cx, cy, w, h = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]
    cx, cy = cx + rng.normal(0, std * w), cy + rng.normal(0, std * h)
    w, h = w * np.exp(rng.normal(0, std)), h * np.exp(rng.normal(0, std))
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def _noisy_keypoints(rng, kps, h, k_scale, drift, model: DetectorModel):
    labelled = kps[:, 2] > 0
    xy = kps[:, :2] + drift + rng.normal(0, 1, (NUM_KEYPOINTS, 2)) * (model.keypoint_std * h * k_scale)[:, None]
    outlier = rng.uniform(size=NUM_KEYPOINTS) < model.outlier_rate
    xy[outlier] += rng.uniform(-0.3, 0.3, (int(outlier.sum()), 2)) * h
    score = np.where(kps[:, 2] == 2, 0.9, 0.5) + rng.normal(0, model.score_std, NUM_KEYPOINTS)
    out = np.zeros((NUM_KEYPOINTS, 3))  # not labelled: not found (0, 0, 0), as the decoders report it
    out[labelled, :2] = xy[labelled]
    out[labelled, 2] = np.clip(score[labelled], 0.05, 1.0)
    return out


def _false_positive(rng, width, height, score):
    h = rng.uniform(30, 120)
    w = h * rng.uniform(0.3, 0.6)
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    return box, _keypoints_in(rng, box), score, -1


def _keypoints_in(rng, box):
    kps = np.zeros((NUM_KEYPOINTS, 3))
    kps[:, 0] = rng.uniform(box[0], box[2], NUM_KEYPOINTS)
    kps[:, 1] = rng.uniform(box[1], box[3], NUM_KEYPOINTS)
    kps[:, 2] = rng.uniform(0.05, 0.5, NUM_KEYPOINTS)
    return kps


# -------------------------------------------------------------------------------------------------------- trackers

class GreedyTracker:
    """The naive baseline: frame by frame, detections with score >= min_score take the previous frame's tracks by
    greedy IoU (the highest-IoU pair first, IoU >= min_iou); an unmatched detection starts a new id at once and a
    track unmatched for one frame ends. No motion model, no memory, no second stage."""

    def __init__(self, min_score: float = 0.5, min_iou: float = 0.3):
        self.min_score, self.min_iou = min_score, min_iou
        self.boxes, self.ids, self.next_id = np.zeros((0, 4)), np.zeros(0, np.int64), 1

    def update(self, boxes, scores, keypoints=None, timestamp=None) -> np.ndarray:
        ids = np.full(len(scores), -1, np.int64)
        kept = np.flatnonzero(np.isfinite(boxes).all(1) & (scores >= self.min_score))
        iou = box_iou(boxes[kept], self.boxes)
        while iou.size and iou.max() >= self.min_iou:
            d, t = np.unravel_index(np.argmax(iou), iou.shape)
            ids[kept[d]] = self.ids[t]
            iou[d, :], iou[:, t] = -1, -1
        for d in kept[ids[kept] < 0]:
            ids[d], self.next_id = self.next_id, self.next_id + 1
        self.boxes, self.ids = boxes[kept], ids[kept]
        return ids


def run_tracker(tracker, detections: list[Detections]) -> list[np.ndarray]:
    return [tracker.update(d.boxes, d.scores, d.keypoints, t / FPS) for t, d in enumerate(detections)]


def run_smoother(smoother, detections: list[Detections], track_ids: list[np.ndarray]) -> list[np.ndarray]:
    return [smoother.update(ids, d.keypoints, t / FPS) for t, (d, ids) in enumerate(zip(detections, track_ids))]


# -------------------------------------------------------------------------------------------------------- metrics

def mot_metrics(runs: list[tuple[list[Truth], list[Detections], list[np.ndarray]]]) -> dict:
    """MOTA, IDF1, ID switches ... over clips, each (truth, detections, track ids per frame), by py-motmetrics."""
    import motmetrics as mm

    accumulators = []
    for truth, detections, track_ids in runs:
        acc = mm.MOTAccumulator(auto_id=True)
        for gt, det, ids in zip(truth, detections, track_ids):
            hyp = ids >= 0
            # motmetrics 1.4.0's iou_matrix calls np.asfarray, gone in NumPy 2: the same distances, computed here.
            iou = box_iou(gt.boxes, det.boxes[hyp])
            acc.update(gt.ids.tolist(), ids[hyp].tolist(), np.where(iou >= MOT_IOU, 1 - iou, np.nan))
        accumulators.append(acc)
    names = ["mota", "idf1", "num_switches", "num_false_positives", "num_misses", "num_fragmentations",
             "num_objects", "num_unique_objects", "mostly_tracked"]
    summary = mm.metrics.create().compute_many(accumulators, metrics=names, generate_overall=True)
    overall = summary.loc["OVERALL"]
    return {name: (round(float(overall[name]), 4) if name in ("mota", "idf1") else int(overall[name]))
            for name in names}


def keypoint_jitter(runs: list[tuple[list[Truth], list[Detections], list[np.ndarray], list[np.ndarray]]]) -> dict:
    """Acceleration and error of estimated keypoints against the truth, over clips, each (truth, detections, track
    ids, keypoints to score [P, K, 3] per frame). Counted: tracked detections of real people, keypoints found and
    labelled; acceleration where that holds in three consecutive frames."""
    errors, accel, true_accel = [], [], []
    for truth, detections, track_ids, estimates in runs:
        people = sorted({int(i) for gt in truth for i in gt.ids})
        est = np.full((len(truth), len(people), NUM_KEYPOINTS, 2), np.nan)
        ref = np.full_like(est, np.nan)
        for t, (gt, det, ids, kps) in enumerate(zip(truth, detections, track_ids, estimates)):
            for row in np.flatnonzero((ids >= 0) & (det.source >= 0)):
                p = people.index(int(det.source[row]))
                found = kps[row, :, 2] > 0
                est[t, p, found] = kps[row, found, :2]
            for g, person in enumerate(gt.ids.tolist()):
                labelled = gt.keypoints[g, :, 2] > 0
                ref[t, people.index(person), labelled] = gt.keypoints[g, labelled, :2]
        both = np.isfinite(est).all(-1) & np.isfinite(ref).all(-1)
        errors.append(np.linalg.norm(est - ref, axis=-1)[both])
        a_est = np.linalg.norm(est[2:] - 2 * est[1:-1] + est[:-2], axis=-1)
        a_ref = np.linalg.norm(ref[2:] - 2 * ref[1:-1] + ref[:-2], axis=-1)
        three = both[2:] & both[1:-1] & both[:-2]
        accel.append(a_est[three])
        true_accel.append(a_ref[three])
    errors, accel, true_accel = np.concatenate(errors), np.concatenate(accel), np.concatenate(true_accel)
    return {"error_px": round(float(errors.mean()), 3), "error_p95_px": round(float(np.percentile(errors, 95)), 3),
            "acceleration_px_per_frame2": round(float(accel.mean()), 3),
            "acceleration_median_px_per_frame2": round(float(np.median(accel)), 3),
            "true_acceleration_px_per_frame2": round(float(true_accel.mean()), 3),
            "keypoints": int(errors.size), "triples": int(accel.size)}


# -------------------------------------------------------------------------------------------------------- main

TRACKERS = {
    "greedy IoU, score >= 0.5 (baseline)": lambda: GreedyTracker(min_score=0.5),
    "greedy IoU, score >= 0.3 (baseline)": lambda: GreedyTracker(min_score=0.3),
    "PoseTracker (defaults: IoU + OKS, oks_weight 0.5)": lambda: PoseTracker(),
    "PoseTracker, IoU only (ByteTrack's, oks_weight 0)": lambda: PoseTracker(oks_weight=0.0),
    "PoseTracker, OKS only (oks_weight 1)": lambda: PoseTracker(oks_weight=1.0),
    "PoseTracker without the low-score stage (low_score 0.5)": lambda: PoseTracker(low_score=0.5),
}
ONE_EURO_GRID = {"min_cutoff": (0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0), "beta": (0.0, 0.003, 0.01, 0.03, 0.1, 0.3),
                 "d_cutoff": (1.0,)}


def load_clips(root: Path, seeds: range, frames: int) -> list[tuple[list[Truth], list[Detections]]]:
    clips = []
    for seed in seeds:
        truth = render_clip(root / f"clip{seed}", seed, frames)
        clips.append((truth, simulate_detections(truth, seed)))
    return clips


def choose_one_euro(clips) -> tuple[dict, list[dict]]:
    """The grid point of least keypoint error on `clips` (tracked by PoseTracker), and the whole grid."""
    tracked = [(truth, dets, run_tracker(PoseTracker(), dets)) for truth, dets in clips]
    grid = []
    for min_cutoff in ONE_EURO_GRID["min_cutoff"]:
        for beta in ONE_EURO_GRID["beta"]:
            for d_cutoff in ONE_EURO_GRID["d_cutoff"]:
                params = {"min_cutoff": min_cutoff, "beta": beta, "d_cutoff": d_cutoff}
                runs = [(truth, dets, ids, run_smoother(KeypointSmoother(**params), dets, ids))
                        for truth, dets, ids in tracked]
                grid.append({**params, **keypoint_jitter(runs)})
    return min(grid, key=lambda g: g["error_px"]), grid


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--tune-clips", type=int, default=20)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        clips = load_clips(Path(tmp), range(args.clips), args.frames)
        tune = load_clips(Path(tmp), range(TUNE_SEED, TUNE_SEED + args.tune_clips), args.frames)

    trackers = {}
    frames = sum(len(dets) for _, dets in clips)
    for name, make in TRACKERS.items():
        tick = time.perf_counter()
        ids = [run_tracker(make(), dets) for _, dets in clips]
        ms_per_frame = (time.perf_counter() - tick) * 1e3 / frames
        per_clip = [mot_metrics([(truth, dets, i)]) for (truth, dets), i in zip(clips, ids)]
        trackers[name] = {**mot_metrics([(truth, dets, i) for (truth, dets), i in zip(clips, ids)]),
                          "ms_per_frame": round(ms_per_frame, 3),
                          "per_clip": [{k: c[k] for k in ("idf1", "num_switches", "num_unique_objects")}
                                       for c in per_clip]}

    best, grid = choose_one_euro(tune)
    chosen = {k: best[k] for k in ("min_cutoff", "beta", "d_cutoff")}
    tracked = [(truth, dets, run_tracker(PoseTracker(), dets)) for truth, dets in clips]
    defaults = KeypointSmoother()
    smoothers = {
        f"One Euro, defaults (min_cutoff {defaults.min_cutoff}, beta {defaults.beta})": {},
        f"One Euro, the grid's best on the tuning clips (min_cutoff {chosen['min_cutoff']}, beta {chosen['beta']})":
            chosen,
        "One Euro, heavier (min_cutoff 0.5, beta 0)": {"min_cutoff": 0.5, "beta": 0.0},
    }
    smoothing = {"none": keypoint_jitter([(t, d, i, [x.keypoints for x in d]) for t, d, i in tracked])}
    for name, params in smoothers.items():
        tick = time.perf_counter()
        smoothed = [run_smoother(KeypointSmoother(**params), d, i) for _, d, i in tracked]
        ms_per_frame = (time.perf_counter() - tick) * 1e3 / frames
        smoothing[name] = {**keypoint_jitter([(t, d, i, k) for (t, d, i), k in zip(tracked, smoothed)]),
                           "ms_per_frame": round(ms_per_frame, 3)}

    record = {
        "benchmark": "tracking",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/bench_tracking.py " + " ".join(argv if argv is not None else []),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count(),
                    "load_average_1min": round(os.getloadavg()[0], 1)},
        "clips": {"evaluation_seeds": [0, args.clips - 1], "tuning_seeds": [TUNE_SEED, TUNE_SEED + args.tune_clips - 1],
                  "frames": args.frames, "size": list(SIZE), "fps": FPS,
                  "people": sum(len({int(i) for gt in truth for i in gt.ids}) for truth, _ in clips),
                  "people_per_frame": round(sum(len(gt.ids) for truth, _ in clips for gt in truth) / frames, 2),
                  "detections_per_frame": round(sum(len(d.scores) for _, dets in clips for d in dets) / frames, 2)},
        "detector_model": asdict(DetectorModel()),
        "tracker_defaults": {k: getattr(PoseTracker(), k) for k in (
            "high_score", "low_score", "new_score", "match_iou", "low_match_iou", "tentative_iou", "max_lost",
            "oks_weight")},
        "trackers": trackers,
        "one_euro": {"chosen": chosen, "grid_on_tuning_clips": grid},
        "smoothing": smoothing,
        "seconds": round(time.perf_counter() - start, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "tracking.json", record)
    atomic_write_text(args.out / "tracking.md", format_markdown(record))
    print(format_markdown(record))
    return 0


def format_markdown(record: dict) -> str:
    m, c = record["machine"], record["clips"]
    lines = [
        f"Recorded {record['date']} on {m['platform']} ({m['processor']}, {m['cpus']} CPUs, load average "
        f"{m['load_average_1min']}), Python {m['python']}, NumPy {m['numpy']}; {record['seconds']} s.",
        f"Command: {record['command'].strip()}",
        "",
        f"Clips: seeds {c['evaluation_seeds'][0]}-{c['evaluation_seeds'][1]}, {c['frames']} frames each at "
        f"{c['size'][0]}x{c['size'][1]}, {c['fps']} fps: {c['people']} people, {c['people_per_frame']} per frame; "
        f"detections simulated from the ground truth (DetectorModel in the script), {c['detections_per_frame']} "
        f"per frame. ms/frame: one core's wall time per frame, under the load above.",
        "",
        "| tracker | MOTA | IDF1 | ID switches | false positives | misses | fragmentations | ms/frame |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in record["trackers"].items():
        lines.append(f"| {name} | {r['mota']:.3f} | {r['idf1']:.3f} | {r['num_switches']} | "
                     f"{r['num_false_positives']} | {r['num_misses']} | {r['num_fragmentations']} | "
                     f"{r['ms_per_frame']:.2f} |")
    defaults = ", ".join(f"{k} {v}" for k, v in record["tracker_defaults"].items())
    lines += [
        "",
        f"PoseTracker defaults: {defaults} (seconds, IoU / similarity).",
        "",
        f"Keypoints of the default PoseTracker's tracks, smoothed or not (One Euro: min_cutoff and d_cutoff in Hz, "
        f"beta per pixel; the grid of {len(record['one_euro']['grid_on_tuning_clips'])} points was scored on seeds "
        f"{c['tuning_seeds'][0]}-{c['tuning_seeds'][1]}, least error against the truth). Acceleration "
        f"|x[t+1] - 2 x[t] + x[t-1]| and error against the true keypoints, over tracked detections of real people.",
        "",
        "| keypoints | acceleration px/frame^2, mean (truth's own) | median | error px | error p95 px | ms/frame |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in record["smoothing"].items():
        ms = f"{r['ms_per_frame']:.2f}" if "ms_per_frame" in r else "-"
        lines.append(f"| {name} | {r['acceleration_px_per_frame2']:.2f} ({r['true_acceleration_px_per_frame2']:.2f}) "
                     f"| {r['acceleration_median_px_per_frame2']:.2f} | {r['error_px']:.2f} | "
                     f"{r['error_p95_px']:.2f} | {ms} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
