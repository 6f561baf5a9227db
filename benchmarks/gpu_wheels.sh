#!/usr/bin/env bash
# Download, here (with a package index), the wheels gpu_run.sh needs on a GPU machine that has
# torch, transformers, accelerate, safetensors, huggingface_hub, numpy, rich and typer but no
# diffusers/torchsde and no network. Pure-Python wheels, plus CPython 3.12 x86-64 builds of
# Pillow, regex and charset-normalizer (about 15 MB). Carry the folder: run(..., carry=[".gpu_wheels"]).
#
#   bash benchmarks/gpu_wheels.sh            # PYTHON_VERSION=3.12 by default
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version "${PYTHON_VERSION:-3.12}" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .gpu_wheels \
  diffusers==0.42.1 torchsde==0.2.6 trampoline==0.1.2 \
  pillow regex requests charset-normalizer idna urllib3 certifi filelock
ls -1 .gpu_wheels
