"""The anomalib zoo at 256x256, batch 1: TVM (default schedules, and tuned) against ONNX Runtime and OpenVINO.

    python benchmarks/zoo_speed.py                                   # every zoo model, untuned
    python benchmarks/zoo_speed.py --models efficient_ad_s --trials 200 --tuned-models efficient_ad_s

Each model is exported as anomalib writes it (benchmarks/models/anomalib_zoo), imported the way `build` imports it,
and compiled for this machine's CPU (the no-platform target). Engines alternate within every round, so load from
other processes falls on all alike; figures are medians. For each TVM engine the report lists the kernels that take
the most time, with the GFLOP/s each reaches against the FMA peak of the cores it runs on.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
THREADS_DEFAULT = 2
SIZE = 256
TOP_KERNELS = 8


def _parse(argv):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None, help="zoo model names (default: all)")
    parser.add_argument("--threads", type=int, default=THREADS_DEFAULT)
    parser.add_argument(
        "--trials", type=int, default=0, help="tuning trials for each model in --tuned-models (0: no tuning)"
    )
    parser.add_argument(
        "--tuned-models", nargs="*", default=None, help="models to tune (default: all, when --trials > 0)"
    )
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--calls", type=int, default=3, help="calls per engine per round")
    parser.add_argument("--no-openvino", action="store_true")
    parser.add_argument(
        "--exports", type=Path, default=None, help="reuse (or write) the exported models under this directory"
    )
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results")
    return parser.parse_args(argv)


def _export(name: str, root: Path) -> Path:
    from benchmarks.models.anomalib_zoo import export

    path = root / name / "model.onnx"
    if not path.exists():
        export(name, root / name, size=SIZE, seed=0)
    return path


def _imported(path: Path):
    """The Relax module and weights `build` compiles: via intake when it takes the export, else the ONNX as it is."""
    from compilers.frontends.intake import import_model
    from compilers.tvm_compile import to_relax

    try:
        imported = import_model(path, None)
    except Exception as exc:  # noqa: BLE001 - intake refusing the export is a result of its own; measure the graph anyway
        return None, f"intake: {str(exc).splitlines()[0][:300]}"
    return to_relax(imported), None


def _fixed_batch_bytes(path: Path) -> bytes:
    import onnx

    model = onnx.load(str(path))
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_param:
            dims[0].dim_value = 1
    return model.SerializeToString()


def relax_for(path: Path, target):
    """(mod, params as numpy, note): prepacked for the CPU target as compile does it."""
    import tvm

    from compilers.prepack import prepack_weights
    from compilers.tvm_compile import onnx_to_relax

    relax_mod, note = _imported(path)
    if relax_mod is None:
        relax_mod = onnx_to_relax(_fixed_batch_bytes(path), {"input": [1, 3, SIZE, SIZE]})
    mod, named = prepack_weights(*relax_mod, tvm.target.Target(target.tvm_target))
    return mod, [value.numpy() for _, value in named], note


def openvino_engine(path: Path, threads: int):
    import openvino as ov

    from benchmarks.suite_engines import Engine

    started = time.perf_counter()
    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape({model.inputs[0].get_any_name(): [1, 3, SIZE, SIZE]})
    compiled = core.compile_model(
        model,
        "CPU",
        {
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",
            "NUM_STREAMS": 1,
        },
    )
    request = compiled.create_infer_request()

    def run(x):
        request.infer({0: x})
        return [request.get_output_tensor(i).data.copy() for i in range(len(compiled.outputs))]

    return Engine(
        "openvino",
        run,
        time.perf_counter() - started,
        notes={"version": ov.get_version(), "config": "CPU, latency hint, f32, 1 stream"},
    )


def ort_engine(path: Path, threads: int):
    import onnxruntime as ort

    from benchmarks.suite_engines import Engine

    started = time.perf_counter()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return Engine(
        "ort", lambda x: session.run(None, {name: x}), time.perf_counter() - started, notes={"version": ort.__version__}
    )


def kernel_flops(mod, target) -> dict[str, float]:
    """FLOPs of each fused PrimFunc, by the name the compiled module calls it."""
    import tvm
    from tvm.s_tir.analysis import estimate_tir_flops

    from compilers.schedules.pipeline import fuse_operators, workload

    fused = fuse_operators(mod, tvm.target.Target(target.tvm_target))
    flops = {}
    for gvar, func in fused.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc):
            try:
                flops[gvar.name_hint] = float(estimate_tir_flops(workload(func)))
            except Exception:  # noqa: BLE001 - a kernel the estimator cannot count is reported without a rate
                flops[gvar.name_hint] = 0.0
    return flops


def tvm_engine(name: str, mod, params, target, database=None):
    """A TVM engine plus a profile function that times every kernel call of one run (VM instrument)."""
    import tvm
    from tvm import relax

    from benchmarks.suite_engines import Engine
    from compilers.schedules.pipeline import relax_pipeline

    started = time.perf_counter()
    pipeline = relax_pipeline(target, database)
    executable = tvm.compile(mod, target=tvm.target.Target(target.tvm_target), relax_pipeline=pipeline)
    vm = relax.VirtualMachine(executable, tvm.cpu())
    device_params = [tvm.runtime.tensor(p) for p in params]
    main = vm["main"]

    def run(x):
        out = main(tvm.runtime.tensor(x), *device_params)
        return [out.numpy()] if isinstance(out, tvm.runtime.Tensor) else [o.numpy() for o in out]

    def profile(x, repeats: int = 3) -> dict[str, tuple[int, float]]:
        """Kernel name -> (calls per run, seconds per run), the median of ``repeats`` runs."""
        import numpy as np

        runs = []
        for _ in range(repeats):
            times: dict[str, list] = {}
            starts: dict[str, float] = {}

            def instrument(func, symbol, before_run, ret_value, *args, times=times, starts=starts):
                if before_run:
                    starts[symbol] = time.perf_counter()
                else:
                    entry = times.setdefault(symbol, [0, 0.0])
                    entry[0] += 1
                    entry[1] += time.perf_counter() - starts.pop(symbol)
                return 0

            vm.set_instrument(instrument)
            try:
                run(x)
            finally:
                vm.set_instrument(lambda *a: 0)
            runs.append(times)
        names = set().union(*runs)
        return {
            n: (max(r.get(n, [0, 0])[0] for r in runs), float(np.median([r.get(n, [0, 0.0])[1] for r in runs])))
            for n in names
        }

    engine = Engine(
        name,
        run,
        time.perf_counter() - started,
        notes={"records_applied": pipeline.records_applied, "default_scheduled": pipeline.default_scheduled},
    )
    return engine, profile


def top_kernels(profile: dict, flops: dict, peak: float, total_ms: float) -> list[dict]:
    rows = []
    for name, (calls, seconds) in sorted(profile.items(), key=lambda kv: -kv[1][1])[:TOP_KERNELS]:
        f = flops.get(name, 0.0) * calls
        rate = f / seconds / 1e9 if seconds > 0 and f else 0.0
        rows.append(
            {
                "kernel": name,
                "calls": calls,
                "ms": 1e3 * seconds,
                "share": 1e3 * seconds / total_ms if total_ms else 0.0,
                "gflop": f / 1e9,
                "gflops": rate,
                "peak_share": rate / peak if peak else 0.0,
            }
        )
    return rows


def _within_check_tolerance(got: list, want: list) -> bool:
    """The build check's criterion on the float outputs of a compile that is not the precise one (compilers.verify)."""
    import numpy as np

    from compilers.model import CompileOptions
    from compilers.verify import check_tolerance

    rtol, atol = check_tolerance(CompileOptions(work_dir=None))
    return all(
        np.allclose(np.asarray(g, np.float64), np.asarray(w, np.float64), rtol=rtol, atol=atol)
        for g, w in zip(got, want, strict=True)
        if np.asarray(w).dtype.kind == "f"
    )


