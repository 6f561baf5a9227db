#!/usr/bin/env bash
# The one command to run on a lent GPU machine (see benchmarks/gpu_kernels.py and gpu_bench.py):
#
#   bash benchmarks/gpu_run.sh [gpu_bench.py options]      # carry .gpu_wheels (gpu_wheels.sh)
#
# Unpacks the carried wheels of whatever the machine lacks into .gpu_deps (no pip, no
# network), then runs the kernel study (one UNet forward: variants, profile) and the
# end-to-end benchmark, unbuffered, each under a `timeout` guard, writing their JSON,
# logs, profiler tables and nvidia-smi.txt to $OUT. The guards (GPU_KERNELS_TIMEOUT,
# default 240 s, of which --compile's variant takes ~150 on an H200; GPU_BENCH_TIMEOUT,
# default 330 s; 0 skips that step) together stay below the device call's 600 s limit,
# so a hung run still returns its log. Measured on an H200: about 180 + 170 s.
# GPU_KERNELS_ARGS passes options to the kernel study (e.g. --no-compile: ~35 s instead of ~180).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/bench-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
DEPS="$PWD/.gpu_deps"
export PYTHONPATH="$PWD:$DEPS${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-python3}"

# import name:wheel file prefix
for pair in diffusers:diffusers torchsde:torchsde trampoline:trampoline PIL:pillow requests:requests \
    charset_normalizer:charset_normalizer idna:idna urllib3:urllib3 certifi:certifi filelock:filelock regex:regex; do
  if ! "$PYTHON" -c "import ${pair%%:*}" 2>/dev/null; then
    wheel=$(ls .gpu_wheels/"${pair##*:}"-*.whl 2>/dev/null | head -n 1)
    if [ -z "$wheel" ]; then
      echo "missing ${pair%%:*} and no .gpu_wheels/${pair##*:}-*.whl to unpack (run benchmarks/gpu_wheels.sh and carry .gpu_wheels)"
      exit 2
    fi
    "$PYTHON" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$wheel" "$DEPS"
    echo "unpacked $(basename "$wheel")"
  fi
done

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv > "$OUT/nvidia-smi.txt" 2>&1
cat "$OUT/nvidia-smi.txt"
status=0
if [ "${GPU_KERNELS_TIMEOUT:-240}" != 0 ]; then
  timeout -k 10 "${GPU_KERNELS_TIMEOUT:-240}" "$PYTHON" benchmarks/gpu_kernels.py --out "$OUT" ${GPU_KERNELS_ARGS:-} 2>&1 | tee "$OUT/gpu_kernels.log"
  status=${PIPESTATUS[0]}
  [ "$status" = 124 ] && echo "gpu_kernels.py stopped by the ${GPU_KERNELS_TIMEOUT:-240} s guard: the log above is partial"
fi
if [ "${GPU_BENCH_TIMEOUT:-330}" != 0 ]; then
  timeout -k 10 "${GPU_BENCH_TIMEOUT:-330}" "$PYTHON" benchmarks/gpu_bench.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_bench.log"
  bench=${PIPESTATUS[0]}
  [ "$bench" = 124 ] && echo "gpu_bench.py stopped by the ${GPU_BENCH_TIMEOUT:-330} s guard: the log above is partial"
  [ "$bench" != 0 ] && status=$bench
fi
exit "$status"
