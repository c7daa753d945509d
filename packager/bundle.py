"""Greengrass v2 bundle in GDK's layout: recipes/<name>-<version>.yaml and artifacts/<name>/<version>/.

A build writes two components. The model component carries the compiled model and, when it runs, registers it
with the Edge Agent component it depends on. The agent component serves Lookout's EdgeAgent gRPC API for every
model on the device. One agent per device, as Lookout had, because the API is one socket serving all models,
the TVM runtime and gRPC are installed once rather than per model, and a model update does not restart the
socket other models' clients are using. The agent's artifact depends only on the edge code and the runtime pins,
so every build of the same packager writes the same agent bytes: publishing it again is a no-op.
"""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

from compilers.model import CompiledArtifact
from packager.benchmark import BenchmarkReport
from packager.edge import AGENT_VERSION, DEFAULT_SOCKET as AGENT_DEFAULT_SOCKET
from packager.edge.socket_access import DEFAULT_SOCKET_MODE
from packager.edge.settings import (DEFAULT_CAPTURE, DEFAULT_MQTT, DEFAULT_THRESHOLDS,
                                    ENVIRONMENT as LINE_SETTINGS_ENVIRONMENT)
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
    dependencies: tuple["ComponentBundle", ...] = ()  # components this one's recipe depends on: publish them first


@dataclass(frozen=True)
class ComponentIdentity:
    name: str
    version: str
    description: str | None = None
    model_arn: str | None = None  # the Lookout-style model ARN packaged; the agent reports it in ListModels


ARTIFACT_NAME = "model.zip"
ARCHIVE_ROOT = "model"  # Greengrass unarchives model.zip into {artifacts:decompressedPath}/model/
EDGE_PACKAGE = "lookout_edge"  # packager/edge as it is named on the device
COMPILED_DIR = "compiled"
AGENT_COMPONENT = "edgepackager.lookoutvision.EdgeAgent"
AGENT_ARTIFACT_NAME = "edge_agent.zip"
AGENT_ARCHIVE_ROOT = "edge_agent"
AGENT_DEFAULT_MAX_IN_FLIGHT = 32
AGENT_DEFAULT_INFERENCE_THREADS = 0  # TVM's own choice: every core on ARM, the physical cores on x86
MODEL_REGISTRY_DIR = "models"  # under the agent's work path; model components register there
# The committed edge_agent_pb2*.py come from grpcio-tools 1.85.1 / protobuf 7.35.1 and refuse older runtimes.
AGENT_GRPC_REQUIREMENTS = ("grpcio>=1.85.1,<2", "protobuf>=7.35.1,<8")
# Results over MQTT (the callback API v2 arrived in paho-mqtt 2.0) and the capture uploader's S3 client.
AGENT_LINE_REQUIREMENTS = ("paho-mqtt>=2.0,<3", "boto3>=1.28")
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


def agent_component_name(target: Target) -> str:
    """The agent's Install step checks and provides the device's runtime, which differs per CUDA/TensorRT pair:
    each flavour is its own component, so a CPU and a Jetson build never publish different bytes under one name."""
    if target.device == "cuda":
        return f"{AGENT_COMPONENT}.cuda-{target.options.cuda_ver}.trt-{target.options.trt_ver}"
    return AGENT_COMPONENT


def agent_dependency(target: Target) -> dict:
    major = int(AGENT_VERSION.split(".")[0])
    return {agent_component_name(target): {"VersionRequirement": f">={AGENT_VERSION} <{major + 1}.0.0", "DependencyType": "HARD"}}


def model_lifecycle(component: ComponentIdentity, target: Target) -> dict:
    """Register the compiled model with the agent while the component runs; the system python3 suffices."""
    root = f"{{artifacts:decompressedPath}}/{ARCHIVE_ROOT}"
    registry = f"{{{agent_component_name(target)}:work:path}}/{MODEL_REGISTRY_DIR}"
    model_arn = f' --model-arn "{component.model_arn}"' if component.model_arn else ""
    return {
        "Setenv": {"PYTHONPATH": root},
        "Run": {"Script": f'python3 -m {EDGE_PACKAGE}.registry add --registry "{registry}" --component {component.name} '
                          f'--version {component.version} --model-dir "{root}/{COMPILED_DIR}"{model_arn}'},
        "Shutdown": {"Script": f'python3 -m {EDGE_PACKAGE}.registry remove --registry "{registry}" --component {component.name}'},
    }


def agent_install_script(target: Target, root: str, venv: str) -> str:
    """targets' Install step, in a venv that also sees the system's packages: a device image's TVM, numpy or grpcio
    are used as they are, and pip downloads only what is missing (on a developer machine, nothing)."""
    plain, shared = f"-m venv {venv}", f"-m venv --system-site-packages {venv}"
    script = install_script(target, root, venv)
    if plain not in script:
        raise ValueError(f"targets.runtime.install_script no longer runs '{plain}'; update agent_install_script")
    return script.replace(plain, shared, 1)


