"""The benchmark step: Runners timed beside ONNX Runtime, and a ratio only where both ran natively on this host."""

from __future__ import annotations

import pytest

from compilers.model import CompiledArtifact
from compilers.runners import Runner
from packager.build.benchmark import EMULATED, NO_DEVICE, BenchmarkOptions, benchmark


class FixedTimeRunner:
    """A device that takes 80 ms a run, like qemu's: only its timings matter to the benchmark's verdict."""

    def __init__(self, label: str, native: bool = False, emulated: bool = False):
        self.label, self.native, self.emulated = label, native, emulated

    def run(self, x):
        raise AssertionError("the benchmark only times the runner")

    def time(self, x, warmup, runs):
        return [0.08] * runs


def _artifact(tmp_path) -> CompiledArtifact:
    return CompiledArtifact(
        model_dir=tmp_path,
        target_name="LINUX/ARM64",
        device="cpu",
        library_path=tmp_path / "x",
        params_path=tmp_path / "y",
        manifest_path=tmp_path / "z",
        compile_seconds=0.0,
        tuning_trials=0,
        tuning_records_applied=0,
    )


def test_emulated_and_remote_timings_give_no_ratio(tiny_model, tmp_path):
    """TVM timed under qemu (or on another device) against ONNX Runtime here: the report keeps the timings, not a ratio."""
    from compilers.frontends.intake import import_model

    imported = import_model(*tiny_model)
    artifact = _artifact(tmp_path)
    qemu = FixedTimeRunner("rpc 127.0.0.1:9190 (qemu)", emulated=True)
    assert isinstance(qemu, Runner)
    emulated = benchmark(artifact, imported, qemu, BenchmarkOptions(runs=3))
    assert emulated.tvm.p50_ms == pytest.approx(80.0) and emulated.ratio_tvm_to_ort is None
    assert emulated.ratio_text == EMULATED == "not measured: TVM ran emulated, ONNX Runtime natively"
    assert emulated.emulated and emulated.device == "rpc 127.0.0.1:9190 (qemu)"
    remote = benchmark(artifact, imported, FixedTimeRunner("rpc jetson:9090"), BenchmarkOptions(runs=3))
    assert (
        remote.ratio_tvm_to_ort is None
        and remote.ratio_text == "not measured: TVM ran on rpc jetson:9090, ONNX Runtime on this host"
    )


def test_a_native_runner_gets_a_ratio_and_no_runner_gets_none(tiny_model, tmp_path):
    from compilers.frontends.intake import import_model

    imported = import_model(*tiny_model)
    here = benchmark(
        _artifact(tmp_path),
        imported,
        FixedTimeRunner("host x86_64", native=True),
        BenchmarkOptions(runs=3, warmup=1, threads=1),
    )
    assert here.ratio_tvm_to_ort == pytest.approx(80.0 / here.onnxruntime.p50_ms) and here.ratio_not_measured is None
    assert here.threads == 1 and here.warmup == 1 and here.onnxruntime.runs == 3 and not here.emulated
    nothing = benchmark(_artifact(tmp_path), imported, None, BenchmarkOptions(runs=3))
    assert nothing.tvm is None and nothing.device == "none" and nothing.not_measured == nothing.ratio_text == NO_DEVICE
    assert nothing.onnxruntime.runs == 3
