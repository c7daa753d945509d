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

    def time(self, x, warmup, runs, warmup_s=None):
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
    assert nothing.onnxruntime is None  # nothing to compare ONNX Runtime with: not timed


def test_timings_on_this_host_take_turns(tiny_model, tmp_path):
    """A second build's timings wait while another holds the host's timing lock (a fleet's targets run in parallel
    workers), and say so; they run once it is released."""
    import threading

    from compilers.frontends.intake import import_model
    from packager.build.benchmark import timing_lock

    imported = import_model(*tiny_model)
    lock = tmp_path / "benchmark.lock"
    said, done = [], threading.Event()

    def second_build():
        benchmark(
            _artifact(tmp_path),
            imported,
            FixedTimeRunner("host x86_64", native=True),
            BenchmarkOptions(runs=3, warmup=0, threads=1, lock_path=lock),
            progress=said.append,
        )
        done.set()

    with timing_lock(lock):
        worker = threading.Thread(target=second_build)
        worker.start()
        assert not done.wait(1.0), "timed while another build held the lock"
        assert said == ["waiting for another build's timings on this host"]
    worker.join(30)
    assert done.is_set()


def test_warm_up_stops_once_it_has_taken_its_budget_but_runs_at_least_once(monkeypatch):
    """A 0.6 s model is not warmed up five times (3 s per engine, per build): the warm-up ends after warmup_s; a fast
    model still gets every warm-up run, and a budget of zero still warms up once. The clock is a fake one that each
    call of the model moves on."""
    from compilers import runners

    now = [0.0]
    monkeypatch.setattr(runners.time, "perf_counter", lambda: now[0])
    calls = []

    def model(seconds: float):
        def run():
            calls.append(1)
            now[0] += seconds

        return run

    assert runners.wall_clock_runs(model(0.6), warmup=5, runs=2, warmup_s=1.0) == pytest.approx([0.6, 0.6])
    assert len(calls) == 2 + 2  # warm after 1.2 s
    calls.clear()
    runners.wall_clock_runs(model(0.03), warmup=5, runs=2, warmup_s=1.0)
    assert len(calls) == 5 + 2
    calls.clear()
    runners.wall_clock_runs(model(0.6), warmup=5, runs=1, warmup_s=0.0)
    assert len(calls) == 1 + 1
    calls.clear()
    runners.wall_clock_runs(model(0.6), warmup=5, runs=1)  # no budget: every warm-up run
    assert len(calls) == 5 + 1
