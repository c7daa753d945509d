"""Memory per zoo model: the size of params.bin, the Edge Agent's peak RSS while it serves the model, and an ONNX Runtime
session's peak RSS for the same ONNX (goal: agent <= 1.2x ORT).

Each side runs in its own fresh process, as on a device, with 2 threads: the agent (``packager.edge.agent``, TVM's runtime
only) registered with the compiled model, started, and sent ``--runs`` detections over gRPC; ORT as a plain
``InferenceSession`` (graph optimisations on) run ``--runs`` times. Peak RSS is the kernel's high-water mark (VmHWM).
Writes benchmarks/results/memory.{json,md,png}.

    python benchmarks/memory_report.py                    # every zoo model
    python benchmarks/memory_report.py --models padim stfpm --work /tmp/zoo-memory
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RESULTS = REPO / "benchmarks" / "results"
GOAL = 1.2
THREADS = 2

# VmHWM of this process's own memory, not getrusage's ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child
# of this (torch-importing, GB-sized) script would report the parent's peak.
ORT_PROCESS = r"""
import sys
import numpy as np, onnxruntime as ort
options = ort.SessionOptions()
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
options.intra_op_num_threads, options.inter_op_num_threads = int(sys.argv[2]), 1
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
shape = [d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape]
x = np.random.default_rng(0).random(shape, dtype=np.float32)
for _ in range(int(sys.argv[3])):
    session.run(None, {session.get_inputs()[0].name: x})
