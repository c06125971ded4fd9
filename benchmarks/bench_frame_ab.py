"""The whole CPU frame of this tree's runtime against another version of it, in one run: `pose-edge bench` (latency
only, batch 1) started alternately from this tree and from a reference tree, on the same artefacts and frames.

    python benchmarks/bench_frame_ab.py ARTIFACT... --data DIR --reference TREE [--rounds 3] [--people 1,5,20]
        [--warmup 5] [--iters 30] [--out benchmarks/results] [--name frame_ab]

ARTIFACTs as `pose-edge bench` takes them (model.onnx, or POSE.onnx+DET.onnx for a top-down pair). TREE is a checkout
of another commit of this repository (`git worktree add /tmp/old COMMIT`); its `pose_edge` is imported in place of
this one's (PYTHONPATH), with this environment's packages (and this tree's export/ and kernels/, which the CPU bench
does not run). Each round runs both trees, in alternating order; every
figure is the median over the rounds of the bench's own p50s: preprocess, inference and post-processing (the
estimators' stage timers), the model alone (replayed), and (pre + post) / model on the val frames and on the synthetic
frames of each people count.

Pre- and post-processing are NumPy and Python on one core; the model is ONNX Runtime on all of them, so the ratio moves
with the machine: a virtual machine whose host takes its cores away (steal time) slows the model more than the rest.
The share of CPU time stolen during the run (/proc/stat, Linux) is recorded with it. Compare the two trees' times
measured here; ratios recorded on other days answer another question.
Writes NAME.json and NAME.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from pose_edge.bench.machine import cpu_model
from pose_edge.fsutil import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
TREES = ("this", "reference")


def cpu_times() -> list[int] | None:
    """The aggregate `cpu` line of /proc/stat (user nice system idle iowait irq softirq steal ...), or None."""
    try:
        return [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None


def steal_share(before: list[int] | None, after: list[int] | None) -> float | None:
    if not before or not after or len(before) < 8:
        return None
    spent = [b - a for a, b in zip(before, after)]
    return round(spent[7] / max(sum(spent[:8]), 1), 3)


def run_bench(tree: Path, artifacts: list[str], args, out: Path) -> dict:
    """`pose-edge bench` with `tree`'s pose_edge -> its record (bench.json)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    code = "import sys; from pose_edge.cli import main; sys.exit(main())"
    command = [sys.executable, "-c", code, "bench", *artifacts, "--data", str(args.data), "--no-ap", "--batch", "1",
               "--people", args.people, "--warmup", str(args.warmup), "--iters", str(args.iters), "--device", "cpu",
               "--out", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tree)  # not this tree's cwd
    if done.returncode != 0:
        raise SystemExit(f"pose-edge bench from {tree} failed:\n{done.stderr[-2000:]}")
    return json.loads((out / "bench.json").read_text())


