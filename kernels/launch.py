"""Launch plans: what each decode runs, in which order, with which grid, workspace and parameter block.

The plans talk to a *device*: `cuda_device.CudaDevice` (a GPU through cuda-python) or `emulator.EmulatedDevice` (the
same kernel source compiled for the CPU). Both offer alloc/free/copy/memset/launch, so the code below is what the
tests run and what the GPU runs. Every launch goes through `device.launch`, which checks it.

    HeatmapDecoder(device, refine="quarter" | "dark" | "none", blur_kernel=11)   (heatmap_decode.decode_heatmaps)
        decoder(heatmaps [N, K, H, W] float32|float16, hm_to_image [N, 2, 3] | None) -> [N, K, 3] float32
        decoder.run(heatmaps_ptr, (N, K, H, W), dtype, hm_to_image_ptr, out_ptr)     device buffers, no copies
    KapaoPostprocessor(device, strides, anchors, num_classes, num_keypoints, thresholds, capacity=4096)
        post(outputs: list of [N, A*D, H_l, W_l] float32|float16, letterboxes) -> list[Poses]
        post.run(level_ptrs, level_sizes, batch, dtype, letterbox_ptr) -> KapaoDeviceResult   (device buffers)

Capacity (KAPAO): each image and pass sends at most min(thresholds.max_nms, capacity) candidates into the NMS, the
highest-scoring ones (ties: lower row first), exactly what the reference's max_nms cap does; the rest are counted
as dropped (Poses.extra["dropped"]). capacity <= 4096 (the sort runs in one block's shared memory).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from pose_edge.kernels import params as P

from pose_edge.errors import PoseEdgeError
from pose_edge.runtime.heatmap_decode import DEFAULT_DARK_KERNEL, dark_blur_weights
from pose_edge.runtime.kapao_decode import row_width
from pose_edge.runtime.poses import Poses
from pose_edge.runtime.settings import COCO_THRESHOLDS, Thresholds

HEATMAP_THREADS = 128
SELECT_THREADS = 256
SORT_THREADS = 256
TILE = 64
FUSE_THREADS = 256
ALIGN = 256

_DTYPES = {np.dtype(np.float32): "f32", np.dtype(np.float16): "f16"}


def _suffix(dtype) -> str:
    try:
        return _DTYPES[np.dtype(dtype)]
    except (KeyError, TypeError):
        raise PoseEdgeError(f"the decode kernels read float32 or float16 outputs, not {dtype}") from None


def _ptr(value) -> int | None:
    return None if not value else int(value)


def _layout(parts: list[tuple[str, int]]) -> tuple[dict[str, tuple[int, int]], int]:
    """[(name, nbytes)] -> ({name: (offset, nbytes)}, total), every part aligned to 256 bytes."""
    out, offset = {}, 0
    for name, nbytes in parts:
        out[name] = (offset, nbytes)
        offset += -(-max(nbytes, 1) // ALIGN) * ALIGN
    return out, offset


class _Scratch:
    """A device allocation that grows when a bigger one is needed and is reused otherwise."""

    def __init__(self, device):
        self.device, self.ptr, self.nbytes = device, 0, 0

    def get(self, nbytes: int) -> int:
        if nbytes > self.nbytes:
            self.release()
            self.ptr, self.nbytes = self.device.alloc(nbytes), nbytes
        return self.ptr

    def release(self) -> None:
        if self.ptr:
            self.device.free(self.ptr)
        self.ptr, self.nbytes = 0, 0


# --------------------------------------------------------------------------------------------------------------
# Top-down heatmaps

class HeatmapDecoder:
    """Heatmaps -> keypoints (x, y, score) in image pixels: argmax, refinement, inverse affine (heatmap_decode.cuh)."""

    def __init__(self, device, refine: str = "quarter", blur_kernel: int = DEFAULT_DARK_KERNEL):
        if refine not in P.REFINE_MODES:
            raise PoseEdgeError(f"unknown heatmap refinement {refine!r}; use one of {sorted(P.REFINE_MODES)}")
        self.device, self.refine, self.blur_kernel = device, refine, blur_kernel
        self.weights = dark_blur_weights(blur_kernel) if refine == "dark" else np.zeros(1)

    def params(self, heatmaps_ptr: int, shape: tuple[int, int, int, int], hm_to_image_ptr: int | None,
               out_ptr: int) -> P.HeatmapDecodeParams:
        n, k, h, w = shape
        p = P.HeatmapDecodeParams()
        p.heatmaps, p.hm_to_image, p.out = heatmaps_ptr, _ptr(hm_to_image_ptr), out_ptr
        p.num_maps, p.num_keypoints, p.height, p.width = n * k, k, h, w
        p.refine = P.REFINE_MODES[self.refine]
        p.blur_radius = (len(self.weights) - 1) // 2
        for i, v in enumerate(self.weights):
            p.blur_weights[i] = float(v)
        return p

    def run(self, heatmaps_ptr: int, shape: tuple[int, int, int, int], dtype, hm_to_image_ptr: int | None,
            out_ptr: int) -> None:
        """Device buffers in, device buffer out: heatmaps [N, K, H, W] (dtype), hm_to_image [N, 2, 3] float64 or
        None, out [N, K, 3] float32. Queued on the device's stream."""
        n, k, h, w = shape
        if n * k == 0:
            return
        if h < 1 or w < 1:
            raise PoseEdgeError(f"heatmaps must not be empty, got {shape}")
        kernel = f"pe_heatmap_decode_{_suffix(dtype)}"
        self.device.launch(kernel, (n * k, 1, 1), (HEATMAP_THREADS, 1, 1), 0,
                           self.params(heatmaps_ptr, shape, hm_to_image_ptr, out_ptr))

    def __call__(self, heatmaps: np.ndarray, hm_to_image: np.ndarray | None = None) -> np.ndarray:
        """Host arrays: heatmaps [N, K, H, W] float32|float16, hm_to_image [N, 2, 3] or None -> [N, K, 3] float32."""
        heatmaps = np.asarray(heatmaps)
        if heatmaps.ndim != 4 or not np.issubdtype(heatmaps.dtype, np.floating):
            raise PoseEdgeError(f"heatmaps must be a float array [N, K, H, W], got {heatmaps.dtype} {heatmaps.shape}")
        if heatmaps.dtype not in (np.float16, np.float32):
            heatmaps = heatmaps.astype(np.float32)  # as the reference reads them
        heatmaps = np.ascontiguousarray(heatmaps)
        n, k = heatmaps.shape[:2]
        if hm_to_image is not None:
            hm_to_image = np.ascontiguousarray(hm_to_image, np.float64)
            if hm_to_image.shape != (n, 2, 3):
                raise PoseEdgeError(f"hm_to_image must be [{n}, 2, 3], got {hm_to_image.shape}")
        out = np.zeros((n, k, 3), np.float32)
        if n * k == 0:
            return out
        dev = self.device
        ptrs = [dev.upload(heatmaps), dev.upload(hm_to_image) if hm_to_image is not None else 0, dev.alloc(out.nbytes)]
        try:
            self.run(ptrs[0], heatmaps.shape, heatmaps.dtype, ptrs[1] or None, ptrs[2])
            dev.copy_to_host(out, ptrs[2])
            dev.synchronize()
        finally:
            for ptr in ptrs:
                if ptr:
                    dev.free(ptr)
        return out


