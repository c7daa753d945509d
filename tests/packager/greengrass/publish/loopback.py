"""A real S3 server on 127.0.0.1 (moto's server mode) and small real bundles to publish to it."""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.request
from pathlib import Path

import yaml
from moto.server import ThreadedMotoServer

from packager.greengrass.bundle import BundleArtifact, ComponentBundle, S3Location

COMPONENT_NAME = "com.example.AnomalyModel"
COMPONENT_VERSION = "1.0.0"


class LoopbackS3:
    """moto's S3 over HTTP on a loopback port. Bucket state lives in moto's in-process backend, not in the listener,
    so stop() and start() on the same port model an outage that loses no data."""

    def __init__(self) -> None:
        self.port = 0
        self._server: ThreadedMotoServer | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        self.port = self._server.get_host_and_port()[1]

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.stop()
        # ThreadedMotoServer.stop() leaves the socket listening: clients would hang, and the port could not be reused.
        self._server._server.server_close()
        self._server = None

    def set_auth(self, enabled: bool) -> None:
        """Turn moto's IAM checks on (every request must be allowed by a policy) or off (the default)."""
        count = b"0" if enabled else b"inf"
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset-auth",
            data=count,
            method="POST",
            headers={"Content-Type": "text/plain"},  # a form type would hide the body from moto
        )
        with urllib.request.urlopen(request) as response:
            json.load(response)


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def make_bundle(
    root: Path,
    location: S3Location,
    files: dict[str, bytes],
    *,
    name: str = COMPONENT_NAME,
    version: str = COMPONENT_VERSION,
) -> ComponentBundle:
    """Write the files under GDK's layout and a recipe whose artifact URIs and digests describe them."""
    artifact_dir = root / "artifacts" / name / version
    artifact_dir.mkdir(parents=True, exist_ok=True)
    artifacts = []
    for file_name, data in files.items():
        path = artifact_dir / file_name
        path.write_bytes(data)
        uri = location.uri_for(name, version, file_name)
        artifacts.append(
            BundleArtifact(path=path, name=file_name, sha256_b64=sha256_b64(data), size=len(data), uri=uri)
        )
    recipe = {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": version,
        "ComponentDescription": "Anomaly detection model compiled with Apache TVM",
        "ComponentPublisher": "edge-model-packager",
        "Manifests": [
            {
                "Platform": {"os": "linux", "architecture": "amd64"},
                "Artifacts": [
                    {"Uri": a.uri, "Digest": a.sha256_b64, "Algorithm": "SHA-256", "Unarchive": "NONE"}
                    for a in artifacts
                ],
                "Lifecycle": {"Run": "python3 {artifacts:path}/run.py"},
            }
        ],
    }
    recipe_path = root / "recipes" / f"{name}-{version}.yaml"
    recipe_path.parent.mkdir(parents=True, exist_ok=True)
    recipe_text = yaml.safe_dump(recipe, sort_keys=False)
    recipe_path.write_text(recipe_text)
    return ComponentBundle(
        root=root,
        component_name=name,
        component_version=version,
        recipe_path=recipe_path,
        recipe_text=recipe_text,
        artifacts=tuple(artifacts),
        s3_location=location,
    )


def read_object(s3_client, bucket: str, key: str) -> bytes:
    return s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
