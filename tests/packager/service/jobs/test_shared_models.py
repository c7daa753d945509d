"""Registered models shared through S3 (moto's server over HTTP): every file of a model, external data included."""

from __future__ import annotations

import hashlib
import urllib.request

import boto3
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from packager.errors import PublishError
from packager.service.jobs.shared_models import (
    ModelBucket,
    fetch_model_files,
    model_bucket,
    model_files,
    upload_model_files,
)
from tests.packager.greengrass.publish.loopback import LoopbackS3

BUCKET = "shared-models"


@pytest.fixture
def s3():
    server = LoopbackS3()
    server.start()
    urllib.request.urlopen(urllib.request.Request(f"{server.endpoint}/moto-api/reset", method="POST")).close()
    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=BUCKET)
    yield client
    server.stop()


def _model_with_external_data(directory):
    """A one-node graph whose weight lives in weights.bin beside it, as large exports do."""
    weight = numpy_helper.from_array(np.arange(4096, dtype=np.float32).reshape(64, 64), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    directory.mkdir(parents=True)
    onnx.save_model(
        model,
        str(directory / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    return directory / "model.onnx"


def test_the_bucket_variable_takes_a_prefix(monkeypatch):
    monkeypatch.setenv("PACKAGER_MODEL_BUCKET", "team-models/line-3/")
    assert model_bucket() == ModelBucket("team-models", "line-3/")
    monkeypatch.setenv("PACKAGER_MODEL_BUCKET", "")
    assert model_bucket() is None


def test_a_model_and_its_external_data_move_between_hosts(s3, tmp_path):
    host_a, host_b = tmp_path / "a", tmp_path / "b"
    model = _model_with_external_data(host_a / "models" / "sha256" / ("ab" * 32))
    (host_a / "models" / "sha256" / "spec.json").write_text("{}")
    relative = str(model.relative_to(host_a))
    files = model_files(host_a, relative, "models/sha256/spec.json")
    assert files == [relative, "models/sha256/spec.json", str((model.parent / "weights.bin").relative_to(host_a))]
    where = ModelBucket(BUCKET, "p/")
    upload_model_files(s3, where, host_a, files)
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]) == sorted(f"p/{f}" for f in files)

    fetched = fetch_model_files(s3, where, host_b, relative, "models/sha256/spec.json")
    assert sorted(fetched) == sorted(files)
    for f in files:
        assert (host_b / f).read_bytes() == (host_a / f).read_bytes()
    loaded = onnx.load_model(str(host_b / relative))  # external data resolved beside the fetched model
    assert numpy_helper.to_array(loaded.graph.initializer[0]).shape == (64, 64)
    assert fetch_model_files(s3, where, host_b, relative, "models/sha256/spec.json") == []  # all here: nothing fetched


def test_bytes_that_do_not_match_their_hash_name_are_refused(s3, tmp_path):
    data = b"not the model you asked for"
    name = f"models/sha256/{hashlib.sha256(b'something else').hexdigest()}.onnx"
    s3.put_object(Bucket=BUCKET, Key=name, Body=data)
    with pytest.raises(PublishError, match="do not match the SHA-256 in its name"):
        fetch_model_files(s3, ModelBucket(BUCKET, ""), tmp_path, name, None)
    assert not (tmp_path / name).exists() and not list((tmp_path / "models" / "sha256").iterdir())


def test_a_missing_model_names_its_s3_key(s3, tmp_path):
    name = f"models/sha256/{'0' * 64}.onnx"
    with pytest.raises(Exception, match=f"fetch model file s3://{BUCKET}/{name}"):
        fetch_model_files(s3, ModelBucket(BUCKET, ""), tmp_path, name, None)
