"""ONNX Runtime (CPU) FP32 and INT8 against PyTorch eager (CPU), per preset and batch size, as ratios from one run.

    python benchmarks/bench_onnx_vs_torch.py [--presets sb-r18-128x96,kapao-tiny,...] [--batches 1,8] [--repeat 3]
        [--out benchmarks/results/onnx_vs_torch-<host>.json]

Weights are random (speed does not depend on them); the INT8 graphs are calibrated on 8 synthetic images without the
sensitivity search (every Conv in INT8), in both forms the exporter knows:
    int8        the exported graph: Q/DQ on the FP16-typed graph, what TensorRT should build; ONNX Runtime's CPU
                provider has no FP16 kernels for most of it and inserts casts, so this measures a worst case;
    int8-fp32   the same Q/DQ on the FP32 graph.
Timings are interleaved (one call of each backend per round, `repeat` rounds after a warm-up) so that a busy machine
slows all of them alike; each figure is the median. Ratios are PyTorch time / backend time (>1: faster than PyTorch).
The record includes the machine (CPU model, cores, versions) because these numbers mean nothing without it.
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
from pathlib import Path

import torch
from record import cpu_model_and_flags, default_path, save

DEFAULT_PRESETS = ("sb-r18-128x96", "kapao-tiny", "det-tiny", "sb-r50-256x192", "kapao-s")


def machine() -> dict:
    import onnxruntime

    cpu, _ = cpu_model_and_flags()
    return {"host": socket.gethostname(), "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "onnxruntime": onnxruntime.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "loadavg_1_5_15": list(os.getloadavg())}  # other work on the machine skews absolute times


def graphs_for(name: str, tmp: Path) -> tuple[object, object, dict[str, Path]]:
    from pose_edge.export import fp16, int8
    from pose_edge.export.onnx_export import export_onnx, get_graph_info, sample_images, save_model, set_graph_info

    from pose_edge.model_meta import GraphInfo
    from pose_edge.models import build_model, model_meta

    torch.manual_seed(0)
    model, meta = build_model(name).eval(), model_meta(name)
    fp32 = export_onnx(model, meta)
    info = get_graph_info(fp32)
    q, _ = int8.quantize(fp32, meta, iter(sample_images(meta, 8, seed=1)), count=8, progress=False, sensitivity=False)
    paths = {"fp32": save_model(fp32, tmp / f"{name}-fp32.onnx")}
    for label, graph in (("int8", fp16.convert_to_fp16(q)), ("int8-fp32", q)):
        set_graph_info(graph, GraphInfo(**{**info.__dict__, "precision": "int8"}))
        paths[label] = save_model(graph, tmp / f"{name}-{label}.onnx")
    return model, meta, paths


def bench(presets, batches, repeat: int) -> dict:
    from pose_edge.export.onnx_export import sample_images

    from pose_edge.runtime.backend import normalize
    from pose_edge.runtime.ort_backend import OrtBackend

    rows = []
    start_load = list(os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        for name in presets:
            model, meta, paths = graphs_for(name, Path(tmp))
            backends = {k: OrtBackend(p, providers=("CPUExecutionProvider",)) for k, p in paths.items()}
            for n in batches:
                images = sample_images(meta, n, seed=2)

                def torch_eager():
                    with torch.no_grad():  # the host-side normalisation is part of what the graph does too
                        model(torch.from_numpy(normalize(images, meta.input)))

                runners = {"torch": torch_eager, **{k: (lambda b=b: b.run(images)) for k, b in backends.items()}}
                times = {k: [] for k in runners}
                for k, run in runners.items():  # warm-up
                    run()
                for _ in range(repeat):
                    for k, run in runners.items():
                        t = time.perf_counter()
                        run()
                        times[k].append(time.perf_counter() - t)
                med = {k: statistics.median(v) for k, v in times.items()}
                row = {"preset": name, "batch": n, "input": f"{meta.input.height}x{meta.input.width}",
                       "ms": {k: round(1000 * v, 1) for k, v in med.items()},
                       "speedup_vs_torch": {k: round(med["torch"] / v, 2) for k, v in med.items() if k != "torch"}}
                rows.append(row)
                print(json.dumps(row), flush=True)
    return {"machine": machine(), "loadavg_at_start": start_load, "repeat": repeat, "rows": rows}


def to_markdown(record: dict) -> str:
    m = record["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
             f"onnxruntime {m['onnxruntime']}, {m['date']}. Median of {record['repeat']} interleaved rounds. "
             f"Load average at start {record['loadavg_at_start'][0]:.1f}, at end {m['loadavg_1_5_15'][0]:.1f} "
             f"(the machine is shared; absolute times move with its load, ratios much less).", "",
             "| preset | input | batch | torch ms | ORT FP32 ms | ORT INT8 (FP16 Q/DQ) ms | ORT INT8 (FP32 Q/DQ) ms "
             "| FP32 x | INT8 x | INT8-fp32 x |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in record["rows"]:
        ms, sp = r["ms"], r["speedup_vs_torch"]
        lines.append(f"| {r['preset']} | {r['input']} | {r['batch']} | {ms['torch']} | {ms['fp32']} | {ms['int8']} | "
                     f"{ms['int8-fp32']} | {sp['fp32']} | {sp['int8']} | {sp['int8-fp32']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(DEFAULT_PRESETS))
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    record = bench(args.presets.split(","), [int(b) for b in args.batches.split(",")], args.repeat)
    save(record, args.out or default_path("onnx_vs_torch"), to_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
