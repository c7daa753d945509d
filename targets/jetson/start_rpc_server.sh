#!/usr/bin/env bash
# Start TVM's RPC server on a device, for `python -m packager build --device-rpc` or `--rpc-tracker`.
#
#   PYTHON=~/tvm/bin/python bash start_rpc_server.sh --host 0.0.0.0 --port 9090
#   PYTHON=~/tvm/bin/python bash start_rpc_server.sh --tracker tracker.lan:9190 --key jetson-xavier
#
# Every argument goes to `python -m tvm.exec.rpc_server`. The server loads TVM's runtime only (TVM_USE_RUNTIME_LIB=1),
# not the 240 MB compiler library. A runtime-only TVM never loads its CUDA runtime, so where libtvm_runtime_cuda.so
# loads, it is passed as --load-library, and sessions are spawned (--no-fork): a session forked from a process that
# has imported TVM fails its first CUDA call with cudaErrorInitializationError. Both were seen on an NVIDIA H200
# (docs/targets.md). Where it does not load (no GPU, no driver, no libcudart.so.13), the server serves the CPU only
# and says why.
set -euo pipefail
PY="${PYTHON:-python3}"
export TVM_USE_RUNTIME_LIB=1
# One line back: "cuda <library>", or "cpu <library> <why it did not load>".
PROBE="$("$PY" -c '
import ctypes, os, tvm
lib = os.path.join(os.path.dirname(tvm.__file__), "lib", "libtvm_runtime_cuda.so")
try:
    ctypes.CDLL(lib, ctypes.RTLD_GLOBAL)
    print("cuda", lib)
except OSError as error:
    print("cpu", lib, error)
')"
read -r KIND CUDA_LIB WHY <<<"$PROBE"
EXTRA=()
if [ "$KIND" = cuda ]; then
  EXTRA=(--no-fork --load-library "$CUDA_LIB")
  echo "start_rpc_server: serving CUDA and CPU, with $CUDA_LIB" >&2
else
  echo "start_rpc_server: serving the CPU only; TVM's CUDA runtime does not load here: $WHY" >&2
fi
exec "$PY" -m tvm.exec.rpc_server "${EXTRA[@]}" "$@"
