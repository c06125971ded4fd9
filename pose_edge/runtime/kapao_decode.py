"""KAPAO post-processing in NumPy: decode the raw head grids, NMS, and fuse keypoint objects into pose objects.

This module is the reference that the CUDA kernels are tested against, so every rule below is part of its contract.
It also serves the person detector (a KAPAO-style head with one class and no keypoints). Torch-free.

Inputs
------
outputs      list over levels l of float32 [N, A*D, H_l, W_l] raw grids, exactly as the network's forward returns them
             (no sigmoid, no permute), with D = 5 + num_classes + 2*num_keypoints and channel index a*D + c.
strides      [L] ints, S_l = input size / grid size (8, 16, 32, 64 for the P6 models).
anchors      [L][A] (w, h) in input pixels.
num_classes  nc: 18 for KAPAO (class 0 = person pose object, class 1 + k = keypoint object of keypoint k),
             1 for the person detector.
num_keypoints K: 17 for KAPAO, 0 for the person detector.

Decoded rows (`decode`)
-----------------------
float32 [N, R, D], R = sum_l A*H_l*W_l, row r = offset_l + (a*H_l + gy)*W_l + gx (levels in the order given, then
anchor, then grid row, then grid column). With y = sigmoid(raw) on every channel, s = S_l, (aw, ah) = anchor a:
    [0:2]  cx, cy = (2*y - 0.5 + (gx, gy)) * s                       box centre, input pixels
    [2:4]  w, h   = (2*y)^2 * (aw, ah)                               box size, input pixels (0 .. 4 anchors)
    [4]    obj    = y                                                objectness
    [5:5+nc]        class probabilities
    [5+nc:D]        keypoints x0, y0, x1, y1, ...: (4*y - 2) * (aw, ah) + (gx, gy) * s, input pixels. The offset is
                    measured from the cell's top-left corner (g*s, no +0.5), not from the box centre (reference §A.2).
Input pixels are letterboxed-input coordinates in the pixel-corner convention (x = 0 is the left edge of the image).

Candidate selection (`select_candidates`, reference `non_max_suppression_kp`)
---------------------------------------------------------------------------
1. keep rows with obj > conf_thres;
2. conf_c = obj * cls_c in float32 for every class; the best class is the first index of the largest conf_c;
   keep the row if that conf > conf_thres;
3. keep the row if its best class is in `classes` (so an anchor whose best class is a keypoint can never be a person
   candidate, as in the reference);
4. order by conf descending, equal confs in increasing row index (a stable sort); keep the first max_nms.
Non-finite rows fail the comparisons and drop out.

What is decoded (`postprocess`, `decode_candidates`)
----------------------------------------------------
The rules here are stated on every decoded row; the post-processing decodes only what they can keep, each value by
the same float32 operations as `decode`, so its results are the rules' results on `decode`'s rows, bit for bit:
objectness is compared on the raw logits first (the sigmoid is monotonic: obj > t <=> raw > logit(t);
`logit_floor` lies a margin below logit(t) and the decoded objectness of the rows above it decides exactly); the
other head channels are decoded for those rows only (when they are many, in stages: objectness, then the pass's
classes, all classes only where obj * cls > t for one of them), keypoints for the poses the person pass keeps.
Rows of several test-time augmentation passes can be selected per pass (`decode_candidates`), transformed and
concatenated pass after pass for `postprocess_rows`: selection reads objectness, the best confidence and whether
the best class is the person class, which rescaling and de-flipping leave unchanged.

NMS (`nms`): exactly what torchvision.ops.batched_nms keeps, in the same order
--------------------------------------------------------------------------------
Boxes are xyxy float32 (x1 = cx - w/2, x2 = cx + w/2 computed in float32). Candidates are visited in score order,
highest first, equal scores in increasing index (torchvision sorts stably). A visited box that is not suppressed is
kept and suppresses every later box of the **same class** whose IoU with it is > iou_threshold (strictly). IoU is
computed in float32 the way torchvision's kernel does it:
    area = (x2 - x1) * (y2 - y1);  inter = max(0, min(x2) - max(x1)) * max(0, min(y2) - max(y1))
    iou = inter / ((area_i + area_j) - inter)                          and compared with the threshold in float64.
Consequences: identical boxes of one class keep only the first visited one; two zero-area identical boxes have
IoU 0/0 = NaN and both stay; no input gives no output. The result is the kept indices in visiting order (score
descending), which is torchvision's order. max_keep stops after that many kept boxes, which is the same as taking the
first max_keep of the full result. Note: batched_nms offsets boxes by class * (max coordinate + 1) when it has at most
1000 boxes; that offset can round coordinates that are not exactly representable, so on such inputs the two can
differ only where an IoU lies within float32 rounding of the threshold. With coordinates that stay exact (e.g.
multiples of 1/64 px), and always against torchvision's per-class path, the kept sets are identical. Above 1000
boxes on the CPU torchvision takes that per-class path and orders its result with an unstable sort, so among equal
scores its order is arbitrary; ours stays the visiting order (ties by increasing index).

Two NMS passes (reference `val.py` `run_nms`, COCO defaults in `Thresholds`)
---------------------------------------------------------------------------
person pass:   classes {0}, conf_thres 0.001, iou_thres 0.65, at most max_det 300 poses;
keypoint pass: classes {1..K}, conf_thres_kp 0.2, iou_thres_kp 0.25, at most max_det 300 keypoint objects.
The person detector runs the person pass only.

Fusion (`fuse_keypoints`, reference §A.5 `post_process_batch`)
-------------------------------------------------------------
Coordinates: fusion runs in **original image pixels**, after the letterbox is undone (x_img = (x_in - pad_x) / gain),
so overwrite_tol (50 px) is in original-image pixels as in the reference. Keypoint-object positions are the decoded
box centres (cx, cy).
Each pose starts with its K decoded keypoints, every one with confidence 0. Only poses with score >
conf_thres_kp_person (0.3) are eligible. Keypoint detections are processed in keypoint-pass NMS order (conf
descending, ties by row index). For detection (x, y, conf, keypoint type k):
    d2_p = dx*dx + dy*dy in float32 between (x, y) and the *current* keypoint k of every eligible pose p;
    p* = the first eligible pose (in person-pass NMS order) with the smallest d2;
    if conf > current confidence of p*'s keypoint k and d2_p* < overwrite_tol**2 (compared in float64):
        p*'s keypoint k becomes (x, y, conf).
So each detection updates at most one pose, and only its nearest eligible pose: if that one already holds a more
(or equally) confident keypoint, the detection is dropped, even when another pose lies within the tolerance. Earlier
detections move keypoints, and later detections of the same type measure against the moved positions. Detections of
different keypoint types never interact, so the scan runs over all types at once: step t processes the t-th
detection of every type (a CUDA kernel can give each type its own thread and scan its detections in order).

Outputs (`Poses`, one per image)
-----------------------------------------
boxes [P, 4] float32 xyxy in image pixels (not clipped), scores [P] float32 (person conf = obj * cls0, in person-pass
order), keypoints [P, K, 3] float32 (x, y, conf) in image pixels, conf 0 where no keypoint object was fused. The
COCO result of a pose is its keypoints with score = its person score (no rescoring, no OKS-NMS).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pose_edge.geometry import Letterbox
from pose_edge.runtime.poses import Poses
from pose_edge.runtime.settings import COCO_THRESHOLDS, Thresholds


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) in float32; exp overflow for very negative x correctly gives 0."""
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore"):
        return np.float32(1.0) / (np.float32(1.0) + np.exp(-x))


