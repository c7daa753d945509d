"""The Edge Agent over gRPC on a Unix socket, serving a real compiled model: results, every error code, shared memory."""

from __future__ import annotations

import json
import os
import threading
import time
from contextlib import contextmanager
from multiprocessing import shared_memory
from pathlib import Path

import grpc
import numpy as np
import pytest

from packager.edge import edge_agent_pb2 as pb
from packager.edge import registry
from packager.edge.model_runner import AnomalyDetector
from tests.packager.edge.conftest import MODEL, bitmap, defective_image, normal_image, wait_for_status

pytestmark = pytest.mark.slow  # the session's first test compiles the model


@contextmanager
def inference_held(hosted):
    """Keep the model's inference thread busy, so detections wait inside the agent until the block ends."""
    release = threading.Event()
    hosted.inference.submit(release.wait)
    try:
        yield
    finally:
        release.set()


def detect(stub, image, **kwargs) -> pb.DetectAnomalyResult:
    request = pb.DetectAnomaliesRequest(model_component=MODEL, bitmap=bitmap(image), **kwargs)
    return stub.DetectAnomalies(request).detect_anomaly_result


def rpc_error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request)
    return caught.value


def test_models_are_listed_stopped_until_started(agent):
    models = agent.stub.ListModels(pb.ListModelsRequest()).models
    assert [(m.model_component, m.status) for m in models] == [(MODEL, pb.STOPPED)]
    description = agent.stub.DescribeModel(pb.DescribeModelRequest(model_component=MODEL)).model_description
    assert description.model_component == MODEL and description.status == pb.STOPPED


def test_start_is_asynchronous_and_stop_returns_to_stopped(agent):
    assert agent.stub.StartModel(pb.StartModelRequest(model_component=MODEL)).status == pb.STARTING
    assert wait_for_status(agent.stub, MODEL, pb.RUNNING).status == pb.RUNNING
    assert agent.stub.StopModel(pb.StopModelRequest(model_component=MODEL)).status == pb.STOPPING
    assert wait_for_status(agent.stub, MODEL, pb.STOPPED).status == pb.STOPPED


def test_normal_and_defective_images(running_agent, compiled_model_dir):
    reference = AnomalyDetector.load(compiled_model_dir)
    spec = json.loads((compiled_model_dir / "spec.json").read_text())
    for image, anomalous in ((normal_image(), False), (defective_image(), True)):
        result = detect(running_agent.stub, image)
        expected = reference.detect(image)
        assert result.is_anomalous is anomalous
        assert result.anomaly_score == pytest.approx(expected.score, rel=1e-5)
        norm = spec["normalization"]
        assert result.anomaly_threshold == pytest.approx(
            (spec["image_threshold"] - norm["min"]) / (norm["max"] - norm["min"])
        )
        assert result.is_anomalous == (result.anomaly_score > result.anomaly_threshold)
        assert 0.0 <= result.confidence <= 1.0 and result.confidence == pytest.approx(expected.confidence, abs=1e-5)
        mask = np.frombuffer(result.anomaly_mask.byte_data, np.uint8).reshape(image.shape)
        assert (result.anomaly_mask.width, result.anomaly_mask.height) == (image.shape[1], image.shape[0])
        assert [(a.name, a.pixel_anomaly.hex_color) for a in result.anomalies] == [
            ("background", "#FFFFFF"),
            ("scratch", "#FF0000"),
        ]
        areas = [a.pixel_anomaly.total_percentage_area for a in result.anomalies]
        assert sum(areas) == pytest.approx(1.0, abs=1e-5)
        red = np.all(mask == (255, 0, 0), axis=-1)
        assert np.all(red | np.all(mask == (255, 255, 255), axis=-1))  # only the palette's colours
        assert red.mean() == pytest.approx(areas[1], abs=1e-6)
        assert (areas[1] > 0) is anomalous


