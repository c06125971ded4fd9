"""pose_edge.load and the Estimator: one entry point for both paradigms, honest backend and decoder choice, the GPU
decode stage wired to device-resident outputs, deployment vs COCO settings, and predict's outputs.

Models are the small presets with random weights, exported to ONNX once a session (conftest.small_models).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from no_torch import run_cli_without_torch

import pose_edge
from pose_edge.errors import ArtifactError, PoseEdgeError
from pose_edge.estimator import Estimator, load, resolve_settings
from pose_edge.geometry import letterbox
from pose_edge.runtime import kapao_decode
from pose_edge.runtime.ort_backend import OrtBackend
from pose_edge.runtime.settings import COCO_EVAL, DEPLOY, Settings, Thresholds

LOOSE = Settings(single_stage=Thresholds(conf_thres=0.0, max_det=30, max_nms=4096),
                 detector=Thresholds(conf_thres=0.0, max_det=6, max_nms=4096, use_kp_dets=False))


def frames(n=2, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (240, 320, 3), dtype=np.uint8) for _ in range(n)]


def test_the_public_api_is_lazy_and_torch_free():
    code = ("import sys, pose_edge\n"
            "assert 'pose_edge.estimator' not in sys.modules\n"
            "pose_edge.load, pose_edge.Poses, pose_edge.DEPLOY\n"
            "assert 'pose_edge.estimator' in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_single_stage_load_equals_the_pieces_assembled_by_hand(small_models):
    """load() on a KAPAO ONNX: letterbox -> ONNX Runtime -> kapao_decode.postprocess, done by hand, gives the same
    poses, in frame pixels, batch or one frame at a time."""
    _, onnx_path = small_models["kapao-tiny"]
    est = load(onnx_path, settings=LOOSE, device="cpu")
    backend = OrtBackend(onnx_path, providers=("CPUExecutionProvider",))
    meta = backend.meta
    images = frames()
    placed = [letterbox(f, (meta.input.height, meta.input.width)) for f in images]
    outputs = backend.run(np.stack([c for c, _ in placed]))
    by_hand = kapao_decode.postprocess(outputs, meta.strides, meta.anchors, meta.num_classes, meta.num_keypoints,
                                       [b for _, b in placed], LOOSE.single_stage)
    batch = est.predict_batch(images)
    for got, ref, one in zip(batch, by_hand, [est(f) for f in images]):
        assert len(got) == len(ref) == 30
        np.testing.assert_allclose(got.keypoints, ref.keypoints, atol=1e-4)
        np.testing.assert_allclose(got.boxes, ref.boxes, atol=1e-4)
        np.testing.assert_allclose(one.keypoints, got.keypoints, atol=1e-4)
    d = est.describe()
    assert d["paradigm"] == "single_stage" and d["model"]["backend"] == "onnxruntime"
    assert d["model"]["device"] == "cpu" and d["model"]["providers"] == ["CPUExecutionProvider"]
    assert d["model"]["decoder"] == "numpy (CPU)" and d["model"]["input"] == [256, 320]
    assert d["settings"]["single_stage"]["conf_thres"] == 0.0
    # idle threads of one session must not spin on the cores the next session needs (a top-down frame runs two)
    options = est.pipeline.backend.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_top_down_with_a_detector_equals_detector_then_pose_model(small_models):
    """load(pose, detector=det): the detector's boxes, fed by hand to the same pose model, give the same poses."""
    sb, det = small_models["sb-r18-128x96"][1], small_models["det-tiny"][1]
    est = load(sb, detector=det, settings=LOOSE, device="cpu")
    detector = load(det, settings=LOOSE, device="cpu")
    pose_only = Estimator(OrtBackend(sb, providers=("CPUExecutionProvider",)), settings=LOOSE)
    for image in frames():
        found = detector(image)
        assert len(found) == 6 and found.keypoints.shape == (6, 0, 3)
        got, ref = est(image), pose_only(image, found.boxes, found.scores)
        assert len(got) == len(ref) > 0
        np.testing.assert_allclose(got.keypoints, ref.keypoints, atol=1e-4)
    d = est.describe()
    assert d["paradigm"] == "top_down" and d["detector"]["preset"] == "det-tiny"


class EmulatedEngine:
    """What a TensorRT backend gives the pipelines, with the device emulated: the network runs in ONNX Runtime and
    its outputs are copied into the emulated device's memory, where an engine leaves them; run_device returns
    (pointer, shape, dtype) per output, as TrtBackend.run_device does. TensorRT itself cannot run here."""

    def __init__(self, backend, device):
        self.inner, self.meta, self.device, self.stream = backend, backend.meta, device, 0
        self._buffers = []
        self.host_runs = 0

    def run(self, images):
        self.host_runs += 1
        return self.inner.run(images)

    def run_device(self, images):
        for ptr in self._buffers:
            self.device.free(ptr)
        outputs = self.inner.run(images)
        self._buffers = [self.device.upload(o) for o in outputs]
        return [(ptr, o.shape, o.dtype) for ptr, o in zip(self._buffers, outputs)]


