"""Load a compiled model with the TVM runtime only, and turn an RGB image into an anomaly result."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

LIBRARY = "model.so"
PARAMS = "params.bin"
MANIFEST = "manifest.json"
SPEC = "spec.json"


@dataclass(frozen=True)
class AnomalyResult:
    """One image's verdict. ``score`` and ``threshold`` share one scale, [0, 1]: the raw score and the spec's image
    threshold, both mapped with the spec's normalization ((x - min) / (max - min), clipped), as Lookout's proto says
    ("in range 0.0 to 1.0"). anomalib v2 exports normalise in the graph, so theirs pass through unchanged."""

    score: float
    threshold: float
    is_anomalous: bool  # the graph's own label when it has one, else raw score > raw threshold
    confidence: float  # the score, on the same [0, 1] scale
    anomaly_map: (
        np.ndarray | None
    )  # float32 HxW at the model's resolution (the graph's mask as 0/1 when it has one); None: classification
    pixel_threshold: float = 0.5  # what anomaly_map is compared with to paint the mask


def import_tvm() -> None:
    """Import TVM without the PyTorch import that tvm_ffi makes for interoperating with torch tensors, which none of
    ours are: 1.7 s of a worker's ~2 s to load a compiled model, and of the agent's start on a device that has torch.
    A process that imported torch already, or imports it later, is unaffected."""
    import sys

    if "tvm" in sys.modules or "torch" in sys.modules:
        return
    sys.modules["torch"] = None  # `import torch` raises ImportError while it is there, which tvm_ffi allows for
    try:
        import tvm.runtime  # noqa: F401
    finally:
        if "torch" in sys.modules and sys.modules["torch"] is None:
            del sys.modules["torch"]


def load_cuda_runtime() -> None:
    """Load TVM's CUDA runtime (libtvm_runtime_cuda.so), or say why it cannot be loaded.

    A full TVM loads it at import, but silently skips it when it fails (no libcudart.so.13 or no driver), and a
    runtime-only TVM (``TVM_USE_RUNTIME_LIB=1``, or a compiler library that failed to load) never loads it. Either way
    a CUDA model would otherwise fail with "a loader of that name is not registered", which names neither cause."""
    from tvm import base

    if "tvm_runtime_cuda" in base._LOADED_LIBS:
        return
    from tvm_ffi.libinfo import load_lib_ctypes

    runtime_dir = Path(base._LOADED_LIBS["tvm_runtime"]._name).resolve().parent
    try:
        base._LOADED_LIBS["tvm_runtime_cuda"] = load_lib_ctypes(
            package="tvm", target_name="tvm_runtime_cuda", extra_lib_paths=[runtime_dir], mode="RTLD_LOCAL"
        )
    except (OSError, RuntimeError) as error:
        raise RuntimeError(
            f"this model runs on CUDA, but TVM's CUDA runtime ({runtime_dir / 'libtvm_runtime_cuda.so'}) did not load: "
            f"{error}. It needs the NVIDIA driver's libcuda.so.1 and the CUDA runtime it was built against "
            "(the apache-tvm wheel's links libcudart.so.13) on the library path"
        ) from error


def load_runtime() -> None:
    """TVM's runtime library and tvm_ffi, without the ``tvm`` Python package, which imports its IR, target, RPC and
    script modules even when it loads the runtime library alone: 38 MB of the agent's resident memory, more than a
    small model's weights. Enough to run a CPU model (CompiledModel). PyTorch is kept out as import_tvm() does.

    Safe to call from several threads (the agent preloads on one while a model starts on another): one loads, the
    others wait for it."""
    with _runtime_lock:
        _load_runtime_once()


def _load_runtime_once() -> None:
    import importlib.util
    import sys

    global _runtime_library
    if _runtime_library is not None or "tvm" in sys.modules:  # the package loads the same library itself
        return
    hidden = "torch" not in sys.modules
    if hidden:
        sys.modules["torch"] = None
    try:
        # The package first: it loads libtvm_ffi.so, which TVM's runtime library links against. Importing only its
        # libinfo can return while another thread is still importing the package, before that library is loaded.
        import tvm_ffi  # noqa: F401
        from tvm_ffi.libinfo import load_lib_ctypes

        spec = importlib.util.find_spec("tvm")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("apache-tvm is not installed: no TVM runtime library to load")
        package = Path(next(iter(spec.submodule_search_locations)))
        paths = [Path(os.environ["TVM_LIBRARY_PATH"])] if os.environ.get("TVM_LIBRARY_PATH") else []
        paths += [package / "lib", package.parents[1] / "build" / "lib", package.parents[1] / "lib"]
        # RTLD_GLOBAL, as the package loads it: a compiled model's library resolves TVM's symbols against it.
        _runtime_library = load_lib_ctypes("tvm", "tvm_runtime", "RTLD_GLOBAL", extra_lib_paths=paths)
    finally:
        if hidden and sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]


_runtime_library = None
_runtime_lock = threading.Lock()
_KDL_CPU, _POOLED_ALLOCATOR = 1, 2  # DLPack's CPU device type; the Relax VM's pooled allocator (as VirtualMachine's)
_ALIGNMENT = 64  # TVM's allocation alignment, which compiled kernels assume of their arguments (aligned vector loads)


def _aligned(x: np.ndarray) -> np.ndarray:
    """``x`` itself when TVM may read it in place, else a copy at a 64-byte boundary: numpy aligns small arrays to 16
    bytes only, and a kernel's aligned AVX load of a DLPack view of one crashes (TVMBackendParallelLaunch, SIGSEGV)."""
    if x.ctypes.data % _ALIGNMENT == 0:
        return x
    buffer = np.empty(x.nbytes + _ALIGNMENT, np.uint8)
    start = -buffer.ctypes.data % _ALIGNMENT
    copy = buffer[start : start + x.nbytes].view(x.dtype).reshape(x.shape)
    copy[...] = x
    return copy


