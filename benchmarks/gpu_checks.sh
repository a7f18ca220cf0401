#!/usr/bin/env bash
# The lent GPU's whole job in one command (see gpu_checks.py), from the repository root of the device's copy:
#   run: bash benchmarks/gpu_checks.sh     carry: build/gpu_wheels (made here by `make gpu-wheels`)
# The device has torch, numpy, OpenCV and ONNX but not PyYAML, tqdm or pytest, and no internet.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -d build/gpu_wheels ]; then
    python -m pip install -q --no-index --find-links build/gpu_wheels pyyaml tqdm pytest pytest-timeout
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
python benchmarks/gpu_checks.py --out "${OUT:-gpu_out}" "$@"
