"""`pose-edge export` as a library function: a run folder or checkpoint -> ONNX (FP32 | FP16 | INT8) -> engine.

    result = export_artifact("runs/sb-tiny", engine="trt", precision="int8", calib="data/")
    result.onnx, result.engine, result.info, result.ap

Steps, each of which raises PoseEdgeError with one line and writes nothing when it fails:
    1. the checkpoint's model -> FP32 ONNX, checked against PyTorch (export/onnx_export.py);
    2. fp16: the FP16-typed graph, keeping in FP32 any node whose FP32 activations reach FP16's range on the sample
       images (export/fp16.py), with the decoded-output distortion against FP32 recorded;
       int8: calibration on real images, per-layer sensitivity, Q/DQ on the FP16 graph (export/int8.py);
    3. the ONNX is written atomically; with engine "trt" the engine and its sidecar are built from it
       (export/trt_build.py);
    4. with `val`, the COCO AP of FP32, FP16 and INT8 side by side through the one evaluation path.
Default paths: RUN/export/<preset>-<precision>.onnx and .engine (+ .engine.json).
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from pose_edge.export import fp16 as fp16_mod
from pose_edge.export import int8 as int8_mod
from pose_edge.export.distortion import distortion
from pose_edge.export.onnx_export import (
    export_onnx,
    get_graph_info,
    load_model,
    run_onnx,
    sample_images,
    save_model,
    set_graph_info,
)

from pose_edge.errors import PoseEdgeError
from pose_edge.fsutil import check_writable, temporary_folder
from pose_edge.model_meta import GraphInfo, ModelMeta
from pose_edge.runtime.engine_sidecar import sidecar_path

ENGINES = ("onnx", "trt")
PRECISIONS = ("fp32", "fp16", "int8")
FP16_SAFE_RANGE = 16384.0  # a quarter of FP16's largest value: activations beyond it stay in FP32


@dataclass
class ExportResult:
    onnx: Path
    info: GraphInfo
    onnx_written: bool = True  # False when the ONNX was the input (an engine built from it)
    engine: Path | None = None
    sidecar: object | None = None
    seconds: float = 0.0
    ap: dict[str, dict] = field(default_factory=dict)

    def summary(self) -> str:
        d = self.info.details
        verb = "wrote" if self.onnx_written else "from"
        lines = [f"{verb} {self.onnx} ({self.info.meta.preset}, {self.info.precision}, input "
                 f"{self.info.input.dtype} {self.info.input.layout} BGR, outputs "
                 f"{', '.join(o.name for o in self.info.outputs)} {self.info.outputs[0].dtype})"]
        if "distortion" in d:
            lines.append(f"  distortion against FP32 on {d.get('measured_on', '?')}: {d['distortion']}")
        if "kept_float" in d:
            lines.append(f"  INT8 layers {d['int8_layers']}, kept in float: {', '.join(d['kept_float']) or 'none'}")
        if "fp16_kept_fp32" in d and d["fp16_kept_fp32"]:
            lines.append(f"  kept in FP32 (activation range): {', '.join(d['fp16_kept_fp32'])}")
        if self.engine is not None:
            s = self.sidecar
            lines.append(f"wrote {self.engine} ({s.precision} engine, {s.trt_module} {s.trt_version}, compute capability "
                         f"{', '.join(s.compute_capabilities)}, batch {s.profile['min'][0]}:{s.profile['opt'][0]}:"
                         f"{s.profile['max'][0]}, built in {s.build_seconds:.1f} s)")
        lines.append(f"done in {self.seconds:.1f} s")
        return "\n".join(lines)


RUN_FILES = ("last.pt", "best.pt", "meta.json", "args.json", "metrics.csv", "metrics.png")  # what training writes
CHECKPOINT_SUFFIXES = (".pt", ".pth")


def graph_precision(proto: onnx.ModelProto) -> str:
    """The precision a graph really has, from its nodes and tensors (not its metadata): "int8" with Q/DQ nodes,
    "fp16" with FP16 weights or outputs, else "fp32". An engine is built in exactly this precision."""
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node):
        return "int8"
    half = onnx.TensorProto.FLOAT16
    if (any(t.data_type == half for t in proto.graph.initializer)
            or any(o.type.tensor_type.elem_type == half for o in proto.graph.output)):
        return "fp16"
    return "fp32"


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return a.samefile(b)
    return a.resolve() == b.resolve()


def refuse_overwriting_inputs(outputs, inputs) -> None:
    """PoseEdgeError if an output path names an input of the export (the checkpoint, a run folder's own files, the
    source ONNX, calibration or timing-cache files): an export must never destroy what it was made from."""
    for out in outputs:
        for inp in inputs:
            if _same_file(Path(out), Path(inp)):
                raise PoseEdgeError(f"the export would overwrite its own input {inp}; choose another --out")


def default_paths(run_dir: Path, preset: str, precision: str, engine: str, out: str | Path | None
                  ) -> tuple[Path, Path | None]:
    """(onnx path, engine path or None). --out names the final artefact; a TRT build's ONNX sits beside it."""
    if out is None:
        base = run_dir / "export" / f"{preset}-{precision}"
        return base.with_suffix(".onnx"), (base.with_suffix(".engine") if engine == "trt" else None)
    out = Path(out)
    if engine == "trt":
        if out.suffix == ".onnx":  # --out names the ONNX; the engine goes beside it
            return out, out.with_suffix(".engine")
        return out.with_suffix(".onnx"), out
    return out, None


