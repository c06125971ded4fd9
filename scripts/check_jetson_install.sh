#!/usr/bin/env bash
# Proves, on any x86_64 Linux machine with Python 3.10 and internet access to PyPI, what a Jetson Orin on JetPack 6
# (aarch64, Python 3.10, glibc 2.35, CUDA 12.6, TensorRT 10 from JetPack) needs from pose-edge:
#   1. the base install and the [jetson] extra resolve to binary wheels for manylinux aarch64 / CPython 3.10
#      (pip download --platform ... --only-binary=:all:, from the wheel of this checkout);
#   2. NVRTC 12 (the [jetson] extra's nvidia-cuda-nvrtc-cu12, through cuda-bindings 12) compiles the decode kernels
#      for sm_87 (Orin), in a Python 3.10 environment;
#   3. the torch-free runtime runs on Python 3.10: the base install (no torch) runs `pose-edge predict` on an ONNX.
# What it cannot prove here: anything on the Jetson's GPU (TensorRT engines, kernel launches).
#
# Usage: scripts/check_jetson_install.sh OUT_DIR [MODEL.onnx]     (MODEL: any pose-edge ONNX for step 3)
# Writes OUT_DIR/report.md and keeps the wheels and environments under OUT_DIR.
set -euo pipefail
OUT=${1:?usage: scripts/check_jetson_install.sh OUT_DIR [MODEL.onnx]}
MODEL=${2:-}
PY310=${PY310:-python3.10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
[ -z "$MODEL" ] || MODEL=$(cd "$(dirname "$MODEL")" && pwd)/$(basename "$MODEL")
cd /  # never import the checkout's source tree by accident: the environments under test must use their installs
REPORT=$OUT/report.md
PLATFORMS=(--platform manylinux_2_35_aarch64 --platform manylinux_2_34_aarch64 --platform manylinux_2_28_aarch64
           --platform manylinux_2_27_aarch64 --platform manylinux_2_24_aarch64 --platform manylinux_2_17_aarch64
           --platform manylinux2014_aarch64 --platform linux_aarch64)

echo "# Jetson (JetPack 6) install check, $(date -u +%Y-%m-%d)" > "$REPORT"
echo >> "$REPORT"
echo "Machine: $(uname -m), $($PY310 --version 2>&1); checkout $(git -C "$ROOT" rev-parse --short HEAD)" >> "$REPORT"

echo "== 1. wheels for aarch64 / CPython 3.10"
rm -rf "$OUT/wheel" "$OUT/aarch64"
$PY310 -m venv "$OUT/build-env"
"$OUT/build-env/bin/pip" install -q --upgrade "pip>=23" "setuptools>=68" wheel
"$OUT/build-env/bin/pip" wheel -q --no-deps --no-build-isolation -w "$OUT/wheel" "$ROOT"
WHEEL=$(ls "$OUT"/wheel/pose_edge-*.whl)
# pip evaluates environment markers against the machine it runs on, not --platform: evaluate pose-edge's own markers
# for a Jetson here, then let pip resolve those requirements (and theirs) to aarch64 / CPython 3.10 wheels.
"$OUT/build-env/bin/pip" install -q packaging
"$OUT/build-env/bin/python" - "$WHEEL" > "$OUT/jetson-requirements.txt" <<'PY'
import email
import sys
import zipfile

from packaging.requirements import Requirement

JETSON = {"platform_machine": "aarch64", "platform_system": "Linux", "sys_platform": "linux", "os_name": "posix",
          "python_version": "3.10", "python_full_version": "3.10.12", "implementation_name": "cpython",
          "platform_python_implementation": "CPython", "platform_release": "5.15.148-tegra"}
with zipfile.ZipFile(sys.argv[1]) as wheel:
    metadata = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    message = email.message_from_bytes(wheel.read(metadata))
for line in message.get_all("Requires-Dist") or []:
    req = Requirement(line)
    if req.marker is None or any(req.marker.evaluate({**JETSON, "extra": extra}) for extra in ("", "jetson")):
        req.marker = None
        print(req)
PY
"$OUT/build-env/bin/pip" download -q --dest "$OUT/aarch64" --only-binary=:all: --python-version 3.10 \
    --implementation cp "${PLATFORMS[@]}" -r "$OUT/jetson-requirements.txt"
{
    echo
    echo "## 1. pose-edge's requirements on a Jetson (base install + [jetson]), markers evaluated for aarch64 Linux"
    echo
    sed 's/^/- /' "$OUT/jetson-requirements.txt"
    echo
    echo "resolved by \`pip download --only-binary=:all:\` for manylinux aarch64, CPython 3.10 to:"
    echo
    for w in "$OUT"/aarch64/*.whl; do echo "- $(basename "$w")"; done
} >> "$REPORT"

echo "== 2. NVRTC 12 compiles the kernels for sm_87 (Orin) on Python 3.10"
$PY310 -m venv "$OUT/nvrtc12-env"
"$OUT/nvrtc12-env/bin/pip" install -q "cuda-bindings>=12.6,<13" "nvidia-cuda-nvrtc-cu12>=12.6" numpy
"$OUT/nvrtc12-env/bin/pip" install -q --no-deps "$WHEEL"
NVRTC=$("$OUT/nvrtc12-env/bin/python" -c "
from pose_edge.kernels.build import nvrtc_compile, nvrtc_version
cubin = nvrtc_compile(87)
ptx = nvrtc_compile(87, ptx=True)
print(f'NVRTC {nvrtc_version()}: sm_87 cubin {len(cubin)} bytes, compute_87 PTX {len(ptx)} bytes')")
echo "$NVRTC"
{
    echo
    echo "## 2. NVRTC 12 (cuda-bindings 12, nvidia-cuda-nvrtc-cu12) compiles the decode kernels for Orin"
    echo
    echo "$NVRTC"
} >> "$REPORT"

echo "== 3. the base install (no torch) on Python 3.10 runs pose-edge predict"
$PY310 -m venv "$OUT/base-env"
"$OUT/base-env/bin/pip" install -q "$WHEEL"
TORCH=$("$OUT/base-env/bin/python" -c "import importlib.util as u; print('absent' if u.find_spec('torch') is None else 'present')")
{
    echo
    echo "## 3. Base install on CPython 3.10 (x86_64 here; the same pure-Python code on aarch64)"
    echo
    echo "torch in the environment: $TORCH"
} >> "$REPORT"
if [ -n "$MODEL" ]; then
    "$OUT/base-env/bin/python" -c "
import numpy as np, cv2
cv2.imwrite('$OUT/frame.jpg', np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8))"
    "$OUT/base-env/bin/pose-edge" predict "$MODEL" "$OUT/frame.jpg" --out "$OUT/predict" --json > "$OUT/predict.json"
    echo "pose-edge predict $(basename "$MODEL") frame.jpg: exit 0, $(python3 -c "
import json; d = json.load(open('$OUT/predict.json')); print(f\"{d['frames']} frame, backend {d['estimator']['model']['backend']}\")")" >> "$REPORT"
else
    echo "(no MODEL.onnx given: predict not run)" >> "$REPORT"
fi
echo "wrote $REPORT"
