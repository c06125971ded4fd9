#!/usr/bin/env bash
# The whole pipeline as far as it exists, on the built-in synthetic data set. `make demo` runs this.
set -euo pipefail
DEMO=${DEMO_DIR:-demo}
rm -rf "$DEMO/runs"  # the demo's own runs: every `make demo` trains afresh (train refuses to overwrite a run)
mkdir -p "$DEMO"

echo "== 1. built-in synthetic COCO-keypoints data set, and a 60-frame clip of people walking (with track ids)"
pose-edge data synth --out "$DEMO/data" --train 400 --val 100 --seed 0 --size 320x240 --video 60

echo "== 2. ground truth scored as predictions (the evaluation's sanity check)"
pose-edge eval gt --data "$DEMO/data"

echo "== 3. Simple Baseline (top-down): sb-r18-128x96 from scratch, about two minutes on the CPU, val AP (GT boxes)"
# No ImageNet weights here (no download): from scratch, a short run reaches a small but clearly non-zero AP.
pose-edge train sb-r18-128x96 --data "$DEMO/data" --epochs 4 --eval-every 4 --workers 0 \
    --out "$DEMO/runs/sb-r18-128x96"
pose-edge eval "$DEMO/runs/sb-r18-128x96" --data "$DEMO/data"

echo "== 4. KAPAO (single-stage): kapao-tiny, about four minutes of CPU training, then COCO keypoint AP on the val images"
# A from-scratch run this short finds people (box AP50 about 0.15) well before it places keypoints: expect a keypoint AP
# of 0.000-0.001 here (box AP about 0.04); the reference recipe (kapao-s and up) needs a GPU and hundreds of epochs.
pose-edge train kapao-tiny --data "$DEMO/data" --epochs 20 --eval-every 20 --workers 0 --out "$DEMO/runs/kapao-tiny"
pose-edge eval "$DEMO/runs/kapao-tiny" --data "$DEMO/data"

echo "== 5. person detector for the top-down model: det-tiny (the KAPAO network with one class), person box AP"
pose-edge train det-tiny --data "$DEMO/data" --epochs 8 --eval-every 8 --workers 0 --out "$DEMO/runs/det-tiny"
pose-edge eval "$DEMO/runs/det-tiny" --data "$DEMO/data"
shopt -s nullglob
for sb in "$DEMO"/runs/sb-*/best.pt; do
    echo "== 6. top-down on the detector's boxes instead of ground-truth boxes: $(dirname "$sb")"
    pose-edge eval "$(dirname "$sb")" --data "$DEMO/data" --boxes "$DEMO/runs/det-tiny"
done
shopt -u nullglob

echo "== 7. export: every trained run to ONNX FP32 / FP16 / INT8 (AP side by side) and a TensorRT-RTX INT8 engine"
# INT8 calibrates on the train split's images, never on the val images it is scored on. The engine is built ahead of
# time for several GPU generations; running it needs a GPU (ONNX Runtime runs the same INT8 graph on the CPU).
shopt -s nullglob
runs=("$DEMO"/runs/*/best.pt)
[ ${#runs[@]} -gt 0 ] || echo "(no trained runs under $DEMO/runs yet)"
for ckpt in "${runs[@]}"; do
    run=$(dirname "$ckpt")
    pose-edge export "$run" --precision fp32
    pose-edge export "$run" --precision fp16
    pose-edge export "$run" --precision int8 --calib "$DEMO/data/annotations/person_keypoints_train.json" \
        --calib-count 100 --val "$DEMO/data"
    # The INT8 graph for ONNX Runtime's CPU provider (integer kernels; the one above is laid out for TensorRT).
    pose-edge export "$run" --precision int8 --target cpu \
        --calib "$DEMO/data/annotations/person_keypoints_train.json" --calib-count 100 --val "$DEMO/data"
    if python -c "import tensorrt_rtx" 2>/dev/null; then
        for onnx in "$run"/export/*-int8.onnx; do pose-edge export "$onnx" --engine trt --batch 1:8:16; done
    fi
done

echo "== 8. predict: the runtime on the demo clip, torch-free (ONNX Runtime), people tracked across frames"
# A few CPU minutes of training make weak models, so the confidence threshold is lowered from the deployment default
# to show what they find; on a real model `pose-edge predict MODEL SOURCE --track` is the whole command.
mkdir -p "$DEMO/predict"
if [ -f "$DEMO/runs/sb-r18-128x96/export/sb-r18-128x96-fp32.onnx" ] && [ -f "$DEMO/runs/det-tiny/export/det-tiny-fp32.onnx" ]; then
    pose-edge predict "$DEMO/runs/sb-r18-128x96/export/sb-r18-128x96-fp32.onnx" "$DEMO/data/video.mp4" \
        --detector "$DEMO/runs/det-tiny/export/det-tiny-fp32.onnx" --conf 0.1 --track --smooth \
        --out "$DEMO/predict/top-down"
fi
if [ -f "$DEMO/runs/kapao-tiny/export/kapao-tiny-fp32.onnx" ]; then
    pose-edge predict "$DEMO/runs/kapao-tiny/export/kapao-tiny-fp32.onnx" "$DEMO/data/video.mp4" --conf 0.1 --track \
        --out "$DEMO/predict/kapao"
fi
python - "$DEMO/predict" <<'PY'
import sys
from pathlib import Path

import cv2

for video in sorted(Path(sys.argv[1]).glob("*/overlay.mp4")):
    capture = cv2.VideoCapture(str(video))
    capture.set(cv2.CAP_PROP_POS_FRAMES, 30)
    ok, frame = capture.read()
    if ok:
        cv2.imwrite(str(video.with_name("frame-030.png")), frame)
        print(f"wrote {video.with_name('frame-030.png')} (frame 30 of {video})")
PY

echo "== 9. bench: COCO AP against end-to-end latency per stage, FP32 and CPU INT8, and latency against people per frame"
# A short run (few timed calls) to show the tables and plots; benchmarks/bench_cpu.sh records the full one.
x() { echo "$DEMO/runs/$1/export/$1-$2.onnx"; }
configs=()
for p in fp32 int8-cpu; do
    [ -f "$(x kapao-tiny $p)" ] && configs+=("$(x kapao-tiny $p)")
    [ -f "$(x sb-r18-128x96 $p)" ] && [ -f "$(x det-tiny $p)" ] && configs+=("$(x sb-r18-128x96 $p)+$(x det-tiny $p)")
done
if [ ${#configs[@]} -gt 0 ]; then
    pose-edge bench "${configs[@]}" --data "$DEMO/data" --device cpu --warmup 2 --iters 10 --out "$DEMO/bench"
fi