def row_width(num_classes: int, num_keypoints: int) -> int:
    """D, the channels per anchor: box (4) + objectness (1) + classes + keypoint (x, y) pairs."""
    return 5 + num_classes + 2 * num_keypoints


def _check_level(raw: np.ndarray, num_anchors: int, depth: int) -> np.ndarray:
    raw = np.asarray(raw)
    if raw.ndim != 4 or raw.shape[1] != num_anchors * depth:
        raise ValueError(f"a level grid has {raw.shape[1] if raw.ndim == 4 else raw.shape} channels; expected "
                         f"{num_anchors} anchors x {depth}")
    return raw


def _check_levels(outputs, strides, anchors) -> None:
    if len(outputs) != len(strides) or len(outputs) != len(anchors):
        raise ValueError(f"{len(outputs)} output grids for {len(strides)} strides and {len(anchors)} anchor levels")


def _decode_head(raw: np.ndarray, grid: np.ndarray, stride, anchor_wh: np.ndarray) -> np.ndarray:
    """Raw channels 0..4+nc [..., 5 + nc] -> decoded float32: box (cx, cy, w, h), objectness, classes.

    grid [..., 2] float32 (gx, gy) and anchor_wh [..., 2] float32 broadcast against the rows, stride a number or a
    float32 array that broadcasts likewise. A row's values depend on that row only and every row takes the same
    float32 operations, so rows decoded alone, in any layout, equal the same rows of `decode` bit for bit.
    """
    return _decode_box(sigmoid(raw), grid, stride, anchor_wh)


def _decode_box(y: np.ndarray, grid: np.ndarray, stride, anchor_wh: np.ndarray) -> np.ndarray:
    """`_decode_head` from the sigmoid of the raw channels, y float32 [..., 5 + nc]."""
    s = np.asarray(stride, np.float32)
    out = np.empty(y.shape, np.float32)
    out[..., 0:2] = (np.float32(2.0) * y[..., 0:2] - np.float32(0.5) + grid) * s
    out[..., 2:4] = (np.float32(2.0) * y[..., 2:4]) ** 2 * anchor_wh
    out[..., 4:] = y[..., 4:]
    return out


def _decode_keypoints(raw: np.ndarray, grid: np.ndarray, stride, anchor_wh: np.ndarray) -> np.ndarray:
    """Raw keypoint channels [..., 2K] -> decoded float32 (x0, y0, x1, ...), as `_decode_head` for the rest."""
    y = sigmoid(raw)
    kp = y.reshape(*y.shape[:-1], y.shape[-1] // 2, 2)
    kp = (np.float32(4.0) * kp - np.float32(2.0)) * anchor_wh[..., None, :] + grid[..., None, :] * np.float32(stride)
    return kp.reshape(y.shape)


def decode(outputs: Sequence[np.ndarray], strides: Sequence[int], anchors, num_classes: int,
           num_keypoints: int) -> np.ndarray:
    """Raw level grids -> decoded rows float32 [N, R, D] (layout and order in the module docstring), every row.

    The post-processing itself decodes only the rows that can be candidates (`decode_candidates`); this full decode
    is for inspection, tests and graph comparisons.
    """
    _check_levels(outputs, strides, anchors)
    depth = row_width(num_classes, num_keypoints)
    rows = []
    for raw, stride, level_anchors in zip(outputs, strides, anchors):
        num_anchors = len(level_anchors)
        raw = _check_level(raw, num_anchors, depth)
        n, _, height, width = raw.shape
        # [N, A, D, H, W] -> [N, A, H, W, D]: one row per (anchor, cell), channels last.
        values = raw.reshape(n, num_anchors, depth, height, width).transpose(0, 1, 3, 4, 2)
        anchor_wh = np.asarray(level_anchors, np.float32).reshape(1, num_anchors, 1, 1, 2)
        gy, gx = np.meshgrid(np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32), indexing="ij")
        grid = np.stack([gx, gy], axis=-1).reshape(1, 1, height, width, 2)  # (gx, gy) per cell
        out = np.empty(values.shape, np.float32)
        out[..., :5 + num_classes] = _decode_head(values[..., :5 + num_classes], grid, stride, anchor_wh)
        out[..., 5 + num_classes:] = _decode_keypoints(values[..., 5 + num_classes:], grid, stride, anchor_wh)
        rows.append(out.reshape(n, num_anchors * height * width, depth))
    return np.concatenate(rows, axis=1)


