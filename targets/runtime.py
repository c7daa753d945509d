"""What a device needs to run a compiled model, and the Install step that provides it.

CPU targets install the PyPI wheels as they are (apache-tvm ships manylinux_2_27 aarch64 and x86_64 wheels).
NVIDIA targets also check the device's CUDA and TensorRT against the target's cuda-ver and trt-ver, and when the
wheel's CUDA runtime (linked against CUDA 13) cannot load there, put in the one built for the device's own CUDA by
targets/jetson/build_tvm_cuda_runtime.sh (docs/targets.md).
"""

from __future__ import annotations

from targets.catalog import CudaRuntime, Target

TVM_VERSION = "0.27.0.post1"
# Where build_tvm_cuda_runtime.sh installs the CUDA runtime it builds, one directory per CUDA release
# (TVM_CUDA_RUNTIME_ROOT in the Install step's environment overrides it).
DEVICE_CUDA_RUNTIME_ROOT = f"/opt/tvm-runtime-cuda/{TVM_VERSION}"
MIN_PYTHON = (3, 10)  # apache-tvm 0.27's Requires-Python
DOCS = "docs/targets.md in edge-model-packager"


def pip_requirements(target: Target) -> list[str]:
    """Lines of the artifact's requirements.txt."""
    return list(target.runtime_needs.pip)


def install_script(target: Target, archive_root: str, venv: str) -> str:
    """The recipe's Install script: a venv with the TVM runtime and the agent's dependencies."""
    lines = [
        "set -e",
        _choose_python(),
        f'"$PY" -m venv {venv}',
        f"{venv}/bin/python -m pip install --disable-pip-version-check -q -r {archive_root}/requirements.txt",
    ]
    return "\n".join(lines + device_checks(target, venv)) + "\n"


def device_checks(target: Target, venv: str) -> list[str]:
    """Shell lines run after the venv exists: the device's CUDA and TensorRT, and its TVM CUDA runtime."""
    needs = target.runtime_needs
    if target.device != "cuda":
        return []
    lines = _check_cuda(venv, needs.cuda_ver) + _check_tensorrt(needs.trt_ver)
    if needs.cuda_runtime is CudaRuntime.DEVICE_BUILD:
        lines += _device_cuda_runtime(venv)
    # TVM skips its CUDA runtime without a word when that library cannot load; load it again to say why.
    why = (
        f"{venv}/bin/python -c 'import ctypes, os, tvm; "
        'ctypes.CDLL(os.path.join(os.path.dirname(tvm.__file__), "lib", "libtvm_runtime_cuda.so"))\' 2>&1 | tail -n 1'
    )
    lines.append(
        f"{venv}/bin/python -c 'import sys, tvm; sys.exit(0 if tvm.cuda(0).exist else 1)' || "
        f'{{ WHY="$({why})"; [ -n "$WHY" ] || WHY=\'its CUDA runtime loaded but found no device\'; '
        'echo "install: TVM cannot open CUDA device 0: $WHY" >&2; exit 1; }'
    )
    return lines


def _choose_python() -> str:
    want = ".".join(map(str, MIN_PYTHON))
    candidates = " ".join(f"python3.{minor}" for minor in range(14, MIN_PYTHON[1] - 1, -1)) + " python3"
    return (
        f"PY=''; for p in {candidates}; do if command -v $p >/dev/null && "
        f"$p -c 'import sys; sys.exit(sys.version_info < {MIN_PYTHON})'; then PY=$p; break; fi; done; "
        f"[ -n \"$PY\" ] || {{ echo 'install: needs Python >= {want} for apache-tvm {TVM_VERSION}; see {DOCS}' >&2; exit 1; }}"
    )


def _check_cuda(venv: str, cuda_ver: str) -> list[str]:
    """The shipped PTX is bounded by cuda-ver: the device's CUDA must be at least that."""
    return [
        # No ${VAR:-default}: Greengrass would read {VAR:-default} as a recipe variable.
        '[ -n "$CUDA_HOME" ] || CUDA_HOME=/usr/local/cuda',
        'DEVICE_CUDA="$("$CUDA_HOME/bin/nvcc" --version 2>/dev/null | sed -n \'s/.*release \\([0-9]*\\.[0-9]*\\).*/\\1/p\' || true)"',
        '[ -n "$DEVICE_CUDA" ] || DEVICE_CUDA="$(sed -n \'s/^CUDA Version \\([0-9]*\\.[0-9]*\\).*/\\1/p\' "$CUDA_HOME/version.txt" 2>/dev/null || true)"',
        f"[ -n \"$DEVICE_CUDA\" ] || {{ echo 'install: no CUDA toolkit under '$CUDA_HOME'; this component needs CUDA >= {cuda_ver}' >&2; exit 1; }}",
        f'{venv}/bin/python -c \'import sys; have, want = (tuple(map(int, v.split("."))) for v in sys.argv[1:]); '
        f'sys.exit(have < want)\' "$DEVICE_CUDA" {cuda_ver} || '
        f'{{ echo "install: this device has CUDA $DEVICE_CUDA; the model was compiled for cuda-ver {cuda_ver} or newer" >&2; exit 1; }}',
    ]


def _check_tensorrt(trt_ver: str) -> list[str]:
    """trt-ver is part of the target the user chose: a device with another TensorRT is the wrong device."""
    return [
        "DEVICE_TRT=\"$(dpkg-query -W -f='${Version}\\n' libnvinfer10 libnvinfer8 libnvinfer7 tensorrt 2>/dev/null | grep . | head -n 1)\"",
        f'case "$DEVICE_TRT" in {trt_ver}|{trt_ver}[.+-]*) ;; '
        f"*) echo \"install: TensorRT on this device is '$DEVICE_TRT'; the component was built for trt-ver {trt_ver}\" >&2; exit 1;; esac",
    ]


def _device_cuda_runtime(venv: str) -> list[str]:
    """Swap the wheel's CUDA-13 runtime library for the one built on this device against its own CUDA."""
    sidecar = "$TVM_CUDA_RUNTIME_ROOT/cuda-$DEVICE_CUDA/libtvm_runtime_cuda.so"
    return [
        f'[ -n "$TVM_CUDA_RUNTIME_ROOT" ] || TVM_CUDA_RUNTIME_ROOT={DEVICE_CUDA_RUNTIME_ROOT}',
        f'[ -f "{sidecar}" ] || {{ echo "install: no TVM CUDA runtime for CUDA $DEVICE_CUDA at {sidecar}; build it once on this '
        f'device with targets/jetson/build_tvm_cuda_runtime.sh (see {DOCS})" >&2; exit 1; }}',
        f"TVM_LIB=\"$({venv}/bin/python -c 'import importlib.util, os; "
        f'print(os.path.join(os.path.dirname(importlib.util.find_spec("tvm").origin), "lib"))\')"',
        f'cp "{sidecar}" "$TVM_LIB/libtvm_runtime_cuda.so"',
    ]