status = open("/proc/self/status").read().splitlines()
print(next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:")))
"""


def _status_bytes(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def prepare(name: str, work: Path) -> tuple[Path, Path]:
    """(exported model.onnx, compiled model dir), made once per work folder."""
    from dataclasses import replace

    from benchmarks.models.anomalib_zoo import export
    from compilers.frontends.intake import import_model
    from compilers.model import CompileOptions
    from compilers.runners import TvmRunner
    from compilers.tvm_compile import compile_model
    from compilers.verify import check_against_onnxruntime
    from packager.errors import AccuracyMismatchError
    from targets import host_target

    onnx_path = work / name / "export" / "model.onnx"
    if not onnx_path.exists():
        export(name, onnx_path.parent)
    model_dir = work / name / "compile" / "model"
    precise_dir = work / name / "compile" / "precise" / "model"
    if (precise_dir / "manifest.json").exists():
        return onnx_path, precise_dir
    if not (model_dir / "manifest.json").exists():
        imported = import_model(onnx_path)
        options = CompileOptions(work_dir=work / name / "compile")
        artifact = compile_model(imported, host_target(), options)
        try:  # what build ships: the precise compile when the first one fails the check (packager/build/pipeline.py)
            check_against_onnxruntime(TvmRunner.load(artifact), imported, options)
        except AccuracyMismatchError:
            precise = replace(options, precise=True, work_dir=precise_dir.parent)
            compile_model(imported, host_target(), precise)
            return onnx_path, precise_dir
    return onnx_path, model_dir


def agent_peak_rss(model_dir: Path, runs: int) -> tuple[int, int]:
    """(RSS after start-up, before the model is loaded; peak RSS after ``runs`` detections) of a fresh agent process."""
    import grpc
    import numpy as np

    from packager.edge import edge_agent_pb2 as pb
    from packager.edge import edge_agent_pb2_grpc as pb_grpc
    from packager.edge import registry

    with tempfile.TemporaryDirectory(prefix="memory-agent-") as scratch:
        registry_dir, address = Path(scratch) / "registry", f"unix://{scratch}/agent.sock"
        registry.add(registry_dir, registry.ModelRegistration("memory", "1.0.0", model_dir))
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        agent = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "packager.edge.agent",
                "--socket",
                address,
                "--registry",
                str(registry_dir),
                "--inference-threads",
                str(THREADS),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            with grpc.insecure_channel(address) as channel:
                grpc.channel_ready_future(channel).result(timeout=120)
                stub = pb_grpc.EdgeAgentStub(channel)
                idle = _status_bytes(agent.pid, "VmRSS")
                stub.StartModel(pb.StartModelRequest(model_component="memory"))
                deadline = time.monotonic() + 600
                while (
                    stub.DescribeModel(pb.DescribeModelRequest(model_component="memory")).model_description.status
                    != pb.RUNNING
                ):
                    if time.monotonic() > deadline or agent.poll() is not None:
                        raise RuntimeError(f"the agent did not start the model: {agent.stderr.read().decode()[-2000:]}")
                    time.sleep(0.1)
                spec = json.loads((model_dir / "spec.json").read_text())
                height, width = spec["preprocessing"]["resize"]
                image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
                bitmap = pb.Bitmap(width=width, height=height, byte_data=image.tobytes())
                for _ in range(runs):
                    stub.DetectAnomalies(pb.DetectAnomaliesRequest(model_component="memory", bitmap=bitmap))
                return idle, _status_bytes(agent.pid, "VmHWM")
        finally:
            agent.terminate()
            agent.wait(timeout=60)


def ort_peak_rss(onnx_path: Path, runs: int) -> int:
    done = subprocess.run(
        [sys.executable, "-c", ORT_PROCESS, str(onnx_path), str(THREADS), str(runs)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.split()[-1])


def markdown(results: dict) -> str:
    mib = 1 << 20
    lines = [
        "# Memory: Edge Agent vs ONNX Runtime",
        "",
        f"Measured {results['finished']} on {results['cpu']}, {THREADS} threads, {results['runs']} inferences per process. "
        f"Command: `{results['command']}`",
        "",
        "| model | params.bin MiB | agent idle RSS MiB | agent peak RSS MiB | ORT peak RSS MiB | agent / ORT | goal <= 1.2x |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for m in results["models"]:
        lines.append(
            f"| {m['name']} | {m['params_bytes'] / mib:.1f} | {m['agent_idle_rss'] / mib:.0f} | {m['agent_peak_rss'] / mib:.0f} | "
            f"{m['ort_peak_rss'] / mib:.0f} | {m['ratio']:.2f} | {'met' if m['ratio'] <= GOAL else 'not met'} |"
        )
    lines += [
        "",
        "Peak RSS is VmHWM of a fresh process; the agent's includes Python, gRPC and TVM's runtime "
        "(its idle RSS, before the model is loaded, is shown beside it). ORT's is a bare `InferenceSession` process.",
    ]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m["name"] for m in results["models"]]
    xs = range(len(names))
    fig, ax = plt.subplots(figsize=(max(6, len(names) * 0.9), 4))
    for offset, key, label in (
        (-0.3, "params_bytes", "params.bin"),
        (0.0, "agent_peak_rss", "Edge Agent peak RSS"),
        (0.3, "ort_peak_rss", "ORT peak RSS"),
    ):
        ax.bar([x + offset for x in xs], [m[key] / (1 << 20) for m in results["models"]], width=0.3, label=label)
    ax.set_xticks(list(xs), names, rotation=30, ha="right")
    ax.set_ylabel("MiB")
    ax.set_title(f"Memory per zoo model ({results['cpu']})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    from benchmarks.models.anomalib_zoo import MODELS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=sorted(MODELS))
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "zoo-memory",
        help="exports and compiled models, reused across runs",
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    results = {
        "cpu": cpu_name(),
        "runs": args.runs,
        "threads": THREADS,
        "command": "python benchmarks/memory_report.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "models": [],
    }
    for name in args.models:
        onnx_path, model_dir = prepare(name, args.work)
        idle, agent = agent_peak_rss(model_dir, args.runs)
        ort = ort_peak_rss(onnx_path, args.runs)
        row = {
            "name": name,
            "params_bytes": (model_dir / "params.bin").stat().st_size,
            "agent_idle_rss": idle,
            "agent_peak_rss": agent,
            "ort_peak_rss": ort,
            "ratio": agent / ort,
        }
        results["models"].append(row)
        print(json.dumps(row), flush=True)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "memory.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "memory.md").write_text(markdown(results))
    plot(results, args.out / "memory.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
