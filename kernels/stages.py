"""The GPU decode stages of the pipelines: the CUDA kernels of pose_edge.kernels behind the NumPy stages' contract.

    decoder = GpuHeatmapDecoder(refine="dark")            # same results as heatmap_decode.decode_heatmaps
    keypoints = decoder(heatmaps, hm_to_image)             # host arrays in, [N, K, 3] out
    keypoints = decoder.decode_device((ptr, (N, K, H, W), "float16"), hm_to_image)   # an engine's output buffer

    post = GpuKapaoDecoder(meta, thresholds)               # same results as kapao_decode.postprocess (max_nms <= 4096)
    poses = post(outputs, letterboxes)                     # host grids in, list[Poses] out
    poses = post.decode_device([(ptr, shape, dtype), ...], letterboxes)   # engine buffers; one copy back

With a TensorRT backend: `CudaDevice(stream=int(backend.stream))` shares its stream (and primary context), and
`backend.run_device(images)` leaves the outputs on the GPU as (pointer, shape, dtype) for these methods.

Torch-free; cuda-python is imported only when a decoder is built.
Both take an optional `device` (a pose_edge.kernels.cuda_device.CudaDevice, e.g. one sharing the engine's stream);
by default each builds its own. Pass `pose_edge.kernels.emulator.EmulatedDevice()` to run the same kernels on the
CPU (slow; for tests and debugging).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from pose_edge.runtime.heatmap_decode import DEFAULT_DARK_KERNEL
from pose_edge.runtime.poses import Poses
from pose_edge.runtime.settings import COCO_THRESHOLDS, Thresholds


def _default_device(device):
    if device is not None:
        return device
    from pose_edge.kernels.cuda_device import CudaDevice

    return CudaDevice()


class GpuHeatmapDecoder:
    """Top-down heatmaps -> keypoints on the GPU (kernels/heatmap_decode.cuh), = heatmap_decode.decode_heatmaps.
    The device decode stage of pose_edge.runtime.topdown.TopDownPipeline."""

    on_device = True
    name = "cuda"

    def __init__(self, refine: str = "quarter", dark_kernel: int = DEFAULT_DARK_KERNEL, device=None):
        from pose_edge.kernels.launch import HeatmapDecoder

        self.device = _default_device(device)
        self._decoder = HeatmapDecoder(self.device, refine, dark_kernel)

    def __call__(self, heatmaps: np.ndarray, hm_to_image: np.ndarray | None = None) -> np.ndarray:
        """heatmaps [N, K, H, W] float32|float16 host array, hm_to_image [N, 2, 3] or None -> float32 [N, K, 3]."""
        return self._decoder(heatmaps, hm_to_image)

    def decode_device(self, heatmaps: tuple[int, tuple, object], hm_to_image: np.ndarray | None = None) -> np.ndarray:
        """An engine's heatmaps where they lie, (pointer, shape [N, K, H, W], dtype) -> float32 [N, K, 3] on the
        host: the affines go up, 12 bytes a keypoint come back."""
        ptr, shape, dtype = heatmaps
        n, k = int(shape[0]), int(shape[1])
        out = np.zeros((n, k, 3), np.float32)
        if n * k == 0:
            return out
        dev = self.device
        affine = dev.upload(np.ascontiguousarray(hm_to_image, np.float64)) if hm_to_image is not None else 0
        result = dev.alloc(out.nbytes)
        try:
            self._decoder.run(int(ptr), tuple(int(v) for v in shape), np.dtype(dtype), affine or None, result)
            dev.copy_to_host(out, result)
            dev.synchronize()
        finally:
            dev.free(result)
            if affine:
                dev.free(affine)
        return out


class GpuKapaoDecoder:
    """KAPAO / person-detector raw grids -> poses on the GPU (kernels/kapao_decode.cuh), = kapao_decode.postprocess.
    The device decode stage of pose_edge.runtime.single_stage.SingleStagePipeline.

    meta: the model's ModelMeta (strides, anchors, num_classes, num_keypoints). capacity: NMS candidates per image
    and pass (<= 4096); the effective max_nms is min(thresholds.max_nms, capacity), and Poses.extra["dropped"]
    counts the candidates beyond it.
    """

    on_device = True
    name = "cuda"

    def __init__(self, meta, thresholds: Thresholds = COCO_THRESHOLDS, capacity: int = 4096, device=None):
        from pose_edge.kernels.launch import KapaoPostprocessor

        self.device = _default_device(device)
        self._post = KapaoPostprocessor(self.device, meta.strides, meta.anchors, meta.num_classes, meta.num_keypoints,
                                        thresholds, capacity)

    def __call__(self, outputs: Sequence[np.ndarray], letterboxes=None) -> list[Poses]:
        """Host grids [N, A*D, H_l, W_l] per level -> Poses per image (the grids are uploaded first)."""
        return self._post(outputs, letterboxes)

    def decode_device(self, outputs: Sequence[tuple[int, tuple, object]], letterboxes=None) -> list[Poses]:
        """[(pointer, shape [N, A*D, H_l, W_l], dtype)] per level, in stride order, where an engine left them ->
        Poses per image in frame pixels; one device-to-host copy."""
        from pose_edge.kernels.launch import letterbox_array

        if not outputs:
            raise ValueError("no output grids")
        batch, dtype = int(outputs[0][1][0]), np.dtype(outputs[0][2])
        if batch == 0:
            return []
        lb = letterbox_array(letterboxes, batch)
        lb_ptr = self.device.upload(lb) if lb is not None else 0
        try:
            result = self._post.run([int(o[0]) for o in outputs], [tuple(o[1][2:]) for o in outputs], batch, dtype,
                                    lb_ptr or None)
            return self._post.fetch(result)
        finally:
            if lb_ptr:
                self.device.free(lb_ptr)
