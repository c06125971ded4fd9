"""The `pose-edge` command. Each verb is a thin wrapper over a library function."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import sys
import threading
import warnings
from pathlib import Path

import click

from pose_edge import __version__
from pose_edge.errors import DataWarning, PoseEdgeError


class _Group(click.Group):
    """A click group that turns PoseEdgeError into a one-line message and exit status 1, with no traceback; prints
    pose-edge's own warnings (records left out of a data set, ...) as one line each; and turns SIGTERM into SystemExit
    so that temporary files are removed as on Ctrl-C (pose_edge.fsutil)."""

    def invoke(self, ctx):
        with warnings.catch_warnings(), _sigterm_as_exit(ctx.parent is None):
            warnings.showwarning = _show_warning
            try:
                return super().invoke(ctx)
            except PoseEdgeError as e:
                raise click.ClickException(str(e)) from None


def _show_warning(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, DataWarning) or "pose_edge" in str(filename):
        click.echo(f"warning: {str(message).splitlines()[0]}", err=True)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@contextlib.contextmanager
def _sigterm_as_exit(enabled: bool):
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, _frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _parse_size(_ctx, _param, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        w, h = (int(v) for v in value.lower().split("x"))
        if w <= 0 or h <= 0:
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"expected WIDTHxHEIGHT such as 640x480, got {value!r}") from None
    return w, h


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pose-edge")
def main() -> None:
    """Train, export, decode and benchmark 2D human pose models for GPUs at the edge."""


@main.group(cls=_Group)
def data() -> None:
    """Data sets: the built-in synthetic COCO-format set."""


@data.command("synth")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
@click.option("--train", "num_train", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Training images.")
@click.option("--val", "num_val", type=click.IntRange(min=0), default=200, show_default=True,
              help="Validation images.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed; the same seed gives the same files.")
@click.option("--size", callback=_parse_size, default="640x480", show_default=True, help="Image size WIDTHxHEIGHT.")
@click.option("--video", "video_frames", type=click.IntRange(min=1), default=None,
              help="Also render a clip of this many frames of smoothly moving figures (video/ folder).")
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
def data_synth(out: Path, num_train: int, num_val: int, seed: int, size: tuple[int, int],
               video_frames: int | None, as_json: bool) -> None:
    """Write the built-in synthetic COCO-keypoints data set to OUT."""
    from pose_edge.data import synth

    stats = synth.write_dataset(out, num_train=num_train, num_val=num_val, seed=seed, size=size,
                                video_frames=video_frames, progress=not as_json)
    if as_json:
        click.echo(json.dumps(stats, indent=2))
    else:
        click.echo(synth.format_stats(stats))


@data.command("check")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Data set folder (built-in layout or COCO 2017).")
@click.option("--split", "splits", type=click.Choice(["train", "val", "video"]), multiple=True,
              help="Split(s) to check [default: every split present].")
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON.")
def data_check(data_dir: Path, splits: tuple[str, ...], as_json: bool) -> None:
    """Check a data set's annotations and image files (headers, not pixels) and report every bad record: what is
    wrong, where, how many. Exits 1 if any record would be left out (or refused under --strict)."""
    from pose_edge.data.coco import SPLITS, find_split, load_coco

    wanted = splits or tuple(sp for sp in SPLITS if _has_split(data_dir, sp))
    if not wanted:
        find_split(data_dir, "train")  # raises the error that says what is expected there
    reports = []
    for split in wanted:
        ann_file, images_dir = find_split(data_dir, split)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            reports.append(load_coco(ann_file, images_dir).validation)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in reports], indent=2))
    else:
        for r in reports:
            click.echo("\n".join(r.lines()))
    if not all(r.ok for r in reports):
        sys.exit(1)


def _has_split(data_dir: Path, split: str) -> bool:
    from pose_edge.data.coco import find_split

    try:
        find_split(data_dir, split)
        return True
    except PoseEdgeError:
        return False


@main.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
def models_cmd(as_json: bool) -> None:
    """List model presets with input size, parameters and GFLOPs."""
    from pose_edge.models import describe

    rows = describe.describe_all()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(describe.format_table(rows))


@main.command("train")
@click.argument("preset")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Data set folder (built-in layout or COCO 2017).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs [default: the preset's].")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Global batch size, split over torchrun processes [default: the preset's].")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--resume", type=click.Path(path_type=Path), default=None,
              help="Continue the run in this folder (its last.pt) exactly where it stopped.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder [default: runs/<preset>-<yyyymmdd-hhmmss>].")
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True, help="Data-loader processes.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--backbone-weights", default=None,
              help="ImageNet backbone weights: `imagenet` (torchvision download) or a ResNet state-dict file.")
@click.option("--sync-bn", is_flag=True, help="Synchronise BatchNorm statistics across torchrun processes.")
@click.option("--amp/--no-amp", default=None, help="Mixed precision [default: on for CUDA, off on the CPU].")
@click.option("--eval-every", type=click.IntRange(min=1), default=1, show_default=True,
              help="Evaluate on the val split every this many epochs (and after the last).")
@click.option("--eval-images", type=click.IntRange(min=1), default=None,
              help="Evaluate during training on the first this many val images only [default: all].")
@click.option("--strict", is_flag=True, help="Refuse a data set with any bad annotation or image [default: leave "
              "those out with a warning].")
@click.option("--json", "as_json", is_flag=True, help="Print the run's summary as JSON at the end.")
def train_cmd(preset, data_dir, epochs, batch, device, resume, out, workers, seed, backbone_weights, sync_bn, amp,
              eval_every, eval_images, strict, as_json) -> None:
    """Train PRESET on a data set; `torchrun --nproc_per_node N -m pose_edge.cli train ...` for several GPUs."""
    from pose_edge.train.run import train

    summary = train(preset, data_dir, out=out, epochs=epochs, batch=batch, device=device, resume=resume,
                    workers=workers, seed=seed, backbone_weights=backbone_weights, sync_bn=sync_bn, amp=amp,
                    eval_every=eval_every, eval_max_images=eval_images, strict=strict)
    if summary is None:
        return
    if as_json:
        click.echo(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=2))
    elif summary.get("best") is not None:
        click.echo(f"{summary['run_dir']}: best {summary['best_metric']} {summary['best']:.3f} at epoch "
                   f"{summary['best_epoch']} ({summary['time_s']:.0f} s)")


def _parse_list(kind):
    def parse(_ctx, _param, value: str | None):
        if value is None:
            return None
        try:
            return tuple(kind(v) for v in value.split(","))
        except ValueError:
            raise click.BadParameter(f"expected a comma-separated list such as 0.8,1,1.2, got {value!r}") from None
    return parse


def _flag_list(text: str) -> bool:
    if text.strip() not in ("0", "1"):
        raise ValueError(text)
    return text.strip() == "1"


PROFILE_NAMES = ("deploy", "coco", "paper", "paper-tta")  # pose_edge.runtime.settings.PROFILES (kept import-free)


@main.command("eval")
@click.argument("artifact")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Data set folder (built-in layout or COCO 2017).")
@click.option("--split", type=click.Choice(["val", "train"]), default="val", show_default=True)
@click.option("--boxes", default="gt", show_default=True,
              help="Person boxes for top-down models: gt, a COCO detections .json, or a person-detector artefact.")
@click.option("--settings", "profile", type=click.Choice(PROFILE_NAMES), default="coco", show_default=True,
              help="coco: every candidate down to confidence 0.001; paper: the published evaluation (top-down: flip "
                   "test, the model's own refinement; KAPAO: --rect --clip); paper-tta: KAPAO's published test-time "
                   "augmentation (scales 0.8/1/1.2, mirrored at 1, --clip). The options below override it.")
@click.option("--flip/--no-flip", default=None, help="Flip test: average with the heatmaps of the mirrored crops "
              "(top-down); add the mirrored image's detections (KAPAO) [default: the settings'].")
@click.option("--refine", type=click.Choice(["auto", "dark", "quarter", "none"]), default=None,
              help="Sub-pixel refinement of heatmap peaks [default: auto, the model's convention's: quarter for "
                   "Simple Baselines weights, DARK otherwise].")
@click.option("--rect/--no-rect", default=None, help="KAPAO: rectangular letterbox, the short side padded to a "
              "multiple of 64 (needs an .onnx, whose input size is dynamic).")
@click.option("--scales", callback=_parse_list(float), default=None,
              help="KAPAO test-time scales, e.g. 0.8,1,1.2 (above 1 needs an .onnx).")
@click.option("--scale-flips", callback=_parse_list(_flag_list), default=None,
              help="KAPAO: 1 to run that scale mirrored, one per scale, e.g. 0,1,0 (val.py's --flips -1 3 -1).")
@click.option("--clip/--no-clip", default=None, help="KAPAO: clip person boxes, keypoint-object boxes and the "
              "first two keypoints to the image, as the original val.py does.")
@click.option("--device", default=None, help="cpu, cuda or cuda:N.")
@click.option("--results", "results_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the predictions as a COCO results JSON.")
@click.option("--strict", is_flag=True, help="Refuse a data set or results file with any bad record [default: leave "
              "those out with a warning].")
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
def eval_cmd(artifact: str, data_dir: Path, split: str, boxes: str, profile: str, flip: bool | None,
             refine: str | None, rect: bool | None, scales: tuple | None, scale_flips: tuple | None,
             clip: bool | None, device: str | None, results_file: Path | None, strict: bool, as_json: bool) -> None:
    """COCO keypoint AP/AR (pycocotools) of ARTIFACT on a data set.

    ARTIFACT is `gt` (the ground truth scored as predictions: a check of the data and the scorer, AP 1.0), a
    COCO keypoint results JSON, or a model: a run folder, a checkpoint (.pt), an .onnx or an engine. A person
    detector is scored by its person boxes (pycocotools bbox AP/AR, and R50: recall at IoU 0.5). Models run with the
    COCO evaluation settings (every candidate down to confidence 0.001), the way every verb scores them, unless
    --settings says otherwise.
    """
    from pose_edge.data.coco import CocoKeypoints, find_split, load_coco
    from pose_edge.evaluate import scoring
    from pose_edge.fsutil import check_writable

    if results_file is not None:
        check_writable(results_file, "results file")  # before the evaluation, not after it
    ann_file, images_dir = find_split(data_dir, split)
    if artifact == "gt" or artifact.endswith(".json"):
        coco_gt = load_coco(ann_file, images_dir, strict=strict)
        results = scoring.ground_truth_as_results(coco_gt) if artifact == "gt" else scoring.read_results(artifact)
        stats = scoring.evaluate_keypoints(coco_gt, results, strict=strict, source=artifact)
    else:
        from pose_edge.artifacts import open_artifact
        from pose_edge.evaluate.split import evaluate_split
        from pose_edge.runtime.settings import PROFILES

        given = {"flip": flip, "rect": rect, "scales": scales, "scale_flips": scale_flips, "clip": clip}
        settings = dataclasses.replace(PROFILES[profile], **{k: v for k, v in given.items() if v is not None})
        data = CocoKeypoints(data_dir, split, strict=strict)
        backend = open_artifact(artifact, device)
        box_arg = boxes if boxes == "gt" or boxes.endswith(".json") else open_artifact(boxes, device)
        results = []
        stats = _with_progress(lambda progress: evaluate_split(
            backend, data, boxes=box_arg, settings=settings, refine=refine, progress=progress, results=results),
            f"eval {Path(artifact).name}", enabled=not as_json)
        if backend.meta.family == "person_detector":
            if results_file is not None:
                scoring.write_results(results_file, results)
            click.echo(json.dumps(stats, indent=2) if as_json else scoring.format_box_stats(stats))
            return
    if results_file is not None:
        scoring.write_results(results_file, results)
    click.echo(json.dumps(stats, indent=2) if as_json else scoring.format_stats(stats))


def _with_progress(run, description: str, enabled: bool = True):
    """Call run(progress) with a progress bar on stderr that progress(done, total) advances."""
    from pose_edge.progress import progress_bar

    with progress_bar(description, enabled=enabled) as bar:
        return run(bar.update)


@main.command("export")
@click.argument("artifact")
@click.option("--engine", type=click.Choice(["onnx", "trt"]), default="onnx", show_default=True,
              help="onnx: an ONNX model for ONNX Runtime; trt: also a TensorRT (or TensorRT-RTX) engine + sidecar.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default=None,
              help="Precision of the graph [default: fp32 from a checkpoint; an .onnx input's own, which a different "
              "value is refused against].")
@click.option("--calib", default=None, help="INT8 calibration images: a data-set folder, a COCO keypoints "
              "annotation file, or a folder of images.")
@click.option("--calib-count", type=click.IntRange(min=1), default=300, show_default=True,
              help="Calibration images (person crops for top-down models).")
@click.option("--val", "val_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Data-set folder: print the COCO AP of FP32, FP16 and INT8 side by side.")
@click.option("--batch", default=None, help="TensorRT batch range MIN:OPT:MAX [default: 1:1:8].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Output file [default: RUN/export/<preset>-<precision>.onnx or .engine].")
@click.option("--calib-method", type=click.Choice(["mse", "percentile", "max"]), default="mse", show_default=True)
@click.option("--sm", "compute_capabilities", default=None,
              help="TensorRT-RTX target compute capabilities, e.g. 8.6,8.9 [default: this GPU, or 7.5..12.0].")
@click.option("--workspace", type=click.IntRange(min=1), default=2048, show_default=True,
              help="TensorRT workspace limit in MiB.")
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="TensorRT timing cache file, read and updated (full TensorRT only).")
@click.option("--target", type=click.Choice(["tensorrt", "cpu"]), default="tensorrt", show_default=True,
              help="INT8 graph for: tensorrt (symmetric Q/DQ on FP16, for engines) or cpu (U8S8 Q/DQ that ONNX "
              "Runtime's CPU provider runs on integer kernels).")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def export_cmd(artifact, engine, precision, calib, calib_count, val_dir, batch, out, calib_method,
               compute_capabilities, workspace, timing_cache, target, as_json):
    """Export ARTIFACT (a run folder or checkpoint; or an .onnx to build an engine from) to ONNX / TensorRT."""
    from pose_edge.export.api import export_artifact, format_table

    ccs = tuple(c.strip() for c in compute_capabilities.split(",")) if compute_capabilities else None
    result = export_artifact(artifact, engine=engine, precision=precision, calib=calib, calib_count=calib_count,
                             val=val_dir, batch=batch, out=out, method=calib_method, compute_capabilities=ccs,
                             workspace=workspace << 20, timing_cache=timing_cache, progress=not as_json,
                             target=target)
    if as_json:
        click.echo(json.dumps({"onnx": str(result.onnx), "engine": str(result.engine) if result.engine else None,
                               "graph": result.info.to_dict(), "ap": result.ap, "seconds": round(result.seconds, 2)},
                              indent=2))
        return
    click.echo(result.summary())
    if result.ap:
        click.echo(format_table(result.ap))


@main.command("predict")
@click.argument("model")
@click.argument("source")
@click.option("--detector", default=None, help="Person detector (.onnx, engine or run folder) for a top-down MODEL.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder [default: predictions/<source name>].")
@click.option("--track", is_flag=True, help="Give each person a persistent id across frames.")
@click.option("--smooth", is_flag=True, help="Smooth keypoints over time along tracks (One Euro filter; implies "
              "--track).")
@click.option("--conf", type=click.FloatRange(0.0, 1.0, max_open=True), default=None,
              help="Person confidence threshold [default: the deployment settings'].")
@click.option("--settings", "profile", type=click.Choice(PROFILE_NAMES), default="deploy", show_default=True,
              help="Post-processing profile: deploy (the people who are there), coco (keep everything), or the "
                   "papers' evaluation settings (paper, paper-tta).")
@click.option("--device", default=None, help="cpu, cuda or cuda:N [default: a GPU where one is usable].")
@click.option("--decode", type=click.Choice(["auto", "numpy", "cuda"]), default="auto", show_default=True,
              help="Decode stage: CUDA kernels on the engine's outputs, or NumPy on the host.")
@click.option("--color", type=click.Choice(["bgr", "rgb"]), default="bgr", show_default=True,
              help="Channel order of frames from an iterable source (files and cameras are read as BGR).")
@click.option("--no-draw", is_flag=True, help="Write poses only, no overlays.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON (no progress bar).")
def predict_cmd(model, source, detector, out, track, smooth, conf, profile, device, decode, color, no_draw, as_json):
    """Poses of the people in SOURCE: an image, a folder or glob of images, a video file, a camera index (0) or a
    stream URL. Writes overlays (skeletons, confidences, scores and track ids) and poses: COCO results JSON for
    images, JSON Lines per frame for video. MODEL is an .onnx, an engine, or a run folder (needs PyTorch)."""
    from pose_edge.estimator import load
    from pose_edge.predict import predict
    from pose_edge.progress import progress_bar

    est = load(model, detector, device=device, settings=profile, conf=conf, color=color, decode=decode,
               track=track or smooth, smooth=smooth)
    out = out or Path("predictions") / (Path(source).stem or "stream")
    with est, progress_bar(f"predict {Path(source).name or source}", enabled=not as_json) as bar:
        summary = predict(est, source, out, draw=not no_draw,
                          on_frame=lambda done, total, fps: bar.update(done, total, f"{fps:.1f} frames/s"))
    if as_json:
        click.echo(json.dumps({**dataclasses.asdict(summary), "estimator": est.describe()}, indent=2))
        return
    d = est.describe()
    click.echo(f"{d['model']['preset']} on {d['model']['backend']} ({d['model']['device']}, "
               f"{d['model']['precision']}), decode {d['model']['decoder']}")
    click.echo(summary.line())
    for what, path in summary.files.items():
        click.echo(f"wrote {path} ({what})")


def _int_list(_ctx, param, value: str) -> tuple[int, ...]:
    """"1,8" -> (1, 8); an empty string -> ()."""
    try:
        values = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated whole numbers such as 1,8, got {value!r}") from None
    if any(v < 1 for v in values):
        raise click.BadParameter(f"every {param.name} value must be at least 1, got {value!r}")
    return values


@main.command("bench")
@click.argument("artifacts", nargs=-1, required=True)
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Data set folder: AP on its val split, latency on its val images.")
@click.option("--batch", "batches", default="1", show_default=True, callback=_int_list,
              help="Batch sizes, comma-separated (e.g. 1,8).")
@click.option("--people", default="1,5,20", show_default=True, callback=_int_list,
              help="People per frame for the latency sweep at batch 1 (synthetic frames); empty to skip.")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True,
              help="Untimed calls before each measurement.")
@click.option("--iters", type=click.IntRange(min=1), default=30, show_default=True, help="Timed calls per measurement.")
@click.option("--settings", "profile", type=click.Choice(["deploy", "coco"]), default="deploy", show_default=True,
              help="Post-processing while timed (AP always uses COCO evaluation's settings).")
@click.option("--device", default=None, help="cpu, cuda or cuda:N [default: a GPU where one is usable].")
@click.option("--decode", type=click.Choice(["auto", "numpy", "cuda"]), default="auto", show_default=True,
              help="Decode stage while timed: CUDA kernels on an engine's outputs, or NumPy on the host.")
@click.option("--no-ap", is_flag=True, help="Latency only: skip the accuracy (e.g. for random weights).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("bench"), show_default=True,
              help="Output folder: bench.json, bench.md, ap_vs_latency.png, latency_vs_people.png.")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON (no progress bar).")
def bench_cmd(artifacts, data_dir, batches, people, warmup, iters, profile, device, decode, no_ap, out, as_json):
    """COCO AP against end-to-end latency for each ARTIFACT: per stage, the model alone, against people per frame;
    JSON, a Markdown table and plots in OUT.

    ARTIFACT is an .onnx, an engine or a run folder, or POSE+DET: a top-down model and its person detector
    (e.g. sb-r18-128x96-int8.onnx+det-tiny-int8.onnx). A top-down model without +DET is timed on the frames'
    annotated person boxes and scored on ground-truth boxes.
    """
    from pose_edge.bench import BenchOptions, run_bench
    from pose_edge.bench.report import to_markdown

    if not batches:
        raise click.BadParameter("give at least one batch size", param_hint="--batch")
    options = BenchOptions(batches=batches, people=people, warmup=warmup, iters=iters, settings=profile,
                           device=device, decode=decode, accuracy=not no_ap)
    record = run_bench(artifacts, data_dir, out, options, progress=not as_json)
    if as_json:
        click.echo(json.dumps(record, indent=1))
        return
    click.echo(to_markdown(record))
    for what, path in record["files"].items():
        click.echo(f"wrote {path} ({what})")


@main.command("selftest")
@click.option("--gpu", is_flag=True, help="Also run every GPU check (kernels on the device) and say what passed.")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def selftest_cmd(gpu: bool, as_json: bool) -> None:
    """Check the install: NVRTC compiles the kernels, their CPU emulation matches the NumPy decoders; with --gpu,
    the kernels load, run and match on this GPU. Exits 1 if any check fails."""
    from dataclasses import asdict

    from pose_edge.kernels.selftest import run_checks
    from pose_edge.runtime.gpu import gpu_status

    if gpu and not gpu_status()[0]:
        raise PoseEdgeError(f"--gpu needs a GPU: {gpu_status()[1]}")
    checks = run_checks(gpu)
    if as_json:
        click.echo(json.dumps([asdict(c) for c in checks], indent=1))
    else:
        for c in checks:
            click.echo(f"{'PASS' if c.ok else 'FAIL'}  {c.name} ({c.seconds:.1f} s): {c.detail}")
    if not all(c.ok for c in checks):
        sys.exit(1)


# ------------------------------------------------------------------------------------------------ pose-edge import


@main.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--preset", required=True,
              help="The preset the checkpoint was trained as, e.g. sb-r50-256x192 for pose_resnet_50_256x192.pth.tar "
                   "or kapao-s for kapao_s_coco.pt.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder to write [default: runs/PRESET-FILESTEM].")
@click.option("--convention", type=click.Choice(["simple_baselines", "darkpose"]), default=None,
              help="Simple Baselines-layout files only: the code that trained them, whose crop and heatmap geometry "
                   "decoding must follow (the files look the same) [default: simple_baselines; darkpose for "
                   "DarkPose's ResNet weights].")
@click.option("--json", "as_json", is_flag=True, help="Print what was imported as JSON.")
def import_cmd(file: Path, preset: str, out: Path | None, convention: str | None, as_json: bool) -> None:
    """Import a published checkpoint (Simple Baselines .pth.tar, KAPAO .pt) as a run folder, running no code from it."""
    from pose_edge.models.published import import_checkpoint

    run_dir = import_checkpoint(file, preset, out, convention)
    report = json.loads((run_dir / "import.json").read_text())
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"wrote {run_dir}: {report['tensors']} tensors of {report['preset']} from {report['file']} "
               f"({report['layout']})")
    for note in report["notes"]:
        click.echo(f"  {note}")


if __name__ == "__main__":
    sys.exit(main())
