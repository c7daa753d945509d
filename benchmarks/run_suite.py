"""CPU benchmark suite: TVM (untuned and tuned) against ONNX Runtime, OpenVINO and PyTorch eager, in one process.

    python benchmarks/run_suite.py                 # our models, default tuning budget, writes benchmarks/results/
    python benchmarks/run_suite.py --models example --trials 0   # quick: no tuning
    python benchmarks/run_suite.py --models zoo --trials 0 --stem suite_zoo   # every anomalib zoo model, untuned

Models: the bundled example model, a PaDiM-style ResNet-18 model (random weights) at 224 and 256, and the anomalib 2.x
zoo (benchmarks/models/anomalib_zoo: exported as anomalib writes them, then through the build's intake, at 256x256).
Each engine gets the same thread count and batch 1. Tuning starts from an empty cache
unless --tuning-cache names one, so the tuning time reported is the time it really took.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

THREADS_DEFAULT = 2
REPO = Path(__file__).resolve().parents[1]


def _parse(argv):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    from benchmarks.models.anomalib_zoo import MODELS as ZOO

    parser.add_argument(
        "--models",
        nargs="+",
        default=["example", "padim224", "padim256"],
        choices=["example", "padim224", "padim256", "zoo", *sorted(ZOO)],
        help="'zoo' stands for every anomalib zoo model",
    )
    parser.add_argument(
        "--threads", type=int, default=THREADS_DEFAULT, help="threads for every engine (and the target's num-cores)"
    )
    parser.add_argument(
        "--trials",
        type=int,
        default=None,
        help="tuning trials per model (default: 64 for the example model, 160 for each PaDiM model); 0 skips tuning",
    )
    parser.add_argument(
        "--tuning-cache", type=Path, default=None, help="reuse this tuning cache instead of a fresh one"
    )
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--calls", type=int, default=5, help="calls per engine per round")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-openvino", action="store_true")
    parser.add_argument("--stem", default="suite", help="results file names: OUTPUT/STEM.{json,md,png}")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument(
        "--export-records", action="store_true", help="also write the tuning records to OUTPUT/tuning_records.json"
    )
    args = parser.parse_args(argv)
    args.models = [m for name in args.models for m in (sorted(ZOO) if name == "zoo" else [name])]
    return args


def _load_model(name: str, scratch: Path):
    """(onnx bytes, torch module, input size, description, input name, ONNX file for OpenVINO, thresholded bool outputs)."""
    from benchmarks.models.anomalib_zoo import MODELS as ZOO

    if name in ZOO:
        return _load_zoo_model(name, scratch)
    from benchmarks.models.autoencoder import SIZE, example_model
    from benchmarks.models.export import to_onnx
    from benchmarks.models.padim import build_padim

    if name == "example":
        data, module, description = example_model()
        data, size = (data if data is not None else to_onnx(module, SIZE)), SIZE
    else:
        size = int(name.removeprefix("padim"))
        module = build_padim(size)
        data, description = (
            to_onnx(module, size),
            "ResNet-18 layer1-3 PaDiM, 100 random channels, per-patch Mahalanobis",
        )
    path = scratch / f"{name}.onnx"
    path.write_bytes(data)
    return data, module, size, description, "image", path, {}


def _load_zoo_model(name: str, scratch: Path):
    """An anomalib export as a user brings it; TVM and ORT get the graph the build's intake makes of it (shapes fixed,
    shape computations folded), OpenVINO reads the export itself, as anomalib's OpenVINO path does."""
    from benchmarks.models.anomalib_zoo import build, export_module
    from compilers.frontends.intake import import_model
    from compilers.verify import thresholded_outputs

    module = build(name)
    path = export_module(module, scratch / name, 256)
    imported = import_model(path)
    description = (
        f"anomalib {name} ({(module.model.__class__.__name__)}), random weights, exported as anomalib 2.x does"
    )
    return imported.onnx_bytes, module, 256, description, imported.spec.input.name, path, thresholded_outputs(imported)


