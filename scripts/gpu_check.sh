#!/usr/bin/env bash
# The one-command GPU check (verification tier E): everything a machine with an NVIDIA GPU must prove, in one go,
# with every log and result under OUTDIR.
#
#   bash scripts/gpu_check.sh OUTDIR [--runs DIR] [--dry-run]
#
#   OUTDIR     created if missing: logs/ (one log per step), data/, runs/, engines/, bench/, results/, summary.txt
#   --runs DIR trained run folders of the small presets (DIR/sb-r18-128x96, DIR/kapao-tiny, DIR/det-tiny), e.g. the
#              ones the CPU benchmark was recorded with; without it they are trained briefly here (step 6)
#   --dry-run  parse the arguments, lay out OUTDIR, print every step with its command; run nothing, and say which
#              steps need a GPU this machine lacks. Runs anywhere (tests/test_bench.py runs it).
# Run it from anywhere; it works in the checkout it lives in, installing into its .venv (VENV=... to change).
#
# Budget on one data-centre GPU (H100 / H200 / A100 class, 16 CPU cores), estimated on paper where it was written
# (no GPU there): engine builds and installs dominate. The summary records each step's real seconds against it.
#   step                                                                                     budget
#    1  venv + pip install -e '.[train,trt,dev]' (torch CUDA wheels, onnxruntime-gpu, RTX)    90 s
#    2  pip install tensorrt (full TensorRT from NVIDIA's index); else TensorRT-RTX builds    30 s
#    3  pytest -m gpu (engines, kernels on the device, the bench's CUDA events)               40 s
#    4  pose-edge selftest --gpu                                                              10 s
#    5  data synth: 400 train / 100 val images at 320x240                                     10 s
#    6  train sb-r18-128x96 4 epochs, kapao-tiny 20, det-tiny 8 (skipped with --runs)          40 s
#    7  random-weight run folders of the paper presets sb-r50-256x192, kapao-s, det-s           5 s
#    8  export + engine, small presets: FP16 and INT8 of each (6 small engines)               45 s
#    9  export + engine, paper presets: FP16 of each, INT8 of sb-r50-256x192 and kapao-s     120 s
#       (5 engines, kapao-s at its 1280 input; INT8 calibrated on 8 images: latency only)
#   10  pose-edge bench, small presets: AP + latency, engines FP16 / INT8 and ORT FP32        45 s
#   11  pose-edge bench, paper presets: latency (random weights), batch 1 and 8               20 s
#                                                                                    total    455 s
# TensorRT-RTX builds for SM 7.5/8.0/8.6/8.9/12.x only: on a Hopper GPU (sm_90: H100, H200) the engines need full
# TensorRT (step 2), and the engine steps fail without it.
# A step that fails is recorded (rc in summary.txt, its log kept) and the check goes on; the exit status is 1 if any
# step failed.
set -uo pipefail

usage() {
    echo "usage: scripts/gpu_check.sh OUTDIR [--runs DIR] [--dry-run]" >&2
    exit 2
}

OUT="" RUNS="" DRY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --runs) [ $# -ge 2 ] || usage; RUNS=$2; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        -*) echo "gpu_check: unknown option $1" >&2; usage ;;
        *) [ -z "$OUT" ] || usage; OUT=$1 ;;
    esac
    shift
done
[ -n "$OUT" ] || usage

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VENV=${VENV:-$ROOT/.venv}
PY="$VENV/bin/python"
PE="$VENV/bin/pose-edge"
# The GPU, as the driver reports it (nvidia-smi ships with the driver).
if ! command -v nvidia-smi >/dev/null 2>&1; then
    HAVE_GPU=0 WHY="nvidia-smi not found: no NVIDIA driver"
elif ! nvidia-smi -L 2>/dev/null | grep -q "^GPU"; then
    HAVE_GPU=0 WHY="nvidia-smi lists no GPU"
else
    HAVE_GPU=1 WHY=""
fi
if [ $DRY = 0 ] && [ $HAVE_GPU = 0 ]; then
    echo "gpu_check: no GPU on this machine ($WHY); --dry-run shows the steps" >&2
    exit 1
fi
mkdir -p "$OUT"/{logs,data,runs,engines,bench,results}
OUT=$(cd "$OUT" && pwd)

FAILED=0
# step ID NAME BUDGET_S NEEDS_GPU(gpu|cpu) COMMAND: run COMMAND (a bash string) with its output in logs/ID-NAME.log.
step() {
    local id=$1 name=$2 budget=$3 needs=$4 cmd=$5 log="$OUT/logs/$1-$2.log"
    echo "[$id] $name (budget ${budget} s)"
    if [ $DRY = 1 ]; then
        echo "    would run: $cmd"
        if [ "$needs" = gpu ] && [ $HAVE_GPU = 0 ]; then
            echo "    skip on this machine: no GPU ($WHY)"
        fi
        return 0
    fi
    local start=$SECONDS rc
    bash -c "$cmd" >"$log" 2>&1
    rc=$?
    printf '%-4s %-36s rc %-3s %4d s (budget %s s)\n' "$id" "$name" "$rc" $((SECONDS - start)) "$budget" \
        | tee -a "$OUT/summary.txt"
    [ $rc = 0 ] || FAILED=1
}

