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


@main.command("eval")
@click.argument("artifact")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Data set folder (built-in layout or COCO 2017).")
@click.option("--split", type=click.Choice(["val", "train"]), default="val", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the ten statistics as JSON.")
def eval_cmd(artifact: str, data_dir: Path, split: str, as_json: bool) -> None:
    """COCO keypoint AP/AR (pycocotools) of ARTIFACT on a data set.

    ARTIFACT is `gt` (the ground truth scored as predictions: a check of the data and the scorer, AP 1.0) or a
    COCO keypoint results JSON.
    """
    from pose_edge import evaluate
    from pose_edge.data.coco import find_split, load_coco

    ann_file, _ = find_split(data_dir, split)
    coco_gt = load_coco(ann_file)
    if artifact == "gt":
        results = evaluate.ground_truth_as_results(coco_gt)
    elif artifact.endswith(".json"):
        results = evaluate.read_results(artifact)
    else:
        raise PoseEdgeError(f"cannot evaluate {artifact!r}: expected `gt` or a COCO results .json")
    stats = evaluate.evaluate_keypoints(coco_gt, results)
    click.echo(json.dumps(stats, indent=2) if as_json else evaluate.format_stats(stats))


if __name__ == "__main__":
    sys.exit(main())
