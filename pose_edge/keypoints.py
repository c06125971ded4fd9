"""The COCO-17 keypoint definition, defined once and imported everywhere.

Glossary of dimension letters used in docstrings across pose_edge:
    N  crops or images in a batch      K  keypoints (17)
    A  anchors per level (3)           H, W  height and width of a map or image
    S  stride of an output level       C  channels
Coordinates are pixels, x to the right and y down, with the centre of the top-left pixel at (0, 0) unless a
docstring says otherwise.
"""

from __future__ import annotations

import numpy as np

NAMES: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
NUM_KEYPOINTS = len(NAMES)

# Left/right pairs, swapped by a horizontal flip.
FLIP_PAIRS: tuple[tuple[int, int], ...] = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))


def _flip_permutation() -> tuple[int, ...]:
    perm = list(range(NUM_KEYPOINTS))
    for left, right in FLIP_PAIRS:
        perm[left], perm[right] = right, left
    return tuple(perm)


# FLIP_PERM[k] is the index that keypoint k becomes after a horizontal flip (an involution).
FLIP_PERM: tuple[int, ...] = _flip_permutation()

# Limbs as 0-based index pairs: the 19 edges of the COCO annotation skeleton.
SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
    (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)

# Per-keypoint OKS falloff constants of the COCO evaluation (pycocotools' kpt_oks_sigmas).
OKS_SIGMAS = np.array(
    [0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
     0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089],
    dtype=np.float64,
)
OKS_SIGMAS.setflags(write=False)

# COCO category record for the person class, as the annotation files carry it (skeleton 1-based there).
PERSON_CATEGORY = {
    "id": 1,
    "name": "person",
    "supercategory": "person",
    "keypoints": list(NAMES),
    "skeleton": [[a + 1, b + 1] for a, b in SKELETON],
}

# COCO visibility flags.
NOT_LABELLED, OCCLUDED, VISIBLE = 0, 1, 2