def num_threads() -> int:
    """The TVM CPU thread pool's size, as the thread that first ran a model started it."""
    import tvm_ffi

    return int(tvm_ffi.get_global_func("runtime.NumThreads")())


class CompiledModel:
    """A Relax VM executable plus its weights, on one TVM device.

    A CPU model is loaded through tvm_ffi and TVM's runtime library alone (load_runtime); a CUDA model, or one given a
    device, through the ``tvm`` package's runtime API."""

    def __init__(self, vm, entry, params: list, manifest: dict, device=None):
        self.manifest = manifest
        self.device = device  # a tvm.runtime.Device; None for the CPU through tvm_ffi
        self._vm = vm  # keeps the executable and its memory pools alive
        self._entry = entry
        self._params = params
        self.output_names = list(manifest["outputs"])

    @classmethod
    def load(cls, model_dir: Path, device=None) -> CompiledModel:
        model_dir = Path(model_dir)
        manifest = json.loads((model_dir / MANIFEST).read_text())
        if device is None and manifest["device"] != "cuda":
            return cls._load_cpu(model_dir, manifest)
        import_tvm()
        import tvm.runtime
        from tvm.runtime.vm import VirtualMachine

        if manifest["device"] == "cuda":
            load_cuda_runtime()
        if device is None:
            device = tvm.runtime.cuda(0)
        module = tvm.runtime.load_module(str(model_dir / LIBRARY))
        params = tvm.runtime.load_param_dict_from_file(str(model_dir / PARAMS)) if manifest["params"] else {}
        vm = VirtualMachine(module, device)
        on_device = [
            params[name].copyto(device) if device.dlpack_device_type() != _KDL_CPU else params[name]
            for name in manifest["params"]
        ]
        return cls(vm, vm[manifest["entry"]], on_device, manifest, device)

    @classmethod
    def _load_cpu(cls, model_dir: Path, manifest: dict) -> CompiledModel:
        load_runtime()
        import tvm_ffi

        vm = tvm_ffi.load_module(str(model_dir / LIBRARY))["vm_load_executable"]()
        vm["vm_initialization"](_KDL_CPU, 0, _POOLED_ALLOCATOR)
        params = (
            tvm_ffi.get_global_func("runtime.LoadParamsFromFile")(str(model_dir / PARAMS)) if manifest["params"] else {}
        )
        return cls(vm, vm[manifest["entry"]], [params[name] for name in manifest["params"]], manifest)

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.device is None:
            import tvm_ffi

            result = self._entry(tvm_ffi.from_dlpack(_aligned(x)), *self._params)
            values = [result] if len(self.output_names) == 1 else list(result)
            # Copies: an output's memory belongs to the VM's pool, which the next run reuses.
            return {name: np.from_dlpack(value).copy() for name, value in zip(self.output_names, values)}
        import tvm.runtime

        result = self._entry(tvm.runtime.tensor(x, self.device), *self._params)
        values = [result] if len(self.output_names) == 1 else list(result)
        return {name: value.numpy() for name, value in zip(self.output_names, values)}


