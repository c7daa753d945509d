"""Shared test helpers for the jobs API, the client, the REST server and the CLI commands."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest


def write_tiny_model(directory: Path, name: str = "tiny") -> tuple[Path, Path]:
    """A two-conv anomaly model on [1,3,64,64] with outputs score and anomaly_map, plus its spec: compiles in seconds."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype("float32") * 0.1, "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((1, 4, 1, 1)).astype("float32") * 0.1, "w2")
    nodes = [
        helper.make_node("Conv", ["image", "w1"], ["h"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["anomaly_map"]),
        helper.make_node("ReduceMax", ["anomaly_map"], ["score"], axes=[1, 2, 3], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "tiny_anomaly",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, [1, 1, 64, 64])],
        initializer=[w1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    directory.mkdir(parents=True, exist_ok=True)
    model_path = directory / f"{name}.onnx"
    onnx.save(model, model_path)
    spec_path = directory / f"{name}.spec.json"
    spec_path.write_text(json.dumps({
        "format": "packager-model-spec/1",
        "input": {"name": "image", "shape": [1, 3, 64, 64], "layout": "NCHW"},
        "outputs": [{"name": "score", "role": "score"}, {"name": "anomaly_map", "role": "anomaly_map"}],
        "image_threshold": 0.5,
    }))
    return model_path, spec_path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> tuple[Path, Path]:
    return write_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh $PACKAGER_HOME for each test."""
    path = tmp_path / "packager-home"
    monkeypatch.setenv("PACKAGER_HOME", str(path))
    return path


def gg_config(component: str = "com.example.Tiny", bucket: str = "packager-test-bucket", **extra) -> dict:
    return {"Greengrass": {"S3OutputLocation": {"Bucket": bucket, "Prefix": "models"}, "ComponentName": component, **extra}}


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