def agent_lifecycle(target: Target) -> dict:
    root = f"{{artifacts:decompressedPath}}/{AGENT_ARCHIVE_ROOT}"
    venv = "{work:path}/venv"
    return {
        # spinning BLAS threads only add latency here; the line settings travel as JSON (lookout_edge.settings)
        "Setenv": {"PYTHONPATH": root, "OPENBLAS_NUM_THREADS": "1",
                   **{variable: f"{{configuration:/{key}}}" for key, variable in LINE_SETTINGS_ENVIRONMENT.items()}},
        "Install": {"Script": agent_install_script(target, root, venv), "Timeout": 1800},
        "Run": {"Script": f'exec {venv}/bin/python -m {EDGE_PACKAGE}.agent --socket "{{configuration:/Socket}}" '
                          f'--registry {{work:path}}/{MODEL_REGISTRY_DIR} --max-in-flight {{configuration:/MaxInFlight}} '
                          f'--inference-threads {{configuration:/InferenceThreads}} '
                          f'--socket-mode "{{configuration:/SocketMode}}" --socket-group "{{configuration:/SocketGroup}}"'},
    }


def agent_archive_entries(target: Target) -> list[tuple[str, bytes]]:
    requirements = [*pip_requirements(target), *AGENT_GRPC_REQUIREMENTS, *AGENT_LINE_REQUIREMENTS]
    return sorted([("requirements.txt", ("\n".join(requirements) + "\n").encode()), *_edge_sources()])


def _write_component(output_dir: Path, recipe: dict, files: list[tuple[str, bytes, str]],
                     s3_location: S3Location | None) -> ComponentBundle:
    """files: (name, bytes, uri) per artifact, in the recipe's order."""
    from packager.recipe import recipe_yaml, validate_recipe

    validate_recipe(recipe)
    text = recipe_yaml(recipe)
    name, version = recipe["ComponentName"], recipe["ComponentVersion"]
    artifact_dir = Path(output_dir) / "artifacts" / name / version
    artifact_dir.mkdir(parents=True, exist_ok=True)
    artifacts = []
    for file_name, data, uri in files:
        (artifact_dir / file_name).write_bytes(data)
        artifacts.append(BundleArtifact(path=artifact_dir / file_name, name=file_name, sha256_b64=sha256_b64(data),
                                        size=len(data), uri=uri))
    recipe_path = Path(output_dir) / "recipes" / f"{name}-{version}.yaml"
    recipe_path.parent.mkdir(parents=True, exist_ok=True)
    recipe_path.write_text(text)
    return ComponentBundle(root=Path(output_dir), component_name=name, component_version=version, recipe_path=recipe_path,
                           recipe_text=text, artifacts=tuple(artifacts), s3_location=s3_location)


def agent_bundle(target: Target, output_dir: Path, s3_location: S3Location | None = None) -> ComponentBundle:
    """The Edge Agent component: recipes/<agent>-<version>.yaml and artifacts/<agent>/<version>/edge_agent.zip."""
    from packager.recipe import RecipeArtifact, model_component_recipe

    data = reproducible_zip(agent_archive_entries(target))
    name = agent_component_name(target)
    uri = (s3_location or S3Location("BUCKET_NAME")).uri_for(name, AGENT_VERSION, AGENT_ARTIFACT_NAME)
    recipe = model_component_recipe(
        name, AGENT_VERSION,
        "Serves the Lookout for Vision Edge Agent gRPC API for every model component on this device",
        platform={"os": target.greengrass.os},  # pure Python: one agent for every architecture of a runtime
        artifacts=[RecipeArtifact(uri=uri, digest_b64=sha256_b64(data))], lifecycle=agent_lifecycle(target),
        configuration={"Socket": AGENT_DEFAULT_SOCKET, "MaxInFlight": AGENT_DEFAULT_MAX_IN_FLIGHT,
                       "InferenceThreads": AGENT_DEFAULT_INFERENCE_THREADS,
                       "SocketMode": DEFAULT_SOCKET_MODE, "SocketGroup": "",
                       "Mqtt": DEFAULT_MQTT, "Capture": DEFAULT_CAPTURE, "Thresholds": DEFAULT_THRESHOLDS})
    return _write_component(output_dir, recipe, [(AGENT_ARTIFACT_NAME, data, uri)], s3_location)


def bundle(artifact: CompiledArtifact, report: BenchmarkReport, target: Target, component: ComponentIdentity,
           output_dir: Path, s3_location: S3Location | None = None) -> ComponentBundle:
    """Write the model component and the agent component it depends on, in GDK's layout."""
    from packager.recipe import RecipeArtifact, model_component_recipe

    agent = agent_bundle(target, output_dir, s3_location)
    data = reproducible_zip(archive_entries(artifact, report, target))
    location = s3_location or S3Location("BUCKET_NAME")  # GDK's placeholder until publish fills in the bucket
    uri = location.uri_for(component.name, component.version, ARTIFACT_NAME)
    recipe = model_component_recipe(
        component.name, component.version, component.description,
        platform={"os": target.greengrass.os, "architecture": target.greengrass.architecture},
        artifacts=[RecipeArtifact(uri=uri, digest_b64=sha256_b64(data))], lifecycle=model_lifecycle(component, target),
        dependencies=agent_dependency(target))
    model = _write_component(output_dir, recipe, [(ARTIFACT_NAME, data, uri)], s3_location)
    return replace(model, dependencies=(agent,))