def activation_ranges(model: onnx.ModelProto, images: np.ndarray) -> dict[str, float]:
    """max |x| of every float node output over `images` (uint8 batch), by node name."""
    from onnx import TensorProto, helper
    from pose_edge.export.fp16 import _tensor_types

    types = _tensor_types(model)
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    names, owners = [], []
    outputs = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for o in node.output:
            if types.get(o) == TensorProto.FLOAT:
                names.append(o)
                owners.append(node.name)
                if o not in outputs:
                    probe.graph.output.append(helper.make_tensor_value_info(o, TensorProto.FLOAT, None))
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    ranges: dict[str, float] = {}
    for i in range(0, len(images), 4):  # every activation of a large model at once would not fit in memory
        for owner, v in zip(owners, session.run(names, {input_name: images[i:i + 4]})):
            ranges[owner] = max(ranges.get(owner, 0.0), float(np.abs(v).max()) if v.size else 0.0)
    return ranges


def to_fp16(fp32: onnx.ModelProto, images: np.ndarray) -> tuple[onnx.ModelProto, list[str]]:
    """FP16 graph keeping in FP32 the nodes whose FP32 activations exceed FP16_SAFE_RANGE on `images`."""
    ranges = activation_ranges(fp32, images)
    keep = sorted(name for name, r in ranges.items() if r > FP16_SAFE_RANGE)
    return fp16_mod.convert_to_fp16(fp32, keep_fp32=set(keep)), keep


def _measure_images(meta: ModelMeta, calib, count: int) -> tuple[np.ndarray, str]:
    if calib is None:
        return sample_images(meta, 4), "4 synthetic images"
    from pose_edge.export.calib_data import calibration_images

    images = list(calibration_images(calib, meta, count, seed=1))
    return np.stack(images), f"{len(images)} calibration images"