# --------------------------------------------------------------------------------------------------------------
# KAPAO

@dataclass
class KapaoDeviceResult:
    """Where one run left its results on the device; `fetch` copies them back in one transfer."""

    buffer: int
    nbytes: int
    layout: dict[str, tuple[int, int]]
    batch: int
    max_det: int
    num_keypoints: int


class KapaoPostprocessor:
    """Raw KAPAO level grids -> poses per image: decode, filter, sort, NMS x 2, fusion (kapao_decode.cuh).

    strides [L], anchors [L][A] (w, h) input pixels, num_classes nc, num_keypoints K (0: person detector, no fusion).
    The rules are those of pose_edge.runtime.kapao_decode (the NumPy reference) with max_nms = min(max_nms, capacity).
    """

    def __init__(self, device, strides: Sequence[int], anchors, num_classes: int, num_keypoints: int,
                 thresholds: Thresholds = COCO_THRESHOLDS, capacity: int = P.MAX_CAPACITY, mask_blocks: int = 64):
        anchors = [list(level) for level in anchors]
        if not 1 <= len(strides) <= P.MAX_LEVELS or len(anchors) != len(strides):
            raise PoseEdgeError(f"KAPAO kernels take 1..{P.MAX_LEVELS} levels with anchors each; got {len(strides)} "
                                f"strides and {len(anchors)} anchor levels")
        num_anchors = len(anchors[0])
        if not 1 <= num_anchors <= P.MAX_ANCHORS or any(len(a) != num_anchors for a in anchors):
            raise PoseEdgeError(f"every level needs the same number of anchors (1..{P.MAX_ANCHORS})")
        if capacity % TILE or not TILE <= capacity <= P.MAX_CAPACITY:
            raise PoseEdgeError(f"capacity must be a multiple of {TILE} in [{TILE}, {P.MAX_CAPACITY}], got {capacity}")
        # Keypoint k is class 1 + k; the fusion block has a warp per keypoint type (at most 32).
        if not 1 <= num_classes <= 256 or not 0 <= num_keypoints <= min(32, num_classes - 1):
            raise PoseEdgeError(f"unsupported head: {num_classes} classes, {num_keypoints} keypoints")
        if thresholds.max_det < 1 or thresholds.max_nms < 1:
            raise PoseEdgeError("max_det and max_nms must be at least 1")
        self.device = device
        self.strides = [int(s) for s in strides]
        self.anchors = anchors
        self.num_classes, self.num_keypoints = num_classes, num_keypoints
        self.num_anchors = num_anchors
        self.depth = row_width(num_classes, num_keypoints)
        self.thresholds = thresholds
        self.capacity = capacity
        self.mask_blocks = mask_blocks
        self._workspace = _Scratch(device)
        self._outputs = _Scratch(device)

    # layout -------------------------------------------------------------------------------------------------
    def workspace_layout(self, batch: int, rows: int) -> tuple[dict[str, tuple[int, int]], int]:
        n, c, d = batch, self.capacity, self.thresholds.max_det
        return _layout([("keys", n * 2 * rows * 8), ("cand_box", n * 2 * c * 16), ("cand_conf", n * 2 * c * 4),
                        ("cand_class", n * 2 * c * 4), ("cand_row", n * 2 * c * 4),
                        ("nms_mask", n * 2 * c * (c // 64) * 8), ("kept", n * 2 * d * 4)])

    def output_layout(self, batch: int, rows: int = 0) -> tuple[dict[str, tuple[int, int]], int]:
        n, d, k = batch, self.thresholds.max_det, self.num_keypoints
        return _layout([("counts", n * 2 * 4 * 4), ("out_count", n * 4), ("out_boxes", n * d * 16),
                        ("out_scores", n * d * 4), ("out_keypoints", n * d * k * 12), ("out_rows", rows * 4)])

    def workspace_bytes(self, batch: int, rows: int) -> int:
        """Device memory one run needs besides its inputs: workspace plus outputs."""
        return self.workspace_layout(batch, rows)[1] + self.output_layout(batch)[1]

    # parameters ---------------------------------------------------------------------------------------------
    def _params(self, level_ptrs, level_sizes, batch: int, letterbox_ptr: int | None) -> tuple[P.KapaoParams, int]:
        if len(level_ptrs) != len(self.strides) or len(level_sizes) != len(self.strides):
            raise PoseEdgeError(f"{len(level_ptrs)} output grids for a head with {len(self.strides)} levels")
        t = self.thresholds
        p = P.KapaoParams()
        rows = 0
        for i, (ptr, (h, w), stride, anchors) in enumerate(zip(level_ptrs, level_sizes, self.strides, self.anchors)):
            lv = p.levels[i]
            lv.data, lv.height, lv.width, lv.row_offset, lv.stride = int(ptr), int(h), int(w), rows, float(stride)
            for a, (aw, ah) in enumerate(anchors):
                lv.anchors[2 * a], lv.anchors[2 * a + 1] = float(aw), float(ah)
            rows += self.num_anchors * int(h) * int(w)
        if rows >= 1 << P.ROW_BITS:
            raise PoseEdgeError(f"{rows} rows per image; the KAPAO kernels handle fewer than {1 << P.ROW_BITS}")
        p.num_levels, p.num_anchors = len(self.strides), self.num_anchors
        p.num_classes, p.num_keypoints, p.depth = self.num_classes, self.num_keypoints, self.depth
        p.num_rows, p.batch = rows, batch
        p.kp_pass = int(self.num_keypoints > 0 and t.use_kp_dets)
        # NumPy compares a float32 array with a Python float in float32 (NEP 50): round the thresholds the same way.
        p.conf_person = float(np.float32(t.conf_thres))
        p.conf_kp = float(np.float32(t.conf_thres_kp))
        p.conf_kp_person = float(np.float32(t.conf_thres_kp_person))
        p.capacity = self.capacity
        p.max_candidates = min(int(t.max_nms), self.capacity)
        p.max_det = int(t.max_det)
        p.iou_person, p.iou_kp = float(t.iou_thres), float(t.iou_thres_kp)
        p.overwrite_tol2 = float(t.overwrite_tol) ** 2
        p.letterbox = _ptr(letterbox_ptr)
        return p, rows

    def _bind(self, p: P.KapaoParams, batch: int, rows: int, with_rows: bool = False) -> KapaoDeviceResult:
        ws_layout, ws_bytes = self.workspace_layout(batch, rows)
        out_layout, out_bytes = self.output_layout(batch, batch * rows * self.depth if with_rows else 0)
        ws = self._workspace.get(ws_bytes)
        out = self._outputs.get(out_bytes)
        for name, (offset, _) in ws_layout.items():
            setattr(p, name, ws + offset)
        for name, (offset, _) in out_layout.items():
            setattr(p, name, out + offset)
        return KapaoDeviceResult(out, out_bytes, out_layout, batch, self.thresholds.max_det, self.num_keypoints)

    # running ------------------------------------------------------------------------------------------------
    def run(self, level_ptrs: Sequence[int], level_sizes: Sequence[tuple[int, int]], batch: int, dtype,
            letterbox_ptr: int | None = None) -> KapaoDeviceResult:
        """Queue the whole post-processing on device buffers: level_ptrs[l] -> [N, A*D, H_l, W_l] of dtype,
        letterbox_ptr -> [N, 4] float32 (pad_x, pad_y, scale_x, scale_y) or None. No host round trip."""
        if batch < 1:
            raise PoseEdgeError("run() needs at least one image")
        sfx = _suffix(dtype)
        p, rows = self._params(level_ptrs, level_sizes, batch, letterbox_ptr)
        result = self._bind(p, batch, rows)
        dev = self.device
        dev.memset(p.counts, 0, result.layout["counts"][1])
        dev.launch(f"pe_kapao_select_{sfx}", (math.ceil(rows / SELECT_THREADS), batch, 1), (SELECT_THREADS, 1, 1), 0, p)
        sort_smem = 8 * (1 << max(0, (p.max_candidates - 1).bit_length()))
        dev.launch(f"pe_kapao_sort_{sfx}", (batch, 2, 1), (SORT_THREADS, 1, 1), sort_smem, p)
        dev.launch("pe_kapao_nms_mask", (self.mask_blocks, 2 * batch, 1), (TILE, 1, 1), 0, p)
        dev.launch("pe_kapao_nms_reduce", (batch, 2, 1), (32, 1, 1), 0, p)
        dev.launch(f"pe_kapao_fuse_{sfx}", (batch, 1, 1), (FUSE_THREADS, 1, 1), 0, p)
        return result

    def fetch(self, result: KapaoDeviceResult) -> list[Poses]:
        """One device-to-host copy of the outputs, split into Poses (image pixels) per image."""
        host = np.empty(result.nbytes, np.uint8)
        self.device.copy_to_host(host, result.buffer)
        self.device.synchronize()

        def view(name, dtype, shape):
            offset, nbytes = result.layout[name]
            return host[offset:offset + nbytes].view(dtype).reshape(shape)

        n, d, k = result.batch, result.max_det, result.num_keypoints
        counts = view("counts", np.uint32, (n, 2, 4))
        boxes = view("out_boxes", np.float32, (n, d, 4))
        scores = view("out_scores", np.float32, (n, d))
        keypoints = view("out_keypoints", np.float32, (n, d, k, 3))
        out = []
        for i in range(n):
            poses = int(counts[i, 0, 2])
            det = Poses(keypoints=keypoints[i, :poses].copy(), boxes=boxes[i, :poses].copy(),
                        scores=scores[i, :poses].copy())
            det.extra = {"candidates": (int(counts[i, 0, 0]), int(counts[i, 1, 0])),
                         "dropped": (int(counts[i, 0, 3]), int(counts[i, 1, 3])),
                         "keypoint_objects": int(counts[i, 1, 2])}
            out.append(det)
        return out

    def _upload(self, outputs: Sequence[np.ndarray]):
        outputs = [np.ascontiguousarray(o) for o in outputs]
        if not outputs or any(o.ndim != 4 for o in outputs):
            raise PoseEdgeError("KAPAO outputs must be a list of [N, A*D, H, W] grids")
        dtype, batch = outputs[0].dtype, outputs[0].shape[0]
        for o in outputs:
            if o.dtype != dtype or o.shape[0] != batch:
                raise PoseEdgeError("every KAPAO output grid must have the same dtype and batch size")
            if o.shape[1] != self.num_anchors * self.depth:
                raise PoseEdgeError(f"a level grid has {o.shape[1]} channels; expected {self.num_anchors} anchors x "
                                    f"{self.depth}")
        _suffix(dtype)
        return outputs, dtype, batch

    def __call__(self, outputs: Sequence[np.ndarray], letterboxes=None) -> list[Poses]:
        """Host arrays in, Poses out (copies the grids to the device first; an engine's buffers need not)."""
        outputs, dtype, batch = self._upload(outputs)
        if batch == 0:
            return []
        dev = self.device
        ptrs = [dev.upload(o) for o in outputs]
        lb = letterbox_array(letterboxes, batch)
        if lb is not None:
            ptrs.append(dev.upload(lb))
        try:
            result = self.run(ptrs[:len(outputs)], [o.shape[2:] for o in outputs], batch, dtype,
                              ptrs[-1] if lb is not None else None)
            return self.fetch(result)
        finally:
            for ptr in ptrs:
                dev.free(ptr)

    def decode_rows(self, outputs: Sequence[np.ndarray]) -> np.ndarray:
        """The kernels' own decoded rows [N, R, D] float32 (test kernel), in kapao_decode.decode's layout."""
        outputs, dtype, batch = self._upload(outputs)
        dev = self.device
        ptrs = [dev.upload(o) for o in outputs]
        try:
            p, rows = self._params(ptrs, [o.shape[2:] for o in outputs], batch, None)
            result = self._bind(p, batch, rows, with_rows=True)
            out = np.empty((batch, rows, self.depth), np.float32)
            if batch:
                dev.launch(f"pe_kapao_decode_rows_{_suffix(dtype)}", (math.ceil(rows / SELECT_THREADS), batch, 1),
                           (SELECT_THREADS, 1, 1), 0, p)
                dev.copy_to_host(out, result.buffer + result.layout["out_rows"][0])
                dev.synchronize()
            return out
        finally:
            for ptr in ptrs:
                dev.free(ptr)

    def close(self) -> None:
        self._workspace.release()
        self._outputs.release()


def letterbox_array(letterboxes, batch: int) -> np.ndarray | None:
    """[N, 4] float32 (pad_x, pad_y, scale_x, scale_y) from Letterbox objects (None -> identity); None if all None."""
    if letterboxes is None:
        return None
    letterboxes = list(letterboxes)
    if len(letterboxes) != batch:
        raise PoseEdgeError(f"{len(letterboxes)} letterboxes for {batch} images")
    if all(lb is None for lb in letterboxes):
        return None
    out = np.zeros((batch, 4), np.float32)
    out[:, 2:] = 1.0
    for i, lb in enumerate(letterboxes):
        if lb is not None:
            out[i, 0:2] = np.asarray(lb.pad, np.float32)
            out[i, 2:4] = np.asarray(lb.scale, np.float32)
    return out
