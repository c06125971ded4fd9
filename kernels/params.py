"""ctypes mirrors of the parameter blocks in params.h (a test checks every field's offset against the C compiler's).

Every kernel takes one of these by value; `bytes(struct)` is what the launcher hands to cuLaunchKernel or the emulator.
Pointer fields hold device addresses as ints (0 for null).
"""

from __future__ import annotations

import ctypes

MAX_LEVELS = 8
MAX_ANCHORS = 4
MAX_BLUR_RADIUS = 8
MAX_CAPACITY = 4096
ROW_BITS = 24

REFINE_NONE, REFINE_QUARTER, REFINE_DARK = 0, 1, 2
REFINE_MODES = {"none": REFINE_NONE, "quarter": REFINE_QUARTER, "dark": REFINE_DARK}

_ptr = ctypes.c_void_p


class HeatmapDecodeParams(ctypes.Structure):
    _fields_ = [
        ("heatmaps", _ptr),
        ("hm_to_image", _ptr),
        ("out", _ptr),
        ("num_maps", ctypes.c_int),
        ("num_keypoints", ctypes.c_int),
        ("height", ctypes.c_int),
        ("width", ctypes.c_int),
        ("refine", ctypes.c_int),
        ("blur_radius", ctypes.c_int),
        ("blur_weights", ctypes.c_double * (2 * MAX_BLUR_RADIUS + 1)),
    ]


class KapaoLevel(ctypes.Structure):
    _fields_ = [
        ("data", _ptr),
        ("height", ctypes.c_int),
        ("width", ctypes.c_int),
        ("row_offset", ctypes.c_int),
        ("stride", ctypes.c_float),
        ("anchors", ctypes.c_float * (MAX_ANCHORS * 2)),
    ]


class KapaoParams(ctypes.Structure):
    _fields_ = [
        ("levels", KapaoLevel * MAX_LEVELS),
        ("num_levels", ctypes.c_int),
        ("num_anchors", ctypes.c_int),
        ("num_classes", ctypes.c_int),
        ("num_keypoints", ctypes.c_int),
        ("depth", ctypes.c_int),
        ("num_rows", ctypes.c_int),
        ("batch", ctypes.c_int),
        ("kp_pass", ctypes.c_int),
        ("conf_person", ctypes.c_float),
        ("conf_kp", ctypes.c_float),
        ("conf_kp_person", ctypes.c_float),
        ("capacity", ctypes.c_int),
        ("max_candidates", ctypes.c_int),
        ("max_det", ctypes.c_int),
        ("iou_person", ctypes.c_double),
        ("iou_kp", ctypes.c_double),
        ("overwrite_tol2", ctypes.c_double),
        ("letterbox", _ptr),
        ("counts", _ptr),
        ("keys", _ptr),
        ("cand_box", _ptr),
        ("cand_conf", _ptr),
        ("cand_class", _ptr),
        ("cand_row", _ptr),
        ("nms_mask", _ptr),
        ("kept", _ptr),
        ("out_count", _ptr),
        ("out_boxes", _ptr),
        ("out_scores", _ptr),
        ("out_keypoints", _ptr),
        ("out_rows", _ptr),
    ]


STRUCTS = {"HeatmapDecodeParams": HeatmapDecodeParams, "KapaoLevel": KapaoLevel, "KapaoParams": KapaoParams}


def layout(struct: type[ctypes.Structure]) -> dict[str, tuple[int, int]]:
    """{field: (offset, size)} of a ctypes structure, plus "" -> (0, sizeof)."""
    out = {"": (0, ctypes.sizeof(struct))}
    for name, _ in struct._fields_:
        field = getattr(struct, name)
        out[name] = (field.offset, field.size)
    return out