def export_artifact(artifact: str | Path, *, engine: str = "onnx", precision: str | None = None, calib=None,
                    calib_count: int = 300, val=None, batch: str | tuple | None = None, out=None,
                    method: str = "mse", tolerance: float = int8_mod.DEFAULT_TOLERANCE,
                    max_excluded: float = int8_mod.DEFAULT_MAX_EXCLUDED, compute_capabilities=None,
                    workspace: int | None = None, timing_cache=None, trt_module: str | None = None,
                    progress: bool = True) -> ExportResult:
    """Export a run folder / checkpoint (or build an engine from an exported .onnx). See the module docstring.

    precision: None for fp32 from a checkpoint, or an .onnx input's own precision; from an .onnx, any other value is
    refused (an engine has its graph's precision). Outputs that would overwrite an input are refused, and every output
    path is checked writable before the work starts."""
    from pose_edge.export.trt_build import DEFAULT_WORKSPACE, build_engine, parse_batch

    start = time.perf_counter()
    if engine not in ENGINES:
        raise PoseEdgeError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    if precision is not None and precision not in PRECISIONS:
        raise PoseEdgeError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    batch_range = parse_batch(batch) if not isinstance(batch, tuple) else batch
    if precision == "int8" and calib is None and not str(artifact).endswith(".onnx"):
        raise PoseEdgeError("INT8 needs real images to calibrate on: --calib DIR (a data-set folder or a folder of "
                            "images) or --calib annotations/person_keypoints_<split>.json")
    artifact = Path(artifact)
    if out is not None and Path(out).suffix in CHECKPOINT_SUFFIXES:
        raise PoseEdgeError(f"--out {out}: an exported model cannot take a checkpoint's name (.pt); use .onnx or "
                            ".engine")

    if artifact.suffix == ".onnx":  # build an engine from an exported graph
        proto = load_model(artifact)
        info = get_graph_info(proto, str(artifact))
        built = graph_precision(proto)
        if built != info.precision:
            raise PoseEdgeError(f"{artifact}: its metadata says {info.precision} but the graph is {built}; "
                                "re-export it with `pose-edge export`")
        if precision is not None and precision != built:
            raise PoseEdgeError(f"{artifact} is an {built.upper()} graph and the precision of an engine is its ONNX "
                                f"graph's: --precision {precision} would build {built.upper()}. Export a {precision} "
                                f"graph from the run folder (`pose-edge export RUN --precision {precision}`) and build "
                                "from that")
        if engine != "trt":
            raise PoseEdgeError(f"{artifact} is already an ONNX model; use --engine trt to build an engine from it")
        onnx_path, engine_path = artifact, (Path(out) if out else artifact.with_suffix(".engine"))
        refuse_overwriting_inputs([engine_path, sidecar_path(engine_path)],
                                  [artifact, Path(f"{artifact}.data"), *([Path(timing_cache)] if timing_cache else [])])
        fp32 = None
    else:
        from pose_edge.models.checkpoint import load_model as load_checkpoint_model

        precision = precision or "fp32"
        model, meta, ckpt = load_checkpoint_model(artifact)
        run_dir = ckpt.parent
        onnx_path, engine_path = default_paths(run_dir, meta.preset, precision, engine, out)
        outputs = [onnx_path] + ([engine_path, sidecar_path(engine_path)] if engine_path else [])
        refuse_overwriting_inputs(outputs, [ckpt, *(run_dir / name for name in RUN_FILES),
                                            *([Path(calib)] if calib and Path(calib).is_file() else []),
                                            *([Path(timing_cache)] if timing_cache else [])])
        for path in outputs:
            check_writable(path, "export output")
        fp32 = export_onnx(model, meta)
        info = get_graph_info(fp32)
        proto = fp32
        if precision != "fp32":
            images, measured_on = _measure_images(meta, calib, min(calib_count, 64))
            reference = run_onnx(fp32, images)
            details = dict(info.details, measured_on=measured_on)
            if precision == "fp16":
                proto, keep = to_fp16(fp32, images)
                details["fp16_kept_fp32"] = keep
            else:
                from pose_edge.export.calib_data import calibration_images

                qdq, plan = int8_mod.quantize(fp32, meta, calibration_images(calib, meta, calib_count),
                                              method=method, count=calib_count, tolerance=tolerance,
                                              max_excluded=max_excluded, progress=progress)
                _, keep = to_fp16(fp32, images)
                proto = fp16_mod.convert_to_fp16(qdq, keep_fp32=set(keep))
                details.update(plan.summary(), fp16_kept_fp32=keep, int8_seconds=round(plan.seconds, 1))
            details["distortion"] = distortion(reference, run_onnx(proto, images), meta).as_dict()
            from pose_edge.export.onnx_export import describe_io

            inp, outs = describe_io(proto, meta, info.input_format)
            info = GraphInfo(meta=meta, precision=precision, input_format=info.input_format, input=inp,
                             outputs=outs, dynamic_size=info.dynamic_size, details=details)
            set_graph_info(proto, info)
            from pose_edge.export.onnx_export import check_model

            check_model(proto, f"{meta.preset} {precision}")
        save_model(proto, onnx_path)

    result = ExportResult(onnx=onnx_path, info=info, onnx_written=fp32 is not None)
    if engine == "trt":
        check_writable(engine_path, "engine")
        rebuild = " ".join(["pose-edge", "export", shlex.quote(str(artifact)), "--engine", "trt", "--precision",
                            info.precision] + (["--calib", shlex.quote(str(calib))] if calib else []) +
                           (["--batch", ":".join(map(str, batch_range))] if batch else []))
        result.sidecar = build_engine(onnx_path, engine_path, info, batch=batch_range,
                                      workspace=workspace or DEFAULT_WORKSPACE, timing_cache=timing_cache,
                                      compute_capabilities=compute_capabilities, rebuild=rebuild, module=trt_module)
        result.engine = engine_path

    if val is not None:
        result.ap = compare_precisions(fp32, proto, info, val, calib, calib_count, method, tolerance, max_excluded,
                                       progress)
    result.seconds = time.perf_counter() - start
    return result


