"""Greengrass v2 bundle in GDK's layout: recipes/<name>-<version>.yaml and artifacts/<name>/<version>/."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

from compilers.model import CompiledArtifact
from packager.benchmark import BenchmarkReport
from targets import Target
from targets.runtime import install_script, pip_requirements


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


@dataclass(frozen=True)
class ComponentIdentity:
    name: str
    version: str
    description: str | None = None


ARTIFACT_NAME = "model.zip"
ARCHIVE_ROOT = "model"  # Greengrass unarchives model.zip into {artifacts:decompressedPath}/model/
EDGE_PACKAGE = "lookout_edge"  # packager/edge as it is named on the device
COMPILED_DIR = "compiled"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _edge_sources() -> list[tuple[str, bytes]]:
    edge_dir = Path(__file__).parent / "edge"
    return [(f"{EDGE_PACKAGE}/{p.relative_to(edge_dir).as_posix()}", p.read_bytes())
            for p in sorted(edge_dir.rglob("*")) if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".proto")]


def archive_entries(artifact: CompiledArtifact, report: BenchmarkReport, target: Target) -> list[tuple[str, bytes]]:
    entries = [(f"{COMPILED_DIR}/{p.name}", p.read_bytes()) for p in sorted(artifact.model_dir.iterdir()) if p.is_file()]
    entries.append(("benchmark.json", report.to_json().encode()))
    entries.append(("requirements.txt", ("\n".join(pip_requirements(target)) + "\n").encode()))
    entries.extend(_edge_sources())
    return sorted(entries)


def reproducible_zip(entries: list[tuple[str, bytes]]) -> bytes:
    """Sorted entries, fixed timestamps and modes: the same inputs give the same bytes, so the same digest."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, data in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            info.external_attr = (0o100644 << 16)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            archive.writestr(info, data, compresslevel=9)
    return buffer.getvalue()


def model_lifecycle(target: Target) -> dict:
    root = f"{{artifacts:decompressedPath}}/{ARCHIVE_ROOT}"
    venv = "{work:path}/venv"
    return {
        "Setenv": {"PYTHONPATH": root},
        "Install": {"Script": install_script(target, root, venv), "Timeout": 1800},
        "Run": {"Script": f"{venv}/bin/python -m {EDGE_PACKAGE}.runner --model-dir {root}/{COMPILED_DIR} --self-check"},
    }


def bundle(artifact: CompiledArtifact, report: BenchmarkReport, target: Target, component: ComponentIdentity,
           output_dir: Path, s3_location: S3Location | None = None) -> ComponentBundle:
    """Write recipes/<name>-<version>.yaml and artifacts/<name>/<version>/model.zip in GDK's layout."""
    from packager.recipe import RecipeArtifact, model_component_recipe, recipe_yaml, validate_recipe

    data = reproducible_zip(archive_entries(artifact, report, target))
    digest = sha256_b64(data)
    location = s3_location or S3Location("BUCKET_NAME")  # GDK's placeholder until publish fills in the bucket
    uri = location.uri_for(component.name, component.version, ARTIFACT_NAME)
    recipe = model_component_recipe(
        component.name, component.version, component.description,
        platform={"os": target.greengrass.os, "architecture": target.greengrass.architecture},
        artifacts=[RecipeArtifact(uri=uri, digest_b64=digest)], lifecycle=model_lifecycle(target))
    validate_recipe(recipe)
    text = recipe_yaml(recipe)
    artifact_dir = Path(output_dir) / "artifacts" / component.name / component.version
    artifact_dir.mkdir(parents=True, exist_ok=True)
    artifact_path = artifact_dir / ARTIFACT_NAME
    artifact_path.write_bytes(data)
    recipe_path = Path(output_dir) / "recipes" / f"{component.name}-{component.version}.yaml"
    recipe_path.parent.mkdir(parents=True, exist_ok=True)
    recipe_path.write_text(text)
    return ComponentBundle(
        root=Path(output_dir), component_name=component.name, component_version=component.version, recipe_path=recipe_path,
        recipe_text=text, artifacts=(BundleArtifact(path=artifact_path, name=ARTIFACT_NAME, sha256_b64=digest, size=len(data), uri=uri),),
        s3_location=s3_location)
