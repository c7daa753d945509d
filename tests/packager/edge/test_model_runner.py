"""The runtime's bilinear resize, against PIL (upscaling) and against the formula itself (downscaling); loading a CUDA model."""

from __future__ import annotations

import ctypes
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from packager.edge.model_runner import CompiledModel, resize_bilinear

REPO = Path(__file__).resolve().parents[3]


def run_fresh_python(code: str) -> None:
    """Run ``code`` in a new interpreter at the repository root, where no test has imported anything yet."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("source, size", [((16, 24), (64, 80)), ((64, 64), (224, 224)), ((5, 7), (64, 65))])
def test_upscaling_matches_pil(source, size):
    scores = np.random.default_rng(0).random(source, dtype=np.float32)
    reference = np.asarray(Image.fromarray(scores, mode="F").resize((size[1], size[0]), Image.BILINEAR))
    np.testing.assert_allclose(resize_bilinear(scores, *size), reference, atol=1e-5)


def _reference(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Each output pixel from its four neighbours, one pixel at a time."""
    src_h, src_w = image.shape[:2]
    out = np.empty((height, width) + image.shape[2:], np.float64)
    for i in range(height):
        y = min(max((i + 0.5) * src_h / height - 0.5, 0), src_h - 1)
        y0, wy = int(np.floor(y)), y - np.floor(y)
        for j in range(width):
            x = min(max((j + 0.5) * src_w / width - 0.5, 0), src_w - 1)
            x0, wx = int(np.floor(x)), x - np.floor(x)
            y1, x1 = min(y0 + 1, src_h - 1), min(x0 + 1, src_w - 1)
            out[i, j] = (1 - wy) * ((1 - wx) * image[y0, x0] + wx * image[y0, x1]) + wy * (
                (1 - wx) * image[y1, x0] + wx * image[y1, x1]
            )
    return out


@pytest.mark.parametrize("source, size", [((224, 224, 3), (32, 32)), ((100, 120, 3), (24, 40)), ((30, 20), (30, 20))])
def test_downscaling_and_identity_follow_the_formula(source, size):
    image = np.random.default_rng(1).integers(0, 256, source, dtype=np.uint8)
    result = resize_bilinear(image, *size)
    assert result.dtype == np.float32 and result.shape == size + source[2:]
    np.testing.assert_allclose(result, _reference(image.astype(np.float64), *size), atol=1e-3)


def test_a_cuda_model_where_tvm_cuda_runtime_cannot_load_names_the_missing_library(tmp_path):
    """TVM skips its CUDA runtime silently when it cannot load, and then fails with 'a loader ... is not registered'."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        pass
    else:
        pytest.skip("this machine has the NVIDIA driver's libcuda.so.1, so TVM's CUDA runtime loads")
    (tmp_path / "manifest.json").write_text(
        json.dumps({"device": "cuda", "entry": "main", "params": [], "outputs": ["score"]})
    )
    with pytest.raises(
        RuntimeError,
        match=r"runs on CUDA, but TVM's CUDA runtime \(.*libtvm_runtime_cuda\.so\) did not load: "
        r"libcuda(rt)?\.so\.1?3?: cannot open",
    ):
        CompiledModel.load(tmp_path)


def test_tvm_is_imported_without_pytorch_which_stays_importable():
    """tvm_ffi imports torch eagerly (1.7 s of loading a compiled model); import_tvm() keeps it out, and a later
    `import torch` still works."""

    code = (
        "import sys\n"
        "from packager.edge.model_runner import import_tvm\n"
        "import_tvm()\n"
        "assert 'tvm' in sys.modules and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)\n"
        "import tvm.runtime, numpy as np\n"
        "assert tvm.runtime.tensor(np.ones(2, 'float32')).numpy().sum() == 2\n"
        "import torch\n"
        "assert torch.ones(2).sum().item() == 2\n"
    )
    run_fresh_python(code)


def test_a_cpu_model_runs_without_the_tvm_package_and_as_the_package_runs_it(tiny_model, tmp_path):
    """The agent loads a CPU model through tvm_ffi and TVM's runtime library alone (the tvm package imports its IR,
    targets and RPC: 38 MB of resident memory); the outputs are the package's, no run's output aliases the next, and
    an input off TVM's alignment is copied (read in place, a kernel's aligned vector load of it crashes)."""

    import tvm.runtime

    from compilers.frontends.intake import import_model
    from compilers.model import CompileOptions
    from compilers.tvm_compile import compile_model
    from targets import host_target

    artifact = compile_model(import_model(*tiny_model), host_target(), CompileOptions(work_dir=tmp_path / "work"))
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    code = (
        "import sys, numpy as np\n"
        "from packager.edge.model_runner import CompiledModel, num_threads\n"
        f"model = CompiledModel.load({str(artifact.model_dir)!r})\n"
        f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
        "first, second = model.run(x), model.run(x * 0)\n"
        "raw = np.empty(x.nbytes + 4, np.uint8)\n"  # an input 4 bytes off any vector boundary: copied, never read in place
        "shifted = raw[4:].view(np.float32).reshape(x.shape)\n"
        "shifted[...] = x\n"
        "assert shifted.ctypes.data % 32 != 0\n"
        "assert all(np.array_equal(v, first[k]) for k, v in model.run(shifted).items())\n"
        "assert 'tvm' not in sys.modules and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'tvm' in m)\n"
        "assert num_threads() >= 1\n"
        f"np.savez({str(tmp_path / 'out.npz')!r}, **{{'first/' + k: v for k, v in first.items()}}, "
        "**{'second/' + k: v for k, v in second.items()})\n"
    )
    run_fresh_python(code)
    outputs = np.load(tmp_path / "out.npz")
    package = CompiledModel.load(artifact.model_dir, tvm.runtime.cpu(0))
    for name, value in package.run(x).items():
        np.testing.assert_array_equal(outputs[f"first/{name}"], value)
    for name, value in package.run(x * 0).items():
        np.testing.assert_array_equal(outputs[f"second/{name}"], value)


def test_two_threads_loading_the_runtime_at_once_both_get_it():
    """The agent preloads the runtime on a thread while a model that was running starts on its own: the second caller
    must not dlopen TVM's runtime while the first is still loading libtvm_ffi.so, which it needs (it found the
    half-imported tvm_ffi's libinfo and failed with "libtvm_ffi.so: cannot open shared object file"). The window is
    widened here by slowing the first load of libtvm_ffi.so."""

    code = (
        "import ctypes, threading, time\n"
        "real = ctypes.CDLL.__init__\n"
        "def slow(self, name, *args, **kwargs):\n"
        "    if str(name).endswith('libtvm_ffi.so'):\n"
        "        time.sleep(0.5)\n"
        "    real(self, name, *args, **kwargs)\n"
        "ctypes.CDLL.__init__ = slow\n"
        "from packager.edge.model_runner import load_runtime, num_threads\n"
        "errors = []\n"
        "def load():\n"
        "    try:\n"
        "        load_runtime()\n"
        "    except Exception as error:\n"
        "        errors.append(repr(error))\n"
        "first = threading.Thread(target=load)\n"
        "first.start()\n"
        "time.sleep(0.2)\n"
        "load()\n"
        "first.join()\n"
        "assert not errors, errors\n"
        "assert num_threads() >= 1\n"
    )
    run_fresh_python(code)