@functools.lru_cache(maxsize=64)
def logit_floor(conf_thres: float) -> np.float32:
    """A float32 raw value below which the decoded objectness cannot exceed conf_thres.

    The sigmoid is monotonic, so obj > t <=> raw > logit(t); the floor lies below logit(t) by a margin (1e-4, and
    1e-5 / (1 - t) near 1) far wider than the float32 sigmoid's rounding (a few ulp, i.e. ~4e-7 / (1 - t) in raw
    units), so rows near the boundary pass the floor and the exact test on their decoded objectness decides them:
    the kept set is the one thresholding every decoded row gives. t is taken as the smaller of its float64 and
    float32 values (the comparison may run in either). -inf for t <= 0 (every row but NaN passes).
    """
    t = min(float(conf_thres), float(np.float32(conf_thres)))
    if not t > 0:
        return np.float32(-np.inf)
    if t >= 1:
        return np.float32(np.inf)  # no objectness exceeds 1; +inf rows (sigmoid 1) are still tested exactly
    floor = np.log(t) - np.log1p(-t) - (1e-4 + 1e-5 / (1 - t))
    return np.nextafter(np.float32(floor), np.float32(-np.inf))


def _best_class(obj: np.ndarray, cls_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """obj float32 [M], class probabilities float32 [nc, M] (class-major) -> (conf float32 [M], best int64 [M]).

    conf_c = obj * cls_c in float32; the best class is the first index of the largest conf_c (np.argmax's rule).
    A row with a NaN conf_c has conf NaN, which fails every threshold; its best class is not used. A few rows take
    np.argmax along the class axis; many take elementwise passes over the nc rows instead, because NumPy's argmax
    along a short axis costs a call per row (the two crossed near 800 rows on the 2-core build machine).
    """
    conf_t = cls_t * obj
    conf = np.maximum.reduce(conf_t, axis=0)
    if len(obj) <= _ARGMAX_ROWS:
        return conf, conf_t.argmax(axis=0)
    best = np.zeros(len(obj), np.int64)
    for c in range(len(conf_t) - 1, 0, -1):  # downwards, so that the first class equal to the largest wins
        best[conf_t[c] == conf] = c
    best[conf_t[0] == conf] = 0
    return conf, best


_ARGMAX_ROWS = 512


def _class_mask(classes: Sequence[int], num_classes: int) -> np.ndarray:
    """bool [nc], read-only: which class indices are in `classes` (indices outside 0..nc-1 match nothing)."""
    return _cached_class_mask(classes if isinstance(classes, tuple) else tuple(classes), num_classes)


@functools.lru_cache(maxsize=64)
def _cached_class_mask(classes: tuple[int, ...], num_classes: int) -> np.ndarray:
    mask = np.zeros(num_classes, bool)
    classes = np.asarray(classes, np.int64)
    mask[classes[(classes >= 0) & (classes < num_classes)]] = True
    mask.flags.writeable = False
    return mask


def _candidate_mask(obj: np.ndarray, conf: np.ndarray, best: np.ndarray, num_classes: int, passes) -> np.ndarray:
    """bool [M]: which rows are candidates (`select_candidates`) of any pass, from their objectness and best class
    (`_best_class`).

    A pass keeps a row when obj > conf_thres and its best class (over all classes) is one of the pass's with
    conf = obj * cls > conf_thres (which implies that the largest obj * cls over the pass's classes exceeds it).
    """
    keep = np.zeros(len(obj), bool)
    for conf_thres, _, classes in passes:
        keep |= (obj > conf_thres) & (conf > conf_thres) & _class_mask(classes, num_classes)[best]
    return keep


def _candidate_mask_staged(decoded, count: int, num_classes: int, passes) -> np.ndarray:
    """`_candidate_mask` for many rows, decoding as few values as it can: decoded(rows, channels) -> float32
    [len(channels), len(rows)], those channels of those rows, decoded.

    A row needs obj > conf_thres and the largest obj * cls over the pass's classes above conf_thres (its best class
    must be one of them, with that conf): only rows that pass both are decoded on every class to find their best
    class exactly (the person pass decodes one class of most rows, all of a few).
    """
    keep = np.zeros(count, bool)
    every = np.arange(5, 5 + num_classes)
    obj = decoded(np.arange(count), np.array([4]))[0]
    for conf_thres, _, classes in passes:
        rows = (obj > conf_thres).nonzero()[0]
        mine = _class_mask(classes, num_classes).nonzero()[0]
        rows = rows[np.maximum.reduce(decoded(rows, 5 + mine) * obj[rows], axis=0) > conf_thres]
        conf, best = _best_class(obj[rows], decoded(rows, every))
        keep[rows[(conf > conf_thres) & _class_mask(classes, num_classes)[best]]] = True
    return keep


_STAGED_ROWS = 4096  # from this many rows above the logit floor, the candidate test decodes in stages


def _passes(num_classes: int, num_keypoints: int, t: Thresholds) -> list[tuple[float, float, tuple[int, ...]]]:
    """(conf_thres, iou_thres, classes) of the NMS passes `postprocess_rows` runs: person, then keypoint."""
    passes = [(t.conf_thres, t.iou_thres, (0,))]
    if num_keypoints and t.use_kp_dets:
        passes.append((t.conf_thres_kp, t.iou_thres_kp, tuple(range(1, 1 + num_keypoints))))
    return passes


@dataclass
class _Candidates:
    """One image's candidate rows (increasing row index): channels 0..4+nc decoded, keypoints decoded on request."""

    head: np.ndarray  # float32 [M, 5 + nc]
    index: np.ndarray  # int64 [M]: row index (decode's order)
    level: np.ndarray  # int64 [M]: output level of each row
    start: np.ndarray  # int64 [M]: flat position of the row's channel 0 in its level's raw grid
    grid: np.ndarray  # float32 [M, 2]: (gx, gy)
    anchor_wh: np.ndarray  # float32 [M, 2]
    conf: np.ndarray  # float32 [M]: obj * cls of the best class (`_best_class`)
    best: np.ndarray  # int64 [M]: the best class
    levels: list  # per level: (raw grid, stride, cells per map)
    num_keypoints: int

    @classmethod
    def none(cls, levels: list, num_classes: int, num_keypoints: int) -> "_Candidates":
        """An image without candidates."""
        def empty(*shape, dtype=np.float32):
            return np.zeros((0, *shape), dtype)
        return cls(empty(5 + num_classes), empty(dtype=np.int64), empty(dtype=np.int64), empty(dtype=np.int64),
                   empty(2), empty(2), empty(), empty(dtype=np.int64), levels, num_keypoints)

    def keypoints(self, which: np.ndarray) -> np.ndarray:
        """float32 [len(which), 2K]: the decoded keypoint channels of the candidate rows `which`."""
        which = np.asarray(which, np.int64)
        out = np.empty((len(which), 2 * self.num_keypoints), np.float32)
        channels = np.arange(self.head.shape[1], self.head.shape[1] + 2 * self.num_keypoints)  # from 5 + nc
        level = self.level[which]
        for number in np.bincount(level, minlength=len(self.levels)).nonzero()[0]:  # levels holding a row
            raw, stride, cells = self.levels[number]
            mine = (level == number).nonzero()[0]
            rows = which[mine]
            values = np.take(raw, self.start[rows] + channels[:, None] * cells).T  # gathered channel by channel
            out[mine] = _decode_keypoints(values, self.grid[rows], stride, self.anchor_wh[rows])
        return out


def _select(outputs: Sequence[np.ndarray], strides: Sequence[int], anchors, num_classes: int, num_keypoints: int,
            thresholds: Thresholds) -> list[_Candidates]:
    """The candidate rows of every image (see `decode_candidates`), keypoint channels not yet decoded.

    Each level gives the rows whose raw objectness reaches the logit floor; from there all levels and images are
    handled at once, so a frame with a handful of candidates costs a few dozen NumPy calls, not a few per level,
    class and pass. Up to _STAGED_ROWS such rows have all their head channels decoded at once (the fewest calls);
    more are tested in stages (the fewest values decoded: a busy frame at COCO's 0.001 has ~30,000 such rows an
    image, most of which need their objectness and one class only).
    """
    _check_levels(outputs, strides, anchors)
    depth = row_width(num_classes, num_keypoints)
    passes = _passes(num_classes, num_keypoints, thresholds)
    floor = logit_floor(min(conf for conf, _, _ in passes))
    batch, offset, levels, found, shapes = None, 0, [], [], []
    for number, (raw, stride, level_anchors) in enumerate(zip(outputs, strides, anchors)):
        num_anchors = len(level_anchors)
        raw = np.ascontiguousarray(_check_level(raw, num_anchors, depth))
        n, _, height, width = raw.shape
        if batch is not None and n != batch:
            raise ValueError(f"level grids hold {batch} and {n} images")
        batch, cells = n, height * width
        levels.append((raw, stride, cells))
        shapes.append((cells, width, num_anchors, offset, sum(len(a) for a in anchors[:number])))
        offset += num_anchors * cells
        # Flat positions in the raw grid [N*A, D, H*W]: (image*A + anchor, channel, cell). Values are gathered
        # channel by channel (each channel's positions ascend), which reads memory in order.
        slot, cell = (raw.reshape(n * num_anchors, depth, cells)[:, 4, :] >= floor).nonzero()  # NaN fails
        if len(slot):  # ascending (slot, cell): row order within each image
            found.append((number, slot * cells + cell, slot * (depth * cells) + cell))  # ..., channel 0 of each row
    if not found:
        return [_Candidates.none(levels, num_classes, num_keypoints) for _ in range(batch or 0)]
    numbers, hits, starts = zip(*found)
    level_ends = list(itertools.accumulate(len(h) for h in hits))  # hits are concatenated level after level
    hits, start = np.concatenate(hits), np.concatenate(starts)

    def raw_values(rows: np.ndarray | None, channels: np.ndarray) -> np.ndarray:
        """float32 [len(channels), len(rows)]: raw channels of the hits at ascending positions `rows` (None: all)."""
        if rows is None:
            return np.concatenate([np.take(levels[number][0], level_start + channels[:, None] * levels[number][2])
                                   for number, level_start in zip(numbers, starts)], axis=1)
        out = np.empty((len(channels), len(rows)), np.float32)
        bounds = np.searchsorted(rows, level_ends)
        for number, lo, hi in zip(numbers, (0, *bounds[:-1]), bounds):
            if hi > lo:
                raw, _, cells = levels[number]
                out[:, lo:hi] = np.take(raw, start[rows[lo:hi]] + channels[:, None] * cells)
        return out

    head_channels = np.arange(5 + num_classes)
    if len(start) <= _STAGED_ROWS:
        y = sigmoid(raw_values(None, head_channels))  # [5 + nc, M]
        conf, best = _best_class(y[4], y[5:])
        keep = _candidate_mask(y[4], conf, best, num_classes, passes).nonzero()[0]
        if not len(keep):
            return [_Candidates.none(levels, num_classes, num_keypoints) for _ in range(batch)]
        y, conf, best = y[:, keep], conf[keep], best[keep]
    else:
        keep = _candidate_mask_staged(lambda rows, channels: sigmoid(raw_values(rows, channels)), len(start),
                                      num_classes, passes).nonzero()[0]
        y = sigmoid(raw_values(keep, head_channels))
        conf, best = _best_class(y[4], y[5:])
    level = np.asarray(numbers)[np.searchsorted(level_ends, keep, side="right")]
    # Where the kept rows are: their level's cells, width, anchors, first row and first anchor, then image,
    # anchor and cell.
    hits, start = hits[keep], start[keep]
    cells, width, num_anchors, offset, first_anchor = np.array(shapes)[level].T
    slot, cell = np.divmod(hits, cells)
    image, anchor = np.divmod(slot, num_anchors)
    if batch > 1:  # levels were concatenated one after the other: sorted by image, each image's rows in row order
        order = np.argsort(image, kind="stable")
        level, start, cell, image, anchor, offset, cells, width, first_anchor = (a[order] for a in (
            level, start, cell, image, anchor, offset, cells, width, first_anchor))
        y, conf, best = y[:, order], conf[order], best[order]
    index = offset + anchor * cells + cell
    gy, gx = np.divmod(cell, width)
    grid = np.stack([gx, gy], axis=1, dtype=np.float32)
    anchor_wh = np.array([wh for level_anchors in anchors for wh in level_anchors], np.float32)[first_anchor + anchor]
    head = _decode_box(y.T, grid, np.asarray(strides, np.float32)[level, None], anchor_wh)
    bounds = np.searchsorted(image, np.arange(batch + 1))
    return [_Candidates(*(a[lo:hi] for a in (head, index, level, start, grid, anchor_wh, conf, best)), levels,
                        num_keypoints) for lo, hi in zip(bounds[:-1], bounds[1:])]


def decode_candidates(outputs: Sequence[np.ndarray], strides: Sequence[int], anchors, num_classes: int,
                      num_keypoints: int, thresholds: Thresholds = COCO_THRESHOLDS
                      ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Raw level grids for N images -> per image (rows float32 [M, D], row index int64 [M]): the candidate rows.

    A row is kept if it is a candidate (`select_candidates`) of the person pass or, when `postprocess_rows` runs
    the keypoint pass, of the keypoint pass; rows come in increasing row index and equal `decode`'s rows bit for
    bit, so `postprocess_rows` on them returns exactly what it returns on all of `decode`'s rows. Work: objectness
    is thresholded on the raw logits (`logit_floor`), objectness and classes are decoded only for the rows above
    the floor, and whole rows only for the candidates.

    The selection reads only objectness, the best confidence and whether the best class is the person class, which
    the test-time augmentations (rescale, de-flip) leave unchanged: rows of several passes can be selected per
    pass, transformed, and concatenated (pass after pass) before `postprocess_rows`.
    """
    out = []
    for c in _select(outputs, strides, anchors, num_classes, num_keypoints, thresholds):
        out.append((np.concatenate([c.head, c.keypoints(np.arange(len(c.head)))], axis=1), c.index))
    return out


def boxes_xyxy(rows: np.ndarray) -> np.ndarray:
    """[..., >=4] rows (cx, cy, w, h, ...) -> float32 [..., 4] (x1, y1, x2, y2)."""
    rows = np.asarray(rows, np.float32)
    half = rows[..., 2:4] / np.float32(2.0)
    return np.concatenate([rows[..., 0:2] - half, rows[..., 0:2] + half], axis=-1)


def select_candidates(rows: np.ndarray, num_classes: int, conf_thres: float, classes: Sequence[int] | None = None,
                      max_nms: int = 30000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's decoded rows [R, D] -> (row index [M] int64, conf [M] float32, class [M] int64).

    Confidence filter, best class, class filter, then conf descending (stable) capped at max_nms; see the module
    docstring.
    """
    index = (rows[:, 4] > conf_thres).nonzero()[0]
    conf, best = _best_class(rows[index, 4], np.ascontiguousarray(rows[index, 5:5 + num_classes].T))
    keep = conf > conf_thres
    if classes is not None:
        keep &= _class_mask(classes, num_classes)[best]
    return _by_confidence(index[keep], conf[keep], best[keep], max_nms)


def _by_confidence(index: np.ndarray, conf: np.ndarray, best: np.ndarray, max_nms: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates in visiting order: conf descending, ties by index (a stable sort), at most max_nms."""
    order = np.argsort(-conf, kind="stable")[:max_nms]
    return index[order].astype(np.int64), conf[order].astype(np.float32), best[order].astype(np.int64)


def nms(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float,
        max_keep: int | None = None) -> np.ndarray:
    """Class-aware greedy NMS; int64 indices of the kept boxes, score descending (= torchvision.ops.batched_nms).

    boxes [M, 4] xyxy (computed in float32), scores [M] finite, class_ids [M] ints. The greedy rule of the module
    docstring without a loop per box: boxes are taken in visiting order a block at a time (the first block twice
    max_keep long, the next ones doubling), and within a block "kept = not suppressed by a kept box before it"
    is iterated to its fixed point over the suppression edges (pairs of one class with IoU above the threshold,
    found by `_overlap_pairs` among the block and the boxes kept so far). It stops once max_keep boxes are kept,
    so with a few hundred detections per image it never looks at most of the low-score candidates. Up to
    _ALL_PAIRS_BOXES boxes (a robot's frame) take `_nms_few`, the same fixed point on every pair at once. Inputs that
    would make this slow (a negative threshold, too many overlapping pairs, long chains of boxes each suppressing the
    next) take the plain loop over kept boxes, `_nms_sequential`.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    class_ids = np.asarray(class_ids).reshape(-1)
    if not (len(boxes) == len(scores) == len(class_ids)):
        raise ValueError(f"nms needs as many boxes ({len(boxes)}), scores ({len(scores)}) and classes "
                         f"({len(class_ids)})")
    count = len(boxes)
    max_keep = count if max_keep is None else max_keep
    order = np.argsort(-scores, kind="stable")  # visiting order: score descending, ties by index
    if not float(iou_threshold) >= 0:  # a negative threshold suppresses boxes that do not even touch
        return _nms_sequential(boxes, class_ids, order, iou_threshold, max_keep)
    if count <= _ALL_PAIRS_BOXES:
        return order[_nms_few(boxes[order], class_ids[order], iou_threshold)[:max_keep]].astype(np.int64)
    boxes, class_ids = boxes[order], class_ids[order]
    keep = np.zeros(count, bool)  # in visiting order
    start, block = 0, max(2 * max_keep, 256)
    while start < count and np.count_nonzero(keep[:start]) < max_keep:
        stop = min(count, start + block)
        members = np.concatenate([keep[:start].nonzero()[0], np.arange(start, stop)])
        edges = _overlap_pairs(boxes[members], class_ids[members], iou_threshold)
        if edges is None:
            return _nms_sequential(boxes, class_ids, np.arange(count), iou_threshold, max_keep, order)
        first, second = members[edges[0]], members[edges[1]]  # first < second in visiting order
        suppress = (_iou(boxes, first, second).astype(np.float64) > float(iou_threshold)) & (second >= start)
        first, second = first[suppress], second[suppress] - start
        alive = np.ones(stop - start, bool)
        alive[second[first < start]] = False  # suppressed by a box kept in an earlier block
        first, second = first[first >= start] - start, second[first >= start]
        state = alive
        for _ in range(_MAX_FIXED_POINT_ROUNDS):
            suppressed = np.zeros(stop - start, bool)
            suppressed[second[state[first]]] = True
            update = alive & ~suppressed
            if np.array_equal(update, state):
                break
            state = update
        else:
            return _nms_sequential(boxes, class_ids, np.arange(count), iou_threshold, max_keep, order)
        keep[start:stop] = state
        start, block = stop, 2 * block
    return order[keep.nonzero()[0][:max_keep]].astype(np.int64)


def _nms_few(boxes: np.ndarray, class_ids: np.ndarray, iou_threshold: float) -> np.ndarray:
    """The greedy rule over a few boxes given in visiting order -> positions of the kept ones, ascending.

    Every pair of one class is tested; "kept = not suppressed by a kept box before it" is iterated from all kept to
    its fixed point, which the greedy rule's result is, and the only one (box j depends on boxes before j only, so
    round r settles box r at the latest).
    """
    count = len(boxes)
    first, second = _upper_pairs(count)
    same = class_ids[first] == class_ids[second]
    if not same.any():  # one box, or boxes of different classes (a person's keypoint objects): all kept
        return np.arange(count)
    first, second = first[same], second[same]
    suppresses = np.zeros((count, count), bool)
    hit = _iou(boxes, first, second).astype(np.float64) > float(iou_threshold)
    suppresses[first[hit], second[hit]] = True
    keep = np.ones(count, bool)
    for _ in range(count):
        update = ~(suppresses & keep[:, None]).any(axis=0)
        if not (update ^ keep).any():
            break
        keep = update
    return keep.nonzero()[0]


_ALL_PAIRS_BOXES = 64  # up to this many boxes, NMS tests every pair of one class (`_nms_few`)


@functools.lru_cache(maxsize=_ALL_PAIRS_BOXES + 1)
def _upper_pairs(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (i, j) with i < j < count, int64, i ascending then j."""
    first, second = np.triu_indices(count, 1)
    first.flags.writeable = second.flags.writeable = False
    return first, second


_MAX_FIXED_POINT_ROUNDS = 64  # rounds needed = the longest chain of alternating keep/suppress decisions, + 1
_MAX_PAIRS = 4_000_000  # overlapping pairs examined at once; beyond this the loop over kept boxes costs less


def _iou(boxes: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """float32 IoU of boxes[i] and boxes[j] (xyxy float32), computed the way torchvision's kernel does."""
    zero = np.float32(0.0)
    a, b = boxes[i], boxes[j]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
        area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        w = np.maximum(zero, np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]))
        h = np.maximum(zero, np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]))
        inter = w * h
        return inter / ((area_a + area_b) - inter)


def _overlap_pairs(boxes: np.ndarray, class_ids: np.ndarray, iou_threshold: float
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """Every pair (i, j), i < j, of one class whose IoU can exceed iou_threshold = t >= 0, possibly with a few more;
    None when the sweep would examine more than _MAX_PAIRS pairs.

    IoU <= overlap_x / max(w_i, w_j) and <= overlap_y / max(h_i, h_j) (the union is at least either area), so a
    pair needs both overlaps above t' * the larger size, t' = 0.99 t (a margin far wider than float32 rounding);
    boxes without positive width and height, or not finite, have IoU 0 or NaN with everything. One sweep finds the
    pairs overlapping enough along x (sorted by (class, x1), each box pairs with the later boxes whose x1 lies
    below x2 - t' w), then the y overlap and the x overlap of the larger box filter them.
    """
    x1, y1, x2, y2 = boxes.astype(np.float64).T
    w, h = x2 - x1, y2 - y1
    index = (np.isfinite(boxes).all(axis=1) & (w > 0) & (h > 0)).nonzero()[0]
    empty = np.zeros(0, np.int64)
    if len(index) < 2:
        return empty, empty
    slack = 0.99 * float(iou_threshold)
    # One float64 key per box: classes in blocks wider than any box, x1 inside its block. Rounding keeps the order,
    # so the search below can only return extra pairs, never miss one.
    span = 2.0 * np.abs(boxes[index][:, [0, 2]]).max() + 1.0
    offset = (class_ids[index] - class_ids[index].min()).astype(np.float64) * span
    keys = offset + x1[index]
    sort = np.argsort(keys, kind="stable")
    by_key, keys, offset = index[sort], keys[sort], offset[sort]
    reach = np.searchsorted(keys, offset + x2[by_key] - slack * w[by_key], side="right")
    counts = np.maximum(reach - np.arange(len(keys)) - 1, 0)
    total = int(counts.sum())
    if total > _MAX_PAIRS:
        return None
    first = np.repeat(np.arange(len(keys)), counts)
    second = first + 1 + (np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts))
    first, second = by_key[first], by_key[second]
    over_x = np.minimum(x2[first], x2[second]) - np.maximum(x1[first], x1[second])
    over_y = np.minimum(y2[first], y2[second]) - np.maximum(y1[first], y1[second])
    near = ((over_x > slack * np.maximum(w[first], w[second])) & (over_y > slack * np.maximum(h[first], h[second]))
            & (over_x > 0) & (over_y > 0))
    first, second = first[near], second[near]
    return np.minimum(first, second), np.maximum(first, second)


def _nms_sequential(boxes: np.ndarray, class_ids: np.ndarray, visit: np.ndarray, iou_threshold: float,
                    max_keep: int, original: np.ndarray | None = None) -> np.ndarray:
    """The greedy rule as a loop over kept boxes, each vectorised over the boxes still alive (visit = the visiting
    order); results are mapped through `original` when the boxes were already reordered."""
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1) * (y2 - y1)
    alive = visit
    keep = []
    zero = np.float32(0.0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        while alive.size and len(keep) < max_keep:
            i, rest = alive[0], alive[1:]
            keep.append(i)
            w = np.maximum(zero, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
            h = np.maximum(zero, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
            inter = w * h
            iou = inter / ((area[i] + area[rest]) - inter)
            suppressed = (iou.astype(np.float64) > float(iou_threshold)) & (class_ids[rest] == class_ids[i])
            alive = rest[~suppressed]
    keep = np.asarray(keep, dtype=np.int64)
    return keep if original is None else original[keep].astype(np.int64)


def detect(rows: np.ndarray, num_classes: int, conf_thres: float, iou_thres: float,
           classes: Sequence[int] | None, max_det: int, max_nms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One NMS pass over one image's rows [R, D]: (row index [M], conf [M], class [M]) of the kept detections."""
    return _nms_pass(rows, select_candidates(rows, num_classes, conf_thres, classes, max_nms), iou_thres, max_det)


def _nms_pass(rows: np.ndarray, candidates, iou_thres: float, max_det: int):
    index, conf, cls = candidates
    keep = nms(boxes_xyxy(rows[index]), conf, cls, iou_thres, max_keep=max_det)
    return index[keep], conf[keep], cls[keep]


def _detect_scored(rows: np.ndarray, scored: tuple[np.ndarray, np.ndarray], num_classes: int, conf_thres: float,
                   iou_thres: float, classes: Sequence[int], max_det: int, max_nms: int):
    """`detect` on rows whose conf and best class are known already (`_Candidates`): the same detections."""
    conf, best = scored
    index = ((rows[:, 4] > conf_thres) & (conf > conf_thres) & _class_mask(classes, num_classes)[best]).nonzero()[0]
    return _nms_pass(rows, _by_confidence(index, conf[index], best[index], max_nms), iou_thres, max_det)


def fuse_keypoints(pose_xy: np.ndarray, pose_scores: np.ndarray, kp_xy: np.ndarray, kp_conf: np.ndarray,
                   kp_type: np.ndarray, conf_thres_kp_person: float = 0.3,
                   overwrite_tol: float = 50.0) -> np.ndarray:
    """Fuse keypoint objects into poses (rule in the module docstring) -> keypoints float32 [P, K, 3].

    pose_xy [P, K, 2] and kp_xy [Q, 2] in one coordinate frame (the pipeline uses image pixels), pose_scores [P],
    kp_conf [Q] and kp_type [Q] (keypoint index 0..K-1), detections in processing order.
    """
    pose_xy = np.asarray(pose_xy, np.float32)
    num_poses, num_keypoints = pose_xy.shape[:2]
    fused = np.concatenate([pose_xy, np.zeros((num_poses, num_keypoints, 1), np.float32)], axis=-1)
    eligible = (np.asarray(pose_scores) > conf_thres_kp_person).nonzero()[0]
    kp_xy = np.asarray(kp_xy, np.float32).reshape(-1, 2)
    kp_conf = np.asarray(kp_conf, np.float32).reshape(-1)
    kp_type = np.asarray(kp_type, np.int64).reshape(-1)
    if not len(eligible) or not len(kp_conf):
        return fused
    # rank[q] = how many earlier detections share q's type: step t handles rank t of every type at once.
    by_type = np.argsort(kp_type, kind="stable")
    first_of_type = np.searchsorted(kp_type[by_type], kp_type[by_type], side="left")
    rank = np.empty(len(kp_type), np.int64)
    rank[by_type] = np.arange(len(kp_type)) - first_of_type
    tol2 = float(overwrite_tol) ** 2
    for step in range(int(rank.max()) + 1):
        q = (rank == step).nonzero()[0]  # at most one detection per keypoint type
        k = kp_type[q]
        current = fused[eligible[:, None], k[None, :]]  # [Pe, Q_t, 3]
        dx = current[..., 0] - kp_xy[q, 0]
        dy = current[..., 1] - kp_xy[q, 1]
        d2 = dx * dx + dy * dy
        nearest = np.argmin(d2, axis=0)  # first minimum: earliest eligible pose
        cols = np.arange(len(q))
        wins = (kp_conf[q] > current[nearest, cols, 2]) & (d2[nearest, cols].astype(np.float64) < tol2)
        poses = eligible[nearest[wins]]
        fused[poses, k[wins], 0:2] = kp_xy[q[wins]]
        fused[poses, k[wins], 2] = kp_conf[q[wins]]
    return fused


def postprocess_rows(rows: np.ndarray, num_classes: int, num_keypoints: int, letterbox: Letterbox | None = None,
                     thresholds: Thresholds = COCO_THRESHOLDS) -> Poses:
    """One image's decoded rows [R, D] (input pixels) -> Poses in image pixels.

    Person pass, keypoint pass (when num_keypoints > 0 and thresholds.use_kp_dets), undo the letterbox, fuse.
    The rows may be all of `decode`'s rows or only the candidates (`decode_candidates`): the result is the same.
    """
    rows = np.asarray(rows, np.float32)
    return _postprocess(rows, lambda which: rows[which, 5 + num_classes:], num_classes, num_keypoints, letterbox,
                        thresholds)


def _postprocess(rows: np.ndarray, keypoints_of, num_classes: int, num_keypoints: int, letterbox: Letterbox | None,
                 thresholds: Thresholds, scored: tuple[np.ndarray, np.ndarray] | None = None) -> Poses:
    """postprocess_rows on rows [R, >= 5 + nc] (box, objectness, classes) whose keypoint channels come from
    keypoints_of(row positions) -> float32 [len, 2K]: the fast path decodes them for the kept poses only, and passes
    the rows' (conf, best class) as `scored`."""
    t = thresholds
    person_pass, *keypoint_pass = _passes(num_classes, num_keypoints, t)
    if scored is None:
        def detections(conf_thres, iou_thres, classes):
            return detect(rows, num_classes, conf_thres, iou_thres, classes, t.max_det, t.max_nms)
    else:
        def detections(conf_thres, iou_thres, classes):
            return _detect_scored(rows, scored, num_classes, conf_thres, iou_thres, classes, t.max_det, t.max_nms)
    person_rows, person_conf, _ = detections(*person_pass)
    boxes = boxes_xyxy(rows[person_rows])
    if num_keypoints:
        pose_xy = keypoints_of(person_rows).reshape(len(person_rows), num_keypoints, 2)
    else:  # the person detector
        pose_xy = np.zeros((len(person_rows), 0, 2), np.float32)
    if letterbox is not None:
        boxes = letterbox.to_image(boxes.reshape(-1, 2, 2)).reshape(-1, 4)
        pose_xy = letterbox.to_image(pose_xy)
    if keypoint_pass and len(person_rows):
        kp_rows, kp_conf, kp_cls = detections(*keypoint_pass[0])
        kp_xy = rows[kp_rows, 0:2]
        if letterbox is not None:
            kp_xy = letterbox.to_image(kp_xy)
        keypoints = fuse_keypoints(pose_xy, person_conf, kp_xy, kp_conf, kp_cls - 1, t.conf_thres_kp_person,
                                   t.overwrite_tol)
    else:
        keypoints = np.concatenate([pose_xy, np.zeros((len(person_rows), num_keypoints, 1), np.float32)], axis=-1)
    return Poses(keypoints=keypoints.astype(np.float32), boxes=boxes.astype(np.float32), scores=person_conf)


def postprocess(outputs: Sequence[np.ndarray], strides: Sequence[int], anchors, num_classes: int, num_keypoints: int,
                letterboxes: Sequence[Letterbox | None] | None = None,
                thresholds: Thresholds = COCO_THRESHOLDS) -> list[Poses]:
    """Raw level grids for N images -> N Poses, exactly what `postprocess_rows` gives on `decode`'s rows.

    Only the candidate rows are decoded (`decode_candidates`), and their keypoints only for the poses kept.
    """
    candidates = _select(outputs, strides, anchors, num_classes, num_keypoints, thresholds)
    letterboxes = [None] * len(candidates) if letterboxes is None else list(letterboxes)
    if len(letterboxes) != len(candidates):
        raise ValueError(f"{len(letterboxes)} letterboxes for {len(candidates)} images")
    # An image without candidates has no poses: most frames of a robot's camera at the deployment thresholds.
    return [_postprocess(c.head, c.keypoints, num_classes, num_keypoints, lb, thresholds, (c.conf, c.best))
            if len(c.head) else Poses.empty(num_keypoints) for c, lb in zip(candidates, letterboxes)]
