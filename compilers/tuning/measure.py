"""Build and measure tuning candidates: in this process locally, or on a device through a TVM RPC tracker.

MetaSchedule's LocalBuilder starts fresh worker processes for every batch, and each one
imports ``tvm.s_tir.tensor_intrin`` (about a minute here), so its 30 s timeout kills every
build. Building in this process pays no import at all; measuring in this process shares
the thread pool the model will use, sized to the target's num-cores.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

# Each candidate is timed REPEAT times, one call each, the minimum kept: other processes on a shared machine only
# ever make a run slower. Before each call every argument but the first is flushed from the caches, as in the model,
# where the weights arrive cold and only the input comes hot from the previous operator; hot-cache timings picked
# schedules that were faster alone and slower in the model.
REPEAT = 10


@dataclass(frozen=True)
class RpcConfig:
    """Where a remote target measures: a TVM RPC tracker and the key its devices registered with."""

    tracker_host: str
    tracker_port: int
    device_key: str
    session_timeout_s: int = 120


def _error_text(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:500]


@derived_object
class InProcessBuilder(ms.builder.PyBuilder):
    """Compiles each candidate in this process. Local runs keep the module in memory, and a batch that repeats a
    candidate (a task's final round) compiles it once; RPC runs get a shared library per candidate."""

    def __init__(self, modules: dict, cross_compiler: str | None = None, export: bool = False):
        super().__init__()
        self.modules = modules
        self.cross_compiler = cross_compiler
        self.export = export
        self.counter = itertools.count()
        self.export_dir = tempfile.mkdtemp(prefix="packager-tuning-") if export else None

    def build(self, build_inputs):
        import tvm
        import tvm_ffi

        results, built = [], []  # built: (module, key) of this batch's in-memory builds
        for build_input in build_inputs:
            if not self.export:
                key = next((k for m, k in built if tvm_ffi.structural_equal(m, build_input.mod)), None)
                if key is not None:
                    results.append(ms.builder.BuilderResult(key, None))
                    continue
            try:
                executable = tvm.compile(build_input.mod, target=build_input.target)
            except Exception as exc:  # a candidate that fails to build is a result, not a crash
                results.append(ms.builder.BuilderResult(None, "build failed: " + _error_text(exc)))
                continue
            key = f"candidate-{next(self.counter)}"
            if self.export:
                path = str(Path(self.export_dir) / f"{key}.so")
                fcompile = None
                if self.cross_compiler:
                    from tvm.support import cc

                    fcompile = cc.cross_compiler(self.cross_compiler)
                executable.export_library(path, fcompile=fcompile)
                results.append(ms.builder.BuilderResult(path, None))
            else:
                self.modules[key] = executable.mod
                built.append((build_input.mod, key))
                results.append(ms.builder.BuilderResult(key, None))
        return results


def _arguments(args_info, device) -> list:
    import numpy as np
    import tvm

    rng = np.random.default_rng(0)
    args = []
    for info in args_info:
        kind, dtype, shape = info.as_json()
        if kind != "TENSOR":
            raise ValueError(f"cannot allocate a {kind} argument")
        shape = [int(d) for d in shape]
        data = rng.random(shape).astype(dtype) if "float" in dtype else np.zeros(shape, dtype)
        args.append(tvm.runtime.tensor(data, device))
    return args


@derived_object
class InProcessRunner(ms.runner.PyRunner):
    """Times a batch of built candidates here, interleaved: repeat r of every candidate runs before repeat r+1 of any,
    so a burst of load from another process lands on the whole batch rather than on one candidate."""

    def __init__(self, modules: dict):
        super().__init__()
        self.modules = modules

    def run(self, runner_inputs):
        import tvm
        from tvm.s_tir.meta_schedule.runner.local_runner import LocalRunnerFuture

        device = tvm.cpu()
        timers, errors = {}, {}
        for i, runner_input in enumerate(runner_inputs):
            module = self.modules.get(runner_input.artifact_path)
            if module is None:
                errors[i] = f"no built module {runner_input.artifact_path}"
                continue
            try:
                evaluator = module.time_evaluator(
                    "main", device, number=1, repeat=1, min_repeat_ms=0, f_preproc="cache_flush_cpu_non_first_arg"
                )
                timers[i] = (evaluator, _arguments(runner_input.args_info, device))
            except Exception as exc:
                errors[i] = "run failed: " + _error_text(exc)
        best = {}
        for _ in range(REPEAT):
            for i, (evaluator, args) in list(timers.items()):
                try:
                    best[i] = min(best.get(i, float("inf")), float(evaluator(*args).results[0]))
                except Exception as exc:
                    errors[i] = "run failed: " + _error_text(exc)
                    del timers[i]
        for runner_input in runner_inputs:
            self.modules.pop(runner_input.artifact_path, None)
        return [
            LocalRunnerFuture(error_message=errors[i]) if i in errors else LocalRunnerFuture(res=[best[i]])
            for i in range(len(runner_inputs))
        ]


def measurement(cross_compiler: str | None, rpc: RpcConfig | None):
    """(builder, runner) for a tuning run: both in this process, or building here and measuring over RPC."""
    if rpc is None:
        modules: dict = {}
        return InProcessBuilder(modules), InProcessRunner(modules)
    config = ms.runner.RPCConfig(
        tracker_host=rpc.tracker_host,
        tracker_port=rpc.tracker_port,
        tracker_key=rpc.device_key,
        session_priority=1,
        session_timeout_sec=rpc.session_timeout_s,
    )
    evaluator = ms.runner.EvaluatorConfig(number=1, repeat=REPEAT, min_repeat_ms=0, enable_cpu_cache_flush=True)
    return (
        InProcessBuilder({}, cross_compiler, export=True),
        ms.runner.RPCRunner(rpc_config=config, evaluator_config=evaluator, max_workers=1),
    )


def configure_threads(cores: int) -> None:
    """TVM sizes its thread pool once, on first use, from TVM_NUM_THREADS (default: half the CPUs on x86)."""
    os.environ.setdefault("TVM_NUM_THREADS", str(cores))
