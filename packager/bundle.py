"""Greengrass v2 bundle in GDK's layout: recipes/<name>-<version>.yaml and artifacts/<name>/<version>/."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str = ""

    def key_for(self, component_name: str, component_version: str, file_name: str) -> str:
        """GDK's layout under the job's prefix: <Prefix>/<ComponentName>/<ComponentVersion>/<file>."""
        parts = [p for p in (self.prefix.strip("/"), component_name, component_version, file_name) if p]
        return "/".join(parts)

    def uri_for(self, component_name: str, component_version: str, file_name: str) -> str:
        return f"s3://{self.bucket}/{self.key_for(component_name, component_version, file_name)}"


@dataclass(frozen=True)
class BundleArtifact:
    path: Path  # the local file under artifacts/<name>/<version>/
    name: str  # file name, also the last part of the S3 key
    sha256_b64: str  # Greengrass Digest: base64 of the raw SHA-256 of the bytes
    size: int
    uri: str  # exactly as written in the recipe


@dataclass(frozen=True)
class ComponentBundle:
    root: Path  # the greengrass-build directory
    component_name: str
    component_version: str
    recipe_path: Path  # root/recipes/<name>-<version>.yaml
    recipe_text: str
    artifacts: tuple[BundleArtifact, ...]
    s3_location: S3Location | None  # where the recipe's URIs point, None for a local-only bundle
