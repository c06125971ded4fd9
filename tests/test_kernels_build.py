"""Tier A: every kernel compiles for every target arch without spills or local memory (nvcc + ptxas -v, and NVRTC,
the run-time fallback), the recorded register/shared-memory figures are current, and the loader and the runtime glue
behave on a machine without a GPU. Builds are cached by source hash, so only the first run pays for nvcc."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from pose_edge.kernels import build

from pose_edge.errors import PoseEdgeError
from pose_edge.runtime.gpu import gpu_status

needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (CUDA toolkit)")


def nvrtc_available() -> bool:
    try:
        build.nvrtc_version()
        return True
    except Exception:
        return False


needs_nvrtc = pytest.mark.skipif(not nvrtc_available(), reason="needs cuda-python with nvidia-cuda-nvrtc")


def emulated_kernel_names() -> set[str]:
    from pose_edge.kernels.emulator import EmulatedDevice

    return set(EmulatedDevice().kernel_names())


@pytest.fixture(scope="module")
def fatbin():
    return build.build_fatbin()


@needs_nvcc
def test_every_kernel_builds_for_every_arch_without_spills(fatbin):
    path, figures = fatbin
    assert path.stat().st_size > 100_000
    rows = figures["rows"]
    kernels = emulated_kernel_names()
    assert {(r["kernel"], r["arch"]) for r in rows} == {(k, f"sm_{a}") for k in kernels for a in build.ARCHS}
    for r in rows:
        assert r["stack"] == r["spill_stores"] == r["spill_loads"] == 0, r
        assert 0 < r["registers"] <= 128, r


@needs_nvcc
def test_recorded_resources_are_current(fatbin):
    # kernels/ptxas_resources.json is what the README quotes; rebuild it with
    # `python -m pose_edge.kernels.build --record` after changing a kernel.
    recorded = json.loads(build.RESOURCES_FILE.read_text())
    current = build.resources_record(fatbin[1])
    assert set(recorded["kernels"]) == set(current["kernels"])
    if recorded["nvcc"] == current["nvcc"]:
        assert recorded == current


def test_ptxas_parser_reads_nvcc_output():
    text = """ptxas info    : Compiling entry function 'pe_x' for 'sm_90'
ptxas info    : Function properties for pe_x
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 32 registers, used 1 barriers, 1536 bytes smem, 992 bytes cmem[0]"""
    assert build.parse_ptxas(text) == [{"kernel": "pe_x", "arch": "sm_90", "registers": 32, "smem": 1536,
                                        "stack": 8, "spill_stores": 4, "spill_loads": 12}]


@needs_nvrtc
@pytest.mark.parametrize("arch", [build.ARCHS[0], build.ARCHS[-1]])
def test_nvrtc_compiles_the_same_source_without_spills(arch):
    cubin, log = build.nvrtc_compile(arch, with_log=True)
    assert cubin[:4] == b"\x7fELF"
    rows = build.parse_ptxas(log)
    assert {r["kernel"] for r in rows} == emulated_kernel_names()
    assert all(r["stack"] == r["spill_stores"] == r["spill_loads"] == 0 for r in rows), rows


@needs_nvrtc
def test_nvrtc_ptx_for_gpus_newer_than_the_fatbin():
    ptx = build.nvrtc_compile(build.PTX_ARCH, ptx=True).decode()
    assert ".target sm_120" in ptx
    assert set(re.findall(r"\.entry (\w+)\(", ptx)) == emulated_kernel_names()


def test_loader_takes_only_a_fatbin_built_from_these_sources(tmp_path, monkeypatch):
    from pose_edge.kernels import cuda_device

    key = build.fatbin_hash()  # of the real sources
    monkeypatch.setattr(build, "cache_root", lambda: tmp_path / "cache")
    monkeypatch.setattr(build, "KERNEL_DIR", tmp_path)  # where a shipped fatbin would sit
    shipped = tmp_path / build.FATBIN_NAME
    shipped.write_bytes(b"fatbin")
    (tmp_path / (build.FATBIN_NAME + ".json")).write_text(json.dumps({"hash": "stale"}))
    assert cuda_device.fatbin_candidates() == []
    (tmp_path / (build.FATBIN_NAME + ".json")).write_text(json.dumps({"hash": key}))
    assert cuda_device.fatbin_candidates() == [shipped]
    cached = tmp_path / "cache" / f"fatbin-{key}" / build.FATBIN_NAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"fatbin")
    assert cuda_device.fatbin_candidates() == [shipped, cached]


@pytest.mark.skipif(gpu_status()[0], reason="checks the message on a machine without a GPU")
def test_gpu_device_says_clearly_that_there_is_no_gpu():
    from pose_edge.kernels.cuda_device import CudaDevice
    from pose_edge.kernels.stages import GpuHeatmapDecoder

    with pytest.raises(PoseEdgeError, match="NVIDIA GPU"):
        CudaDevice()
    with pytest.raises(PoseEdgeError, match="NVIDIA GPU"):
        GpuHeatmapDecoder()


def test_runtime_glue_runs_the_kernels_on_any_device():
    from pose_edge.kernels.emulator import EmulatedDevice
    from pose_edge.kernels.stages import GpuHeatmapDecoder, GpuKapaoDecoder

    from pose_edge.geometry import fit
    from pose_edge.model_meta import InputSpec, ModelMeta
    from pose_edge.runtime import kapao_decode as kd
    from pose_edge.runtime.heatmap_decode import decode_heatmaps

    dev = EmulatedDevice()
    rng = np.random.default_rng(0)
    maps = rng.random((2, 17, 16, 12), dtype=np.float32)
    affine = rng.normal(size=(2, 2, 3))
    np.testing.assert_array_equal(GpuHeatmapDecoder("quarter", device=dev)(maps), decode_heatmaps(maps))
    engine_output = dev.upload(maps)  # as an engine leaves its output on the device
    np.testing.assert_array_equal(
        GpuHeatmapDecoder("dark", 5, device=dev).decode_device((engine_output, maps.shape, maps.dtype), affine),
        decode_heatmaps(maps, affine, "dark", 5))

    meta = ModelMeta("person_detector", "test", InputSpec(64, 64), keypoints=(), strides=(8, 16),
                     anchors=(((10, 13), (16, 30), (33, 23)), ((30, 61), (62, 45), (59, 119))), num_classes=1)
    grids = [rng.normal(-2, 2, (2, 3 * 6, 64 // s, 64 // s)).astype(np.float16) for s in meta.strides]
    letterboxes = [fit((100, 80), (64, 64)), fit((30, 90), (64, 64))]
    decoder = GpuKapaoDecoder(meta, device=dev)
    ref = kd.postprocess(grids, meta.strides, meta.anchors, 1, 0, letterboxes)
    on_device = [(dev.upload(g), g.shape, g.dtype) for g in grids]
    for got in (decoder(grids, letterboxes), decoder.decode_device(on_device, letterboxes)):
        for g, r in zip(got, ref):
            assert len(g) == len(r) > 0
            np.testing.assert_allclose(g.boxes, r.boxes, atol=1e-3)


@needs_nvrtc
def test_nvrtc_leaves_python_constants_alone():
    """NVRTC writes its log (often a single NUL) into the buffer it is handed; handing it `b" " * size` wrote into
    CPython's interned one-byte b" " and broke unrelated code later in the process (torch.load among it)."""
    build.nvrtc_compile(build.PTX_ARCH, ptx=True)
    build.nvrtc_compile(75)
    assert b" " == bytes([32]) and b" ".strip() == b""
