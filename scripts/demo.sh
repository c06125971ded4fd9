#!/usr/bin/env bash
# The whole pipeline as far as it exists, on the built-in synthetic data set. `make demo` runs this.
set -euo pipefail
DEMO=${DEMO_DIR:-demo}
mkdir -p "$DEMO"

echo "== 1. built-in synthetic COCO-keypoints data set"
pose-edge data synth --out "$DEMO/data" --train 400 --val 100 --seed 0 --size 320x240

echo "== 2. ground truth scored as predictions (the evaluation's sanity check)"
pose-edge eval gt --data "$DEMO/data"