def run_model(name: str, args, target, cache, root: Path, peak: float) -> dict:
    import gc

    import numpy as np

    from benchmarks import suite_engines as se
    from compilers.schedules.winograd import precise_tiles
    from compilers.tuning.tune import tune

    path = _export(name, root)
    x = np.random.default_rng(0).random((1, 3, SIZE, SIZE), dtype=np.float32)
    report = {"name": name, "input_shape": [1, 3, SIZE, SIZE], "engines": {}, "kernels": {}, "notes": []}
    engines = [ort_engine(path, args.threads)]
    reference = engines[0].run(x)
    if not args.no_openvino:
        try:
            engines.append(openvino_engine(path, args.threads))
        except Exception as exc:  # noqa: BLE001 - a model OpenVINO refuses is a result of the table
            report["notes"].append(f"openvino: {str(exc).splitlines()[0][:200]}")
    profiles = {}
    try:
        print(f"[{name}] importing and compiling with default schedules", flush=True)
        mod, params, note = relax_for(path, target)
        engine, profiles["tvm_default"] = tvm_engine("tvm_default", mod, params, target)
        precise = not _within_check_tolerance(engine.run(x), reference)
        if precise:  # as build does: it ships the precise compile when the first one fails its check
            print(f"[{name}] outside the build check's tolerance: compiling with Winograd's smallest tiles", flush=True)
            report["notes"].append("precise compile (Winograd F(2x2) tiles only), as build ships it")
            del engine
            with precise_tiles():
                mod, params, note = relax_for(path, target)
                engine, profiles["tvm_default"] = tvm_engine("tvm_default", mod, params, target)
        if note:
            report["notes"].append(note)
        with precise_tiles(precise):
            flops = kernel_flops(mod, target)
        report["gflop"] = sum(flops.values()) / 1e9  # counts each kernel once; see kernels for per-call figures
        engines.append(engine)
        tune_this = args.trials > 0 and (args.tuned_models is None or name in args.tuned_models)
        if tune_this:
            print(f"[{name}] tuning, up to {args.trials} trials", flush=True)
            with precise_tiles(precise):
                result = tune(mod, target, args.trials, cache, log=lambda line: print(f"[{name}] {line}", flush=True))
                engine, profiles["tvm_tuned"] = tvm_engine("tvm_tuned", mod, params, target, cache.database_for(target))
            engine.tuning_s, engine.trials = result.seconds, result.trials
            engine.notes["tasks"] = [vars(t) for t in result.tasks]
            engines.append(engine)
    except Exception as exc:  # noqa: BLE001 - a model TVM cannot import or compile is a result of the table
        report["notes"].append(
            f"tvm: {type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else ''}"
        )
        print(f"[{name}] TVM failed: {report['notes'][-1]}", flush=True)
        flops = {}
    for e in engines:
        if e.name != "ort":
            errors = [
                float(np.abs(np.asarray(g, np.float64) - np.asarray(w, np.float64)).max())
                for g, w in zip(e.run(x), reference)
                if np.asarray(w).dtype.kind == "f"
            ]
            e.notes["max_abs_error_float_outputs"] = max(errors) if errors else None
    print(f"[{name}] measuring {args.rounds} rounds x {args.calls} calls per engine", flush=True)
    se.sample(engines, x, args.rounds, args.calls)
    for e in engines:
        report["engines"][e.name] = se.summary(e)
    ort_ms = report["engines"]["ort"]["median_ms"]
    report["ratio_to_ort"] = {k: v["median_ms"] / ort_ms for k, v in report["engines"].items()}
    for engine_name, profile in profiles.items():
        report["kernels"][engine_name] = top_kernels(
            profile(x), flops, peak, report["engines"][engine_name]["median_ms"]
        )
    for k, v in report["engines"].items():
        print(f"[{name}] {k:12s} median {v['median_ms']:9.2f} ms  x{report['ratio_to_ort'][k]:.2f} of ORT", flush=True)
    gc.collect()
    return report


