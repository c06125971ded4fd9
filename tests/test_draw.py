"""draw_poses: pixels change at keypoints and along limbs, left and right limbs differ in colour, keypoints below the
threshold are not drawn, confidence shows in the radius, track colours are stable, the input is untouched."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from pose_edge.errors import PoseEdgeError
from pose_edge.keypoints import NAMES, SKELETON
from pose_edge.runtime.draw import (CENTRE_COLOUR, LEFT_COLOUR, RIGHT_COLOUR, UNTRACKED_COLOUR, draw_poses,
                                    track_colour)

sys.path.insert(0, str(Path(__file__).parent))
from synthetic_poses import standing_person  # noqa: E402

BACKGROUND = (90, 90, 90)
SIZES = [(320, 240), (1920, 1080)]


def _scene(size):
    width, height = size
    frame = np.full((height, width, 3), BACKGROUND, np.uint8)
    s = height / 240
    keypoints = standing_person(100 * s, 20 * s, 80 * s, 200 * s)[None]
    return frame, keypoints


def _at(image, xy):
    return image[int(round(float(xy[1]))), int(round(float(xy[0])))]


def _nearest(pixel) -> str:
    """Which of the drawing's colours (or the background) a pixel is closest to."""
    palette = {"left": LEFT_COLOUR, "right": RIGHT_COLOUR, "centre": CENTRE_COLOUR, "background": BACKGROUND}
    return min(palette, key=lambda name: np.abs(np.int32(pixel) - palette[name]).sum())


def _side(a: int, b: int) -> str:
    names = NAMES[a] + NAMES[b]
    return "centre" if ("left" in names) == ("right" in names) else "left" if "left" in names else "right"


@pytest.mark.parametrize("size", SIZES)
def test_keypoints_and_limbs_are_drawn_in_their_side_colour(size):
    frame, keypoints = _scene(size)
    before = frame.copy()
    out = draw_poses(frame, keypoints)
    assert np.array_equal(frame, before), "the input frame was modified"
    assert out is not frame and out.shape == frame.shape and out.dtype == np.uint8
    for k in range(17):
        assert _nearest(_at(out, keypoints[0, k])) != "background", f"keypoint {NAMES[k]} not drawn"
    for a, b in SKELETON:
        middle = (keypoints[0, a, :2] + keypoints[0, b, :2]) / 2
        if a in (1, 2) and b in (1, 2, 3, 4) or (a, b) == (0, 1) or (a, b) == (0, 2):
            continue  # the face's short links are covered by keypoint discs at 320x240
        assert _nearest(_at(out, middle)) == _side(a, b), f"limb {NAMES[a]}-{NAMES[b]}"
    # The forearms, far from everything else: left and right in clearly different colours.
    left = _at(out, (keypoints[0, 7, :2] + keypoints[0, 9, :2]) / 2)
    right = _at(out, (keypoints[0, 8, :2] + keypoints[0, 10, :2]) / 2)
    assert np.abs(np.int32(left) - right).sum() > 200


@pytest.mark.parametrize("size", SIZES)
def test_keypoints_below_the_threshold_and_their_limbs_are_not_drawn(size):
    frame, keypoints = _scene(size)
    keypoints[0, 9, 2] = 0.1  # left wrist
    out = draw_poses(frame, keypoints, keypoint_threshold=0.3)
    wrist, elbow = keypoints[0, 9, :2], keypoints[0, 7, :2]
    assert tuple(_at(out, wrist)) == BACKGROUND
    assert tuple(_at(out, (wrist + elbow) / 2)) == BACKGROUND
    assert _nearest(_at(out, elbow)) != "background"
    shown = draw_poses(frame, keypoints, keypoint_threshold=0.05)
    assert _nearest(_at(shown, (wrist + elbow) / 2)) == "left"


def test_keypoint_radius_grows_with_confidence():
    frame, keypoints = _scene((1920, 1080))
    keypoints[0, 1:, 2] = 0.0  # only the nose

    def changed(confidence):
        keypoints[0, 0, 2] = confidence
        return int((draw_poses(frame, keypoints) != frame).any(axis=2).sum())

    low, high = changed(0.35), changed(1.0)
    assert 0 < low < high / 2


def test_lines_scale_with_the_image():
    def shoulder_line_thickness(size):
        frame, keypoints = _scene(size)
        out = draw_poses(frame, keypoints)
        x = int(round(float(keypoints[0, 5, 0] + keypoints[0, 6, 0]) / 2))
        y = int(round(float(keypoints[0, 5, 1])))
        column = (out[y - 20:y + 21, x] != BACKGROUND).any(axis=1)
        return int(column.sum())

    small, large = shoulder_line_thickness((320, 240)), shoulder_line_thickness((1920, 1080))
    assert 1 <= small <= 3 and large >= 4


@pytest.mark.parametrize("size", SIZES)
def test_boxes_carry_a_stable_colour_per_track_and_a_label(size):
    frame, keypoints = _scene(size)
    width, height = size
    x1, y1, x2, y2 = 0.25 * width, 0.3 * height, 0.6 * width, 0.9 * height
    box = np.array([[x1, y1, x2, y2]])
    left_edge = (x1, (y1 + y2) / 2)

    def edge_colour(track_ids):
        out = draw_poses(frame, keypoints, box, [0.87], track_ids)
        return tuple(int(v) for v in _at(out, left_edge)), out

    seven, out = edge_colour([7])
    assert seven == track_colour(7) == edge_colour(np.array([7]))[0]
    assert edge_colour([8])[0] == track_colour(8) != seven
    assert edge_colour(None)[0] == UNTRACKED_COLOUR
    tag = out[max(int(y1) - 8, 0):int(y1) - 1, int(x1) + 2:int(x1) + 20]
    assert (tag != BACKGROUND).any(), "no label above the box"


def test_track_colours_are_well_spread():
    colours = [np.int32(track_colour(i)) for i in range(10)]
    gaps = [np.abs(a - b).sum() for i, a in enumerate(colours) for b in colours[i + 1:]]
    assert min(gaps) > 60


def test_non_finite_and_empty_poses_draw_nothing():
    frame, keypoints = _scene((320, 240))
    keypoints[:] = np.nan
    assert np.array_equal(draw_poses(frame, keypoints, np.full((1, 4), np.nan), [np.nan], [3]), frame)
    assert np.array_equal(draw_poses(frame, np.zeros((0, 17, 3)), np.zeros((0, 4)), np.zeros(0)), frame)
    far = standing_person(1e12, -1e12, 1e9, 1e9)[None]  # off the image and beyond int32 once in fixed point
    assert np.array_equal(draw_poses(frame, far), frame)


def test_bad_input_is_a_one_line_error():
    frame, keypoints = _scene((320, 240))
    with pytest.raises(PoseEdgeError, match=r"uint8 \[H, W, 3\] frame"):
        draw_poses(frame.astype(np.float32), keypoints)
    with pytest.raises(PoseEdgeError, match=r"\[P, 17, 3\]"):
        draw_poses(frame, keypoints[:, :16])
    with pytest.raises(PoseEdgeError, match="scores has 2 entries for 1 people"):
        draw_poses(frame, keypoints, scores=[0.5, 0.6])
