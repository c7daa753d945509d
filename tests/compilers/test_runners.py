"""Every Runner (compilers/runners.py) loads, runs and times a model the same way; the local TVM runner and ONNX Runtime
agree on the same input. The RPC runner is checked against them in tests/targets/test_device_rpc_server.py."""

from __future__ import annotations

import numpy as np
import pytest

from compilers.frontends.intake import import_model
from compilers.model import CompileOptions
from compilers.runners import OnnxRuntimeRunner, Runner, TvmRunner
from compilers.tvm_compile import compile_model
from compilers.verify import random_input
from targets import host_target

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def compiled(tiny_model, tmp_path_factory):
    imported = import_model(*tiny_model)
    return imported, compile_model(imported, host_target(), CompileOptions(work_dir=tmp_path_factory.mktemp("compile")))


def test_the_local_tvm_runner_and_onnxruntime_are_runners_that_agree(compiled):
    imported, artifact = compiled
    tvm_runner, ort_runner = TvmRunner.load(artifact), OnnxRuntimeRunner.load(imported, threads=1)
    x = random_input(imported)
    outputs = {}
    for runner in (tvm_runner, ort_runner):
        assert isinstance(runner, Runner) and runner.native and not runner.emulated
        outputs[runner.label] = runner.run(x)
        seconds = runner.time(x, warmup=1, runs=3)
        assert len(seconds) == 3 and all(s > 0 for s in seconds)
    assert tvm_runner.label.startswith("host ") and ort_runner.label == "onnxruntime"
    tvm_out, ort_out = outputs[tvm_runner.label], outputs["onnxruntime"]
    assert list(tvm_out) == list(ort_out) == ["score", "anomaly_map"]
    for name in tvm_out:
        assert tvm_out[name].shape == ort_out[name].shape
        np.testing.assert_allclose(tvm_out[name], ort_out[name], rtol=1e-3, atol=1e-4)
