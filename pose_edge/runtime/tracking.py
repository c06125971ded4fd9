"""Multi-person tracking: persistent ids across frames by ByteTrack's two-stage association (Zhang et al., 2022).

    tracker = PoseTracker()
    track_ids = tracker.update(boxes_xyxy, scores, keypoints, timestamp)   # int64 [P]; -1 where no confirmed id

One update, per frame:
  1. Every track's box is predicted to the frame's time by a constant-velocity Kalman filter on (cx, cy, w, h).
  2. High-score detections (score >= high_score) are matched to the confirmed tracks, those seen in the previous
     frame and those lost for up to max_lost seconds, on IoU >= match_iou (blended with OKS if oks_weight > 0).
  3. Low-score detections (low_score <= score < high_score) are matched to the confirmed tracks that were seen in the
     previous frame and are still unmatched, on IoU >= low_match_iou: a person half hidden keeps their id through
     the frames where the detector doubts them, and a doubtful detection never starts a track.
  4. The remaining high-score detections are matched to the tentative tracks born in the previous frame
     (IoU >= tentative_iou); a matched tentative track is confirmed and takes the next id; an unmatched one is dropped.
  5. The remaining detections with score >= new_score start tentative tracks; confirmed tracks unseen for longer than
     max_lost seconds are removed. Ids count up from 1 and are never reused.

Optimal assignment. ByteTrack solves each association with lap.lapjv (extend_cost, cost_limit). Here it is a small
Hungarian solver of our own (linear_assignment): a frame holds a few people, so the O(n^3) shortest-augmenting-path
method with NumPy rows is fast enough (0.3 ms for 4 x 4, 3 ms for 20 x 20 on a loaded 2-core VM), and the runtime
keeps its base install (numpy, opencv, onnxruntime, click) instead of adding SciPy (about 140 MB installed, for
linear_sum_assignment) or lap (a compiled extension to build or find wheels for on every robot's platform). Crowds of
a hundred people would want lap. tests/test_tracking.py checks the solver against brute force and against SciPy.

Units: boxes and keypoints in frame pixels (any consistent units work: the filter's noise scales with box height),
timestamps in seconds. Without timestamps, frames are taken to be 1 / frame_rate seconds apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pose_edge.errors import PoseEdgeError
from pose_edge.keypoints import OKS_SIGMAS

# Kalman filter noise, in box heights (ByteTrack's scaling: one setting serves people near and far). A box is
# measured to within 5 % of its height (ByteTrack's 1/20); its first velocity is unknown, about 1 height/s. The
# random acceleration (per sqrt(s)) is 0.5 heights/s^2 for the centre and 0.1 for the size: a walker's box breathes
# with the stride (its width triples and shrinks back within a second on the synthetic clips), and a size velocity
# fitted to that throws the predicted box of a briefly lost person off. Chosen on the tuning clips of
# benchmarks/bench_tracking.py: IDF1 0.53 with 2.0 for all four, 0.76 with these (IoU only).
MEASUREMENT_STD = 0.05
INITIAL_VELOCITY_STD = 1.0
ACCELERATION_STD = (0.5, 0.5, 0.1, 0.1)  # cx, cy, w, h
MIN_BOX_PX = 1.0  # predicted width and height never shrink below this


# -------------------------------------------------------------------------------------------------------- assignment

def linear_assignment(cost: np.ndarray, max_cost: float) -> np.ndarray:
    """Optimal one-to-one pairs of a cost matrix, gated: int64 [M, 2] of (row, column), rows ascending.

    cost float [R, C]. Only pairs with cost < max_cost can be taken, and the pairs taken maximise the sum of
    (max_cost - cost): leaving a row and a column unmatched costs max_cost, so a pair is taken when it is cheaper than
    that and no better use of its row and column exists (lap.lapjv's rule with extend_cost and cost_limit).
    Non-finite costs are never taken.
    """
    cost = np.asarray(cost, np.float64)
    if cost.ndim != 2:
        raise ValueError(f"cost must be a matrix, got shape {cost.shape}")
    feasible = np.isfinite(cost) & (cost < max_cost)
    if not feasible.any():
        return np.zeros((0, 2), np.int64)
    # Gain below leaving both unmatched (<= 0); an infeasible pair gains nothing and is dropped after solving.
    relative = np.where(feasible, cost - max_cost, 0.0)
    transposed = relative.shape[0] > relative.shape[1]
    col_of_row = _min_cost_matching(relative.T if transposed else relative)
    rows = np.arange(len(col_of_row))
    pairs = np.stack([rows, col_of_row], axis=1)
    if transposed:
        pairs = pairs[:, ::-1]
    pairs = pairs[feasible[pairs[:, 0], pairs[:, 1]]]
    return pairs[np.argsort(pairs[:, 0], kind="stable")].astype(np.int64)


def _min_cost_matching(cost: np.ndarray) -> np.ndarray:
    """Column of each row [N] of the full matching of least total cost; cost finite [N, M], N <= M.

    Shortest augmenting paths with row and column potentials (Kuhn-Munkres in the Jonker-Volgenant form): rows join
    one at a time; each grows a Dijkstra tree over reduced costs (cost - u[row] - v[col] >= 0) from a virtual column
    until it reaches a free column, then the matching flips along the path and the potentials keep reduced costs
    non-negative.
    """
    n, m = cost.shape
    u = np.zeros(n)
    v = np.zeros(m + 1)  # column m is the virtual column each new row starts from
    row_of = np.full(m + 1, -1)
    for row in range(n):
        row_of[m] = row
        col = m
        dist = np.full(m + 1, np.inf)  # shortest reduced distance found to each column
        came_from = np.full(m + 1, m)  # the column before it on that path
        in_tree = np.zeros(m + 1, bool)
        while True:
            in_tree[col] = True
            r = row_of[col]
            out = np.flatnonzero(~in_tree[:m])
            through_r = cost[r, out] - u[r] - v[out]
            shorter = through_r < dist[out]
            dist[out[shorter]] = through_r[shorter]
            came_from[out[shorter]] = col
            nearest = out[np.argmin(dist[out])]
            step = dist[nearest]
            tree = np.flatnonzero(in_tree)
            u[row_of[tree]] += step
            v[tree] -= step
            dist[out] -= step
            col = nearest
            if row_of[col] < 0:
                break
        while col != m:  # flip the path: every column on it takes the row of the column before it
            before = came_from[col]
            row_of[col] = row_of[before]
            col = before
    col_of_row = np.empty(n, np.int64)
    assigned = np.flatnonzero(row_of[:m] >= 0)
    col_of_row[row_of[assigned]] = assigned
    return col_of_row


# -------------------------------------------------------------------------------------------------------- similarity

def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU float64 [A, B] of boxes a [A, 4] and b [B, 4], xyxy; 0 where a box has no area."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def keypoint_similarity(a: np.ndarray, b: np.ndarray, areas: np.ndarray, sigmas: np.ndarray = OKS_SIGMAS
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(OKS float64 [A, B], defined bool [A, B]) of keypoints a [A, K, 3] and b [B, K, 3] (x, y, score).

    COCO's formula over the keypoints found (score > 0, finite) in both, with the scale of b's areas [B] (pixels^2);
    undefined (OKS 0) where no keypoint is found in both.
    """
    found_a = (a[..., 2] > 0) & np.isfinite(a).all(-1)
    found_b = (b[..., 2] > 0) & np.isfinite(b).all(-1)
    both = found_a[:, None] & found_b[None]
    d2 = ((np.nan_to_num(a[:, None, :, :2]) - np.nan_to_num(b[None, :, :, :2])) ** 2).sum(-1)  # [A, B, K]
    e = d2 / (2 * np.maximum(areas, 1.0)[None, :, None] * (2 * sigmas) ** 2)
    count = both.sum(-1)
    oks = np.where(both, np.exp(-e), 0.0).sum(-1) / np.maximum(count, 1)
    return oks, count > 0


# -------------------------------------------------------------------------------------------------------- motion

class BoxFilter:
    """Constant-velocity Kalman filter of one box: (cx, cy, w, h), each with its own (position, velocity) state.

    The four coordinates move independently and are measured directly, so the 8-state filter ByteTrack runs splits
    into four 2-state filters, done here side by side. Noise scales with the box height (ByteTrack's choice): one
    setting serves people near and far. Time in seconds, velocities in pixels per second; the process noise is that of
    a white random acceleration, so any frame interval works.
    """

    def __init__(self, box_xyxy: np.ndarray, t: float):
        z = _xyxy_to_cxcywh(box_xyxy)
        h = z[3]
        self.mean = np.stack([z, np.zeros(4)], axis=1)  # [4, 2]: (position, velocity) per coordinate
        self.cov = np.zeros((4, 2, 2))
        self.cov[:, 0, 0] = (2 * MEASUREMENT_STD * h) ** 2
        self.cov[:, 1, 1] = (INITIAL_VELOCITY_STD * h) ** 2
        self.t = t

    def predict(self, t: float) -> None:
        dt = t - self.t
        if dt <= 0:
            return
        q = (np.asarray(ACCELERATION_STD)[..., None, None] * self.mean[3, 0]) ** 2 * np.array(
            [[dt ** 3 / 3, dt ** 2 / 2], [dt ** 2 / 2, dt]])
        f = np.array([[1.0, dt], [0.0, 1.0]])
        self.mean = self.mean @ f.T
        self.cov = f @ self.cov @ f.T + q
        self.t = t

    def update(self, box_xyxy: np.ndarray) -> None:
        z = _xyxy_to_cxcywh(box_xyxy)
        r = (MEASUREMENT_STD * self.mean[3, 0]) ** 2
        gain = self.cov[:, :, 0] / (self.cov[:, 0, 0] + r)[:, None]  # [4, 2]
        self.mean = self.mean + gain * (z - self.mean[:, 0])[:, None]
        self.cov = self.cov - gain[:, :, None] * self.cov[:, None, 0, :]

    def box(self) -> np.ndarray:
        """The box now, xyxy float64 [4]."""
        cx, cy, w, h = self.mean[:, 0]
        w, h = max(w, MIN_BOX_PX), max(h, MIN_BOX_PX)
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def _xyxy_to_cxcywh(box: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = np.asarray(box, np.float64)
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])


