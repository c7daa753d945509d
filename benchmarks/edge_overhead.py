"""What the Edge Agent adds to inference: DetectAnomalies over its Unix socket against the same model called in-process.

    python benchmarks/edge_overhead.py [--runs 300] [--size 224] [--output-dir benchmarks/results]

The agent runs in its own process, as on a device. Raw inference is AnomalyDetector.detect (resize, normalise,
run, score) in this process; the agent additionally parses the request, checks it, renders the mask at the
image's size and returns it. Rounds alternate between the two so that load on a shared machine hits both alike.
A floor server, the agent's gRPC set-up with a handler that only spins for raw inference's p50 and answers with a
mask of the same size, shows how much of the overhead is Python gRPC's own.
A second agent runs with the line on: every result published over MQTT to a local mosquitto (QoS 0, read by a
subscriber in another process), and image capture on (every anomalous image and the default 1% of normal ones,
encoded as PNG into a spool; no upload). Its calls alternate with the first agent's, one by one, so that the median
of the paired differences is what MQTT and capture add.
Writes edge_overhead.json, edge_overhead.md and edge_overhead.png. The goals are at most 2 ms overhead at p50, and
at most 0.2 ms more at p50 with MQTT and capture on.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the agent component's Setenv; must precede numpy

import argparse
import json
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
GOAL_MS = 2.0
LINE_GOAL_MS = 0.2  # what MQTT publishing and image capture may add to DetectAnomalies' p50
LINE_ON = "MQTT + capture on"
FLOOR = "Python gRPC floor: the agent's server, the same bytes, a handler that only spins for raw p50"


def model_files(scratch: Path) -> tuple[Path, Path, str]:
    """The bundled example model if it is there, else its architecture with random weights."""
    from packager.example_model import example_model_paths

    model, spec = example_model_paths()
    if model.exists() and spec.exists():
        return model, spec, "example model (packager/example_model)"
    from benchmarks.models.autoencoder import SIZE, build_autoencoder
    from benchmarks.models.export import to_onnx

    model, spec = scratch / "autoencoder.onnx", scratch / "spec.json"
    model.write_bytes(to_onnx(build_autoencoder(), SIZE))
    spec.write_text(
        json.dumps(
            {
                "input": {"name": "image", "shape": [1, 3, SIZE, SIZE]},
                "outputs": [{"name": "score", "role": "score"}, {"name": "anomaly_map", "role": "anomaly_map"}],
                "image_threshold": 0.5,
                "pixel_threshold": 0.5,
                "normalization": {"min": 0.0, "max": 1.0},
            }
        )
    )
    return model, spec, f"example architecture, random weights ({SIZE}x{SIZE})"


def test_images(size: int) -> dict[str, np.ndarray]:
    """The example's normal and scratched parts at size x size, or noise (every pixel painted) without them."""
    from PIL import Image

    images = REPO / "packager" / "example_model" / "images"
    found = {}
    for label, name in (("defective", "defect_scratch_01.png"), ("normal", "normal_01.png")):
        if (images / name).exists():
            with Image.open(images / name) as image:
                found[label] = np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR), np.uint8)
    return found or {"noise": np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)}


def compile_for_host(model: Path, spec: Path, work: Path) -> Path:
    from compilers.frontends.intake import import_model
    from compilers.model import CompileOptions
    from compilers.tvm_compile import compile_model
    from targets import host_target

    return compile_model(import_model(model, spec), host_target(), CompileOptions(work_dir=work)).model_dir


