"""Drawing poses on a frame: the COCO skeleton with left and right told apart, keypoint confidence, person boxes with
score and track id.

Colours (BGR): limbs and keypoints on the person's left side orange, right side blue, the centre (nose, the links
across the body) green, so a left-right swap is visible at a glance. A keypoint's radius grows with its confidence;
keypoints below `keypoint_threshold`, and limbs with such an end, are not drawn. Boxes and labels take a colour per
track id (the same id keeps its colour over a video), or a neutral grey without tracking. Line widths, radii and
fonts scale with the image's shorter side, so the drawing reads at 320x240 and at 1920x1080 alike.
"""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

from pose_edge.errors import PoseEdgeError
from pose_edge.keypoints import NAMES, NUM_KEYPOINTS, SKELETON

LEFT_COLOUR = (0, 140, 255)    # orange
RIGHT_COLOUR = (255, 140, 0)   # blue
CENTRE_COLOUR = (60, 210, 60)  # green
UNTRACKED_COLOUR = (200, 200, 200)
DEFAULT_KEYPOINT_THRESHOLD = 0.3

# Sub-pixel drawing: cv2 takes coordinates as integers with this many fractional bits.
_SHIFT = 4
_ONE = 1 << _SHIFT


def _side(k: int) -> int:
    """-1 for a left keypoint, +1 for a right one, 0 for the nose."""
    return -1 if NAMES[k].startswith("left_") else 1 if NAMES[k].startswith("right_") else 0


def _limb_colour(a: int, b: int) -> tuple[int, int, int]:
    """A limb touching only left (or centre) keypoints is left, only right (or centre) ones right, else centre."""
    sides = {_side(a), _side(b)} - {0}
    if sides == {-1}:
        return LEFT_COLOUR
    if sides == {1}:
        return RIGHT_COLOUR
    return CENTRE_COLOUR


KEYPOINT_COLOURS = tuple({-1: LEFT_COLOUR, 1: RIGHT_COLOUR, 0: CENTRE_COLOUR}[_side(k)] for k in range(NUM_KEYPOINTS))
LIMB_COLOURS = tuple(_limb_colour(a, b) for a, b in SKELETON)


def track_colour(track_id: int | None) -> tuple[int, int, int]:
    """A stable, well-spread BGR colour per track id (golden-ratio hue steps); grey for None or a negative id."""
    if track_id is None or track_id < 0:
        return UNTRACKED_COLOUR
    hue = (int(track_id) * 0.61803398875) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def _fixed(xy: np.ndarray) -> tuple[int, int]:
    """Pixel coordinates -> cv2's fixed-point integers (with _SHIFT)."""
    return int(round(float(xy[0]) * _ONE)), int(round(float(xy[1]) * _ONE))


def _check(frame, keypoints, boxes, scores, track_ids):
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        what = f"{frame.dtype} {list(frame.shape)}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise PoseEdgeError(f"draw_poses needs a uint8 [H, W, 3] frame, not {what}")
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.size == 0:
        keypoints = keypoints.reshape(0, NUM_KEYPOINTS, 3)
    if keypoints.ndim != 3 or keypoints.shape[1:] != (NUM_KEYPOINTS, 3):
        raise PoseEdgeError(f"keypoints must be [P, {NUM_KEYPOINTS}, 3] (x, y, confidence), not "
                            f"{list(keypoints.shape)}")
    people = len(keypoints)
    boxes = None if boxes is None else np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    track_ids = None if track_ids is None else np.asarray(track_ids).reshape(-1)
    for name, values in (("boxes", boxes), ("scores", scores), ("track_ids", track_ids)):
        if values is not None and len(values) != people:
            raise PoseEdgeError(f"{name} has {len(values)} entries for {people} people")
    return keypoints, boxes, scores, track_ids