def write_report(results: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "zoo_speed.json", out / "zoo_speed.md", out / "zoo_speed.png"]
    paths[0].write_text(json.dumps(results, indent=2, default=str) + "\n")
    env = results["environment"]
    engines = ["ort", "openvino", "tvm_default", "tvm_tuned"]
    lines = [
        "# anomalib zoo speed at 256x256, batch 1",
        "",
        (
            f"`{results['command']}`, {results['finished']}. CPU: **{env['cpu']['model']}** (ISA {', '.join(env['cpu']['isa'])}), "
            f"{results['threads']} threads per engine; FMA peak {results['fma_peak_gflops']:.0f} GFLOP/s "
            f"({results.get('fma_peak_how', 'from the nominal clock')}). "
            f"ISA used: TVM {env['engine_isa']['tvm']}; ORT {env['engine_isa']['ort']}; OpenVINO {env['engine_isa']['openvino']}. "
            f"Load average at start/end {env['load_start']} / {env['load_end']}: the machine was shared with other work, "
            "so absolute times are noisy; engines alternate within each round and figures are medians."
        ),
        "",
        "| model | "
        + " | ".join(f"{e} ms" for e in engines)
        + " | TVM/ORT untuned | TVM/ORT tuned | OpenVINO/ORT | notes |",
        "|---|" + "---|" * (len(engines) + 4),
    ]
    for m in results["models"]:
        cells = [f"{m['engines'][e]['median_ms']:.1f}" if e in m["engines"] else "-" for e in engines]
        ratios = [
            f"{m['ratio_to_ort'][e]:.2f}" if e in m["ratio_to_ort"] else "-"
            for e in ("tvm_default", "tvm_tuned", "openvino")
        ]
        lines.append(f"| {m['name']} | " + " | ".join(cells + ratios) + f" | {'; '.join(m['notes'])} |")
    for m in results["models"]:
        for engine, rows in m["kernels"].items():
            lines += [
                "",
                f"## {m['name']}: top kernels of {engine}",
                "",
                "| kernel | calls | ms | share | GFLOP | GFLOP/s | % of FMA peak |",
                "|---|---|---|---|---|---|---|",
            ]
            for r in rows:
                lines.append(
                    f"| {r['kernel']} | {r['calls']} | {r['ms']:.2f} | {100 * r['share']:.0f}% | {r['gflop']:.2f} | "
                    f"{r['gflops']:.1f} | {100 * r['peak_share']:.0f}% |"
                )
    paths[1].write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m in results["models"] if "tvm_default" in m["ratio_to_ort"]]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(models) + 2), 4))
    width = 0.25
    for i, e in enumerate(("tvm_default", "tvm_tuned", "openvino")):
        ax.bar(
            [j + (i - 1) * width for j in range(len(models))],
            [m["ratio_to_ort"].get(e, 0) for m in models],
            width,
            label=e,
        )
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axhline(0.8, color="k", lw=0.8, ls="--")
    ax.set_xticks(range(len(models)), [m["name"] for m in models], rotation=30, ha="right")
    ax.set_ylabel("median latency / ORT")
    ax.set_title(f"anomalib zoo, 256x256, {results['threads']} threads, {env['cpu']['model']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(paths[2], dpi=110)
    return paths


def main(argv=None) -> int:
    args = _parse(argv)
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    sys.path.insert(0, str(REPO))
    from benchmarks.cpu_info import cpu_description, engine_isa, fma_peak
    from benchmarks.models.anomalib_zoo import MODELS
    from compilers.tuning.cache import open_tuning_cache
    from targets.catalog import CompilerOptions, host_target

    target = host_target(CompilerOptions(num_cores=args.threads))
    peak, peak_how = fma_peak(target, args.threads)
    scratch = tempfile.TemporaryDirectory(prefix="zoo-speed-")
    root = args.exports or Path(scratch.name) / "exports"
    cache = open_tuning_cache(Path(scratch.name) / "tuning")
    started, load_start = time.time(), os.getloadavg()
    models = []
    for name in args.models or list(MODELS):
        models.append(run_model(name, args, target, cache, root, peak))
        results = {  # written after every model, so a long run that is stopped keeps what it measured
            "command": "python benchmarks/zoo_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
            "threads": args.threads,
            "target": target.tvm_target,
            "fma_peak_gflops": peak,
            "fma_peak_how": peak_how,
            "trials": args.trials,
            "environment": {
                "cpu": cpu_description(),
                "engine_isa": engine_isa(target),
                "cpu_count": os.cpu_count(),
                "load_start": [round(v, 2) for v in load_start],
                "load_end": [round(v, 2) for v in os.getloadavg()],
            },
            "models": models,
        }
        for path in write_report(results, args.output):
            print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
