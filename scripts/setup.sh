#!/usr/bin/env bash
# Installs the Debian packages SwiftAI needs (chromium: the serve check drives it; Open MPI and iproute2: distributed
# training and its two-namespace test) and the Python venv the ONNX tests use. Idempotent: does nothing when
# all are present.
set -euo pipefail
packages=(libdnnl-dev libopenmpi-dev openmpi-bin iproute2 zlib1g-dev libcairo2-dev fonts-dejavu-core libturbojpeg0-dev libpng-dev dataset-fashion-mnist python3-venv chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# .venv at the package root: onnx's checker and onnxruntime for the ONNX export tests (scripts/onnx_check.py).
cd "$(dirname "$0")/.."
if ! .venv/bin/python3 -c 'import onnx, onnxruntime' >/dev/null 2>&1; then
  echo "setup: creating .venv with onnx, onnxruntime and numpy"
  python3 -m venv .venv
  .venv/bin/pip install -q onnx onnxruntime numpy
fi