def check_tree(tree: Path) -> None:
    """The tree's pose_edge is the one a subprocess imports (not the installed one)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    found = subprocess.run([sys.executable, "-c", "import pose_edge; print(pose_edge.__file__)"], env=env,
                           capture_output=True, text=True, cwd=tree)
    if found.returncode != 0 or Path(found.stdout.strip()).resolve() != (tree / "pose_edge/__init__.py").resolve():
        raise SystemExit(f"{tree}: not a checkout of this repository, or its pose_edge is not the one imported "
                         f"({found.stdout.strip() or found.stderr.strip()[-300:]})")


def figures(record: dict) -> dict:
    """Per configuration label: the batch-1 p50s and ratios of one bench record."""
    out = {}
    for c in record["configurations"]:
        row = next(r for r in c["latency"] if r["batch"] == 1)
        out[c["label"]] = {"pre_ms": row["stages"]["preprocess"]["p50"], "inference_ms": row["stages"]["inference"]["p50"],
                           "post_ms": row["stages"]["postprocess"]["p50"], "model_ms": row["model_only"]["p50"],
                           "pre_plus_post_ms": row["pre_plus_post"]["p50"],
                           "pre_plus_post_over_model": row["pre_plus_post_over_model"],
                           "people": {str(p["people"]): p["pre_plus_post_over_model"] for p in c.get("people", [])}}
    return out


def medians(rounds: list[dict]) -> dict:
    """Round-by-round figures of one tree -> their medians, per configuration."""
    out = {}
    for label in rounds[0]:
        rows = [r[label] for r in rounds]
        out[label] = {key: round(statistics.median(row[key] for row in rows), 4) for key in rows[0] if key != "people"}
        out[label]["people"] = {p: round(statistics.median(row["people"][p] for row in rows), 4)
                                for p in rows[0]["people"]}
    return out


def markdown(record: dict) -> str:
    m = record["machine"]
    steal = "not readable" if record["steal_share"] is None else f"{100 * record['steal_share']:.0f}%"
    lines = [f"Recorded {record['date']} on {m['platform']} ({m['cpu']}, {m['cpus']} CPUs), Python {m['python']}; "
             f"CPU time stolen by the host during the run: {steal}.",
             f"Command: `{record['command']}`", f"This tree: {record['trees']['this']}; reference: "
             f"{record['trees']['reference']}.", "",
             f"`pose-edge bench --no-ap --batch 1` run from each tree in {record['rounds']} alternating rounds; medians "
             "over the rounds of the bench's p50s (ms). (pre + post) / model on the val frames, then on the synthetic "
             "frames of each people count.", ""]
    people = sorted({p for t in TREES for c in record["results"][t].values() for p in c["people"]}, key=int)
    lines += ["| configuration | tree | pre | inference | post | model alone | pre + post | (pre + post) / model | "
              + " | ".join(f"{p} people" for p in people) + " |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |" + " --- |" * len(people)]
    for label in record["results"]["this"]:
        for tree in TREES:
            f = record["results"][tree][label]
            lines.append(f"| {label} | {tree} | {f['pre_ms']:.3f} | {f['inference_ms']:.2f} | {f['post_ms']:.3f} | "
                         f"{f['model_ms']:.2f} | {f['pre_plus_post_ms']:.3f} | {f['pre_plus_post_over_model']:.3f} | "
                         + " | ".join(f"{f['people'].get(p, float('nan')):.3f}" for p in people) + " |")
    return "\n".join(lines) + "\n"


def describe_tree(tree: Path) -> str:
    done = subprocess.run(["git", "-C", str(tree), "log", "-1", "--format=%h %s"], capture_output=True, text=True)
    return done.stdout.strip()[:100] if done.returncode == 0 else str(tree)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts", nargs="+")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--reference", type=Path, required=True, help="checkout of another commit of this repository")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--people", default="1,5,20")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--name", default="frame_ab")
    args = ap.parse_args(argv)
    args.data = args.data.resolve()
    args.artifacts = ["+".join(str(Path(part).resolve()) for part in a.split("+")) for a in args.artifacts]
    trees = {"this": ROOT, "reference": args.reference.resolve()}
    for tree in trees.values():
        check_tree(tree)
    rounds: dict[str, list] = {t: [] for t in TREES}
    before = cpu_times()
    with tempfile.TemporaryDirectory() as scratch:
        for r in range(args.rounds):
            for tree in (TREES if r % 2 == 0 else TREES[::-1]):
                out = Path(scratch) / f"{tree}-{r}"
                rounds[tree].append(figures(run_bench(trees[tree], args.artifacts, args, out)))
                print(f"round {r + 1}/{args.rounds} {tree}: " + ", ".join(
                    f"{label} (pre + post) / model {f['pre_plus_post_over_model']:.3f}"
                    for label, f in rounds[tree][-1].items()), flush=True)
    record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": {"platform": platform.platform(), "cpu": cpu_model(),
                          "cpus": os.cpu_count(), "python": platform.python_version()},
              "steal_share": steal_share(before, cpu_times()), "rounds": args.rounds,
              "trees": {t: describe_tree(p) for t, p in trees.items()},
              "command": "python benchmarks/bench_frame_ab.py " + " ".join("+".join(Path(part).name for part in a.split("+"))
                                                                   for a in args.artifacts)
                         + f" --data DIR --reference TREE --rounds {args.rounds} --people {args.people}",
              "results": {t: medians(rounds[t]) for t in TREES},
              "rounds_raw": rounds}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / f"{args.name}.json", record, indent=1)
    atomic_write_text(args.out / f"{args.name}.md", markdown(record))
    print(markdown(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