def test_the_cuda_decode_stage_reads_device_outputs_and_returns_only_poses(small_models):
    """The device path of both pipelines (engine outputs left on the device -> the CUDA kernels -> poses), run with
    the kernels' CPU emulation: the same poses as the NumPy stage, the backend's host path never used, and only the
    final poses copied back (a few kB, not the grids or heatmaps)."""
    from pose_edge.kernels.emulator import EmulatedDevice
    from pose_edge.kernels.stages import GpuHeatmapDecoder, GpuKapaoDecoder

    device = EmulatedDevice()
    image = frames(1)[0]

    kapao = OrtBackend(small_models["kapao-tiny"][1], providers=("CPUExecutionProvider",))
    engine = EmulatedEngine(kapao, device)
    on_device = Estimator(engine, settings=LOOSE, decoder=GpuKapaoDecoder(kapao.meta, LOOSE.single_stage,
                                                                           device=device))
    assert on_device.describe()["model"]["decoder"] == "cuda (GPU)"
    got, ref = on_device(image), Estimator(kapao, settings=LOOSE)(image)
    assert engine.host_runs == 0 and len(got) == len(ref) == 30
    np.testing.assert_allclose(got.boxes, ref.boxes, atol=2e-3)
    np.testing.assert_allclose(got.keypoints, ref.keypoints, atol=2e-3)
    grid_bytes = sum(o.nbytes for o in kapao.run(letterbox(image, (256, 320))[0][None]))
    assert len(device.to_host) == 1 and device.to_host[0] < grid_bytes / 20

    sb = OrtBackend(small_models["sb-r18-128x96"][1], providers=("CPUExecutionProvider",))
    boxes = np.array([[40.0, 30, 120, 220], [180, 20, 260, 230]])
    engine = EmulatedEngine(sb, device)
    device.to_host.clear()
    stage = GpuHeatmapDecoder("dark", on_device_kernel(sb.meta), device=device)
    got = Estimator(engine, settings=COCO_EVAL, decoder=stage)(image, boxes)
    ref = Estimator(sb, settings=COCO_EVAL)(image, boxes)
    assert engine.host_runs == 0
    np.testing.assert_allclose(got.keypoints, ref.keypoints, atol=1e-3)
    assert device.to_host == [2 * 17 * 3 * 4]  # 2 people x 17 keypoints x (x, y, score) float32


def on_device_kernel(meta) -> int:
    from pose_edge.runtime.topdown import codec_for

    return codec_for(meta).dark_kernel


def test_deployment_and_coco_settings_are_two_profiles(small_models):
    assert resolve_settings("deploy") is DEPLOY and resolve_settings("coco") is COCO_EVAL
    assert COCO_EVAL.single_stage.conf_thres == 0.001 and COCO_EVAL.single_stage.max_det == 300
    assert DEPLOY.single_stage.conf_thres > 0.1 and DEPLOY.min_score > 0
    tuned = resolve_settings("deploy", conf=0.05)
    assert tuned.single_stage.conf_thres == tuned.detector.conf_thres == tuned.min_score == 0.05
    with pytest.raises(PoseEdgeError, match="unknown settings"):
        resolve_settings("fast")
    # The same model keeps everything for COCO and only confident people for a robot.
    _, onnx_path = small_models["kapao-tiny"]
    image = frames(1)[0]
    keep_all = load(onnx_path, settings=Settings(single_stage=Thresholds(conf_thres=0.0)), device="cpu")(image)
    deploy = load(onnx_path, device="cpu")(image)
    assert len(keep_all) == 300 and len(deploy) == 0  # an untrained model is confident of nobody


def test_load_refuses_what_it_cannot_run_with_one_line(small_models, tmp_path):
    _, onnx_path = small_models["kapao-tiny"]
    with pytest.raises(ArtifactError, match="not a model artefact"):
        load(tmp_path / "model.tflite")
    with pytest.raises(ArtifactError, match="no such file"):
        load(tmp_path / "missing.onnx")
    with pytest.raises(ArtifactError, match="CUDAExecutionProvider"):
        load(onnx_path, device="cuda")  # asked for the GPU: no silent fall-back to the CPU
    with pytest.raises(PoseEdgeError, match="unknown decode"):
        load(onnx_path, decode="opencl")
    with pytest.raises(PoseEdgeError, match="needs track"):
        load(onnx_path, smooth=True)
    with pytest.raises(PoseEdgeError, match="color"):
        load(onnx_path, color="yuv")
    with pytest.raises(PoseEdgeError, match="boxes are for top-down"):
        load(onnx_path)(frames(1)[0], boxes=np.zeros((1, 4)))


