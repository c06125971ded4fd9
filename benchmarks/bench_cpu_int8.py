"""INT8 on ONNX Runtime's CPU provider: the TensorRT-target graph against the CPU-target graph, with the evidence.

    python benchmarks/bench_cpu_int8.py [--presets sb-r50-256x192,kapao-s@640] [--threads 1,2] [--repeat 7]
        [--out benchmarks/results/cpu_int8-<host>.json]

A preset may carry @SIZE: KAPAO's graph takes any multiple of 64, so kapao-s (preset input 1280) is exported as usual
and calibrated and timed on SIZExSIZE images. Weights are random (speed does not depend on them); every INT8 graph is
calibrated on 8 synthetic images with every layer in INT8 (no sensitivity search). Graphs, batch 1:

    fp32           the exported FP32 graph
    int8-trt       the default INT8 export (target "tensorrt"): symmetric INT8 Q/DQ on the Conv inputs, FP16 graph
    int8-trt-fp32  the same Q/DQ on the FP32 graph (no FP16 islands, no casts)
    int8-cpu       the CPU-target export (export/int8_cpu.py): sub-pixel deconvolutions, U8 activations, S8
                   per-channel weights, every tensor between integer kernels quantized, heads in float
  ablations of int8-cpu, one change each:
    cpu-s8s8       int8 activations instead of uint8
    cpu-per-tensor one weight scale per tensor instead of per output channel
    cpu-no-subpixel ConvTranspose kept (it runs in float between DQ and Q)

For each graph: the median latency over `repeat` interleaved rounds (one call of each graph per round, so that a
busy machine slows all alike) at each thread count, the op types ONNX Runtime runs after its optimisations (which ops
became integer kernels, which stayed float), and a profile of one thread (kernel time per op type, warm-up run left
out). The record holds the CPU model, its integer instructions and the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from record import cpu_model_and_flags, default_path, save

DEFAULT_PRESETS = ("sb-r50-256x192", "kapao-s@640")
ISA_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx_vnni_int8", "amx_int8", "asimddp", "i8mm")


def machine() -> dict:
    import onnxruntime

    cpu, flags = cpu_model_and_flags()
    return {"host": socket.gethostname(), "cpu": cpu, "cores": os.cpu_count(), "machine": platform.machine(),
            "integer_isa": [f for f in ISA_FLAGS if f in flags], "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()]}


def parse_preset(spec: str) -> tuple[str, int | None]:
    name, _, size = spec.partition("@")
    return name, int(size) if size else None


def build_graphs(name: str, size: int | None, tmp: Path) -> tuple[dict[str, Path], np.ndarray]:
    """{graph label: .onnx path} and one uint8 [1, H, W, 3] input."""
    import onnx
    import torch

    from pose_edge.export import fp16, int8, int8_cpu
    from pose_edge.export.calib_data import batches
    from pose_edge.export.onnx_export import export_onnx, sample_images, save_model
    from pose_edge.models import build_model, model_meta

    torch.manual_seed(0)
    model, meta = build_model(name).eval(), model_meta(name)
    fp32 = export_onnx(model, meta)
    calib = sample_images(meta, 8, seed=1, height=size, width=size)
    graphs: dict[str, onnx.ModelProto] = {"fp32": fp32}
    q, _ = int8.quantize(fp32, meta, iter(calib), count=8, progress=False, sensitivity=False)
    graphs["int8-trt"], graphs["int8-trt-fp32"] = fp16.convert_to_fp16(q), q
    graphs["int8-cpu"], _ = int8_cpu.quantize_for_cpu(fp32, meta, iter(calib), count=8,
                                                      progress=False)
    rewritten, _ = int8_cpu.prepare_fp32(fp32, calib[:1])
    heads = int8_cpu.float_nodes(rewritten)
    for label, kwargs in (("cpu-s8s8", {"signed_activations": True}), ("cpu-per-tensor", {"per_channel": False})):
        graphs[label], _ = int8_cpu.quantize_qdq(rewritten, batches(iter(calib), 8), heads, **kwargs)
        int8_cpu.integer_depth_to_space(graphs[label])
    if any(n.op_type == "ConvTranspose" for n in fp32.graph.node):
        graphs["cpu-no-subpixel"], _ = int8_cpu.quantize_qdq(fp32, batches(iter(calib), 8), int8_cpu.float_nodes(fp32))
    paths = {label: save_model(g, tmp / f"{name}-{label}.onnx") for label, g in graphs.items()}
    return paths, sample_images(meta, 1, seed=2, height=size, width=size)


def session(path: Path, threads: int, profile_prefix: str | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def profile(path: Path, image: np.ndarray, tmp: Path, runs: int = 5) -> dict:
    """Kernel time per op type (ms per run, one thread), the warm-up run left out."""
    s = session(path, 1, str(tmp / f"prof-{path.stem}"))
    feed = {s.get_inputs()[0].name: image}
    for _ in range(runs + 1):
        s.run(None, feed)
    events = json.load(open(s.end_profiling()))
    starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    by_op: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= starts[1]:
            by_op[e["args"]["op_name"]] += e["dur"] / 1000.0 / runs
    total = sum(by_op.values())
    return {"kernel_ms": round(total, 2),
            "by_op_ms": {k: round(v, 2) for k, v in sorted(by_op.items(), key=lambda kv: -kv[1]) if v >= 0.05}}


def time_graphs(paths: dict[str, Path], image: np.ndarray, threads: int, repeat: int) -> dict[str, float]:
    sessions = {k: session(p, threads) for k, p in paths.items()}
    feeds = {k: {s.get_inputs()[0].name: image} for k, s in sessions.items()}
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for k, s in sessions.items():  # warm-up
        s.run(None, feeds[k])
    for _ in range(repeat):
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run(None, feeds[k])
            times[k].append(time.perf_counter() - t)
    return {k: round(1000 * statistics.median(v), 2) for k, v in times.items()}


def bench(presets, threads, repeat: int) -> dict:
    import onnx

    from pose_edge.export.int8_cpu import cpu_kernels

    rows = []
    start_load = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for spec in presets:
            name, size = parse_preset(spec)
            paths, image = build_graphs(name, size, tmp)
            row = {"preset": name, "input": f"{image.shape[1]}x{image.shape[2]}", "batch": 1, "ms": {},
                   "speedup_vs_fp32": {}, "ops_after_optimisation": {}, "profile_1_thread": {}}
            for label, path in paths.items():
                row["ops_after_optimisation"][label] = cpu_kernels(onnx.load(str(path)))
                row["profile_1_thread"][label] = profile(path, image, tmp)
            for n in threads:
                ms = time_graphs(paths, image, n, repeat)
                row["ms"][str(n)] = ms
                row["speedup_vs_fp32"][str(n)] = {k: round(ms["fp32"] / v, 2) for k, v in ms.items()}
            rows.append(row)
            print(json.dumps({k: row[k] for k in ("preset", "input", "ms", "speedup_vs_fp32")}), flush=True)
    return {"machine": machine(), "loadavg_at_start": start_load, "repeat": repeat, "rows": rows}


def to_markdown(record: dict) -> str:
    m = record["machine"]
    lines = [f"Machine: {m['cpu']} ({m['machine']}), {m['cores']} cores, integer instructions: "
             f"{', '.join(m['integer_isa']) or 'none of ' + ', '.join(ISA_FLAGS)}; onnxruntime {m['onnxruntime']}; "
             f"{m['date']}. Batch 1, median of {record['repeat']} interleaved rounds. Load average at start "
             f"{record['loadavg_at_start'][0]:.1f}, at end {m['loadavg_1_5_15'][0]:.1f} (a shared machine: absolute "
             "times move with its load, ratios within a row much less).", ""]
    for r in record["rows"]:
        labels = list(r["ops_after_optimisation"])
        lines += [f"### {r['preset']} at {r['input']}", "",
                  "| threads | " + " | ".join(f"{k} ms" for k in labels) + " | " +
                  " | ".join(f"{k} x" for k in labels if k != "fp32") + " |",
                  "|---" * (2 * len(labels)) + "|"]
        for n, ms in r["ms"].items():
            sp = r["speedup_vs_fp32"][n]
            lines.append(f"| {n} | " + " | ".join(str(ms[k]) for k in labels) + " | " +
                         " | ".join(str(sp[k]) for k in labels if k != "fp32") + " |")
        lines += ["", "Op types after ONNX Runtime's optimisation, and one-thread kernel time per op type (ms/run):",
                  ""]
        for k in labels:
            ops = ", ".join(f"{op} {c}" for op, c in r["ops_after_optimisation"][k].items())
            prof = r["profile_1_thread"][k]
            top = ", ".join(f"{op} {v}" for op, v in list(prof["by_op_ms"].items())[:6])
            lines.append(f"- **{k}**: kernels {prof['kernel_ms']} ms ({top}); ops: {ops}")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(DEFAULT_PRESETS))
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    record = bench(args.presets.split(","), [int(t) for t in args.threads.split(",")], args.repeat)
    save(record, args.out or default_path("cpu_int8"), to_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
