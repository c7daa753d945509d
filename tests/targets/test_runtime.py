"""What each target's device installs: requirements, the Install step's checks (run in bash against fake devices),
and the Greengrass manifests the bundle writes per target."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from compilers.model import CompiledArtifact
from packager.build.benchmark import NO_DEVICE, BenchmarkReport, LatencyStats
from packager.greengrass.bundle import ComponentIdentity, bundle
from targets import CompilerOptions, get_target
from targets.runtime import device_checks, install_script, pip_requirements

X86_NVIDIA_CUDA13 = CompilerOptions(gpu_code="sm_90", cuda_ver="13.0", trt_ver="10.13.2")


def test_requirements_are_the_pypi_wheels_only():
    for target in (get_target("LINUX/ARM64"), get_target("jetson_xavier")):
        assert pip_requirements(target) == [
            "apache-tvm==0.27.0.post1",
            "apache-tvm-ffi==0.1.14.post0",
            "numpy",
            "Pillow",
        ]


@pytest.mark.parametrize(
    "name,options",
    [
        ("LINUX/X86_64", None),
        ("LINUX/ARM64", None),
        ("jetson_xavier", None),
        ("LINUX/X86_64/NVIDIA", X86_NVIDIA_CUDA13),
    ],
)
def test_install_scripts_are_valid_shell_without_greengrass_lookalikes(name, options):
    script = install_script(get_target(name, options), "/r", "/v")
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    assert ":-" not in script  # ${VAR:-x} reads as the recipe variable {VAR:-x}
    assert "-m venv /v" in script and "-r /r/requirements.txt" in script


def test_cpu_targets_check_no_gpu():
    assert device_checks(get_target("LINUX/ARM64"), "/v") == []


def _fake_device(tmp_path: Path, cuda: str | None, trt: str | None, sidecar: bool) -> dict:
    """A venv whose python is this one, a CUDA home with an nvcc, a dpkg-query, a tvm package that says cuda exists."""
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to(sys.executable)
    tools = tmp_path / "tools"
    tools.mkdir()
    cuda_home = tmp_path / "cuda"
    (cuda_home / "bin").mkdir(parents=True)
    if cuda:
        (cuda_home / "bin" / "nvcc").write_text(
            f"#!/bin/sh\necho 'Cuda compilation tools, release {cuda}, V{cuda}.89'\n"
        )
        (cuda_home / "bin" / "nvcc").chmod(0o755)
    (tools / "dpkg-query").write_text(f"#!/bin/sh\n{'echo ' + trt if trt else 'exit 1'}\n")
    (tools / "dpkg-query").chmod(0o755)
    fake_tvm = tmp_path / "site" / "tvm"
    (fake_tvm / "lib").mkdir(parents=True)
    (fake_tvm / "__init__.py").write_text(
        "import os\nclass _D:\n    exist = os.path.exists(os.path.join(os.path.dirname(__file__), 'lib', 'libtvm_runtime_cuda.so'))\n"
        "def cuda(i):\n    return _D()\n"
    )
    root = tmp_path / "runtime-root"
    if sidecar:
        (root / f"cuda-{cuda}").mkdir(parents=True)
        (root / f"cuda-{cuda}" / "libtvm_runtime_cuda.so").write_bytes(b"built on the device")
    return {
        "PATH": f"{tools}:/usr/bin:/bin",
        "CUDA_HOME": str(cuda_home),
        "PYTHONPATH": str(tmp_path / "site"),
        "TVM_CUDA_RUNTIME_ROOT": str(root),
        "HOME": str(tmp_path),
    }


def _run_checks(target, tmp_path, env) -> subprocess.CompletedProcess:
    script = "set -e\n" + "\n".join(device_checks(target, str(tmp_path / "venv"))) + "\n"
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)


def test_jetson_install_takes_the_device_built_cuda_runtime(tmp_path):
    env = _fake_device(tmp_path, cuda="10.2", trt="7.1.3-1+cuda10.2", sidecar=True)
    done = _run_checks(get_target("jetson_xavier"), tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "tvm" / "lib" / "libtvm_runtime_cuda.so").read_bytes() == b"built on the device"


@pytest.mark.parametrize(
    "cuda,trt,sidecar,message",
    [
        (
            "10.2",
            "7.1.3-1+cuda10.2",
            False,
            "build it once on this device with targets/jetson/build_tvm_cuda_runtime.sh",
        ),
        ("10.0", "7.1.3-1+cuda10.0", True, "this device has CUDA 10.0; the model was compiled for cuda-ver 10.2"),
        ("10.2", "7.1.30-1", True, "built for trt-ver 7.1.3"),
        ("10.2", None, True, "TensorRT on this device is ''"),
        (None, "7.1.3-1", True, "no CUDA toolkit under"),
    ],
)
def test_jetson_install_refuses_the_wrong_device(tmp_path, cuda, trt, sidecar, message):
    env = _fake_device(tmp_path, cuda=cuda, trt=trt, sidecar=sidecar)
    done = _run_checks(get_target("jetson_xavier"), tmp_path, env)
    assert done.returncode != 0 and message in done.stderr


def test_a_cuda_runtime_that_does_not_load_is_named(tmp_path):
    """TVM skips a CUDA runtime that cannot load without a word; the Install step says what failed."""
    env = _fake_device(tmp_path, cuda="13.0", trt="10.13.2.6-1+cuda13.0", sidecar=False)
    done = _run_checks(get_target("LINUX/X86_64/NVIDIA", X86_NVIDIA_CUDA13), tmp_path, env)
    assert done.returncode == 1
    assert (
        "install: TVM cannot open CUDA device 0: OSError: " in done.stderr and "libtvm_runtime_cuda.so" in done.stderr
    )


def test_cuda13_target_keeps_the_wheels_cuda_runtime(tmp_path):
    env = _fake_device(tmp_path, cuda="13.0", trt="10.13.2.6-1+cuda13.0", sidecar=False)
    (tmp_path / "site" / "tvm" / "lib" / "libtvm_runtime_cuda.so").write_bytes(b"from the wheel")
    done = _run_checks(get_target("LINUX/X86_64/NVIDIA", X86_NVIDIA_CUDA13), tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "tvm" / "lib" / "libtvm_runtime_cuda.so").read_bytes() == b"from the wheel"


def _artifact(tmp_path: Path, target) -> CompiledArtifact:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for name in ("model.so", "params.bin", "spec.json"):
        (model_dir / name).write_bytes(b"x")
    (model_dir / "manifest.json").write_text(json.dumps({"device": target.device, "target": target.name}))
    return CompiledArtifact(
        model_dir=model_dir,
        target_name=target.name,
        device=target.device,
        library_path=model_dir / "model.so",
        params_path=model_dir / "params.bin",
        manifest_path=model_dir / "manifest.json",
        compile_seconds=0.0,
        tuning_trials=0,
        tuning_records_applied=0,
    )


def _report(target) -> BenchmarkReport:
    ort = LatencyStats.from_seconds([0.001, 0.002])
    return BenchmarkReport(
        target=target.name,
        device="none",
        emulated=False,
        threads=2,
        warmup=1,
        tvm=None,
        onnxruntime=ort,
        ratio_tvm_to_ort=None,
        input_shape=(1, 3, 8, 8),
        not_measured=NO_DEVICE,
    )


@pytest.mark.parametrize(
    "name,options,architecture",
    [
        ("LINUX/X86_64", None, "amd64"),
        ("LINUX/ARM64", None, "aarch64"),
        ("jetson_xavier", None, "aarch64"),
        ("LINUX/X86_64/NVIDIA", X86_NVIDIA_CUDA13, "amd64"),
        ("LINUX/ARM64/NVIDIA", CompilerOptions(gpu_code="sm_87", cuda_ver="11.4", trt_ver="8.5.2"), "aarch64"),
    ],
)
def test_recipe_manifest_platform_per_target(tmp_path, name, options, architecture):
    target = get_target(name, options)
    result = bundle(
        _artifact(tmp_path, target),
        _report(target),
        target,
        ComponentIdentity("com.acme.Model", "1.0.0"),
        tmp_path / "gg",
    )
    recipe = yaml.safe_load(result.recipe_path.read_text())
    assert recipe["Manifests"][0]["Platform"] == {"os": "linux", "architecture": architecture}
    install = "\n".join(
        yaml.safe_load(p.read_text())["Manifests"][0]["Lifecycle"].get("Install", {}).get("Script", "")
        for p in (tmp_path / "gg" / "recipes").glob("*.yaml")
    )
    assert "requirements.txt" in install
    assert ("trt-ver " + (options or CompilerOptions(trt_ver="7.1.3")).trt_ver in install) == (target.device == "cuda")
    assert ("build_tvm_cuda_runtime.sh" in install) == (name in ("jetson_xavier", "LINUX/ARM64/NVIDIA"))


def test_build_script_for_the_jetson_cuda_runtime_is_valid_shell():
    script = Path(__file__).resolve().parents[2] / "targets" / "jetson" / "build_tvm_cuda_runtime.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert os.access(script, os.X_OK)
