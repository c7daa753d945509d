"""Registered models shared between build hosts through S3 (PACKAGER_MODEL_BUCKET=bucket or bucket/prefix).

A registered model's files are content-addressed in the store (models/sha256/<hex><suffix>), so their S3 keys are
the same relative paths under the prefix, and a host that lacks one fetches it by that name and checks its hash.
A model's files are every file its record names, plus the external-data files its ONNX graph points to (found in
the graph itself, so they travel whatever layout the store gives them). Register uploads them before the model
version is recorded, so a recorded version can always be fetched.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from compilers.files import file_sha256
from packager.errors import ModelImportError, PublishError
from packager.greengrass.publish.aws_errors import aws_error, is_not_found

MODEL_BUCKET_VARIABLE = "PACKAGER_MODEL_BUCKET"
_HASHED_NAME = re.compile(r"^([0-9a-f]{64})(\.[A-Za-z0-9.]*)?$")


@dataclass(frozen=True)
class ModelBucket:
    bucket: str
    prefix: str  # "" or "some/prefix/"

    def key_for(self, relative: str) -> str:
        return self.prefix + relative


def model_bucket() -> ModelBucket | None:
    """The configured bucket, or None when models stay on this host."""
    value = os.environ.get(MODEL_BUCKET_VARIABLE, "").strip().strip("/")
    if not value:
        return None
    bucket, _, prefix = value.partition("/")
    return ModelBucket(bucket, f"{prefix}/" if prefix else "")


def external_data_files(home: Path, model_file: str) -> list[str]:
    """The external-data files the ONNX model at ``home/model_file`` names, as paths relative to ``home``."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    model = onnx.load_model(str(home / model_file), load_external_data=False)
    base = (home / model_file).parent
    found = []
    for tensor in _tensors(model.graph):
        if uses_external_data(tensor):
            location = (base / ExternalDataInfo(tensor).location).resolve()
            relative = os.path.relpath(location, home.resolve())
            if relative.startswith(".."):
                raise ModelImportError(
                    f"{model_file}: external data {location} lies outside the model store", field="ModelPath"
                )
            if relative not in found:
                found.append(relative)
    return found


def _tensors(graph):
    """Every tensor of a graph: initializers and node attributes, in subgraphs too."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _tensors(subgraph)


def model_files(home: Path, model_file: str, spec_file: str | None) -> list[str]:
    """Every file of a registered model, relative to ``home``; the model file must be present."""
    files = [model_file, *([spec_file] if spec_file else [])]
    return files + [f for f in external_data_files(home, model_file) if f not in files]


def upload_model_files(s3_client, where: ModelBucket, home: Path, relative_paths: list[str]) -> None:
    """Put each file under its content-addressed key, unless the same key already holds it."""
    for relative in relative_paths:
        key = where.key_for(relative)
        step = f"upload model file to s3://{where.bucket}/{key}"
        try:
            try:
                head = s3_client.head_object(Bucket=where.bucket, Key=key)
                if head["ContentLength"] == (home / relative).stat().st_size and _HASHED_NAME.match(
                    Path(relative).name
                ):
                    continue  # the name is the content's hash: the same bytes are there
            except Exception as exc:  # only a missing key means upload; anything else is re-raised
                if not is_not_found(exc):
                    raise
            s3_client.upload_file(str(home / relative), where.bucket, key)
        except Exception as exc:  # noqa: BLE001  (aws_error names the step for any S3 or file error)
            raise aws_error(step, exc) from None


def fetch_model_files(s3_client, where: ModelBucket, home: Path, model_file: str, spec_file: str | None) -> list[str]:
    """Download the model's files this host lacks (the model first, then what its graph names); returns the fetched."""
    fetched = []
    for relative in [model_file, *([spec_file] if spec_file else [])]:
        if _fetch(s3_client, where, home, relative):
            fetched.append(relative)
    for relative in external_data_files(home, model_file):
        if _fetch(s3_client, where, home, relative):
            fetched.append(relative)
    return fetched


def _fetch(s3_client, where: ModelBucket, home: Path, relative: str) -> bool:
    target = home / relative
    if target.exists():
        return False
    key = where.key_for(relative)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".fetching-")
    os.close(fd)
    try:
        try:
            s3_client.download_file(where.bucket, key, tmp_name)
        except Exception as exc:  # noqa: BLE001  (aws_error names the step for any S3 error)
            raise aws_error(f"fetch model file s3://{where.bucket}/{key}", exc) from None
        named = _HASHED_NAME.match(target.name)
        if named and file_sha256(Path(tmp_name)) != named.group(1):
            raise PublishError(
                f"fetch model file s3://{where.bucket}/{key}: its bytes do not match the SHA-256 in its name"
            )
        os.chmod(tmp_name, 0o444)
        os.replace(tmp_name, target)  # atomic, so a concurrent job on this host never reads half a file
        return True
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