def run_model(name: str, args, target, cache) -> dict:
    import numpy as np

    from benchmarks import suite_engines as se
    from compilers.tuning.tune import extract_tasks, tune
    from compilers.verify import assert_matches_onnxruntime

    onnx_bytes, module, size, description, input_name, onnx_path, thresholded = _load_model(name, Path(args.scratch))
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    engines = [se.ort_engine(onnx_bytes, input_name, args.threads)]
    reference = engines[0].run(x)
    if not args.no_openvino:
        engines.append(se.openvino_engine(onnx_path, args.threads))
    if not args.no_torch:
        engines.append(se.torch_engine(module, args.threads))
    mod, params = se.relax_module(onnx_bytes, target)
    print(f"[{name}] compiling with default schedules", flush=True)
    engines.append(se.tvm_engine("tvm_default", mod, params, target))
    trials = args.trials if args.trials is not None else (64 if name == "example" else 160)
    if trials > 0:
        print(f"[{name}] tuning, up to {trials} trials", flush=True)
        result = tune(mod, target, trials, cache)
        tuned = se.tvm_engine("tvm_tuned", mod, params, target, cache.database_for(target))
        tuned.tuning_s, tuned.trials = result.seconds, result.trials
        tuned.notes["tasks"] = [vars(t) for t in result.tasks]
        engines.append(tuned)
    errors = {e.name: max(se.max_abs_errors(e, reference, x)) for e in engines if e.name != "ort"}
    names = [o for o in _output_names(onnx_bytes)]
    for e in engines:
        if e.name.startswith("tvm"):
            assert_matches_onnxruntime(
                dict(zip(names, e.run(x))),
                dict(zip(names, reference)),
                1e-3,
                1e-4,
                where=f"{name}: {e.name}",
                thresholded=thresholded,
            )
    print(f"[{name}] measuring {args.rounds} rounds x {args.calls} calls per engine", flush=True)
    se.sample(engines, x, args.rounds, args.calls)
    summaries = {e.name: se.summary(e) for e in engines}
    ort_median = summaries["ort"]["median_ms"]
    flops = sum(float(t.flops) * t.weight for t in extract_tasks(mod, target))
    report = {
        "name": name if name != "example" else "example (128x128 autoencoder)",
        "description": description,
        "input_shape": [1, 3, size, size],
        "gflop": flops / 1e9,
        "engines": summaries,
        "ratio_to_ort": {k: v["median_ms"] / ort_median for k, v in summaries.items()},
        "ratio_to_ort_min": {k: v["min_ms"] / summaries["ort"]["min_ms"] for k, v in summaries.items()},
        "max_abs_error": errors,
    }
    for k, v in summaries.items():
        print(
            f"[{name}] {k:12s} median {v['median_ms']:8.2f} ms  p90 {v['p90_ms']:8.2f} ms  "
            f"x{report['ratio_to_ort'][k]:.2f} of ORT",
            flush=True,
        )
    return report


def _output_names(onnx_bytes: bytes) -> list[str]:
    import onnx

    return [o.name for o in onnx.load_from_string(onnx_bytes).graph.output]


def main(argv=None) -> int:
    sys.path.insert(0, str(REPO))
    args = _parse(argv)
    # TVM sizes its thread pool on first use; on x86 its default is half the CPUs.
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    import gc
    import platform
    import tempfile
    import time

    from benchmarks import suite_report
    from benchmarks.suite_engines import host_isa as se_host_isa
    from compilers.tuning.cache import open_tuning_cache
    from targets.catalog import CompilerOptions, host_target

    target = host_target(CompilerOptions(num_cores=args.threads))
    scratch = tempfile.TemporaryDirectory(prefix="suite-tuning-")
    cache = open_tuning_cache(args.tuning_cache or scratch.name)
    models_scratch = tempfile.TemporaryDirectory(prefix="suite-models-")
    args.scratch = models_scratch.name
    started = time.time()
    load_start = os.getloadavg()
    models = []
    for name in args.models:
        models.append(run_model(name, args, target, cache))
        gc.collect()
    results = {
        "command": "python benchmarks/run_suite.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "threads": args.threads,
        "target": target.tvm_target,
        "trials_budget": args.trials if args.trials is not None else "64 (example), 160 (each PaDiM)",
        "tuning_cache": "reused " + str(args.tuning_cache) if args.tuning_cache else "fresh (empty at start)",
        "environment": {
            "cpu": _cpu_name(),
            "isa": se_host_isa(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "load_start": [round(v, 2) for v in load_start],
            "load_end": [round(v, 2) for v in os.getloadavg()],
            "tvm": _version("tvm"),
            "onnxruntime": _version("onnxruntime"),
            "torch": _version("torch"),
            "openvino": "not run" if args.no_openvino else _version("openvino"),
        },
        "models": models,
        "isa": _isa(target),
    }
    for path in suite_report.write(results, args.output, args.stem):
        print("wrote", path)
    if args.export_records:
        print(
            "wrote",
            args.output / "tuning_records.json",
            cache.export(args.output / "tuning_records.json", target),
            "records",
        )
    return 0


def _isa(target) -> dict:
    """The CPU's vector extensions and the ISA each engine used on it."""
    from benchmarks.cpu_info import cpu_description, engine_isa

    return {"cpu": cpu_description(), "engines": engine_isa(target)}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _version(module: str) -> str:
    import importlib

    return getattr(importlib.import_module(module), "__version__", "?")


if __name__ == "__main__":
    sys.exit(main())