def test_shared_memory_input_and_mask_round_trip(running_agent):
    image = defective_image(80, 100)
    size = image.size
    with_inline = detect(running_agent.stub, image)
    source = shared_memory.SharedMemory(create=True, size=size + 16)
    target = shared_memory.SharedMemory(create=True, size=size + 32)
    try:
        source.buf[16 : 16 + size] = image.tobytes()
        request = pb.DetectAnomaliesRequest(
            model_component=MODEL,
            bitmap=pb.Bitmap(
                width=100, height=80, shared_memory_handle=pb.SharedMemoryHandle(name=source.name, size=size, offset=16)
            ),
            anomaly_mask_params=pb.AnomalyMaskParams(
                shared_memory_handle=pb.SharedMemoryHandle(name=target.name, size=size + 24, offset=8)
            ),
        )
        result = running_agent.stub.DetectAnomalies(request).detect_anomaly_result
        handle = result.anomaly_mask.shared_memory_handle
        assert result.anomaly_mask.WhichOneof("data") == "shared_memory_handle"
        assert (handle.name, handle.size, handle.offset) == (target.name, size, 8)
        assert bytes(target.buf[8 : 8 + size]) == with_inline.anomaly_mask.byte_data
        assert result.anomaly_score == with_inline.anomaly_score and result.is_anomalous
    finally:
        for segment in (source, target):
            segment.close()
            segment.unlink()


@pytest.mark.parametrize(
    "width, height, data, field",
    [
        (63, 64, bytes(63 * 64 * 3), "bitmap.width"),
        (64, 4097, bytes(64 * 4097 * 3), "bitmap.height"),
        (64, 64, bytes(64 * 64 * 3 - 1), "byte_data"),
        (64, 64, None, "byte_data or shared_memory_handle"),
    ],
)
def test_bad_bitmaps_are_invalid_argument(running_agent, width, height, data, field):
    request = pb.DetectAnomaliesRequest(model_component=MODEL, bitmap=pb.Bitmap(width=width, height=height))
    if data is not None:
        request.bitmap.byte_data = data
    error = rpc_error(running_agent.stub.DetectAnomalies, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and field in error.details()


def test_bad_shared_memory_handles_are_invalid_argument(running_agent):
    image = normal_image(64, 64)
    stub = running_agent.stub
    missing = pb.DetectAnomaliesRequest(
        model_component=MODEL,
        bitmap=pb.Bitmap(
            width=64, height=64, shared_memory_handle=pb.SharedMemoryHandle(name="no-such-segment", size=image.size)
        ),
    )
    assert "no such shared memory segment" in rpc_error(stub.DetectAnomalies, missing).details()
    escaping = pb.DetectAnomaliesRequest(
        model_component=MODEL,
        bitmap=pb.Bitmap(
            width=64, height=64, shared_memory_handle=pb.SharedMemoryHandle(name="../../etc/passwd", size=image.size)
        ),
    )
    assert rpc_error(stub.DetectAnomalies, escaping).code() == grpc.StatusCode.INVALID_ARGUMENT
    small = shared_memory.SharedMemory(create=True, size=image.size - 1)
    try:
        too_small = pb.DetectAnomaliesRequest(
            model_component=MODEL,
            bitmap=bitmap(image),
            anomaly_mask_params=pb.AnomalyMaskParams(
                shared_memory_handle=pb.SharedMemoryHandle(name=small.name, size=image.size - 1)
            ),
        )
        error = rpc_error(stub.DetectAnomalies, too_small)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "anomaly_mask_params" in error.details()
    finally:
        small.close()
        small.unlink()


@pytest.mark.parametrize("kind", ["symlink", "directory", "fifo"])
def test_shared_memory_names_that_are_not_segments_are_refused(running_agent, tmp_path, kind):
    """Issue 15 item 3: a mask handle naming a symlink wrote the mask into the file it pointed to."""
    image = normal_image(64, 64)
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"\0" * (image.size + 64))
    name = f"packager-test-{kind}-{os.getpid()}"
    path = Path("/dev/shm") / name
    {"symlink": lambda: path.symlink_to(victim), "directory": path.mkdir, "fifo": lambda: os.mkfifo(path)}[kind]()
    try:
        handle = pb.SharedMemoryHandle(name=name, size=image.size)
        for request in (
            pb.DetectAnomaliesRequest(
                model_component=MODEL,
                bitmap=bitmap(image),
                anomaly_mask_params=pb.AnomalyMaskParams(shared_memory_handle=handle),
            ),
            pb.DetectAnomaliesRequest(
                model_component=MODEL, bitmap=pb.Bitmap(width=64, height=64, shared_memory_handle=handle)
            ),
        ):
            error = rpc_error(running_agent.stub.DetectAnomalies, request)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
            assert "is not a shared memory segment" in error.details()
        assert victim.read_bytes() == b"\0" * (image.size + 64)  # nothing written through the link
    finally:
        path.rmdir() if kind == "directory" else path.unlink()


