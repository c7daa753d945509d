"""Two CI runs of .ci/package-fleet (docs/ci.md), side by side: the first on an empty compile cache, the second on a
fresh $PACKAGER_HOME with only the first run's compile cache restored, as a CI cache step would.

3 models x 2 targets (--targets, default jetson_xavier and LINUX/X86_64, the fleet of docs/ci.md), uploaded to moto's
S3 on loopback with --no-register. --models picks them: ours (example = the bundled autoencoder, padim224 / padim256 =
our ResNet-18 PaDiM, 176 MB of weights that compile in seconds) or anomalib zoo exports as users bring them
(benchmarks/models/anomalib_zoo: model.onnx + model.onnx.data, e.g. padim stfpm patchcore). Prints and writes
<output>/<name>.{json,md,png}: each run's wall time, the second/first ratio (goal: < 0.25), every build's time and
cache hit, and whether every digest matched.

    python benchmarks/ci_cache.py [--models example padim224 padim256] [--benchmark-runs 20]
        [--targets "jetson_xavier LINUX/X86_64"] [--output benchmarks/results] [--name ci_cache]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MODELS = ("example", "padim224", "padim256")
OURS = ("example", "padim224", "padim256")
BUCKET = "ci-cache-benchmark"


def write_models(root: Path, models=MODELS) -> None:
    """models/<name>/model.onnx (+ its external data) + model_spec.json, as a factory's repository holds them."""
    from benchmarks.models.anomalib_zoo import export
    from benchmarks.models.export import to_onnx
    from benchmarks.models.padim import build_padim
    from compilers.frontends.intake import import_model
    from packager.example_model import example_model_paths

    for name in models:
        folder = root / name
        folder.mkdir(parents=True)
        if name == "example":
            model, spec = example_model_paths()
            shutil.copyfile(model, folder / "model.onnx")
            shutil.copyfile(spec, folder / "model_spec.json")
            continue
        if name in OURS:
            size = int(name.removeprefix("padim"))
            (folder / "model.onnx").write_bytes(to_onnx(build_padim(size), size))
        else:  # an anomalib zoo model, exported as anomalib writes it (256², seeded weights)
            export(name, folder, size=256, seed=0)
        (folder / "model_spec.json").write_text(import_model(folder / "model.onnx").spec.to_json())


