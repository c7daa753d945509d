"""ARM64 output proven to run: the emulated device (Debian arm64 Python + the PyPI TVM wheels under qemu-aarch64-static)
serves TVM RPC on loopback, directly and through a real TVM tracker, and the build checks its outputs against ORT here."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from compilers.frontends.intake import import_model
from compilers.model import CompileOptions
from compilers.runners import Runner
from compilers.tvm_compile import compile_model
from compilers.verify import check_against_onnxruntime
from packager.build.remote import RemoteDevice, open_device
from packager.errors import AccuracyMismatchError, CompilationError
from targets import get_target, host_target
from targets.emulator import PREPARE_SCRIPT, start_server, start_tracker
from tests.conftest import with_broken_weights

pytestmark = pytest.mark.slow
KEY = "arm64-emulated-test"


@pytest.fixture(scope="module")
def sysroot():
    """The prep script is idempotent: a no-op when CI's setup already ran it."""
    done = subprocess.run(["bash", str(PREPARE_SCRIPT)], capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.fixture(scope="module")
def server(sysroot, tmp_path_factory):
    started = time.perf_counter()
    device = start_server(log_path=tmp_path_factory.mktemp("rpc") / "server.log")
    print(f"emulated server ready in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    yield device
    device.stop()


@pytest.fixture(scope="module")
def tracked(sysroot, tmp_path_factory):
    logs = tmp_path_factory.mktemp("rpc-tracked")
    tracker = start_tracker(log_path=logs / "tracker.log")
    device = start_server(tracker=("127.0.0.1", tracker.port), key=KEY, log_path=logs / "server.log")
    yield tracker
    device.stop()
    tracker.stop()


def _build(tiny_model, out: Path, *device_flags: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "packager",
        "build",
        "--model",
        str(tiny_model[0]),
        "--model-spec",
        str(tiny_model[1]),
        "--target-platform",
        "LINUX/ARM64",
        "--benchmark-runs",
        "5",
        "--output",
        str(out),
        *device_flags,
    ]
    env = {**os.environ, "PACKAGER_HOME": str(out.parent / "packager-home")}  # build registers and runs a job there
    return subprocess.run(
        command, capture_output=True, text=True, timeout=900, cwd=Path(__file__).resolve().parents[2], env=env
    )


def _check_bundle(out: Path, label: str):
    recipe = yaml.safe_load(next((out / "recipes").glob("com.example.AnomalyDetector-*.yaml")).read_text())
    assert recipe["Manifests"][0]["Platform"] == {"os": "linux", "architecture": "aarch64"}
    import zipfile

    artifact = next((out / "artifacts" / "com.example.AnomalyDetector").rglob("model.zip"))
    with zipfile.ZipFile(artifact) as archive:
        assert "benchmark.json" not in archive.namelist()
    report = json.loads((artifact.parent / "benchmark.json").read_text())
    assert report["emulated"] is True and label in report["device"] and "qemu-aarch64-static" in report["device"]
    assert report["tvm"]["runs"] == 5 and report["tvm"]["p50_ms"] > 0 and report["not_measured"] is None
    assert report["ratio_tvm_to_ort"] is None and report["ratio_not_measured"].startswith(
        "not measured: TVM ran emulated"
    )


def test_build_for_arm64_runs_and_checks_on_the_emulated_device(server, tiny_model, tmp_path):
    started = time.perf_counter()
    done = _build(tiny_model, tmp_path / "gg", "--device-rpc", f"127.0.0.1:{server.port}")
    wall = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-3000:]
    assert (
        f"checking outputs on rpc 127.0.0.1:{server.port} (qemu-aarch64-static) against ONNX Runtime here"
        in done.stderr
    )
    assert "LINUX/ARM64 (rpc 127.0.0.1:" in done.stdout and "emulated: not device timings" in done.stdout
    # qemu's TVM timings against native ONNX Runtime are no ratio (it once printed 84.37x)
    assert "TVM/ORT:     not measured: TVM ran emulated, ONNX Runtime natively" in done.stdout
    _check_bundle(tmp_path / "gg", f"rpc 127.0.0.1:{server.port}")
    print(
        f"emulated ARM64 round trip (compile, upload, ORT check, 5+5 timed runs, bundle): {wall:.1f} s", file=sys.stderr
    )


def test_build_through_a_tracker_by_key(tracked, tiny_model, tmp_path):
    done = _build(tiny_model, tmp_path / "gg", "--rpc-tracker", f"127.0.0.1:{tracked.port}", "--rpc-key", KEY)
    assert done.returncode == 0, done.stderr[-3000:]
    _check_bundle(tmp_path / "gg", f"rpc tracker 127.0.0.1:{tracked.port} key {KEY}")


@pytest.fixture(scope="module")
def arm64_compiled(tiny_model, tmp_path_factory):
    imported = import_model(*tiny_model)
    options = CompileOptions(work_dir=tmp_path_factory.mktemp("arm64"))
    return imported, options, compile_model(imported, get_target("LINUX/ARM64"), options)


def test_device_outputs_match_onnxruntime_and_a_mismatch_fails(server, arm64_compiled, tmp_path):
    """The comparison is real: the same library with corrupted weights must fail, naming the output and the device."""
    imported, options, artifact = arm64_compiled
    broken = with_broken_weights(artifact, tmp_path / "model")
    with open_device(RemoteDevice("127.0.0.1", server.port)) as device:
        assert device.emulator == "qemu-aarch64-static"
        runner = device.load(artifact)
        assert isinstance(runner, Runner) and runner.emulated and not runner.native and runner.label == device.label
        errors = check_against_onnxruntime(runner, imported, options)
        del runner
        assert set(errors) == {"score", "anomaly_map"} and max(errors.values()) <= 1e-4
        with pytest.raises(AccuracyMismatchError, match=r"on rpc 127\.0\.0\.1:\d+ .*output '(score|anomaly_map)'"):
            check_against_onnxruntime(device.load(broken), imported, options)


def test_an_x86_library_does_not_load_on_the_arm64_device(server, tiny_model, tmp_path):
    """Proves the device really is aarch64: a host-built library is refused by its loader."""
    imported = import_model(*tiny_model)
    host_artifact = compile_model(imported, host_target(), CompileOptions(work_dir=tmp_path))
    with open_device(RemoteDevice("127.0.0.1", server.port)) as device:
        with pytest.raises(CompilationError, match="could not load model.so built for LINUX/X86_64"):
            device.load(host_artifact)
