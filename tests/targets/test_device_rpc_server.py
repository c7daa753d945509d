"""targets/jetson/start_rpc_server.sh, the device's RPC server for `build --device-rpc`, started here on the host.

This machine has no NVIDIA driver, so the launcher must fall back to the CPU, say why, and still serve; and a CUDA
library sent to it must fail with the cause and the fix, not with TVM's bare "loader ... is not registered".
The CUDA branch ran on an NVIDIA H200 (docs/targets.md); it cannot run here.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from compilers.frontends.intake import import_model
from compilers.model import CompileOptions
from compilers.runners import OnnxRuntimeRunner, Runner, TvmRunner
from compilers.tvm_compile import compile_model
from compilers.verify import check_against_onnxruntime, random_input
from packager.build.benchmark import BenchmarkOptions, benchmark
from packager.build.remote import RemoteDevice, open_device
from packager.errors import CompilationError
from targets import CompilerOptions, get_target, host_target
from targets.emulator import free_port

LAUNCHER = Path(__file__).resolve().parents[2] / "targets" / "jetson" / "start_rpc_server.sh"


def _cuda_driver_here() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    if _cuda_driver_here():
        pytest.skip(
            "this machine has an NVIDIA driver: the launcher takes its CUDA branch, which this test does not cover"
        )
    port, log = free_port(), tmp_path_factory.mktemp("rpc-launcher") / "server.log"
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("TVM_USE_RUNTIME_LIB", None)  # the launcher must set it itself
    with open(log, "wb") as out:
        server = subprocess.Popen(
            ["bash", str(LAUNCHER), "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while f"bind to 127.0.0.1:{port}" not in log.read_text(errors="replace"):
            assert server.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.2)
        yield port, log
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.mark.slow
def test_without_a_driver_it_serves_the_cpu_and_says_why(launched, tiny_model, tmp_path):
    port, log = launched
    assert "start_rpc_server: serving the CPU only; TVM's CUDA runtime does not load here: libcuda" in log.read_text()
    imported = import_model(*tiny_model)
    options = CompileOptions(work_dir=tmp_path)
    artifact = compile_model(imported, host_target(), options)
    with open_device(RemoteDevice("127.0.0.1", port)) as device:
        errors = check_against_onnxruntime(device.load(artifact), imported, options)
    assert set(errors) == {"score", "anomaly_map"} and max(errors.values()) <= 1e-4


@pytest.mark.slow
def test_a_cuda_library_on_a_server_without_tvm_cuda_runtime_names_the_fix(launched, tiny_model, tmp_path):
    port, _ = launched
    target = get_target("LINUX/X86_64/NVIDIA", CompilerOptions(gpu_code="sm_75", cuda_ver="10.2", trt_ver="8.6.1"))
    artifact = compile_model(import_model(*tiny_model), target, CompileOptions(work_dir=tmp_path))
    with open_device(RemoteDevice("127.0.0.1", port)) as device:
        with pytest.raises(
            CompilationError,
            match=r"could not load model\.so built for LINUX/X86_64/NVIDIA: .*loader.*; "
            r"its RPC server has not loaded TVM's CUDA runtime .*start_rpc_server\.sh",
        ):
            device.load(artifact)


@pytest.mark.slow
def test_the_rpc_runner_is_a_runner_that_agrees_with_the_local_one_and_onnxruntime(launched, tiny_model, tmp_path):
    """One library, three runners: over RPC, here through the edge loader, and ONNX Runtime; one interface, one answer."""
    port, _ = launched
    imported = import_model(*tiny_model)
    artifact = compile_model(imported, host_target(), CompileOptions(work_dir=tmp_path))
    x = random_input(imported)
    local, reference = TvmRunner.load(artifact).run(x), OnnxRuntimeRunner.load(imported).run(x)
    with open_device(RemoteDevice("127.0.0.1", port)) as device:
        remote = device.load(artifact)
        assert isinstance(remote, Runner) and not remote.native and not remote.emulated
        assert remote.label == f"rpc 127.0.0.1:{port}"
        got = remote.run(x)
        seconds = remote.time(x, warmup=1, runs=3)
        report = benchmark(artifact, imported, remote, BenchmarkOptions(runs=3))
        del remote
    assert list(got) == list(local) == list(reference) == ["score", "anomaly_map"]
    for name in got:
        np.testing.assert_allclose(got[name], local[name], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[name], reference[name], rtol=1e-3, atol=1e-4)
    assert len(seconds) == 3 and all(s > 0 for s in seconds)
    assert report.tvm.runs == 3 and report.device == f"rpc 127.0.0.1:{port}" and report.ratio_tvm_to_ort is None
    assert report.ratio_not_measured == f"not measured: TVM ran on rpc 127.0.0.1:{port}, ONNX Runtime on this host"
