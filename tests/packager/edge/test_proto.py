"""The wire contract: field numbers as Lookout's Edge Agent defined them, generated code in step with the .proto,
and the on-device package importing nothing but its own modules, numpy, grpc and the TVM runtime."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from packager.edge import edge_agent_pb2 as pb
from packager.greengrass.bundle import EDGE_PACKAGE, _edge_sources

EDGE_DIR = Path(__file__).resolve().parents[3] / "packager" / "edge"

FIELDS = {
    "SharedMemoryHandle": {"name": 1, "size": 2, "offset": 3},
    "Bitmap": {"width": 1, "height": 2, "byte_data": 3, "shared_memory_handle": 4},
    "AnomalyMaskParams": {"shared_memory_handle": 2},
    "DetectAnomaliesRequest": {"model_component": 1, "bitmap": 2, "anomaly_mask_params": 3},
    "DetectAnomalyResult": {
        "is_anomalous": 1,
        "confidence": 2,
        "anomaly_mask": 3,
        "anomalies": 4,
        "anomaly_score": 5,
        "anomaly_threshold": 6,
    },
    "Anomaly": {"name": 1, "pixel_anomaly": 2},
    "PixelAnomaly": {"total_percentage_area": 1, "hex_color": 2},
    "DetectAnomaliesResponse": {"detect_anomaly_result": 1},
    "ModelDescription": {"model_component": 1, "lookout_vision_model_arn": 2, "status": 3, "status_message": 4},
    "ModelMetadata": {"model_component": 1, "lookout_vision_model_arn": 2, "status": 3, "status_message": 4},
    "DescribeModelRequest": {"model_component": 1},
    "DescribeModelResponse": {"model_description": 1},
    "ListModelsRequest": {},
    "ListModelsResponse": {"models": 1},
    "StartModelRequest": {"model_component": 1},
    "StartModelResponse": {"status": 1},
    "StopModelRequest": {"model_component": 1},
    "StopModelResponse": {"status": 1},
}


@pytest.mark.parametrize("message", sorted(FIELDS))
def test_field_numbers_match_lookouts(message):
    descriptor = pb.DESCRIPTOR.message_types_by_name[message]
    assert {f.name: f.number for f in descriptor.fields} == FIELDS[message]


def test_package_service_and_status_enum():
    assert pb.DESCRIPTOR.package == "AWS.LookoutVision"
    service = pb.DESCRIPTOR.services_by_name["EdgeAgent"]
    assert {m.name for m in service.methods} == {
        "DetectAnomalies",
        "StartModel",
        "StopModel",
        "ListModels",
        "DescribeModel",
    }
    assert {v.name: v.number for v in pb.ModelStatus.DESCRIPTOR.values} == {
        "STOPPED": 0,
        "STARTING": 1,
        "RUNNING": 2,
        "FAILED": 3,
        "STOPPING": 4,
    }
    assert [f.name for f in pb.Bitmap.DESCRIPTOR.oneofs_by_name["data"].fields] == ["byte_data", "shared_memory_handle"]


def test_generated_modules_are_in_step_with_the_proto(tmp_path):
    """Compare descriptors, not text, so a newer grpcio-tools that words its output differently still passes."""
    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc

    assert (
        protoc.main(
            [
                "protoc",
                f"-I{EDGE_DIR}",
                f"--descriptor_set_out={tmp_path / 'set.pb'}",
                str(EDGE_DIR / "edge_agent.proto"),
            ]
        )
        == 0
    )
    fresh = descriptor_pb2.FileDescriptorSet.FromString((tmp_path / "set.pb").read_bytes()).file[0]
    for message in fresh.message_type:
        for field in message.field:
            field.ClearField("json_name")  # protoc adds it to descriptor sets; generated modules leave it out
    committed = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(committed)
    assert committed == fresh
    grpc_module = (EDGE_DIR / "edge_agent_pb2_grpc.py").read_text()
    assert "\nfrom . import edge_agent_pb2 as edge__agent__pb2\n" in grpc_module  # works as lookout_edge.*
    for method in ("DetectAnomalies", "StartModel", "StopModel", "ListModels", "DescribeModel"):
        assert f"'/AWS.LookoutVision.EdgeAgent/{method}'" in grpc_module


def test_shipped_package_imports_only_its_runtime_dependencies(tmp_path):
    for name, data in _edge_sources():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    probe = (
        f"import sys; import {EDGE_PACKAGE}.agent, {EDGE_PACKAGE}.classify, {EDGE_PACKAGE}.registry; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('packager', 'compilers', 'targets', 'onnx', "
        "'onnxruntime', 'torch', 'yaml', 'boto3')); print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
