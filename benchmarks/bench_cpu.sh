#!/usr/bin/env bash
# The recorded CPU benchmark (benchmarks/results/bench-cpu-*): `pose-edge bench` with ONNX Runtime on the CPU.
#
#   bash benchmarks/bench_cpu.sh WORKDIR        (WORKDIR: data, runs and exports; default /tmp/bench)
#
# small  every small preset trained briefly on the built-in data (as scripts/demo.sh does), FP32 and CPU-target INT8
#        ONNX: AP on the 100 val images and latency at batch 1 and 8, and against 1, 5, 20 people per frame
# paper  sb-r50-256x192 + det-s and kapao-s (its preset input, 1280) with random weights, FP32 and CPU-target INT8
#        ONNX: latency only, batch 1 (random weights have no AP worth measuring)
# INT8 here is the graph made for ONNX Runtime's CPU provider (`export --target cpu`): the TensorRT-target INT8 graph
# runs on a CPU as FP32 plus fake quantization, slower than FP32 (benchmarks/results/cpu_int8.md), and answers nothing.
# Steps whose outputs exist are skipped, so an interrupted run continues. Training and INT8 calibration dominate.
set -euo pipefail
W=${1:-/tmp/bench}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PE=${PE:-pose-edge}
PY=${PY:-python}
OUT="$ROOT/benchmarks/results"
CALIB="$W/data/annotations/person_keypoints_train.json"

[ -f "$W/data/annotations/person_keypoints_val.json" ] ||
    $PE data synth --out "$W/data" --train 400 --val 100 --seed 0 --size 320x240
train() {  # train PRESET EPOCHS
    [ -f "$W/runs/$1/best.pt" ] ||
        $PE train "$1" --data "$W/data" --epochs "$2" --eval-every "$2" --workers 0 --out "$W/runs/$1"
}
train sb-r18-128x96 4
train kapao-tiny 10
train det-tiny 8
[ -f "$W/paper/kapao-s/best.pt" ] || $PY "$ROOT/benchmarks/random_runs.py" sb-r50-256x192 kapao-s det-s --out "$W/paper"
export_both() {  # export_both RUN CALIB_COUNT
    local preset
    preset=$(basename "$1")
    [ -f "$1/export/$preset-fp32.onnx" ] || $PE export "$1" --precision fp32
    [ -f "$1/export/$preset-int8-cpu.onnx" ] ||
        $PE export "$1" --precision int8 --target cpu --calib "$CALIB" --calib-count "$2"
}
for run in sb-r18-128x96 kapao-tiny det-tiny; do export_both "$W/runs/$run" 100; done
for run in sb-r50-256x192 kapao-s det-s; do export_both "$W/paper/$run" 8; done  # latency only: 8 images calibrate

x() { echo "$1/$2/export/$2-$3.onnx"; }  # x RUNS PRESET PRECISION -> the exported graph
small=() paper=()
for p in fp32 int8-cpu; do
    small+=("$(x "$W/runs" kapao-tiny $p)" "$(x "$W/runs" sb-r18-128x96 $p)+$(x "$W/runs" det-tiny $p)"
            "$(x "$W/runs" det-tiny $p)")
    paper+=("$(x "$W/paper" kapao-s $p)" "$(x "$W/paper" sb-r50-256x192 $p)+$(x "$W/paper" det-s $p)")
done
$PE bench "${small[@]}" --data "$W/data" --device cpu --batch 1,8 --out "$W/bench-cpu-small"
$PE bench "${paper[@]}" --data "$W/data" --device cpu --batch 1 --no-ap --warmup 3 --iters 20 \
    --out "$W/bench-cpu-paper"
for name in small paper; do  # benchmarks/results/bench-cpu-NAME.{json,md} and bench-cpu-NAME-<plot>.png
    cp "$W/bench-cpu-$name/bench.json" "$OUT/bench-cpu-$name.json"
    cp "$W/bench-cpu-$name/bench.md" "$OUT/bench-cpu-$name.md"
    for plot in ap_vs_latency latency_vs_people; do cp "$W/bench-cpu-$name/$plot.png" "$OUT/bench-cpu-$name-$plot.png"; done
done
