#!/usr/bin/env bash
# Build TVM's CUDA runtime library (libtvm_runtime_cuda.so) on an NVIDIA device, against the device's own CUDA.
#
# The PyPI apache-tvm wheel's CUDA runtime links libcudart.so.13, which no Jetson Xavier JetPack (CUDA 10.2 on
# JetPack 4.4-4.5.1) has. Everything else in the wheel (libtvm_runtime.so, the Python package) works as is, so only
# this one library is rebuilt, from the same release's sources, the way TVM's own release builds its CUDA sidecar.
# The component's Install step copies it into its venv (targets/runtime.py). Run once per device, as root:
#
#   sudo bash build_tvm_cuda_runtime.sh            # installs /opt/tvm-runtime-cuda/0.27.0.post1/cuda-<X.Y>/
#
# Needs git, cmake >= 3.18 (pip install cmake) and a C++17 compiler (JetPack 4: apt-get install g++-8; CXX=g++-8).
set -euo pipefail

TVM_TAG="${TVM_TAG:-v0.27.0}"
TVM_VERSION="0.27.0.post1"
TVM_GIT="${TVM_GIT:-https://github.com/apache/tvm.git}"
CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"

CUDA_VER="$("$CUDA_HOME/bin/nvcc" --version 2>/dev/null | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p' || true)"
[ -n "$CUDA_VER" ] || CUDA_VER="$(sed -n 's/^CUDA Version \([0-9]*\.[0-9]*\).*/\1/p' "$CUDA_HOME/version.txt" 2>/dev/null || true)"
[ -n "$CUDA_VER" ] || { echo "build_tvm_cuda_runtime: no CUDA toolkit under $CUDA_HOME (set CUDA_HOME)" >&2; exit 1; }
DEST="${1:-/opt/tvm-runtime-cuda/$TVM_VERSION/cuda-$CUDA_VER}"

if [ -z "${CXX:-}" ] && command -v g++-8 >/dev/null; then export CXX=g++-8 CC=gcc-8; fi
for tool in git cmake "${CXX:-g++}"; do
  command -v "$tool" >/dev/null || { echo "build_tvm_cuda_runtime: $tool is missing" >&2; exit 1; }
done

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
git clone -q --depth 1 --branch "$TVM_TAG" --recursive --shallow-submodules "$TVM_GIT" "$WORK/tvm"
# LLVM, cuDNN, cuBLAS and NVTX stay off: the model's kernels are PTX that the driver JITs, and only the runtime is built.
cmake -S "$WORK/tvm" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release \
  -DUSE_CUDA="$CUDA_HOME" -DUSE_LLVM=OFF -DUSE_CUDNN=OFF -DUSE_CUBLAS=OFF -DUSE_NVTX=OFF -DUSE_NCCL=OFF \
  -DUSE_LIBBACKTRACE=OFF -DUSE_CUTLASS=OFF -DUSE_THRUST=OFF
cmake --build "$WORK/build" --target tvm_runtime_cuda -j "$(nproc)"

BUILT="$(find "$WORK/build" -name 'libtvm_runtime_cuda.so' -type f | head -n 1)"
[ -n "$BUILT" ] || { echo "build_tvm_cuda_runtime: the build made no libtvm_runtime_cuda.so" >&2; exit 1; }
mkdir -p "$DEST"
install -m 0644 "$BUILT" "$DEST/libtvm_runtime_cuda.so"
echo "build_tvm_cuda_runtime: installed $DEST/libtvm_runtime_cuda.so (TVM $TVM_TAG, CUDA $CUDA_VER)"