def ci_run(
    workdir: Path,
    run: str,
    models: Path,
    names: tuple[str, ...],
    s3_endpoint: str,
    benchmark_runs: int,
    targets: str,
    restore_from: Path | None,
) -> dict:
    home = workdir / f"runner-{run}" / ".packager"
    if restore_from is not None:
        shutil.copytree(restore_from / "compile-cache", home / "compile-cache")
    out = workdir / f"runner-{run}" / "greengrass-build"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "PACKAGER_HOME": str(home),
        "MODELS_DIR": str(models),
        "S3_OUTPUT": f"s3://{BUCKET}/vision",
        "VERSION": "1.0.1",
        "COMPONENT_PREFIX": "com.factory",
        "MAX_RATIO": "1000",
        "BENCHMARK_RUNS": str(benchmark_runs),
        "OUTPUT_DIR": str(out),
        "NO_REGISTER": "1",
        "TARGETS": targets,
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(
        ["bash", str(REPO / ".ci" / "package-fleet")], cwd=REPO, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{run} run failed ({done.returncode}):\n{done.stderr[-4000:]}")
    summaries = {name: json.loads((out / f"summary-{name}.json").read_text()) for name in names}
    return {
        "run": run,
        "wall_s": wall,
        "load_start": load_start,
        "load_end": os.getloadavg()[0],
        "home": str(home),
        "builds": [
            {
                "model": name,
                "target": t["target"],
                "digest": t["digest"],
                "compile_cache": t["compile_cache"],
                "compile_s": t["compile_seconds"],
                "build_s": t["build_seconds"],
                "component_build_s": summaries[name]["build_seconds"],
                "ratio": t["ratio_tvm_to_ort"],
                "ratio_not_measured": t["ratio_not_measured"],
            }
            for name in names
            for t in summaries[name]["targets"]
        ],
    }


def markdown(results: dict) -> str:
    first, second = results["runs"]
    lines = [
        "# Cached CI rebuilds: .ci/package-fleet twice",
        "",
        f"Measured {results['finished']} on {results['cpu']} ({results['cpu_count']} CPUs, shared with other work: load "
        f"average {first['load_start']:.1f}-{second['load_end']:.1f}). Models {' '.join(results['models'])} x {results['targets']}, "
        f"{results['benchmark_runs']} benchmark runs per engine, S3 = moto on loopback.",
        f"Command: `{results['command']}`",
        "",
        f"- first run (empty cache): **{first['wall_s']:.1f} s**",
        f"- second run (fresh PACKAGER_HOME, compile cache restored): **{second['wall_s']:.1f} s**",
        f"- second / first: **{results['ratio']:.3f}** (goal < 0.25)",
        f"- digests identical: **{results['digests_identical']}**",
        "",
        "| model | target | first: compile s | first: build s | second: cache | second: build s | digest |",
        "|---|---|---:|---:|---|---:|---|",
    ]
    for a, b in zip(first["builds"], second["builds"]):
        lines.append(
            f"| {a['model']} | {a['target']} | {a['compile_s']:.1f} | {a['build_s']:.1f} | {b['compile_cache']} | "
            f"{b['build_s']:.1f} | {'same' if a['digest'] == b['digest'] else 'DIFFERENT'} |"
        )
    lines += [
        "",
        "build s: the target's job from start to bundle (ORT check and benchmark included); the two targets of a "
        "model run in parallel jobs, and models one after another, as the script does.",
        "",
    ]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first, second = results["runs"]
    labels = [f"{b['model']}\n{b['target']}" for b in first["builds"]]
    x = range(len(labels))
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.bar(
        [i - 0.2 for i in x], [b["build_s"] for b in first["builds"]], 0.4, label=f"first run ({first['wall_s']:.0f} s)"
    )
    ax.bar(
        [i + 0.2 for i in x],
        [b["build_s"] for b in second["builds"]],
        0.4,
        label=f"second run ({second['wall_s']:.0f} s)",
    )
    ax.set_xticks(list(x), labels, fontsize=7)
    ax.set_ylabel("build time per target (s)")
    ax.set_title("CI rebuild with the compile cache restored")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark-runs", type=int, default=20)
    parser.add_argument("--targets", default="jetson_xavier LINUX/X86_64", help="catalog names, space-separated")
    parser.add_argument(
        "--models", nargs="+", default=list(MODELS), help="ours (example padim224 padim256) or zoo names"
    )
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--name", default="ci_cache", help="file name of the results, without extension")
    args = parser.parse_args(argv)
    names = tuple(args.models)
    import boto3
    from moto.server import ThreadedMotoServer

    from benchmarks.run_suite import _cpu_name

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server.get_host_and_port()[1]}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=BUCKET)
    try:
        with tempfile.TemporaryDirectory(prefix="ci-cache-") as tmp:
            workdir = Path(tmp)
            write_models(workdir / "models", names)
            first = ci_run(
                workdir, "first", workdir / "models", names, endpoint, args.benchmark_runs, args.targets, None
            )
            print(f"first run: {first['wall_s']:.1f} s", flush=True)
            second = ci_run(
                workdir,
                "second",
                workdir / "models",
                names,
                endpoint,
                args.benchmark_runs,
                args.targets,
                Path(first["home"]),
            )
            print(f"second run: {second['wall_s']:.1f} s", flush=True)
    finally:
        server.stop()
    results = {
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "command": "python benchmarks/ci_cache.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "benchmark_runs": args.benchmark_runs,
        "targets": args.targets,
        "models": list(names),
        "runs": [first, second],
        "ratio": second["wall_s"] / first["wall_s"],
        "digests_identical": [b["digest"] for b in first["builds"]] == [b["digest"] for b in second["builds"]],
        "all_hits": all(b["compile_cache"] == "hit" for b in second["builds"]),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / f"{args.name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.output / f"{args.name}.md").write_text(markdown(results))
    plot(results, args.output / f"{args.name}.png")
    print(markdown(results))
    return 0 if results["digests_identical"] and results["all_hits"] else 1


if __name__ == "__main__":
    sys.exit(main())
