#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: compile the example model for this GPU (LINUX/X86_64 + NVIDIA, gpu-code from the
# GPU, cuda-ver from the driver), check the shipped PTX, run it on the GPU, compare with ONNX Runtime, print latency.
# Writes benchmarks/results/gpu_check.json.
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

"$PY" - "$GPU_CODE" "$DRIVER_CUDA" "$RUNS" "$GPU" <<'PYTHON'
import json
import sys
import tempfile
import time
from pathlib import Path

import tvm

from compilers.gpu import shipped_gpu_code
from compilers.intake import import_model
from compilers.model import CompileOptions
from compilers.tvm_compile import compile_model
from compilers.verify import assert_matches_onnxruntime, onnxruntime_outputs, onnxruntime_session, random_input
from packager.benchmark import LatencyStats, time_callable
from packager.commands.build import example_model_paths
from packager.remote import RemoteModel
from targets import CompilerOptions, get_target
from targets.catalog import CUDA_MAX_PTX_ISA

gpu_code, driver_cuda, runs, gpu = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
as_tuple = lambda v: tuple(int(p) for p in v.split("."))
# The newest CUDA release in the catalog's table that this driver runs: it bounds the PTX ISA.
cuda_ver = max((v for v in CUDA_MAX_PTX_ISA if as_tuple(v) <= as_tuple(driver_cuda)), key=as_tuple)
target = get_target("LINUX/X86_64/NVIDIA", CompilerOptions(gpu_code=gpu_code, cuda_ver=cuda_ver, trt_ver="0"))
imported = import_model(*example_model_paths())
with tempfile.TemporaryDirectory() as work:
    started = time.perf_counter()
    artifact = compile_model(imported, target, CompileOptions(work_dir=Path(work)))
    compile_s = time.perf_counter() - started
    code = shipped_gpu_code(artifact.library_path)
    manifest = json.loads(artifact.manifest_path.read_text())
    params = tvm.runtime.load_param_dict_from_file(str(artifact.params_path))
    model = RemoteModel(tvm.runtime.load_module(str(artifact.library_path)), tvm.cuda(0), manifest, params)
    x = random_input(imported)
    checks = assert_matches_onnxruntime(model.run(x), onnxruntime_outputs(imported, x), 1e-3, 1e-4, where=f"TVM on {gpu}")
    tvm_stats = LatencyStats.from_seconds(model.time(x, 10, runs))
    session = onnxruntime_session(imported)
    ort_stats = time_callable(lambda: session.run(None, {imported.spec.input.name: x}), 10, runs)
result = {
    "gpu": gpu, "gpu_code": gpu_code, "driver_cuda": driver_cuda, "cuda_ver": cuda_ver,
    "ptx": [{"version": "%d.%d" % m.version, "target": m.target} for m in code.ptx], "compile_s": compile_s,
    "max_abs_error": {c.name: c.max_abs_error for c in checks}, "tvm_gpu": vars(tvm_stats), "onnxruntime_cpu": vars(ort_stats),
}
out = Path("benchmarks/results/gpu_check.json")
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps(result, indent=2) + "\n")
print(f"gpu:          {gpu}")
print(f"target:       LINUX/X86_64/NVIDIA gpu-code {gpu_code}, cuda-ver {cuda_ver} (PTX {result['ptx'][0]['version']})")
print(f"compile:      {compile_s:.1f} s")
print(f"vs ORT:       max abs error " + ", ".join(f"{k} {v:.2e}" for k, v in result["max_abs_error"].items()))
print(f"latency:      TVM on GPU p50 {tvm_stats.p50_ms:.3f} ms, ONNX Runtime on CPU p50 {ort_stats.p50_ms:.3f} ms ({runs} runs)")
print(f"written:      {out}")
PYTHON