def draw_poses(frame: np.ndarray, keypoints, boxes=None, scores=None, track_ids=None, *,
               keypoint_threshold: float = DEFAULT_KEYPOINT_THRESHOLD, draw_boxes: bool = True,
               draw_labels: bool = True) -> np.ndarray:
    """Draw poses on a copy of `frame` and return it; `frame` is not modified.

    frame:      uint8 [H, W, 3] BGR.
    keypoints:  [P, 17, 3] (x, y, confidence) in frame pixels, COCO order.
    boxes:      [P, 4] x1, y1, x2, y2 in frame pixels, or None.
    scores:     [P] person scores, or None (no score on the label).
    track_ids:  [P] integer ids, or None (untracked: grey boxes, no id on the label).
    keypoint_threshold: keypoints with a lower confidence are not drawn, nor the limbs that end in them.
    Non-finite coordinates are never drawn.
    """
    keypoints, boxes, scores, track_ids = _check(frame, keypoints, boxes, scores, track_ids)
    out = frame.copy()
    height, width = out.shape[:2]
    unit = max(min(height, width) / 480.0, 0.5)
    line = max(1, round(2 * unit))
    radius_min, radius_max = max(1.5, 1.5 * unit), max(3.0, 4.5 * unit)
    # Far-off coordinates are clamped before the fixed-point conversion, which would overflow cv2's int32.
    limit = 4.0 * max(height, width)
    for p in range(len(keypoints)):
        xy = np.clip(keypoints[p, :, :2], -limit, limit)
        confidence = keypoints[p, :, 2]
        shown = np.isfinite(keypoints[p]).all(axis=1) & (confidence >= keypoint_threshold)
        for (a, b), colour in zip(SKELETON, LIMB_COLOURS):
            if shown[a] and shown[b]:
                cv2.line(out, _fixed(xy[a]), _fixed(xy[b]), colour, line, cv2.LINE_AA, _SHIFT)
        for k in np.flatnonzero(shown):
            # Radius by confidence: threshold -> radius_min, 1.0 -> radius_max.
            strength = np.clip((confidence[k] - keypoint_threshold) / max(1.0 - keypoint_threshold, 1e-6), 0, 1)
            radius = int(round((radius_min + strength * (radius_max - radius_min)) * _ONE))
            cv2.circle(out, _fixed(xy[k]), radius, KEYPOINT_COLOURS[k], -1, cv2.LINE_AA, _SHIFT)
            cv2.circle(out, _fixed(xy[k]), radius, (0, 0, 0), 1, cv2.LINE_AA, _SHIFT)
    if boxes is not None and (draw_boxes or draw_labels):
        for p, box in enumerate(boxes):
            if not np.isfinite(box).all():
                continue
            track = None if track_ids is None else int(track_ids[p])
            colour = track_colour(track)
            x1, y1, x2, y2 = np.clip(box, -limit, limit)
            if draw_boxes:
                # Axis-aligned: whole pixels and no anti-aliasing keep the edge crisp in the track's colour.
                cv2.rectangle(out, (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2))), colour, line)
            if draw_labels:
                text = " ".join(part for part in (
                    f"id {track}" if track is not None and track >= 0 else "",
                    f"{scores[p]:.2f}" if scores is not None and np.isfinite(scores[p]) else "") if part)
                if text:
                    _label(out, text, x1, y1, colour, unit)
    return out


def _label(image: np.ndarray, text: str, x: float, y: float, colour, unit: float) -> None:
    """Text on a filled tag in `colour` above (x, y), or below it where the tag would leave the image."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max(0.4, 0.55 * unit)
    thickness = max(1, round(unit))
    (tw, th), baseline = cv2.getTextSize(text, font, scale, thickness)
    pad = max(2, round(2 * unit))
    height, width = image.shape[:2]
    left = int(np.clip(round(x), 0, max(width - tw - 2 * pad, 0)))
    top = int(round(y)) - th - baseline - 2 * pad
    if top < 0:
        top = int(np.clip(round(y), 0, max(height - th - baseline - 2 * pad, 0)))
    cv2.rectangle(image, (left, top), (left + tw + 2 * pad, top + th + baseline + 2 * pad), colour, -1)
    # Dark text on light tags, white on dark ones (luma of the BGR colour).
    luma = 0.114 * colour[0] + 0.587 * colour[1] + 0.299 * colour[2]
    ink = (0, 0, 0) if luma > 128 else (255, 255, 255)
    cv2.putText(image, text, (left + pad, top + pad + th), font, scale, ink, thickness, cv2.LINE_AA)
