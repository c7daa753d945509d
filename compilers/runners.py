"""One interface for everything that runs a model: load it, run it on an input, time it.

The build checks a compiled model against ONNX Runtime and times both through this interface, wherever the compiled
model runs: here with the edge runtime's own loader (TvmRunner), on a device over TVM RPC (packager/build/remote.py),
and ONNX Runtime itself (OnnxRuntimeRunner). Each runner is made by its own ``load``.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

from compilers.model import CompiledArtifact, ImportedModel
from packager.edge.model_runner import CompiledModel


@runtime_checkable
class Runner(Protocol):
    label: str  # where it runs, e.g. "host x86_64", "rpc 127.0.0.1:9190 (qemu-aarch64-static)", "onnxruntime"
    native: bool  # runs on this host's own cores, so its timings compare with ONNX Runtime's here
    emulated: bool  # runs under an emulator: its timings are not the device's

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Output name -> value, for one input."""

    def time(self, x: np.ndarray, warmup: int, runs: int, warmup_s: float | None = None) -> list[float]:
        """Seconds per run, measured where the model runs, after ``warmup`` untimed runs (fewer, at least one, once
        they have taken ``warmup_s``)."""


def wall_clock_runs(run: Callable[[], object], warmup: int, runs: int, warmup_s: float | None = None) -> list[float]:
    """Seconds per call of ``run``, by this process's clock, after ``warmup`` untimed calls: fewer (at least one) once
    they have taken ``warmup_s`` seconds, so a 0.6 s model is not warmed up for 3 s."""
    started = time.perf_counter()
    for _ in range(warmup):
        run()
        if warmup_s is not None and time.perf_counter() - started >= warmup_s:
            break
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return samples


class TvmRunner:
    """A compiled model on this host, loaded with the edge runtime's loader (the device's own code path)."""

    native = True
    emulated = False

    def __init__(self, model: CompiledModel):
        self.model = model
        self.label = f"host {platform.machine()}"

    @classmethod
    def load(cls, artifact: CompiledArtifact, runtime_only: bool = False) -> TvmRunner:
        """``runtime_only``: when this process has not imported TVM yet, load TVM's runtime library alone, as the Edge
        Agent does (0.5 s instead of 1.5 s for the compiler library). Only for a process that compiles nothing
        afterwards: TVM stays as it was first loaded."""
        if not runtime_only or "tvm" in sys.modules:
            return cls(CompiledModel.load(artifact.model_dir))
        before = os.environ.get("TVM_USE_RUNTIME_LIB")
        os.environ["TVM_USE_RUNTIME_LIB"] = "1"  # read by tvm.base when it loads its library, and only then
        try:
            runner = cls(CompiledModel.load(artifact.model_dir))
            runner.label += " (TVM runtime library)"
            return runner
        finally:
            if before is None:
                del os.environ["TVM_USE_RUNTIME_LIB"]
            else:
                os.environ["TVM_USE_RUNTIME_LIB"] = before

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return self.model.run(x)

    def time(self, x: np.ndarray, warmup: int, runs: int, warmup_s: float | None = None) -> list[float]:
        return wall_clock_runs(lambda: self.model.run(x), warmup, runs, warmup_s)


class OnnxRuntimeRunner:
    """The reference: the imported ONNX graph in ONNX Runtime on this host's CPU."""

    label = "onnxruntime"
    native = True
    emulated = False

    def __init__(self, session, input_name: str):
        self.session = session
        self.input_name = input_name
        self.output_names = [o.name for o in session.get_outputs()]

    @classmethod
    def load(cls, imported: ImportedModel, threads: int | None = None) -> OnnxRuntimeRunner:
        """``threads``: intra-op threads (one inter-op); None leaves ONNX Runtime's choice."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        session = ort.InferenceSession(imported.onnx_bytes, options, providers=["CPUExecutionProvider"])
        return cls(session, imported.spec.input.name)

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(self.output_names, {self.input_name: x})))

    def time(self, x: np.ndarray, warmup: int, runs: int, warmup_s: float | None = None) -> list[float]:
        feed = {self.input_name: x}
        return wall_clock_runs(lambda: self.session.run(None, feed), warmup, runs, warmup_s)