def compare_precisions(fp32: onnx.ModelProto | None, exported: onnx.ModelProto, info: GraphInfo, val, calib,
                       calib_count: int, method: str, tolerance: float, max_excluded: float, progress: bool
                       ) -> dict[str, dict]:
    """AP of FP32, FP16 and (with calibration images) INT8 on `val`'s val split, each graph through ONNX Runtime on
    the CPU and the one evaluation path (pose_edge.evaluate.split), as `pose-edge eval` scores it."""
    from pose_edge.data.coco import CocoKeypoints
    from pose_edge.evaluate.split import evaluate_split
    from pose_edge.progress import progress_bar
    from pose_edge.runtime.ort_backend import OrtBackend

    if fp32 is None:
        raise PoseEdgeError("--val compares precisions from a checkpoint; pass the run folder, not an .onnx")
    meta = info.meta
    graphs = {"fp32": fp32}
    images, _ = _measure_images(meta, calib, 16)
    graphs["fp16"] = exported if info.precision == "fp16" else to_fp16(fp32, images)[0]
    if info.precision == "int8":
        graphs["int8"] = exported
    elif calib is not None:
        from pose_edge.export.calib_data import calibration_images

        qdq, _ = int8_mod.quantize(fp32, meta, calibration_images(calib, meta, calib_count), method=method,
                                   count=calib_count, tolerance=tolerance, max_excluded=max_excluded,
                                   progress=progress)
        graphs["int8"] = fp16_mod.convert_to_fp16(qdq, keep_fp32=set(to_fp16(fp32, images)[1]))
    table = {}
    data = CocoKeypoints(val, "val")
    with temporary_folder("pose-edge-ap-") as tmp:
        for precision, graph in graphs.items():
            if precision != "fp32":
                set_graph_info(graph, GraphInfo(**{**info.__dict__, "precision": precision}))
            else:
                set_graph_info(graph, GraphInfo(**{**get_graph_info(fp32).__dict__}))
            path = Path(tmp) / f"{precision}.onnx"
            save_model(graph, path)
            backend = OrtBackend(path, providers=("CPUExecutionProvider",))
            with progress_bar(f"evaluating {meta.preset} {precision}", enabled=progress) as bar:
                table[precision] = evaluate_split(backend, data, progress=bar.update)
    return table


def format_table(rows: dict[str, dict]) -> str:
    """{"fp32": stats, "int8": stats, ...} -> a small aligned table of AP, AP50, AP75, AR and the AP change."""
    names = ("AP", "AP50", "AP75", "AR")
    base = rows.get("fp32", {}).get("AP")
    lines = ["precision  " + "  ".join(f"{n:>6}" for n in names) + "   dAP(pts)"]
    for precision, stats in rows.items():
        delta = "" if base is None or precision == "fp32" else f"{100 * (stats['AP'] - base):+9.2f}"
        lines.append(f"{precision:<9}  " + "  ".join(f"{stats[n]:6.3f}" for n in names) + f"  {delta}")
    return "\n".join(lines)
