"""The quarter-offset decode of one crop against the original Simple Baselines, with the C finish of the runtime and
with the NumPy finish it falls back to, next to the NumPy decode doing less: all timed against the original in one run.

    python benchmarks/bench_quarter_floor.py --simplebaselines DIR [--crops 1] [--rounds 15] [--out benchmarks/results]

Timed, alternating round by round on the same 17 maps of 64x48 (decoder_workloads.heatmap_workload), CPU time:
  original           Simple Baselines' get_final_preds (argmax, quarter offset per keypoint, transform_preds)
  quarter            decode_heatmaps(maps, affine, "quarter") as the runtime runs it: NumPy's argmax, then the C
                     finish (pose_edge/runtime/_peaks_native.c) where it is built; the record says whether it was
  quarter-numpy      the same with the NumPy finish, what an install without a C compiler runs
  none-numpy         decode_heatmaps(maps, affine, "none"), NumPy finish: no refinement, still mapped to the image
  none-no-map-numpy  decode_heatmaps(maps, None, "none"), NumPy finish: the argmax, the peaks' values and the output
  argmax             maps.reshape(17, -1).argmax(axis=1) alone: the one pass over the data any decoder makes
Each ratio is original / that row. The NumPy rows show where the NumPy finish's time goes: quarter - none is the
refinement (a few NumPy calls on 17 values), none - none-no-map the mapping to the image, none-no-map - argmax NumPy's
cost per call for reading the peaks and writing the result; on one crop that fixed cost, not work, is what the C
finish removes. Writes quarter_floor.json and quarter_floor.md.
"""

from __future__ import annotations

import argparse
import statistics
import types
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from bench_vs_originals import HEATMAP_SIZE, calls_per_measure, load_topdown, machine, per_call_seconds

from decoder_workloads import heatmap_workload
from pose_edge.fsutil import atomic_write_json, atomic_write_text
from pose_edge.runtime import heatmap_decode
from pose_edge.runtime.heatmap_decode import decode_heatmaps


def measure(sb, crops: int, rounds: int) -> dict:
    config = types.SimpleNamespace(TEST=types.SimpleNamespace(POST_PROCESS=True))
    h, w = HEATMAP_SIZE
    maps, center, scale = heatmap_workload(np.random.default_rng(0), crops, h=h, w=w)
    affine = np.stack([sb.get_affine_transform(center[i], scale[i], 0, [w, h], inv=1) for i in range(crops)])
    coords, _ = sb.get_final_preds(config, maps.copy(), center, scale)
    c_finish = heatmap_decode.NATIVE_FINISH
    diff = 0.0
    for native in {c_finish, False}:
        heatmap_decode.NATIVE_FINISH = native
        diff = max(diff, float(np.abs(decode_heatmaps(maps, affine, "quarter")[..., :2] - coords).max()))
    if not diff <= 1e-4:
        raise SystemExit(f"ours and the original differ by {diff} px")
    flat = maps.reshape(-1, h * w)
    # name: (call, whether decode_heatmaps may use the C finish while it runs)
    calls = {"original": (lambda: sb.get_final_preds(config, maps, center, scale), c_finish),
             "quarter": (lambda: decode_heatmaps(maps, affine, "quarter"), c_finish),
             "quarter-numpy": (lambda: decode_heatmaps(maps, affine, "quarter"), False),
             "none-numpy": (lambda: decode_heatmaps(maps, affine, "none"), False),
             "none-no-map-numpy": (lambda: decode_heatmaps(maps, None, "none"), False),
             "argmax": (lambda: flat.argmax(axis=1), c_finish)}
    number, cpu = {}, {name: [] for name in calls}
    try:
        for name, (fn, native) in calls.items():
            heatmap_decode.NATIVE_FINISH = native
            number[name] = calls_per_measure(fn)
        names = list(calls)
        for r in range(rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                fn, heatmap_decode.NATIVE_FINISH = calls[name]
                cpu[name].append(per_call_seconds(fn, number[name])[0] * 1e6)
    finally:
        heatmap_decode.NATIVE_FINISH = c_finish
    med = {name: statistics.median(v) for name, v in cpu.items()}
    return {"crops": crops, "c_finish": c_finish, "median_us": med,
            "ratio_original_over": {n: med["original"] / med[n] for n in names},
            "rounds_us": {n: [round(v, 2) for v in cpu[n]] for n in names}, "max_diff_image_px": diff}


def markdown(record: dict) -> str:
    m, r = record["machine"], record["result"]
    lines = [f"Recorded {record['date']} on {m['platform']} ({m['cpu']}, {m['cpus']} CPUs), Python {m['python']}, "
             f"NumPy {m['numpy']}, one thread. Original: microsoft/human-pose-estimation.pytorch {record['commit']}.",
             f"Command: `{record['command']}`", "",
             f"{r['crops']} crop(s) of 17 maps at 64x48; medians of {record['rounds']} alternating rounds, CPU time; "
             "ratio = original / row, measured in this run. The `quarter` row ran "
             + ("the C finish (pose_edge/runtime/_peaks_native.c)." if r["c_finish"] else
                "the NumPy finish: the C finish was not built."), "",
             "| decoder | us per call | original / this |", "| --- | --- | --- |"]
    for name, us in r["median_us"].items():
        lines.append(f"| {name} | {us:.1f} | {r['ratio_original_over'][name]:.1f}x |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--simplebaselines", type=Path, required=True)
    ap.add_argument("--crops", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    sb = load_topdown(args.simplebaselines, with_dark=False)
    result = measure(sb, args.crops, args.rounds)
    record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "commit": sb.commit, "rounds": args.rounds, "result": result,
              "command": f"python benchmarks/bench_quarter_floor.py --simplebaselines DIR --crops {args.crops} "
                         f"--rounds {args.rounds}"}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "quarter_floor.json", record)
    atomic_write_text(args.out / "quarter_floor.md", markdown(record))
    print(markdown(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
