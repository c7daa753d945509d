#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: compile the example model for this GPU (LINUX/X86_64 + NVIDIA, gpu-code from the
# GPU, cuda-ver from the driver) and for Jetson Xavier's sm_72, check the shipped PTX, run it on the GPU, compare with
# ONNX Runtime, print latency: both halves of benchmarks/gpu_check.py on one machine. Writes
# benchmarks/results/gpu_check.json. Where the GPU machine has no compiler, run the halves apart (see gpu_check.py).
#
#   bash benchmarks/gpu_check.sh [RUNS]        (default 100 timed runs)
#
# Installs what is missing with pip: this repo (-e .), libdevice (nvidia-cuda-nvcc) when no CUDA toolkit is
# found, and libcudart.so.13 (nvidia-cuda-runtime) when the apache-tvm wheel's CUDA runtime cannot find it.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-100}"
PY="${PYTHON:-python3}"

command -v nvidia-smi >/dev/null || { echo "gpu_check: no nvidia-smi; this needs an NVIDIA GPU and driver" >&2; exit 1; }
GPU="$(nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader | head -n 1)"
CAP="$(echo "$GPU" | cut -d, -f2 | tr -d ' ')"
GPU_CODE="sm_${CAP/./}"
DRIVER_CUDA="$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9]*\.[0-9]*\).*/\1/p' | head -n 1)"
echo "gpu_check: $GPU -> gpu-code $GPU_CODE, driver supports CUDA $DRIVER_CUDA"

"$PY" -c "import tvm, onnxruntime, onnx, packager" 2>/dev/null || "$PY" -m pip install -q -e .

site_nvidia() { "$PY" -c 'import os, site; print(" ".join(os.path.join(p, "nvidia") for p in site.getsitepackages()))'; }
find_in_nvidia() { for d in $(site_nvidia); do [ -d "$d" ] && find "$d" -name "$1" -print 2>/dev/null; done | head -n 1; }

if [ -z "${CUDA_PATH:-}" ] && ! ls /usr/local/cuda/nvvm/libdevice/libdevice*.bc >/dev/null 2>&1; then
  [ -n "$(find_in_nvidia 'libdevice*.bc')" ] || "$PY" -m pip install -q nvidia-cuda-nvcc
  LIBDEVICE="$(find_in_nvidia 'libdevice*.bc')"
  [ -n "$LIBDEVICE" ] || { echo "gpu_check: no libdevice found; set CUDA_PATH to a CUDA toolkit" >&2; exit 1; }
  export CUDA_PATH="$(dirname "$(dirname "$(dirname "$LIBDEVICE")")")"
fi

cuda_ok() { "$PY" -c 'import sys, tvm; sys.exit(0 if tvm.cuda(0).exist else 1)' 2>/dev/null; }
if ! cuda_ok; then
  # The wheel's libtvm_runtime_cuda.so links libcudart.so.13 (it needs a driver for CUDA 13 or newer).
  [ -n "$(find_in_nvidia 'libcudart.so.13*')" ] || "$PY" -m pip install -q nvidia-cuda-runtime
  CUDART="$(find_in_nvidia 'libcudart.so.13*')"
  [ -n "$CUDART" ] && export LD_LIBRARY_PATH="$(dirname "$CUDART")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  cuda_ok || { echo "gpu_check: TVM cannot open CUDA device 0: the apache-tvm wheel's CUDA runtime needs libcudart.so.13" \
                     "and a driver for CUDA >= 13 (this one: $DRIVER_CUDA); see docs/targets.md" >&2; exit 1; }
fi

# The newest CUDA release in the catalog's table that this driver runs: it bounds the PTX ISA.
CUDA_VER="$("$PY" -c 'import sys; from targets.catalog import CUDA_MAX_PTX_ISA as table
v = lambda s: tuple(int(p) for p in s.split("."))
print(max((c for c in table if v(c) <= v(sys.argv[1])), key=v))' "$DRIVER_CUDA")"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
GPUS=(--gpu "$GPU_CODE=$CUDA_VER")
# Jetson Xavier's code too, which this GPU's driver JIT-compiles when it is newer than sm_72.
[ "${CAP/./}" -gt 72 ] && GPUS+=(--gpu "sm_72=10.2")
"$PY" benchmarks/gpu_check.py compile "$WORK" "${GPUS[@]}"
"$PY" benchmarks/gpu_check.py run "$WORK" --runs "$RUNS"
