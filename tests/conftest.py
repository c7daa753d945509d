"""Fixtures shared across the suite: small real models, written with onnx.helper so no training is needed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


def make_tiny_autoencoder(path: Path, size: int = 64, seed: int = 0) -> Path:
    """conv-relu-conv reconstruction; anomaly_map = mean squared error over channels, score = its max."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.2).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(np.zeros(4, np.float32), "b1")
    w2 = numpy_helper.from_array((rng.standard_normal((3, 4, 3, 3)) * 0.2).astype(np.float32), "w2")
    b2 = numpy_helper.from_array(np.zeros(3, np.float32), "b2")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["h"], pads=[1, 1, 1, 1], name="enc"),
        helper.make_node("Relu", ["h"], ["hr"], name="relu"),
        helper.make_node("Conv", ["hr", "w2", "b2"], ["rec"], pads=[1, 1, 1, 1], name="dec"),
        helper.make_node("Sub", ["rec", "image"], ["diff"], name="diff"),
        helper.make_node("Mul", ["diff", "diff"], ["sq"], name="square"),
        helper.make_node("ReduceMean", ["sq", "axes"], ["anomaly_map"], keepdims=1, name="map"),
        helper.make_node("ReduceMax", ["anomaly_map"], ["score4"], keepdims=0, name="maxpool"),
        helper.make_node("Reshape", ["score4", "one"], ["score"], name="score"),
    ]
    one = numpy_helper.from_array(np.array([1], np.int64), "one")
    graph = helper.make_graph(
        nodes,
        "tiny_autoencoder",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, size, size])],
        [
            helper.make_tensor_value_info("score", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, [1, 1, size, size]),
        ],
        initializer=[w1, b1, w2, b2, axes, one],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def tiny_spec_dict(size: int = 64) -> dict:
    return {
        "input": {"name": "image", "shape": [1, 3, size, size], "layout": "NCHW"},
        "preprocessing": {"resize": [size, size], "scale": 1 / 255, "mean": [0, 0, 0], "std": [1, 1, 1]},
        "outputs": [{"name": "score", "role": "score"}, {"name": "anomaly_map", "role": "anomaly_map"}],
        "image_threshold": 0.5,
        "pixel_threshold": 0.5,
        "normalization": {"min": 0.0, "max": 1.0},
        "classes": [{"name": "anomaly", "color": "#FF0000"}],
    }


def tiny_torch_net():
    """A one-conv reconstruction net returning (score, anomaly_map), the shapes tiny_spec_dict() names."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            m = ((self.conv(x) - x) ** 2).mean(1, keepdim=True)
            return m.amax(dim=(1, 2, 3)), m

    torch.manual_seed(0)
    return Net().eval()


def save_tiny_exported_program(path: Path, size: int = 64):
    """tiny_torch_net() as a torch.export program file (.pt2); returns the net."""
    import torch

    net = tiny_torch_net()
    torch.export.save(torch.export.export(net, (torch.rand(1, 3, size, size),)), str(path))
    return net


def with_broken_weights(artifact, directory: Path):
    """A copy of a compiled artifact in ``directory`` whose weight w2 is scaled by 1.5: its outputs must be refused."""
    import shutil
    from dataclasses import replace

    import tvm

    shutil.copytree(artifact.model_dir, directory)
    params = dict(tvm.runtime.load_param_dict_from_file(str(directory / "params.bin")))
    params["w2"] = tvm.runtime.tensor(params["w2"].numpy() * 1.5)
    tvm.runtime.save_param_dict_to_file(params, str(directory / "params.bin"))
    return replace(
        artifact,
        model_dir=directory,
        library_path=directory / "model.so",
        params_path=directory / "params.bin",
        manifest_path=directory / "manifest.json",
    )


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> tuple[Path, Path]:
    """(model.onnx, spec.json) of a small untrained autoencoder: fast to compile, real ops."""
    root = tmp_path_factory.mktemp("tiny_model")
    model = make_tiny_autoencoder(root / "tiny.onnx")
    spec = root / "tiny_spec.json"
    spec.write_text(json.dumps(tiny_spec_dict()))
    return model, spec


@pytest.fixture(scope="session")
def example_model() -> tuple[Path, Path]:
    from packager.example_model import example_model_paths

    return example_model_paths()


@pytest.fixture(scope="session")
def example_images() -> Path:
    return Path(__file__).resolve().parents[1] / "packager" / "example_model" / "images"


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server on 127.0.0.1 for the session (tests.servers); each test asks it for a fresh database."""
    from tests.servers import postgres_server

    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def redis():
    """A real Redis server on 127.0.0.1 for the session, the Celery broker."""
    from tests.servers import redis_server

    with redis_server() as server:
        yield server
