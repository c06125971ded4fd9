"""The `pose-edge` command. Each verb is a thin wrapper over a library function."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pose_edge import __version__
from pose_edge.errors import PoseEdgeError


class _Group(click.Group):
    """A click group that turns PoseEdgeError into a one-line message and exit status 1, with no traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PoseEdgeError as e:
            raise click.ClickException(str(e)) from None


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
@click.option("--json", "as_json", is_flag=True, help="Print the run's summary as JSON at the end.")
def train_cmd(preset, data_dir, epochs, batch, device, resume, out, workers, seed, backbone_weights, sync_bn, amp,
              eval_every, eval_images, as_json) -> None:
    """Train PRESET on a data set; `torchrun --nproc_per_node N -m pose_edge.cli train ...` for several GPUs."""
    from pose_edge.train.run import train

    summary = train(preset, data_dir, out=out, epochs=epochs, batch=batch, device=device, resume=resume,
                    workers=workers, seed=seed, backbone_weights=backbone_weights, sync_bn=sync_bn, amp=amp,
                    eval_every=eval_every, eval_max_images=eval_images)
    if summary is None:
        return
    if as_json:
        click.echo(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=2))
    elif summary.get("best") is not None:
        click.echo(f"{summary['run_dir']}: best {summary['best_metric']} {summary['best']:.3f} at epoch "
                   f"{summary['best_epoch']} ({summary['time_s']:.0f} s)")


@main.command("eval")
@click.argument("artifact")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Data set folder (built-in layout or COCO 2017).")
@click.option("--split", type=click.Choice(["val", "train"]), default="val", show_default=True)
@click.option("--boxes", default="gt", show_default=True,
              help="Person boxes for top-down models: gt, a COCO detections .json, or a person-detector artefact.")
@click.option("--flip", is_flag=True, help="Flip test: average with the heatmaps of the mirrored crops.")
@click.option("--refine", type=click.Choice(["dark", "quarter", "none"]), default="dark", show_default=True,
              help="Sub-pixel refinement of heatmap peaks.")
@click.option("--device", default=None, help="cpu, cuda:N (checkpoints) or a GPU ordinal (engines).")
@click.option("--results", "results_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the predictions as a COCO results JSON.")
@click.option("--json", "as_json", is_flag=True, help="Print the ten statistics as JSON.")
def eval_cmd(artifact: str, data_dir: Path, split: str, boxes: str, flip: bool, refine: str, device: str | None,
             results_file: Path | None, as_json: bool) -> None:
    """COCO keypoint AP/AR (pycocotools) of ARTIFACT on a data set.

    ARTIFACT is `gt` (the ground truth scored as predictions: a check of the data and the scorer, AP 1.0), a
    COCO keypoint results JSON, or a model: a run folder, a checkpoint (.pt), an .onnx or an engine. A person
    detector is scored by its person boxes (pycocotools bbox AP/AR, and R50: recall at IoU 0.5).
    """
    from pose_edge import evaluate
    from pose_edge.data.coco import CocoKeypoints, find_split, load_coco

    ann_file, _ = find_split(data_dir, split)
    if artifact == "gt":
        coco_gt = load_coco(ann_file)
        results = evaluate.ground_truth_as_results(coco_gt)
    elif artifact.endswith(".json"):
        coco_gt = load_coco(ann_file)
        results = evaluate.read_results(artifact)
    else:
        from pose_edge.artifacts import open_artifact
        from pose_edge.runtime.dataset_predict import predict_split

        data = CocoKeypoints(data_dir, split)
        coco_gt = data.coco
        backend = open_artifact(artifact, device)
        if backend.meta.family == "person_detector":
            return _eval_detector(backend, data, flip, results_file, as_json, Path(artifact).name)
        results = _with_progress(lambda progress: predict_split(
            backend, data, boxes=boxes, flip=flip, refine=refine, device=device, progress=progress),
            f"eval {Path(artifact).name}", enabled=not as_json)
    if results_file is not None:
        evaluate.write_results(results_file, results)
    stats = evaluate.evaluate_keypoints(coco_gt, results)
    click.echo(json.dumps(stats, indent=2) if as_json else evaluate.format_stats(stats))


def _eval_detector(backend, data, flip: bool, results_file: Path | None, as_json: bool, name: str) -> None:
    """Person-box AP/AR (pycocotools bbox) of a person detector, with the COCO evaluation's conf 0.001."""
    from pose_edge import evaluate
    from pose_edge.runtime.kapao_decode import Thresholds
    from pose_edge.runtime.kapao_pipeline import KapaoPipeline, predict_dataset

    pipeline = KapaoPipeline(backend, Thresholds(use_kp_dets=False), flip=flip)
    _, results = _with_progress(lambda progress: predict_dataset(pipeline, data, progress), f"eval {name}",
                                enabled=not as_json)
    if results_file is not None:
        evaluate.write_results(results_file, results)
    stats = evaluate.evaluate_boxes(data.coco, results)
    click.echo(json.dumps(stats, indent=2) if as_json else evaluate.format_box_stats(stats))


def _with_progress(run, description: str, enabled: bool = True):
    """Call run(progress) with a rich progress bar on stderr that progress(done, total) advances."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if not enabled:
        return run(None)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=None)
        return run(lambda done, total: bar.update(task, completed=done, total=total))


@main.command("export")
@click.argument("artifact")
@click.option("--engine", type=click.Choice(["onnx", "trt"]), default="onnx", show_default=True,
              help="onnx: an ONNX model for ONNX Runtime; trt: also a TensorRT (or TensorRT-RTX) engine + sidecar.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True)
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
    from pose_edge.export.ap_compare import format_table
    from pose_edge.export.api import export_artifact

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


@main.command("selftest")
@click.option("--gpu", is_flag=True, help="Also run every GPU check (kernels on the device) and say what passed.")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def selftest_cmd(gpu: bool, as_json: bool) -> None:
    """Check the install: NVRTC compiles the kernels, their CPU emulation matches the NumPy decoders; with --gpu,
    the kernels load, run and match on this GPU. Exits 1 if any check fails."""
    from dataclasses import asdict

    from pose_edge.kernels.selftest import run_checks
    from pose_edge.runtime.device import gpu_status

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


if __name__ == "__main__":
    sys.exit(main())