def test_missing_fields_are_invalid_argument(running_agent):
    stub = running_agent.stub
    for request in (
        pb.DetectAnomaliesRequest(model_component=MODEL),
        pb.DetectAnomaliesRequest(bitmap=bitmap(normal_image())),
    ):
        assert rpc_error(stub.DetectAnomalies, request).code() == grpc.StatusCode.INVALID_ARGUMENT
    for call, request in (
        (stub.StartModel, pb.StartModelRequest()),
        (stub.StopModel, pb.StopModelRequest()),
        (stub.DescribeModel, pb.DescribeModelRequest()),
    ):
        assert rpc_error(call, request).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_unknown_component_is_not_found(agent):
    stub = agent.stub
    for call, request in (
        (stub.StartModel, pb.StartModelRequest(model_component="nope")),
        (stub.StopModel, pb.StopModelRequest(model_component="nope")),
        (stub.DescribeModel, pb.DescribeModelRequest(model_component="nope")),
        (stub.DetectAnomalies, pb.DetectAnomaliesRequest(model_component="nope", bitmap=bitmap(normal_image()))),
    ):
        error = rpc_error(call, request)
        assert error.code() == grpc.StatusCode.NOT_FOUND and "nope" in error.details()


def test_wrong_state_is_failed_precondition(agent):
    stub = agent.stub
    for call, request in (
        (stub.StopModel, pb.StopModelRequest(model_component=MODEL)),
        (stub.DetectAnomalies, pb.DetectAnomaliesRequest(model_component=MODEL, bitmap=bitmap(normal_image()))),
    ):
        error = rpc_error(call, request)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "STOPPED" in error.details()
    stub.StartModel(pb.StartModelRequest(model_component=MODEL))
    wait_for_status(stub, MODEL, pb.RUNNING)
    error = rpc_error(stub.StartModel, pb.StartModelRequest(model_component=MODEL))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "RUNNING" in error.details()


