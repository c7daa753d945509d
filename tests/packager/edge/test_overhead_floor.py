"""The overhead benchmark's floor server must carry what the agent carries, or the floor it reports means nothing."""

from __future__ import annotations

import time

import grpc

from benchmarks.edge_overhead import floor_servicer
from packager.edge import edge_agent_pb2 as pb
from packager.edge import edge_agent_pb2_grpc as pb_grpc
from packager.edge.agent import listen

from .conftest import MODEL, bitmap, defective_image


def test_floor_answers_with_the_agents_message_size_after_its_busy_time(running_agent, tmp_path):
    image = defective_image()
    request = pb.DetectAnomaliesRequest(model_component=MODEL, bitmap=bitmap(image))
    from_agent = running_agent.stub.DetectAnomalies(request)
    server = listen(f"unix://{tmp_path}/floor.sock", floor_servicer(0.02, image.shape[1], image.shape[0]), workers=2)
    try:
        with grpc.insecure_channel(f"unix://{tmp_path}/floor.sock") as channel:
            started = time.perf_counter()
            from_floor = pb_grpc.EdgeAgentStub(channel).DetectAnomalies(request)
            elapsed = time.perf_counter() - started
    finally:
        server.stop(grace=None).wait()
    assert elapsed >= 0.02
    assert len(from_floor.detect_anomaly_result.anomaly_mask.byte_data) == image.size
    # The same mask bytes and anomaly entries; only the numbers and colour strings may differ by a few bytes.
    assert abs(from_floor.ByteSize() - from_agent.ByteSize()) < 32, (from_floor.ByteSize(), from_agent.ByteSize())
