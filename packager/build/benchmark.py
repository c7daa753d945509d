"""The benchmark step: the compiled model and ONNX Runtime, timed side by side on the same input and thread count."""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from compilers.model import CompiledArtifact, ImportedModel


@dataclass(frozen=True)
class LatencyStats:
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput_per_s: float

    @classmethod
    def from_seconds(cls, samples: list[float]) -> "LatencyStats":
        ms = np.asarray(samples) * 1e3
        return cls(runs=len(samples), p50_ms=float(np.percentile(ms, 50)), p90_ms=float(np.percentile(ms, 90)),
                   p99_ms=float(np.percentile(ms, 99)), mean_ms=float(ms.mean()), throughput_per_s=float(1e3 / ms.mean()))


@dataclass(frozen=True)
class BenchmarkReport:
    target: str
    device: str  # where the TVM numbers were measured, e.g. "host x86_64" or "rpc 127.0.0.1:9190"
    emulated: bool  # True when the TVM numbers come from an emulator: they are not device timings
    threads: int
    warmup: int
    tvm: LatencyStats | None  # None when no device could run the compiled model (see not_measured)
    onnxruntime: LatencyStats  # always measured on this host
    ratio_tvm_to_ort: float | None  # p50 / p50; < 1 means TVM is faster. Only when both ran natively on this host
    input_shape: tuple[int, ...]
    not_measured: str | None = None  # why tvm is None, e.g. "not measured: no device"
    ratio_not_measured: str | None = None  # why ratio_tvm_to_ort is None, e.g. "not measured: TVM emulated"

    @property
    def ratio_text(self) -> str:
        return f"{self.ratio_tvm_to_ort:.2f}x" if self.ratio_tvm_to_ort is not None else self.ratio_not_measured or NO_DEVICE

    def to_json(self) -> str:
        doc = asdict(self)
        doc["input_shape"] = list(self.input_shape)
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def set_tvm_threads(threads: int) -> None:
    """TVM reads TVM_NUM_THREADS when its pool first starts; its own default here is one thread."""
    os.environ["TVM_NUM_THREADS"] = str(threads)


def time_callable(run: Callable[[], object], warmup: int, runs: int) -> LatencyStats:
    for _ in range(warmup):
        run()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return LatencyStats.from_seconds(samples)


# (input, warmup, runs) -> seconds per run, measured where the model runs (e.g. TVM's time evaluator on a device).
DeviceTimer = Callable[[np.ndarray, int, int], list[float]]
NO_DEVICE = "not measured: no device"
EMULATED = "not measured: TVM ran emulated, ONNX Runtime natively"
ELSEWHERE = "not measured: TVM ran on {device}, ONNX Runtime on this host"


def benchmark(artifact: CompiledArtifact, imported: ImportedModel, runs: int = 50, warmup: int = 5,
              threads: int | None = None, tvm_runner: Callable[[np.ndarray], object] | None = None,
              device_label: str | None = None, emulated: bool = False, tvm_timer: DeviceTimer | None = None,
              measure_tvm: bool = True) -> BenchmarkReport:
    """Time the compiled artifact (here, through ``tvm_runner``, or on a device with ``tvm_timer``) and ONNX Runtime here.

    ``measure_tvm=False`` is for a library nothing here can run (a cross target with no device): only ONNX Runtime
    is timed, and the report says why TVM was not.
    """
    from compilers.verify import onnxruntime_session, random_input
    from packager.edge.model_runner import CompiledModel

    threads = threads or default_threads()
    set_tvm_threads(threads)
    x = random_input(imported, seed=1)
    tvm_stats = None
    if not measure_tvm:
        device_label = device_label or "none"
    elif tvm_timer is not None:
        tvm_stats = LatencyStats.from_seconds(tvm_timer(x, warmup, runs))
    else:
        if tvm_runner is None:
            compiled = CompiledModel.load(artifact.model_dir)
            tvm_runner = compiled.run
            device_label = device_label or f"host {platform.machine()}"
        tvm_stats = time_callable(lambda: tvm_runner(x), warmup, runs)
    session = onnxruntime_session(imported, threads=threads)
    feed = {imported.spec.input.name: x}
    ort_stats = time_callable(lambda: session.run(None, feed), warmup, runs)
    # A ratio compares like with like: TVM and ONNX Runtime on this host's own cores. An emulator's or another
    # device's TVM timings against this host's ORT say nothing about the model, so those builds get no ratio.
    if tvm_stats is None:
        ratio, why = None, NO_DEVICE
    elif emulated:
        ratio, why = None, EMULATED
    elif tvm_timer is not None:
        ratio, why = None, ELSEWHERE.format(device=device_label or "a device")
    else:
        ratio, why = tvm_stats.p50_ms / ort_stats.p50_ms, None
    return BenchmarkReport(
        target=artifact.target_name, device=device_label or "unknown", emulated=emulated, threads=threads, warmup=warmup,
        tvm=tvm_stats, onnxruntime=ort_stats, ratio_tvm_to_ort=ratio, input_shape=tuple(imported.input_shape),
        not_measured=None if tvm_stats else NO_DEVICE, ratio_not_measured=why,
    )