# -------------------------------------------------------------------------------------------------------- tracker

@dataclass
class _Track:
    motion: BoxFilter
    last_seen: float  # timestamp of the last matched detection
    id: int = 0  # 0 while tentative
    keypoints: np.ndarray | None = None  # [K, 3] of the last matched detection
    keypoints_origin: np.ndarray | None = None  # the filtered box centre [2] when they were seen

    def observe(self, box: np.ndarray, keypoints: np.ndarray | None, t: float) -> None:
        self.motion.update(box)
        self.last_seen = t
        self.remember(keypoints)

    def remember(self, keypoints: np.ndarray | None) -> None:
        if keypoints is not None:
            self.keypoints = keypoints
            self.keypoints_origin = self.motion.mean[:2, 0].copy()

    def predicted_keypoints(self) -> np.ndarray | None:
        """The last keypoints moved with the box centre since they were seen."""
        if self.keypoints is None:
            return None
        moved = self.keypoints.copy()
        moved[:, :2] += self.motion.mean[:2, 0] - self.keypoints_origin
        return moved


class PoseTracker:
    """ByteTrack for people: persistent ids from per-frame boxes, scores and (optionally) keypoints.

    high_score, low_score   detection scores that split the two association stages; below low_score: ignored.
    new_score               the least score that starts a track (ByteTrack: high_score + 0.1).
    match_iou, low_match_iou, tentative_iou   the least IoU (or blended similarity) to match in stages 2, 3 and 4.
    max_lost                seconds a confirmed track survives unmatched (ByteTrack's buffer of 30 frames at 30 fps).
    frame_rate              frames per second assumed when update() gets no timestamp.
    oks_weight              similarity (1 - w) IoU + w OKS where both have COCO keypoints; 0: IoU only (ByteTrack's).
                            0.5 by measurement: on the synthetic clips, people who walk side by side share most of
                            their boxes but not their keypoints (ID switches 45 -> 17 on the tuning clips).
    """

    def __init__(self, high_score: float = 0.5, low_score: float = 0.1, new_score: float = 0.6,
                 match_iou: float = 0.2, low_match_iou: float = 0.5, tentative_iou: float = 0.3,
                 max_lost: float = 1.0, frame_rate: float = 30.0, oks_weight: float = 0.5):
        if not 0 <= low_score <= high_score <= new_score:
            raise PoseEdgeError(f"tracker thresholds must satisfy 0 <= low_score ({low_score}) <= high_score "
                                f"({high_score}) <= new_score ({new_score})")
        if frame_rate <= 0 or max_lost < 0 or not 0 <= oks_weight <= 1:
            raise PoseEdgeError(f"tracker needs frame_rate > 0 ({frame_rate}), max_lost >= 0 ({max_lost}) and "
                                f"0 <= oks_weight <= 1 ({oks_weight})")
        self.high_score, self.low_score, self.new_score = high_score, low_score, new_score
        self.match_iou, self.low_match_iou, self.tentative_iou = match_iou, low_match_iou, tentative_iou
        self.max_lost, self.frame_rate, self.oks_weight = max_lost, frame_rate, oks_weight
        self._next_id = 1
        self.reset()

    def reset(self) -> None:
        """Forget every track (a new stream). Ids keep counting up: an id is never given twice by one tracker."""
        self._tracks: list[_Track] = []
        self._time: float | None = None

    def update(self, boxes_xyxy: np.ndarray, scores: np.ndarray, keypoints: np.ndarray | None = None,
               timestamp: float | None = None) -> np.ndarray:
        """Track ids int64 [P] of one frame's detections; -1 for a detection without a confirmed track.

        boxes_xyxy float [P, 4] frame pixels, scores float [P], keypoints float [P, K, 3] (x, y, score) or None,
        timestamp in seconds (non-decreasing) or None. Rows with a non-finite or empty box or a non-finite score
        take no part and get -1. Keypoints serve OKS (oks_weight > 0) and only for K = 17 (COCO); otherwise they
        are not used.
        """
        boxes, scores, keypoints = _check_detections(boxes_xyxy, scores, keypoints)
        previous, now = self._time, self._clock(timestamp)
        for track in self._tracks:
            track.motion.predict(now)
        valid = np.isfinite(boxes).all(1) & np.isfinite(scores) & (boxes[:, 2] > boxes[:, 0]) & (
            boxes[:, 3] > boxes[:, 1])
        high = np.flatnonzero(valid & (scores >= self.high_score))
        low = np.flatnonzero(valid & (scores >= self.low_score) & (scores < self.high_score))
        confirmed = [t for t in self._tracks if t.id]
        tentative = [t for t in self._tracks if not t.id]

        first, unmatched, high = self._associate(confirmed, high, boxes, keypoints, self.match_iou)
        recent = [t for t in unmatched if t.last_seen == previous]
        second, _, _ = self._associate(recent, low, boxes, keypoints, self.low_match_iou)
        third, _, high = self._associate(tentative, high, boxes, keypoints, self.tentative_iou)

        track_ids = np.full(len(scores), -1, np.int64)
        for track, d in first + second + third:
            track.observe(boxes[d], None if keypoints is None else keypoints[d], now)
            if not track.id:
                track.id, self._next_id = self._next_id, self._next_id + 1
            track_ids[d] = track.id
        # Tentative tracks live one frame unless matched; confirmed ones until max_lost.
        self._tracks = [t for t in self._tracks if t.last_seen == now or (t.id and now - t.last_seen <= self.max_lost)]
        for d in high[scores[high] >= self.new_score]:
            track = _Track(BoxFilter(boxes[d], now), now)
            track.remember(None if keypoints is None else keypoints[d])
            self._tracks.append(track)
        return track_ids

    def _clock(self, timestamp: float | None) -> float:
        if timestamp is None:
            now = 0.0 if self._time is None else self._time + 1.0 / self.frame_rate
        else:
            now = float(timestamp)
            if not np.isfinite(now) or (self._time is not None and now < self._time):
                raise PoseEdgeError(f"tracker timestamps must be finite and non-decreasing (got {now} after "
                                    f"{self._time}); call reset() when a stream restarts")
        self._time = now
        return now

    def _associate(self, tracks: list[_Track], dets: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray | None,
                   min_similarity: float) -> tuple[list[tuple[_Track, int]], list[_Track], np.ndarray]:
        """(matched (track, detection index) pairs, unmatched tracks, unmatched detection indices)."""
        if not tracks or not len(dets):
            return [], tracks, dets
        similarity = box_iou(np.stack([t.motion.box() for t in tracks]), boxes[dets])
        if self.oks_weight > 0 and keypoints is not None:
            det_boxes = boxes[dets]
            areas = (det_boxes[:, 2] - det_boxes[:, 0]) * (det_boxes[:, 3] - det_boxes[:, 1])
            none_found = np.zeros(keypoints.shape[1:])  # a track without keypoints is matched on IoU alone
            track_keypoints = [t.predicted_keypoints() for t in tracks]
            oks, defined = keypoint_similarity(np.stack([none_found if k is None else k for k in track_keypoints]),
                                               keypoints[dets], areas)
            similarity = np.where(defined, (1 - self.oks_weight) * similarity + self.oks_weight * oks, similarity)
        pairs = linear_assignment(1.0 - similarity, 1.0 - min_similarity)
        matched = [(tracks[i], int(dets[j])) for i, j in pairs]
        taken_tracks, taken_dets = set(pairs[:, 0].tolist()), set(pairs[:, 1].tolist())
        return (matched, [t for i, t in enumerate(tracks) if i not in taken_tracks],
                np.array([d for j, d in enumerate(dets) if j not in taken_dets], np.int64))


def _check_detections(boxes, scores, keypoints) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    boxes = np.asarray(boxes, np.float64)
    scores = np.asarray(scores, np.float64)
    if boxes.size == 0 and scores.size == 0:
        boxes, scores = boxes.reshape(0, 4), scores.reshape(0)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.shape != (len(boxes),):
        raise PoseEdgeError(f"tracker needs boxes [P, 4] and scores [P], got {boxes.shape} and {scores.shape}")
    if keypoints is not None:
        keypoints = np.asarray(keypoints, np.float64)
        if keypoints.ndim != 3 or keypoints.shape[0] != len(boxes) or keypoints.shape[2] != 3:
            raise PoseEdgeError(f"tracker keypoints must be [P, K, 3] with P = {len(boxes)}, got {keypoints.shape}")
        if keypoints.shape[1] != len(OKS_SIGMAS):
            keypoints = None  # OKS is defined for the COCO keypoints only; tracking goes on by IoU
    return boxes, scores, keypoints
