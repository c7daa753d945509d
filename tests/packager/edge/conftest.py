"""A compiled tiny autoencoder and an Edge Agent serving it on a temporary Unix socket."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from packager.edge import edge_agent_pb2 as pb
from packager.edge import edge_agent_pb2_grpc as pb_grpc
from packager.edge import registry
from packager.edge.agent import serve
from packager.edge.model_host import ModelHost
from tests.conftest import make_tiny_autoencoder, tiny_spec_dict

MODEL = "com.acme.TinyDetector"


def edge_spec_dict() -> dict:
    """The untrained autoencoder reconstructs flat grey with error ~0.95 and a noisy patch with errors up to ~3,
    so these thresholds split a normal image from a defective one."""
    spec = tiny_spec_dict()
    spec.update(
        image_threshold=1.5,
        pixel_threshold=1.2,
        normalization={"min": 0.9, "max": 3.0},
        classes=[{"name": "scratch", "color": "#FF0000"}],
        background_color="#FFFFFF",
    )
    return spec


def normal_image(height: int = 96, width: int = 128) -> np.ndarray:
    return np.full((height, width, 3), 128, np.uint8)


def defective_image(height: int = 96, width: int = 128) -> np.ndarray:
    image = normal_image(height, width)
    rng = np.random.default_rng(0)
    top, left = height // 3, width // 3
    image[top : 2 * top, left : 2 * left] = rng.integers(0, 256, (top, left, 3))
    return image


def bitmap(image: np.ndarray) -> pb.Bitmap:
    return pb.Bitmap(width=image.shape[1], height=image.shape[0], byte_data=image.tobytes())


def wait_for_status(stub, component: str, status: int, timeout: float = 60.0) -> pb.ModelDescription:
    deadline = time.monotonic() + timeout
    while True:
        description = stub.DescribeModel(pb.DescribeModelRequest(model_component=component)).model_description
        if description.status == status or time.monotonic() > deadline:
            return description
        time.sleep(0.05)


@pytest.fixture(scope="session")
def edge_model_files(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("edge_model")
    spec = root / "spec.json"
    spec.write_text(json.dumps(edge_spec_dict()))
    return make_tiny_autoencoder(root / "tiny.onnx"), spec


@pytest.fixture(scope="session")
def compiled_model_dir(edge_model_files, tmp_path_factory) -> Path:
    from compilers.frontends.intake import import_model
    from compilers.model import CompileOptions
    from compilers.tvm_compile import compile_model
    from targets import host_target

    work = tmp_path_factory.mktemp("edge_compile")
    artifact = compile_model(import_model(*edge_model_files), host_target(), CompileOptions(work_dir=work))
    return artifact.model_dir


class RunningAgent:
    def __init__(self, registry_dir: Path, address: str, max_in_flight: int, sinks: tuple = (), thresholds=None):
        self.registry_dir = registry_dir
        self.address = address
        self.host = ModelHost(registry_dir, thresholds=thresholds)
        self.sinks = sinks
        self.server = serve(address, self.host, max_in_flight, sinks)
        self.channel = grpc.insecure_channel(address)
        self.stub = pb_grpc.EdgeAgentStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.server.stop(grace=None).wait()
        for sink in self.sinks:
            sink.close()


@pytest.fixture
def make_agent(tmp_path, compiled_model_dir):
    """Start an agent with the tiny model registered as MODEL; every agent started is stopped at teardown."""
    agents = []

    def start(max_in_flight: int = 32, sinks: tuple = (), thresholds=None, model_arn: str = "") -> RunningAgent:
        registry_dir = tmp_path / f"registry{len(agents)}"
        registry.add(registry_dir, registry.ModelRegistration(MODEL, "1.0.0", compiled_model_dir, model_arn))
        agent = RunningAgent(
            registry_dir, f"unix://{tmp_path}/agent{len(agents)}.sock", max_in_flight, sinks, thresholds
        )
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.close()


@pytest.fixture
def agent(make_agent) -> RunningAgent:
    return make_agent()


@pytest.fixture
def running_agent(agent) -> RunningAgent:
    assert agent.stub.StartModel(pb.StartModelRequest(model_component=MODEL)).status == pb.STARTING
    assert wait_for_status(agent.stub, MODEL, pb.RUNNING).status == pb.RUNNING
    return agent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Mosquitto:
    """Debian's mosquitto on 127.0.0.1 and a free port, anonymous, no persistence; stop() and start() keep the port."""

    def __init__(self, work: Path):
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.port = free_port()
        self.config = work / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n{self.run_as}"
        )
        self.log = work / "mosquitto.log"
        self.process: subprocess.Popen | None = None

    @property
    def run_as(self) -> str:
        """Started as root, mosquitto drops to the user "mosquitto", who cannot read the test's private files."""
        import getpass

        return f"user {getpass.getuser()}\n"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Mosquitto:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([self.binary, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def mosquitto(tmp_path):
    if not Path(shutil.which("mosquitto") or "/usr/sbin/mosquitto").exists():
        pytest.fail("mosquitto is not installed: run ./setup.sh (apt-get install mosquitto)")
    broker = Mosquitto(tmp_path).start()
    yield broker
    broker.stop()


class Subscriber:
    """A paho client collecting every message on a topic filter; it subscribes again after each reconnect."""

    def __init__(self, port: int, topic: str):
        import threading

        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, dict]] = []
        self._arrived = threading.Condition()
        self._subscribed = threading.Event()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-subscriber-{port}")
        client.reconnect_delay_set(0.1, 1)
        client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        client.on_subscribe = lambda *_: self._subscribed.set()
        client.on_disconnect = lambda *_: self._subscribed.clear()
        client.on_message = self._on_message
        client.connect_async("127.0.0.1", port)
        client.loop_start()
        self.client = client

    def _on_message(self, client, userdata, message) -> None:
        with self._arrived:
            self.messages.append((message.topic, json.loads(message.payload)))
            self._arrived.notify_all()

    def wait_subscribed(self, timeout: float = 20.0) -> None:
        assert self._subscribed.wait(timeout), "the test subscriber never subscribed"

    def wait_for(self, count: int, timeout: float = 20.0) -> list[tuple[str, dict]]:
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