def bilinear_axis(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half-pixel-centre bilinear interpolation along one axis (what PIL and OpenCV do for upscaling): for each of
    ``dst`` output pixels, the two source pixels it falls between and the weight of the second (float64)."""
    pos = np.clip((np.arange(dst, dtype=np.float64) + 0.5) * src / dst - 0.5, 0, src - 1)
    low = np.floor(pos).astype(np.int64)
    return low, np.minimum(low + 1, src - 1), pos - low


@lru_cache(maxsize=64)
def _axis_weights(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """bilinear_axis with float32 weights; cached, as a camera sends the same size every frame."""
    low, high, weight = bilinear_axis(src, dst)
    weights = (low, high, weight.astype(np.float32))
    for array in weights:
        array.setflags(write=False)
    return weights


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Half-pixel-centre bilinear resize of an HxW or HxWxC array (what PIL and OpenCV do for upscaling).

    Rows first, then columns: only the source rows that are used are converted to float, a third of the work
    of interpolating the four corners at full size.
    """
    src_h, src_w = image.shape[:2]
    if (src_h, src_w) == (height, width):
        return image.astype(np.float32, copy=False)
    y0, y1, wy = _axis_weights(src_h, height)
    x0, x1, wx = _axis_weights(src_w, width)
    trailing = (1,) * (image.ndim - 2)
    top, bottom = image[y0].astype(np.float32), image[y1].astype(np.float32)
    rows = top + (bottom - top) * wy.reshape((-1, 1) + trailing)
    left, right = rows[:, x0], rows[:, x1]
    return left + (right - left) * wx.reshape((1, -1) + trailing)


def preprocess(rgb: np.ndarray, spec: dict) -> np.ndarray:
    """RGB uint8 HxWx3 -> the model's input tensor, as the spec says."""
    pre = spec["preprocessing"]
    height, width = pre["resize"]
    x = resize_bilinear(rgb, height, width) * np.float32(pre["scale"])
    x = (x - np.asarray(pre["mean"], np.float32)) / np.asarray(pre["std"], np.float32)
    if spec["input"]["layout"] == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None], dtype=np.float32)


def normalized(value: float, norm: dict) -> float:
    return float(np.clip((value - norm["min"]) / (norm["max"] - norm["min"]), 0.0, 1.0))


def postprocess(outputs: dict[str, np.ndarray], spec: dict) -> AnomalyResult:
    """Outputs by role: score, label (the graph's verdict), anomaly_map, mask (the graph's per-pixel verdict)."""
    roles = {o["role"]: o["name"] for o in spec["outputs"]}
    anomaly_map = np.squeeze(outputs[roles["anomaly_map"]]).astype(np.float32) if "anomaly_map" in roles else None
    norm = spec["normalization"]
    threshold = float(spec["image_threshold"])
    label = bool(np.ravel(outputs[roles["label"]])[0]) if "label" in roles else None
    if "score" in roles:
        score = float(np.ravel(outputs[roles["score"]])[0])
    elif anomaly_map is not None:
        score = float(anomaly_map.max())
    else:  # a label alone: the score is the verdict
        score, threshold, norm = float(label), 0.5, {"min": 0.0, "max": 1.0}
    is_anomalous = label if label is not None else score > threshold
    pixel_threshold = float(spec.get("pixel_threshold", spec["image_threshold"]))
    if "mask" in roles:  # the graph's own mask decides which pixels are anomalous
        anomaly_map, pixel_threshold = np.squeeze(outputs[roles["mask"]]).astype(np.float32), 0.5
    confidence = normalized(score, norm)
    return AnomalyResult(
        score=confidence,
        threshold=normalized(threshold, norm),
        is_anomalous=bool(is_anomalous),
        confidence=confidence,
        anomaly_map=anomaly_map,
        pixel_threshold=pixel_threshold,
    )


class AnomalyDetector:
    """What the runner and the agent use: image in, AnomalyResult out."""

    def __init__(self, model: CompiledModel, spec: dict):
        self.model = model
        self.spec = spec

    @classmethod
    def load(cls, model_dir: Path, device=None) -> AnomalyDetector:
        model_dir = Path(model_dir)
        return cls(CompiledModel.load(model_dir, device), json.loads((model_dir / SPEC).read_text()))

    def detect(self, rgb: np.ndarray) -> AnomalyResult:
        return postprocess(self.model.run(preprocess(rgb, self.spec)), self.spec)
