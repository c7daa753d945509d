"""The benchmark step: the compiled model and ONNX Runtime, timed side by side on the same input and thread count."""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from compilers.model import CompiledArtifact, ImportedModel
from compilers.runners import OnnxRuntimeRunner, Runner, wall_clock_runs
from compilers.verify import random_input


@dataclass(frozen=True)
class LatencyStats:
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput_per_s: float

    @classmethod
    def from_seconds(cls, samples: list[float]) -> LatencyStats:
        ms = np.asarray(samples) * 1e3
        return cls(
            runs=len(samples),
            p50_ms=float(np.percentile(ms, 50)),
            p90_ms=float(np.percentile(ms, 90)),
            p99_ms=float(np.percentile(ms, 99)),
            mean_ms=float(ms.mean()),
            throughput_per_s=float(1e3 / ms.mean()),
        )


@dataclass(frozen=True)
class BenchmarkReport:
    target: str
    device: str  # where the TVM numbers were measured, e.g. "host x86_64" or "rpc 127.0.0.1:9190"
    emulated: bool  # True when the TVM numbers come from an emulator: they are not device timings
    threads: int
    warmup: int  # untimed runs per engine before the timed ones, at most (BenchmarkOptions.warmup_s cuts them short)
    tvm: LatencyStats | None  # None when no device could run the compiled model (see not_measured)
    onnxruntime: LatencyStats | None  # measured on this host whenever TVM was timed; None when TVM was not
    ratio_tvm_to_ort: float | None  # p50 / p50; < 1 means TVM is faster. Only when both ran natively on this host
    input_shape: tuple[int, ...]
    not_measured: str | None = None  # why tvm is None, e.g. "not measured: no device"
    ratio_not_measured: str | None = None  # why ratio_tvm_to_ort is None, e.g. "not measured: TVM emulated"

    @property
    def ratio_text(self) -> str:
        return (
            f"{self.ratio_tvm_to_ort:.2f}x"
            if self.ratio_tvm_to_ort is not None
            else self.ratio_not_measured or NO_DEVICE
        )

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
    return LatencyStats.from_seconds(wall_clock_runs(run, warmup, runs))


NO_DEVICE = "not measured: no device"
EMULATED = "not measured: TVM ran emulated, ONNX Runtime natively"
ELSEWHERE = "not measured: TVM ran on {device}, ONNX Runtime on this host"


@dataclass(frozen=True)
class BenchmarkOptions:
    runs: int = 50
    warmup: int = 5  # untimed runs per engine before the timed ones; fewer once they take warmup_s
    warmup_s: float | None = 1.0  # a model that takes 0.6 s a run is warm after two (and the check ran it once)
    threads: int | None = None  # for TVM and ONNX Runtime alike; None: every core this process may use
    lock_path: Path | None = None  # timing_lock's file; None: default_lock_path()


def default_lock_path() -> Path:
    """One file per machine (its cores are what the lock shares), in the system's temporary directory."""
    return Path(tempfile.gettempdir()) / "packager-benchmark.lock"


@contextmanager
def timing_lock(path: Path | None = None, on_wait: Callable[[], None] = lambda: None):
    """Hold an exclusive lock on ``path`` while timing, so that builds timing on the same cores at once (a fleet's
    targets, team workers on one host) take turns instead of slowing each other's figures, and the speed gate.
    ``on_wait`` is called once when another build holds it."""
    path = path or default_lock_path()
    try:  # read-only: flock needs no write access, so any user can share one lock file
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError:  # not creatable here: time without it rather than fail the build
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def benchmark(
    artifact: CompiledArtifact,
    imported: ImportedModel,
    runner: Runner | None,
    options: BenchmarkOptions = BenchmarkOptions(),
    reference: OnnxRuntimeRunner | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> BenchmarkReport:
    """Time the compiled artifact through ``runner`` (here, or on a device) and ONNX Runtime here, on the same input.

    ``runner`` is None for a library nothing here can run (a cross target with no device): nothing is timed, and the
    report says why. ``reference``: an ONNX Runtime session already made with ``options.threads`` (the check's).
    Timings on this host's cores wait for any other build's timings on them (``timing_lock``).
    """
    threads = options.threads or default_threads()
    tvm_stats = ort_stats = ratio = None
    why = NO_DEVICE
    if runner is not None:
        set_tvm_threads(threads)
        x = random_input(imported, seed=1)
        reference = reference or OnnxRuntimeRunner.load(imported, threads=threads)
        with timing_lock(options.lock_path, lambda: progress("waiting for another build's timings on this host")):
            tvm_stats = LatencyStats.from_seconds(runner.time(x, options.warmup, options.runs, options.warmup_s))
            ort_stats = LatencyStats.from_seconds(reference.time(x, options.warmup, options.runs, options.warmup_s))
        # A ratio compares like with like: TVM and ONNX Runtime on this host's own cores. An emulator's or another
        # device's TVM timings against this host's ORT say nothing about the model, so those builds get no ratio.
        if runner.emulated:
            why = EMULATED
        elif not runner.native:
            why = ELSEWHERE.format(device=runner.label)
        else:
            ratio, why = tvm_stats.p50_ms / ort_stats.p50_ms, None
    return BenchmarkReport(
        target=artifact.target_name,
        device=runner.label if runner is not None else "none",
        emulated=runner is not None and runner.emulated,
        threads=threads,
        warmup=options.warmup,
        tvm=tvm_stats,
        onnxruntime=ort_stats,
        ratio_tvm_to_ort=ratio,
        input_shape=tuple(imported.input_shape),
        not_measured=None if runner is not None else NO_DEVICE,
        ratio_not_measured=why,
    )