def test_a_model_that_cannot_load_is_failed_and_can_be_started_again(agent, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{}")
    registry.add(agent.registry_dir, registry.ModelRegistration("com.acme.Broken", "1.0.0", broken))
    stub = agent.stub
    assert stub.StartModel(pb.StartModelRequest(model_component="com.acme.Broken")).status == pb.STARTING
    description = wait_for_status(stub, "com.acme.Broken", pb.FAILED)
    assert description.status == pb.FAILED and "failed to load" in description.status_message
    assert stub.StartModel(pb.StartModelRequest(model_component="com.acme.Broken")).status == pb.STARTING


def test_unregistered_model_disappears(agent):
    registry.remove(agent.registry_dir, MODEL)
    assert agent.stub.ListModels(pb.ListModelsRequest()).models == []
    error = rpc_error(agent.stub.DescribeModel, pb.DescribeModelRequest(model_component=MODEL))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_malformed_request_bytes_do_not_kill_the_agent(running_agent):
    raw = running_agent.channel.unary_unary("/AWS.LookoutVision.EdgeAgent/DetectAnomalies")
    with pytest.raises(grpc.RpcError):
        raw(b"\xff\xff\xff\xff not a protobuf")
    assert detect(running_agent.stub, normal_image()).is_anomalous is False


def test_overload_is_resource_exhausted_not_queued(make_agent):
    agent = make_agent(max_in_flight=1)
    agent.stub.StartModel(pb.StartModelRequest(model_component=MODEL))
    wait_for_status(agent.stub, MODEL, pb.RUNNING)
    hosted = agent.host.hosted(MODEL)
    request = pb.DetectAnomaliesRequest(model_component=MODEL, bitmap=bitmap(normal_image()))
    with inference_held(hosted):  # the first call takes the only slot and waits for the model
        first = agent.stub.DetectAnomalies.future(request)
        deadline = time.monotonic() + 10
        while hosted.in_use == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        error = rpc_error(agent.stub.DetectAnomalies, request)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # control calls keep their own workers
        assert (
            agent.stub.DescribeModel(pb.DescribeModelRequest(model_component=MODEL)).model_description.status
            == pb.RUNNING
        )
    assert first.result(timeout=30).detect_anomaly_result.is_anomalous is False


def test_stop_waits_for_running_detections(running_agent):
    hosted = running_agent.host.hosted(MODEL)
    request = pb.DetectAnomaliesRequest(model_component=MODEL, bitmap=bitmap(defective_image()))
    with inference_held(hosted):
        pending = running_agent.stub.DetectAnomalies.future(request)
        while hosted.in_use == 0:
            time.sleep(0.01)
        assert running_agent.stub.StopModel(pb.StopModelRequest(model_component=MODEL)).status == pb.STOPPING
        time.sleep(0.2)
        assert wait_for_status(running_agent.stub, MODEL, pb.STOPPED, timeout=0).status == pb.STOPPING
    assert pending.result(timeout=30).detect_anomaly_result.is_anomalous is True
    assert wait_for_status(running_agent.stub, MODEL, pb.STOPPED).status == pb.STOPPED


def test_sixteen_concurrent_clients_for_ten_seconds(running_agent):
    images = [normal_image(), defective_image(), normal_image(224, 224), defective_image(224, 224)]
    expected = [detect(running_agent.stub, image).anomaly_score for image in images]
    counts, errors = [0] * 16, []
    stop_at = time.monotonic() + 10

    def client(index: int) -> None:
        with grpc.insecure_channel(running_agent.address) as channel:
            from packager.edge import edge_agent_pb2_grpc as pb_grpc

            stub = pb_grpc.EdgeAgentStub(channel)
            while time.monotonic() < stop_at:
                k = (index + counts[index]) % len(images)
                try:
                    score = detect(stub, images[k]).anomaly_score
                    if score != expected[k]:
                        errors.append(f"client {index}: score {score} != {expected[k]}")
                except grpc.RpcError as exc:
                    errors.append(f"client {index}: {exc.code()} {exc.details()}")
                counts[index] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert all(count > 0 for count in counts), counts


def test_client_channel_carries_a_mask_too_big_for_grpcs_default_limit(running_agent):
    from packager.edge import client
    from packager.edge import edge_agent_pb2_grpc as pb_grpc

    image = defective_image(1200, 1600)  # its mask is 5.8 MB inline; gRPC clients accept 4 MB by default
    request = pb.DetectAnomaliesRequest(model_component=MODEL, bitmap=bitmap(image))
    assert rpc_error(running_agent.stub.DetectAnomalies, request).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with client.channel(running_agent.address) as channel:
        result = pb_grpc.EdgeAgentStub(channel).DetectAnomalies(request).detect_anomaly_result
    assert result.is_anomalous is True
    assert (
        len(result.anomaly_mask.byte_data) == image.size and result.anomalies[1].pixel_anomaly.total_percentage_area > 0
    )


def _agent_after_one_detection(tmp_path, compiled_model_dir, inference_threads: int) -> tuple[str, str]:
    """The agent process's log and memory map, after StartModel and one detection."""
    import subprocess
    import sys

    from packager.edge import edge_agent_pb2_grpc as pb_grpc

    registry_dir, address = (
        tmp_path / f"registry-{inference_threads}",
        f"unix://{tmp_path}/threads-{inference_threads}.sock",
    )
    registry.add(registry_dir, registry.ModelRegistration(MODEL, "1.0.0", compiled_model_dir))
    env = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "TVM_USE_RUNTIME_LIB")}
    log_path = tmp_path / f"agent-{inference_threads}.log"
    with open(log_path, "wb") as log:
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
                str(inference_threads),
            ],
            cwd=Path(__file__).resolve().parents[3],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        with grpc.insecure_channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
            stub = pb_grpc.EdgeAgentStub(channel)
            stub.StartModel(pb.StartModelRequest(model_component=MODEL))
            assert wait_for_status(stub, MODEL, pb.RUNNING).status == pb.RUNNING
            detect(stub, defective_image())
            return log_path.read_text(), open(f"/proc/{agent.pid}/maps").read()
    finally:
        agent.terminate()
        agent.wait(timeout=30)


def test_inference_threads_sizes_tvms_pool_and_only_tvms_runtime_is_loaded(tmp_path, compiled_model_dir):
    """TVM's own count of the threads its pool uses on the model's thread, which it caps at the cores.

    Counting the agent's threads was flaky: gRPC's own threads grow with load."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("TVM uses at most one thread per core, so one core cannot show two")
    one, maps = _agent_after_one_detection(tmp_path, compiled_model_dir, 1)
    two, _ = _agent_after_one_detection(tmp_path, compiled_model_dir, 2)
    assert f"{compiled_model_dir} runs on 1 TVM CPU threads" in one
    assert f"{compiled_model_dir} runs on 2 TVM CPU threads" in two
    assert "libtvm_runtime.so" in maps and "libtvm_compiler.so" not in maps
