"""The engines the suite compares, each reduced to a call that takes a numpy image and returns numpy outputs.

All of them run in this process with the same thread count. Latency is sampled in rounds:
each round runs every engine for a few calls, in a rotating order, so load from other
processes on a shared machine falls on all engines alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Engine:
    name: str  # "ort" | "openvino" | "torch" | "tvm_default" | "tvm_tuned"
    run: Callable[[np.ndarray], list[np.ndarray]]
    prepare_s: float = 0.0  # session creation / compile time
    tuning_s: float = 0.0
    trials: int = 0
    notes: dict = field(default_factory=dict)
    samples_ms: list[float] = field(default_factory=list)


def ort_engine(onnx_bytes: bytes, input_name: str, threads: int) -> Engine:
    import onnxruntime as ort

    started = time.perf_counter()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    return Engine(
        "ort",
        lambda x: session.run(None, {input_name: x}),
        time.perf_counter() - started,
        notes={
            "version": ort.__version__,
            "graph_optimization": "ORT_ENABLE_ALL",
            "isa": f"MLAS dispatches at run time to the best the CPU has: {host_isa()}",
        },
    )


def openvino_engine(onnx_path, threads: int) -> Engine:
    """OpenVINO's CPU plugin as anomalib deploys with it: latency hint, f32 inference, the same thread count."""
    import openvino as ov

    started = time.perf_counter()
    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(str(onnx_path)),
        "CPU",
        {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"},
    )
    request = compiled.create_infer_request()

    def run(x):
        request.infer({0: x})
        return [request.get_output_tensor(i).data.copy() for i in range(len(compiled.outputs))]

    return Engine(
        "openvino",
        run,
        time.perf_counter() - started,
        notes={"version": ov.get_version(), "hint": "LATENCY", "precision": "f32", "isa": openvino_isa(compiled)},
    )


def openvino_isa(compiled) -> str:
    """The kernels OpenVINO picked, by the ISA in their primitive type (e.g. brgconv_avx512, jit_avx2)."""
    kinds = {}
    for node in compiled.get_runtime_model().get_ops():
        info = node.get_rt_info()
        primitive = info["primitiveType"].astype(str) if "primitiveType" in list(info.keys()) else ""
        for isa in ("avx512_core_amx", "avx512_core_vnni", "avx512", "avx2_vnni", "avx2", "sse41", "ref"):
            if isa in primitive:
                kinds[isa] = kinds.get(isa, 0) + 1
                break
    return ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])) or "unknown"


def host_isa() -> str:
    """The widest x86 vector ISA this CPU reports (or the machine name elsewhere)."""
    import platform
    from pathlib import Path

    try:
        flags = next(
            line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
        ).split()
    except (OSError, StopIteration):
        return platform.machine()
    for flag, name in (("amx_tile", "AVX-512 + AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2"), ("sse4_2", "SSE4.2")):
        if flag in flags:
            return name
    return platform.machine()


def torch_engine(module, threads: int) -> Engine:
    import torch

    torch.set_num_threads(threads)

    def run(x):
        with torch.inference_mode():
            return [t.numpy() for t in module(torch.from_numpy(x))]

    return Engine(
        "torch",
        run,
        0.0,
        notes={
            "version": torch.__version__,
            "mode": "eager, inference_mode",
            "isa": f"ATen CPU capability {torch.backends.cpu.get_cpu_capability()}",
        },
    )


def relax_module(onnx_bytes: bytes, target):
    """ONNX -> Relax with weights as parameters, prepacked for a CPU target, exactly as compile does it."""
    import tvm

    from compilers.prepack import prepack_weights
    from compilers.tvm_compile import onnx_to_relax

    mod, named = prepack_weights(*onnx_to_relax(onnx_bytes), tvm.target.Target(target.tvm_target))
    return mod, [value.numpy() for _, value in named]


def tvm_engine(name: str, mod, params: list[np.ndarray], target, database=None) -> Engine:
    import tvm
    from tvm import relax

    from compilers.schedules.pipeline import relax_pipeline

    started = time.perf_counter()
    pipeline = relax_pipeline(target, database)
    executable = tvm.compile(mod, target=tvm.target.Target(target.tvm_target), relax_pipeline=pipeline)
    vm = relax.VirtualMachine(executable, tvm.cpu())
    compile_s = time.perf_counter() - started
    device_params = [tvm.runtime.tensor(p) for p in params]
    main = vm["main"]

    def run(x):
        out = main(tvm.runtime.tensor(x), *device_params)
        return [out.numpy()] if isinstance(out, tvm.runtime.Tensor) else [o.numpy() for o in out]

    return Engine(
        name,
        run,
        compile_s,
        notes={
            "isa": f"TVM target {target.tvm_target}",
            "records_applied": pipeline.records_applied,
            "default_scheduled": pipeline.default_scheduled,
            "unscheduled": list(pipeline.unscheduled),
        },
    )


def max_abs_errors(engine: Engine, reference: list[np.ndarray], x: np.ndarray) -> list[float]:
    return [
        float(np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64)).max())
        for got, want in zip(engine.run(x), reference)
    ]


# Every engine's idle workers spin for a while before they sleep (TVM, ORT and OpenMP alike); on a machine with as many
# cores as threads, a spinning neighbour halves the next engine's speed, so each block starts after a pause. TVM's pool
# spins longest: measured here, ONNX Runtime right after TVM ran 2.5x slower with a 0.15 s pause and normally with 0.5 s.
IDLE_GAP_S = 0.5


def sample(engines: list[Engine], x: np.ndarray, rounds: int, calls_per_round: int, warmup: int = 3) -> None:
    """Fill each engine's samples_ms: ``rounds`` rounds of ``calls_per_round`` calls, engine order rotating.

    Each block starts with one untimed call, so the engine's own workers are awake, as they are in a steady stream of requests.
    """
    for engine in engines:
        for _ in range(warmup):
            engine.run(x)
    for r in range(rounds):
        for engine in engines[r % len(engines) :] + engines[: r % len(engines)]:
            time.sleep(IDLE_GAP_S)
            engine.run(x)
            for _ in range(calls_per_round):
                started = time.perf_counter()
                engine.run(x)
                engine.samples_ms.append(1e3 * (time.perf_counter() - started))


def summary(engine: Engine) -> dict:
    s = np.asarray(engine.samples_ms)
    return {
        "median_ms": float(np.median(s)),
        "p90_ms": float(np.percentile(s, 90)),
        "min_ms": float(s.min()),
        "samples": int(s.size),
        "prepare_s": round(engine.prepare_s, 2),
        "tuning_s": round(engine.tuning_s, 1),
        "trials": engine.trials,
        **engine.notes,
    }