echo "gpu_check: OUTDIR $OUT$([ $DRY = 1 ] && echo ', dry run: nothing is installed or run')"
echo "GPU: $([ $HAVE_GPU = 1 ] && nvidia-smi -L | head -1 || echo "none ($WHY)")"
if [ $DRY = 0 ]; then
    : >"$OUT/summary.txt"
    nvidia-smi >"$OUT/logs/00-nvidia-smi.log" 2>&1
fi

DATA="$OUT/data"
CALIB="$DATA/annotations/person_keypoints_train.json"
SMALL_RUNS=${RUNS:-$OUT/runs/small}
PAPER_RUNS="$OUT/runs/paper"
CACHE="$OUT/engines/timing.cache"

step 01 install 90 cpu "test -x '$PY' || python3 -m venv '$VENV'; '$PY' -m pip install -q --upgrade 'pip>=23' && '$PY' -m pip install -q -e '.[train,trt,dev]'"
step 02 tensorrt 30 cpu "'$PY' -m pip install -q tensorrt && '$PY' -c 'import tensorrt; print(tensorrt.__version__)' || echo 'full TensorRT did not install: engines are built with TensorRT-RTX'"
step 03 pytest-gpu 40 gpu "'$PY' -m pytest -m gpu -q -rs --junitxml='$OUT/results/pytest-gpu.xml'"
step 04 selftest-gpu 10 gpu "'$PE' selftest --gpu --json > '$OUT/results/selftest-gpu.json'"
step 05 data 10 cpu "'$PE' data synth --out '$DATA' --train 400 --val 100 --seed 0 --size 320x240"
if [ -z "$RUNS" ]; then
    step 06 train-small 40 gpu "'$PE' train sb-r18-128x96 --data '$DATA' --epochs 4 --eval-every 4 --workers 8 --out '$SMALL_RUNS/sb-r18-128x96' && '$PE' train kapao-tiny --data '$DATA' --epochs 20 --eval-every 20 --workers 8 --out '$SMALL_RUNS/kapao-tiny' && '$PE' train det-tiny --data '$DATA' --epochs 8 --eval-every 8 --workers 8 --out '$SMALL_RUNS/det-tiny'"
else
    echo "[06] train-small: skipped, trained runs given (--runs $RUNS)"
fi
step 07 paper-runs 5 cpu "'$PY' benchmarks/random_runs.py sb-r50-256x192 kapao-s det-s --out '$PAPER_RUNS'"

# Engines: each export writes RUN/export/<preset>-<precision>.onnx and .engine (+ .engine.json), batches 1 to 8.
engines() {  # engines ID NAME BUDGET RUNS_DIR CALIB_COUNT PRESET:PRECISION... -> one step building them all
    local id=$1 name=$2 budget=$3 runs=$4 count=$5 cmd="" item
    shift 5
    for item in "$@"; do
        cmd+="'$PE' export '$runs/${item%%:*}' --engine trt --precision ${item##*:} --calib '$CALIB' --calib-count $count --batch 1:1:8 --timing-cache '$CACHE' && "
    done
    step "$id" "$name" "$budget" gpu "${cmd}true"
}
engines 08 engines-small 45 "$SMALL_RUNS" 64 sb-r18-128x96:fp16 sb-r18-128x96:int8 kapao-tiny:fp16 kapao-tiny:int8 \
    det-tiny:fp16 det-tiny:int8
engines 09 engines-paper 120 "$PAPER_RUNS" 8 sb-r50-256x192:fp16 sb-r50-256x192:int8 kapao-s:fp16 kapao-s:int8 det-s:fp16

e() { echo "$1/$2/export/$2-$3.$4"; }  # e RUNS PRESET PRECISION SUFFIX -> the exported file
SMALL_ARGS="" PAPER_ARGS=""
for p in fp16 int8; do
    SMALL_ARGS+=" $(e "$SMALL_RUNS" kapao-tiny $p engine) $(e "$SMALL_RUNS" sb-r18-128x96 $p engine)+$(e "$SMALL_RUNS" det-tiny $p engine)"
    PAPER_ARGS+=" $(e "$PAPER_RUNS" kapao-s $p engine) $(e "$PAPER_RUNS" sb-r50-256x192 $p engine)+$(e "$PAPER_RUNS" det-s fp16 engine)"
done
# FP32: the exported graphs through ONNX Runtime (its CUDA provider where it loads; the record says which ran).
SMALL_ARGS+=" $(e "$SMALL_RUNS" kapao-tiny fp32 onnx) $(e "$SMALL_RUNS" sb-r18-128x96 fp32 onnx)+$(e "$SMALL_RUNS" det-tiny fp32 onnx)"
step 10 bench-small 45 gpu "'$PE' bench$SMALL_ARGS --data '$DATA' --batch 1,8 --out '$OUT/bench/small'"
step 11 bench-paper 20 gpu "'$PE' bench$PAPER_ARGS --data '$DATA' --batch 1,8 --no-ap --out '$OUT/bench/paper'"

if [ $DRY = 1 ]; then
    echo "dry run: laid out $OUT (logs, data, runs, engines, bench, results); nothing ran"
    exit 0
fi
echo "gpu_check: done; $OUT/summary.txt, results in $OUT/bench/*/bench.md"
exit $FAILED