def test_an_engine_here_says_it_needs_a_gpu(small_models, tmp_path):
    """A TensorRT engine (with a valid sidecar) on a machine without a GPU: one line, naming the ONNX to run
    instead; nothing of TensorRT is touched."""
    from pose_edge.runtime.gpu import gpu_status
    from tiny_models import engine_with_sidecar

    if gpu_status()[0]:
        pytest.skip("this machine has a GPU")
    _, onnx_path = small_models["kapao-tiny"]
    info = OrtBackend(onnx_path, providers=("CPUExecutionProvider",)).info
    engine = tmp_path / "kapao-tiny.engine"
    engine_with_sidecar(engine, onnx_path, info)
    with pytest.raises(ArtifactError, match="needs an NVIDIA GPU") as e:
        load(engine)
    assert "\n" not in str(e.value) and "kapao-tiny-fp32.onnx" in str(e.value)


def test_predict_writes_what_it_promises(small_models, tmp_path):
    """Images -> overlays + COCO results (pycocotools loads them); a video -> overlay.mp4 + JSON Lines; a generator
    (a camera stand-in) -> one JSON line per frame delivered."""
    import cv2
    from pycocotools.coco import COCO

    from pose_edge.predict import predict

    est = load(small_models["kapao-tiny"][1], settings=LOOSE, device="cpu")
    images = tmp_path / "images"
    images.mkdir()
    for i, image in enumerate(frames(3)):
        cv2.imwrite(str(images / f"{i + 1:012d}.jpg"), image)
    summary = predict(est, images, tmp_path / "out-images")
    assert summary.frames == 3 and summary.people == 90
    assert sorted(p.name for p in (tmp_path / "out-images" / "overlays").iterdir()) == [
        "000000000001.jpg", "000000000002.jpg", "000000000003.jpg"]
    results = json.loads((tmp_path / "out-images" / "results.json").read_text())
    gt = COCO()
    gt.dataset = {"images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": 320, "height": 240}
                             for i in (1, 2, 3)], "annotations": [], "categories": [{"id": 1, "name": "person"}]}
    gt.createIndex()
    assert len(gt.loadRes(results).anns) == 90
    assert set(summary.stage_ms) >= {"preprocess", "inference", "postprocess", "drawing"}

    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for image in frames(5, seed=1):
        writer.write(image)
    writer.release()
    summary = predict(est, video, tmp_path / "out-video")
    lines = (tmp_path / "out-video" / "poses.jsonl").read_text().splitlines()
    assert summary.frames == 5 and len(lines) == 5 and len(json.loads(lines[0])["poses"]) == 30
    capture = cv2.VideoCapture(str(tmp_path / "out-video" / "overlay.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 5

    summary = predict(est, iter(frames(4, seed=2)), tmp_path / "out-camera", draw=False)
    lines = (tmp_path / "out-camera" / "poses.jsonl").read_text().splitlines()
    assert len(lines) == summary.frames and summary.frames + summary.dropped == 4
    assert not (tmp_path / "out-camera" / "overlay.mp4").exists()


def test_predict_runs_with_torch_unimportable(small_models, tmp_path):
    """The base install's promise: `pose-edge predict` on an ONNX model in a process where `import torch` fails."""
    image = tmp_path / "frame.png"
    import cv2

    cv2.imwrite(str(image), frames(1)[0])
    out = tmp_path / "out"
    done = run_cli_without_torch("predict", small_models["kapao-tiny"][1], image, "--out", out, "--conf", "0.0", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["frames"] == 1 and report["estimator"]["model"]["backend"] == "onnxruntime"
    assert (out / "results.json").is_file() and (out / "overlays" / "frame.jpg").is_file()
    # A checkpoint in the same process needs PyTorch: one line saying so.
    done = run_cli_without_torch("predict", small_models["kapao-tiny"][0], image, "--out", out / "ckpt")
    assert done.returncode == 1 and "PyTorch is not installed" in done.stderr and "Traceback" not in done.stderr


def test_pose_edge_load_runs_a_run_folder_through_pytorch(small_models):
    run, onnx_path = small_models["sb-r18-128x96"]
    image, boxes = frames(1)[0], np.array([[40.0, 30, 120, 220]])
    from_run = pose_edge.load(run, settings="coco")(image, boxes)
    from_onnx = pose_edge.load(onnx_path, settings="coco", device="cpu")(image, boxes)
    assert pose_edge.load(run).describe()["model"]["backend"] == "pytorch"
    np.testing.assert_allclose(from_run.keypoints[..., :2], from_onnx.keypoints[..., :2], atol=0.05)


def test_poses_convert_to_coco_json_and_drawings(small_models):
    est = load(small_models["kapao-tiny"][1], settings=LOOSE, device="cpu")
    image = frames(1)[0]
    poses = est(image)
    records = poses.to_coco(7)
    assert len(records) == 30 and records[0]["image_id"] == 7 and len(records[0]["keypoints"]) == 51
    d = poses.to_dict()
    assert len(d["poses"]) == 30 and d["keypoint_names"][0] == "nose" and json.dumps(d)
    drawn = poses.draw(image, keypoint_threshold=0.0)
    assert drawn.shape == image.shape and (drawn != image).any() and not (drawn is image)