def start_agent(registry_dir: Path, address: str, threads: int, line_env: dict | None = None) -> subprocess.Popen:
    env = dict(
        os.environ,
        TVM_NUM_THREADS=str(threads),
        PYTHONPATH=os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))),
        **(line_env or {}),
    )
    return subprocess.Popen(
        [sys.executable, "-m", "packager.edge.agent", "--socket", address, "--registry", str(registry_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )


def cpu_model() -> str:
    try:
        return next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def start_broker(scratch: Path) -> tuple[subprocess.Popen, int] | None:
    """Debian's mosquitto on a free loopback port, or None when it is not installed."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        return None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (scratch / "mosquitto.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    broker = subprocess.Popen(
        [binary, "-c", str(scratch / "mosquitto.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return broker, port
        except OSError:
            if time.monotonic() > deadline:
                broker.terminate()
                raise SystemExit("edge_overhead: mosquitto did not start") from None
            time.sleep(0.05)


SUBSCRIBER = """
import signal, sys, threading
import paho.mqtt.client as mqtt
count, done = [0], threading.Event()
client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
client.on_connect = lambda c, *_: c.subscribe("lookoutvision/#")
client.on_message = lambda *_: count.__setitem__(0, count[0] + 1)
client.connect("127.0.0.1", int(sys.argv[1]))
client.loop_start()
signal.signal(signal.SIGTERM, lambda *_: done.set())
print("ready", flush=True)
done.wait()
client.loop_stop()
print(count[0], flush=True)
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_call(agents: dict[str, tuple[int, object]], runs: int) -> dict[str, float]:
    """The same calls, alternating, to each agent; each agent process's CPU time per call, in ms. Unlike latency, this
    hardly depends on what else the machine runs, and it counts the work MQTT and capture do off the request's path."""
    before = {name: cpu_seconds(pid) for name, (pid, _) in agents.items()}
    for _ in range(runs):
        for _, call in agents.values():
            call()
    return {name: (cpu_seconds(pid) - before[name]) / runs * 1e3 for name, (pid, _) in agents.items()}


def line_environment(port: int, spool_mb: int) -> dict:
    from packager.edge.settings import ENVIRONMENT

    return {
        ENVIRONMENT["Mqtt"]: json.dumps({"Enabled": True, "BrokerUrl": f"mqtt://127.0.0.1:{port}", "Qos": 0}),
        ENVIRONMENT["Capture"]: json.dumps({"Enabled": True, "NormalShare": 0.01, "MaxMegabytes": spool_mb}),
    }


def floor_servicer(busy_s: float, width: int, height: int):
    """DetectAnomalies with none of the agent's work: the handler spins for busy_s, then answers with a mask of the
    agent's size. What remains over busy_s is Python gRPC's own cost for the same bytes, on the same server set-up."""
    from packager.edge import edge_agent_pb2 as pb
    from packager.edge import edge_agent_pb2_grpc as pb_grpc

    mask = bytes(width * height * 3)

    class FloorServicer(pb_grpc.EdgeAgentServicer):
        def DetectAnomalies(self, request, context):
            request.bitmap.byte_data  # noqa: B018 -- read, as the agent reads it
            end = time.perf_counter() + busy_s
            while time.perf_counter() < end:
                pass
            response = pb.DetectAnomaliesResponse()
            found = response.detect_anomaly_result
            found.anomaly_mask.width, found.anomaly_mask.height, found.anomaly_mask.byte_data = width, height, mask
            for name in ("background", "anomaly"):
                found.anomalies.add(name=name).pixel_anomaly.hex_color = "#000000"
            return response

    return FloorServicer()


def serve_floor(address: str, busy_ms: float, size: int) -> int:
    import signal
    import threading

    from packager.edge.agent import CONTROL_WORKERS, DEFAULT_MAX_IN_FLIGHT, listen

    server = listen(address, floor_servicer(busy_ms / 1e3, size, size), DEFAULT_MAX_IN_FLIGHT + CONTROL_WORKERS)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    stopping.wait()
    server.stop(grace=1).wait()
    return 0


def start_floor(address: str, busy_ms: float, size: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))))
    return subprocess.Popen(
        [sys.executable, __file__, "--serve-floor", address, "--busy-ms", f"{busy_ms:.4f}", "--size", str(size)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )


def refused_call(stub, request) -> None:
    import grpc

    try:
        stub.DetectAnomalies(request)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc
        return
    raise AssertionError("a 63-pixel-wide bitmap was accepted")


def percentiles(samples: list[float]) -> dict:
    ms = np.asarray(samples) * 1e3
    return {
        "runs": len(ms),
        "min_ms": float(ms.min()),
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
    }


def measure(calls: dict, runs: int, rounds: int, warmup: int) -> dict[str, list[float]]:
    samples = {name: [] for name in calls}
    for call in calls.values():
        for _ in range(warmup):
            call()
    per_round = max(1, runs // rounds)
    for _ in range(rounds):
        for name, call in calls.items():
            for _ in range(per_round):
                started = time.perf_counter()
                call()
                samples[name].append(time.perf_counter() - started)
    return samples


def write_outputs(doc: dict, samples: dict[str, list[float]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "edge_overhead.json").write_text(json.dumps(doc, indent=2) + "\n")
    rows = [
        "| path | min ms | p50 ms | p90 ms | p99 ms | overhead: p50 - raw p50, ms | overhead: median paired difference, ms "
        "| overhead: min - raw min, ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(value: float | None) -> str:
        return "" if value is None else f"{value:.3f}"

    for name, stats in doc["latency"].items():
        rows.append(
            f"| {name} | {stats['min_ms']:.3f} | {stats['p50_ms']:.3f} | {stats['p90_ms']:.3f} | {stats['p99_ms']:.3f} | "
            f"{cell(doc['overhead_p50_ms'].get(name))} | {cell(doc['overhead_paired_median_ms'].get(name))} | "
            f"{cell(doc['overhead_min_ms'].get(name))} |"
        )
    header = (
        f"# Edge Agent overhead\n\n{doc['image']} image, {doc['model']}, {doc['threads']} TVM threads, "
        f"{doc['machine']}, {doc['cpu']}. Goal: at most {GOAL_MS} ms overhead at p50.\n\n"
    )
    line = ""
    if doc["line_added_ms"]:
        cpu = doc["agent_cpu_ms_per_call"]
        line_rows = [
            "| path | added at p50 (p50 on - p50 off), ms | added: median paired difference, ms "
            "| agent CPU per call off, ms | on, ms | added CPU, ms |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, v in doc["line_added_ms"].items():
            off = name[: -len(f", {LINE_ON}")]
            line_rows.append(
                f"| {name} | {v['p50_ms']:.3f} | {v['paired_median_ms']:.3f} | {cpu[off]:.3f} | {cpu[name]:.3f} | "
                f"{cpu[name] - cpu[off]:.3f} |"
            )
        line = (
            f"\n## With MQTT and capture on\n\nGoal: at most {LINE_GOAL_MS} ms added at p50. The subscriber received "
            f"{doc['line_messages_received']} messages for {doc['line_calls']} calls (warm-up included); "
            f"{doc['line_images_captured']} images were captured.\n\n" + "\n".join(line_rows) + "\n"
        )
    (out / "edge_overhead.md").write_text(header + "\n".join(rows) + "\n" + line)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for name, values in samples.items():
        ms = np.sort(np.asarray(values) * 1e3)
        axes.plot(ms, np.linspace(0, 1, len(ms)), label=name)
    axes.set_xlabel("latency (ms)")
    axes.set_ylabel("fraction of calls")
    axes.set_xscale("log")
    axes.set_title(f"DetectAnomalies vs raw inference, {doc['image']} image")
    axes.legend()
    figure.tight_layout()
    figure.savefig(out / "edge_overhead.png", dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300, help="timed calls per path (default 300)")
    parser.add_argument(
        "--rounds", type=int, default=None, help="alternating rounds the runs are split into (default: one call each)"
    )
    parser.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    # TVM keeps a worker pool per process whose workers spin for seconds after each call; with more than one thread,
    # the client's spinning workers slow the agent down and the other way round, which no device with one agent sees.
    parser.add_argument("--threads", type=int, default=1, help="TVM threads for both paths (default 1)")
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="serve this compiled model directory (model.so, params.bin, manifest.json, spec.json; CPU or "
        "CUDA) instead of compiling the example model here: TVM's runtime alone is then enough",
    )
    parser.add_argument("--output-dir", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--serve-floor", metavar="ADDRESS", help=argparse.SUPPRESS)  # the floor's server process
    parser.add_argument("--busy-ms", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_floor:
        return serve_floor(args.serve_floor, args.busy_ms, args.size)

    import grpc

    from packager.build.benchmark import set_tvm_threads, time_callable
    from packager.edge import client, registry
    from packager.edge import edge_agent_pb2 as pb
    from packager.edge import edge_agent_pb2_grpc as pb_grpc
    from packager.edge.model_runner import AnomalyDetector

    threads = args.threads
    set_tvm_threads(threads)
    with tempfile.TemporaryDirectory(prefix="edge-overhead-") as scratch:
        scratch = Path(scratch)
        if args.model_dir is None:
            model, spec, model_label = model_files(scratch)
            model_dir = compile_for_host(model, spec, scratch / "work")
        else:
            model_dir = args.model_dir.resolve()
            manifest = json.loads((model_dir / "manifest.json").read_text())
            model_label = f"{model_dir} ({manifest['target']}, on {manifest['device']})"
        registry.add(scratch / "registry", registry.ModelRegistration("bench.Model", "1.0.0", model_dir))
        address = f"unix://{scratch}/agent.sock"
        images = test_images(args.size)
        first = next(iter(images.values()))
        source = shared_memory.SharedMemory(create=True, size=first.size)
        target = shared_memory.SharedMemory(create=True, size=first.size)
        agent = start_agent(scratch / "registry", address, threads)
        floor = line_agent = subscriber = None
        broker = start_broker(scratch)
        published = None
        try:
            source.buf[: first.size] = first.tobytes()
            # As Lookout's client apps open it, and as lookout_edge.client recommends (HTTP/2 flow-control options).
            plain, tuned = grpc.insecure_channel(address), client.channel(address)
            grpc.channel_ready_future(plain).result(timeout=60)
            stub, tuned_stub = pb_grpc.EdgeAgentStub(plain), pb_grpc.EdgeAgentStub(tuned)
            line_stub = None
            if broker is not None:
                registry.add(scratch / "line" / "models", registry.ModelRegistration("bench.Model", "1.0.0", model_dir))
                line_address = f"unix://{scratch}/line-agent.sock"
                subscriber = subprocess.Popen(
                    [sys.executable, "-c", SUBSCRIBER, str(broker[1])], stdout=subprocess.PIPE, text=True
                )
                subscriber.stdout.readline()
                line_agent = start_agent(
                    scratch / "line" / "models", line_address, threads, line_environment(broker[1], 256)
                )
                line_channel = grpc.insecure_channel(line_address)
                grpc.channel_ready_future(line_channel).result(timeout=60)
                line_stub = pb_grpc.EdgeAgentStub(line_channel)
            else:
                print("edge_overhead: mosquitto is not installed; the MQTT + capture path is left out", file=sys.stderr)
            for each in filter(None, (stub, line_stub)):
                each.StartModel(pb.StartModelRequest(model_component="bench.Model"))
                deadline = time.monotonic() + 120
                while (
                    model := each.DescribeModel(
                        pb.DescribeModelRequest(model_component="bench.Model")
                    ).model_description
                ).status != pb.RUNNING:
                    if model.status == pb.FAILED or time.monotonic() > deadline:
                        raise SystemExit(
                            f"edge_overhead: the agent could not start {model_dir}: "
                            f"{pb.ModelStatus.Name(model.status)}, {model.status_message or 'no message'}"
                        )
                    time.sleep(0.05)
            detector = AnomalyDetector.load(model_dir)
            x = np.zeros(detector.model.manifest["input_shape"], np.float32)
            calls = {"model run only (in process)": lambda: detector.model.run(x)}
            for label, image in images.items():
                inline = pb.DetectAnomaliesRequest(
                    model_component="bench.Model",
                    bitmap=pb.Bitmap(width=args.size, height=args.size, byte_data=image.tobytes()),
                )
                calls[f"raw inference, {label} (in process)"] = lambda image=image: detector.detect(image)
                calls[f"DetectAnomalies, {label}, bytes in message, plain channel"] = lambda inline=inline: (
                    stub.DetectAnomalies(inline)
                )
                if line_stub is not None:
                    calls[f"DetectAnomalies, {label}, bytes in message, plain channel, {LINE_ON}"] = (
                        lambda inline=inline: line_stub.DetectAnomalies(inline)
                    )
                calls[f"DetectAnomalies, {label}, bytes in message, lookout_edge.client channel"] = (
                    lambda inline=inline: tuned_stub.DetectAnomalies(inline)
                )
            first_label = next(iter(images))
            shared = pb.DetectAnomaliesRequest(
                model_component="bench.Model",
                bitmap=pb.Bitmap(
                    width=args.size,
                    height=args.size,
                    shared_memory_handle=pb.SharedMemoryHandle(name=source.name, size=first.size),
                ),
                anomaly_mask_params=pb.AnomalyMaskParams(
                    shared_memory_handle=pb.SharedMemoryHandle(name=target.name, size=first.size)
                ),
            )
            calls[f"DetectAnomalies, {first_label}, shared memory, plain channel"] = lambda: stub.DetectAnomalies(
                shared
            )
            # The transport alone: the same bytes, refused before any work (width 63 is out of range).
            refused = pb.DetectAnomaliesRequest(
                model_component="bench.Model", bitmap=pb.Bitmap(width=63, height=args.size, byte_data=first.tobytes())
            )
            calls["gRPC round trip only (request refused at once)"] = lambda: refused_call(stub, refused)
            # The floor: the same request and response bytes through the agent's server set-up, with a handler that
            # only spins for as long as raw inference takes.
            first_inline = pb.DetectAnomaliesRequest(
                model_component="bench.Model",
                bitmap=pb.Bitmap(width=args.size, height=args.size, byte_data=first.tobytes()),
            )
            busy_ms = time_callable(lambda: detector.detect(first), warmup=10, runs=60).p50_ms
            floor_address = f"unix://{scratch}/floor.sock"
            floor = start_floor(floor_address, busy_ms, args.size)
            floor_plain, floor_tuned = grpc.insecure_channel(floor_address), client.channel(floor_address)
            grpc.channel_ready_future(floor_plain).result(timeout=60)
            for label, channel in (("plain channel", floor_plain), ("lookout_edge.client channel", floor_tuned)):
                floor_stub = pb_grpc.EdgeAgentStub(channel)
                calls[f"{FLOOR}, {label}"] = lambda floor_stub=floor_stub: floor_stub.DetectAnomalies(first_inline)
            samples = measure(calls, args.runs, args.rounds or args.runs, warmup=20)
            cpu = {}
            if line_stub is not None:
                for label in images:
                    off, on = f"DetectAnomalies, {label}, bytes in message, plain channel", None
                    on = f"{off}, {LINE_ON}"
                    cpu.update(cpu_per_call({off: (agent.pid, calls[off]), on: (line_agent.pid, calls[on])}, args.runs))
            for channel in (plain, tuned, floor_plain, floor_tuned):
                channel.close()
            if line_stub is not None:
                line_channel.close()
                line_agent.terminate()
                line_agent.wait(timeout=30)
                time.sleep(0.5)
                subscriber.terminate()
                published = int(subscriber.communicate(timeout=30)[0].strip() or 0)
                spool = scratch / "line" / "capture"
                captured = len(list(spool.rglob("*.json"))) if spool.exists() else 0
        finally:
            for server in filter(None, (agent, floor, line_agent, subscriber, broker and broker[0])):
                if server.poll() is None:
                    server.terminate()
                    server.wait(timeout=30)
            for segment in (source, target):
                segment.close()
                segment.unlink()
    latency = {name: percentiles(values) for name, values in samples.items()}
    raw = {label: latency[f"raw inference, {label} (in process)"]["p50_ms"] for label in images}
    overhead = {
        name: stats["p50_ms"] - raw[name.split(", ")[1]]
        for name, stats in latency.items()
        if name.startswith("DetectAnomalies")
    }
    # What the line adds: each line-on call against the line-off call made just before it, on the same image.
    line_added = {
        name: {
            "p50_ms": latency[name]["p50_ms"] - latency[name[: -len(f", {LINE_ON}")]]["p50_ms"],
            "paired_median_ms": float(
                np.median(np.subtract(samples[name], samples[name[: -len(f", {LINE_ON}")]])) * 1e3
            ),
        }
        for name in latency
        if name.endswith(LINE_ON)
    }
    # Calls alternate one by one, so the median of call-by-call differences cancels most of the machine's load.
    paired = {
        name: float(
            np.median(np.subtract(samples[name], samples[f"raw inference, {name.split(', ')[1]} (in process)"])) * 1e3
        )
        for name in overhead
    }
    # The fastest call of each: what the agent adds when nothing else on the machine gets in the way.
    at_min = {
        name: latency[name]["min_ms"] - latency[f"raw inference, {name.split(', ')[1]} (in process)"]["min_ms"]
        for name in overhead
    }
    # The floor's handler time is fixed, so its own overhead is plain subtraction.
    for name in (name for name in latency if name.startswith(FLOOR)):
        overhead[name] = latency[name]["p50_ms"] - busy_ms
        paired[name] = float(np.median(samples[name])) * 1e3 - busy_ms
        at_min[name] = latency[name]["min_ms"] - busy_ms
    doc = {
        "image": f"{args.size}x{args.size}",
        "images": list(images),
        "model": model_label,
        "threads": threads,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
        "latency": latency,
        "overhead_p50_ms": overhead,
        "overhead_paired_median_ms": paired,
        "overhead_min_ms": at_min,
        "floor_handler_ms": busy_ms,
        "goal_p50_overhead_ms": GOAL_MS,
        "cpu": cpu_model(),
        "line_added_ms": line_added,
        "goal_line_added_p50_ms": LINE_GOAL_MS,
        "agent_cpu_ms_per_call": cpu,
        "line_messages_received": published,
        "line_calls": sum(len(samples[n]) + args.runs + 20 for n in line_added),
        "line_images_captured": captured if line_added else None,
    }
    write_outputs(doc, samples, args.output_dir)
    print((args.output_dir / "edge_overhead.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
