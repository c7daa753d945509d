"""Check NVIDIA builds on a real GPU, in two halves: compile where TVM's compiler is, run where the GPU is.

    python benchmarks/gpu_check.py compile DIR [--gpu sm_90=13.0 ...]   # any machine with the packager installed
    python benchmarks/gpu_check.py run DIR [--runs 100]                 # the GPU machine: TVM's runtime alone is enough

``compile`` builds the example model for LINUX/X86_64 + NVIDIA once per ``--gpu CODE=CUDA`` (default: Jetson
Xavier's ``sm_72=10.2``, whose PTX any newer GPU's driver JIT-compiles, and ``sm_90=13.0``), checks that each library
ships PTX only, and copies the ONNX model and its spec beside them. It also builds the LINUX/X86_64 CPU library (its
default ``core-avx2``), which ``benchmarks/edge_overhead.py --model-dir DIR/cpu`` serves on another machine.

``run`` loads each GPU library the way the edge agent does (``lookout_edge`` CompiledModel, device from the
manifest), compares its outputs with ONNX Runtime on the CPU for the same input (rtol 1e-3, atol 1e-4), and times both.
It needs no compiler: with ``TVM_USE_RUNTIME_LIB=1`` TVM loads only libtvm_runtime. It writes ``--output``
(default benchmarks/results/gpu_check.json) and exits 1 when a library fails to load, run or match.
``benchmarks/gpu_check.sh`` runs both halves on one machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_GPUS = ("sm_72=10.2", "sm_90=13.0")
RTOL, ATOL = 1e-3, 1e-4


def compile_all(out: Path, gpus: list[str]) -> None:
    from compilers.frontends.intake import import_model
    from compilers.gpu import shipped_gpu_code
    from compilers.model import CompileOptions
    from compilers.tvm_compile import compile_model
    from packager.example_model import example_model_paths
    from targets import CompilerOptions, get_target

    model, spec = example_model_paths()
    imported = import_model(model, spec)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(model, out / "model.onnx")
    shutil.copy(spec, out / "spec.json")
    builds = []
    plans = [("cpu", get_target("LINUX/X86_64"), None)]
    for gpu in gpus:
        code, _, cuda = gpu.partition("=")
        options = CompilerOptions(gpu_code=code, cuda_ver=cuda, trt_ver="0")
        plans.append((f"cuda-{code}", get_target("LINUX/X86_64/NVIDIA", options), options))
    for name, target, options in plans:
        work = out / f"work-{name}"
        started = time.perf_counter()
        artifact = compile_model(imported, target, CompileOptions(work_dir=work))
        seconds = time.perf_counter() - started
        shutil.copytree(artifact.model_dir, out / name, dirs_exist_ok=True)
        shutil.rmtree(work)
        build = {"name": name, "target": target.name, "device": artifact.device, "compile_s": round(seconds, 2)}
        if options is not None:
            shipped = shipped_gpu_code(out / name / artifact.library_path.name)
            build.update(
                gpu_code=options.gpu_code,
                cuda_ver=options.cuda_ver,
                ptx=[{"version": ".".join(map(str, m.version)), "target": m.target} for m in shipped.ptx],
            )
        builds.append(build)
        print(
            f"compiled {name}: {target.name} in {seconds:.1f} s" + (f", PTX {build['ptx']}" if "ptx" in build else "")
        )
    (out / "builds.json").write_text(json.dumps({"host": platform.node(), "builds": builds}, indent=2) + "\n")


def gpu_name() -> str:
    import subprocess

    try:
        return (
            subprocess.run(
                ["nvidia-smi", "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.splitlines()[0]
            .strip()
        )
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "unknown (nvidia-smi failed)"


def run_all(out: Path, runs: int, output: Path) -> int:
    import numpy as np
    import onnxruntime

    from compilers.verify import compare_outputs
    from packager.build.benchmark import time_callable
    from packager.edge.model_runner import CompiledModel

    builds = json.loads((out / "builds.json").read_text())["builds"]
    # ONNX Runtime straight from the file: compilers.frontends.intake would check the ops against TVM's frontend, a compiler part.
    manifest = json.loads((out / "cpu" / "manifest.json").read_text())
    x = np.random.default_rng(0).random(manifest["input_shape"], dtype=np.float32)
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    expected = dict(zip(names, session.run(names, {manifest["input"]: x})))
    ort = time_callable(lambda: session.run(None, {manifest["input"]: x}), 10, runs)
    report = {
        "gpu": gpu_name(),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "runs": runs,
        "onnxruntime_cpu": vars(ort),
        "builds": [],
    }
    failed = 0
    for build in (b for b in builds if b["device"] == "cuda"):
        entry = dict(build)
        try:
            started = time.perf_counter()
            model = CompiledModel.load(out / build["name"])
            entry["load_s"] = round(time.perf_counter() - started, 3)  # includes the driver's PTX JIT
            checks = compare_outputs(model.run(x), expected, RTOL, ATOL)
            entry["max_abs_error"] = {c.name: c.max_abs_error for c in checks}
            entry["matches_onnxruntime"] = all(c.within_tolerance for c in checks)
            entry["tvm_gpu"] = vars(time_callable(lambda model=model: model.run(x), 10, runs))
        except Exception as error:  # report every build, then fail
            entry["error"] = f"{type(error).__name__}: {error}"
            traceback.print_exc()
        failed += not entry.get("matches_onnxruntime", False)
        report["builds"].append(entry)
        print(
            f"{build['name']}: PTX {build['ptx']}, "
            + (
                f"load {entry['load_s']} s, max abs error {entry['max_abs_error']}, matches ORT: {entry['matches_onnxruntime']}, "
                f"p50 {entry['tvm_gpu']['p50_ms']:.3f} ms (ORT CPU {ort.p50_ms:.3f} ms)"
                if "tvm_gpu" in entry
                else entry.get("error", "")
            )
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"gpu: {report['gpu']}; written {output}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    compile_verb = verbs.add_parser("compile", help="build the example model's CPU and GPU libraries into DIR")
    compile_verb.add_argument("dir", type=Path)
    compile_verb.add_argument(
        "--gpu",
        action="append",
        metavar="CODE=CUDA",
        help=f"gpu-code and cuda-ver, repeatable (default {' '.join(DEFAULT_GPUS)})",
    )
    run_verb = verbs.add_parser("run", help="run DIR's GPU libraries on this machine's GPU against ONNX Runtime")
    run_verb.add_argument("dir", type=Path)
    run_verb.add_argument("--runs", type=int, default=100)
    run_verb.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "gpu_check.json")
    args = parser.parse_args(argv)
    if args.verb == "compile":
        compile_all(args.dir, args.gpu or list(DEFAULT_GPUS))
        return 0
    return run_all(args.dir, args.runs, args.output)


if __name__ == "__main__":
    sys.exit(main())
