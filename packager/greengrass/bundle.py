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
import os
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from compilers.model import CompiledArtifact
from packager.edge import AGENT_VERSION
from packager.edge import DEFAULT_SOCKET as AGENT_DEFAULT_SOCKET
from packager.edge.settings import DEFAULT_CAPTURE, DEFAULT_MQTT, DEFAULT_THRESHOLDS
from packager.edge.settings import ENVIRONMENT as LINE_SETTINGS_ENVIRONMENT
from packager.edge.socket_access import DEFAULT_SOCKET_MODE
from targets import Target
from targets.runtime import install_script, pip_requirements


class BuildReport(Protocol):
    """What a bundle keeps of a build's benchmark (packager.build.benchmark.BenchmarkReport): its JSON."""

    def to_json(self) -> str: ...


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
    dependencies: tuple[ComponentBundle, ...] = ()  # components this one's recipe depends on: publish them first
    # Per-build benchmark reports, beside the artifacts but not part of the component: its bytes stay the same build
    # after build, while each build's timings differ.
    reports: tuple[Path, ...] = ()


@dataclass(frozen=True)
class TargetBuild:
    """One target's share of a component: its compiled model as the artifact ZIP's bytes, and that build's report."""

    target: Target
    # reproducible_zip(archive_entries(...)): the same compiled model gives the same bytes. A file holding them (the
    # archive cache's, or a job's) is linked into the bundle, not read and written again; it is never rewritten.
    archive: bytes | Path
    report: BuildReport
    # The archive file's Greengrass digest and size as the job that wrote it reported them (JobResult): a fleet's
    # component then does not read each target's ZIP again. Used only while the file still has that size.
    known_digest: tuple[str, int] | None = None


@dataclass(frozen=True)
class ComponentIdentity:
    name: str
    version: str
    description: str | None = None
    model_arn: str | None = None  # the Lookout-style model ARN packaged; the agent reports it in ListModels


ARTIFACT_NAME = "model.zip"
ARCHIVE_ROOT = "model"  # Greengrass unarchives model.zip into {artifacts:decompressedPath}/model/
REPORT_NAME = "benchmark.json"
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


def archive_sha256_b64(archive: bytes | Path) -> str:
    """The Greengrass digest of an archive given as bytes or as a file."""
    from compilers.files import file_sha256

    if isinstance(archive, bytes):
        return sha256_b64(archive)
    return base64.b64encode(bytes.fromhex(file_sha256(archive))).decode()


def _digest_of(build: TargetBuild) -> str:
    if build.known_digest is not None and isinstance(build.archive, Path):
        digest, size = build.known_digest
        if build.archive.stat().st_size == size:
            return digest
    return archive_sha256_b64(build.archive)


def _place(archive: bytes | Path, destination: Path) -> None:
    """Write the archive's bytes at ``destination`` as a new file: a file archive is hard-linked where the file
    systems allow (a model's ZIP runs to hundreds of MB), else copied."""
    import shutil

    destination.unlink(missing_ok=True)
    if isinstance(archive, bytes):
        destination.write_bytes(archive)
        return
    try:
        os.link(archive, destination)
    except OSError:
        shutil.copyfile(archive, destination)


def _edge_sources() -> list[tuple[str, bytes]]:
    edge_dir = Path(__file__).resolve().parent.parent / "edge"
    return [
        (f"{EDGE_PACKAGE}/{p.relative_to(edge_dir).as_posix()}", p.read_bytes())
        for p in sorted(edge_dir.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".proto")
    ]


def archive_entries(artifact: CompiledArtifact, target: Target) -> list[tuple[str, bytes]]:
    """What the model's ZIP holds. Only what the build produced deterministically: the benchmark report, whose
    timings differ per build, is written beside the ZIP (REPORT_NAME), so the digest depends on the model alone."""
    entries = [(f"{COMPILED_DIR}/{p.name}", p.read_bytes()) for p in _compiled_files(artifact)]
    return sorted(entries + _fixed_entries(target))


def _compiled_files(artifact: CompiledArtifact) -> list[Path]:
    return sorted(p for p in artifact.model_dir.iterdir() if p.is_file())


def _fixed_entries(target: Target) -> list[tuple[str, bytes]]:
    """The ZIP's entries besides the compiled model: the device's pip requirements and the edge runtime's sources."""
    return [("requirements.txt", ("\n".join(pip_requirements(target)) + "\n").encode()), *_edge_sources()]


def _entries_key(digests: list[tuple[str, bytes]]) -> str:
    """The archive cache's key: every entry's name and raw SHA-256, in name order."""
    key = hashlib.sha256()
    for name, digest in sorted(digests):
        key.update(name.encode() + b"\0" + digest)
    return key.hexdigest()


def model_archive(artifact: CompiledArtifact, target: Target, cache_dir: Path | None) -> bytes | Path:
    """cached_zip(archive_entries(artifact, target), cache_dir), without reading the compiled files when their
    digests are known (a compile cache hit checked them) and the archive cache holds their ZIP."""
    files = _compiled_files(artifact)
    if cache_dir is not None and files and all(p.name in artifact.file_sha256 for p in files):
        digests = [(f"{COMPILED_DIR}/{p.name}", bytes.fromhex(artifact.file_sha256[p.name])) for p in files]
        digests += [(name, hashlib.sha256(data).digest()) for name, data in _fixed_entries(target)]
        found = _cached_zip_file(Path(cache_dir), _entries_key(digests))
        if found is not None:
            return found
    return cached_zip(archive_entries(artifact, target), cache_dir)


_SAMPLE_BYTES = 1 << 20
_WORTH_DEFLATING = 0.8  # deflate an entry only when a sample of it shrinks below this fraction


def _compress_type(data: bytes) -> int:
    """Weights barely compress (float data saves ~7%), and deflating a large model's params.bin took most of a cached
    rebuild's time: a large entry whose middle does not shrink is stored. Decided from the bytes alone, so reproducible."""
    import zlib

    if len(data) <= _SAMPLE_BYTES:
        return zipfile.ZIP_DEFLATED
    middle = len(data) // 2
    sample = data[middle : middle + _SAMPLE_BYTES]
    return (
        zipfile.ZIP_DEFLATED if len(zlib.compress(sample, 1)) < _WORTH_DEFLATING * len(sample) else zipfile.ZIP_STORED
    )


def reproducible_zip(entries: list[tuple[str, bytes]]) -> bytes:
    """Sorted entries, fixed timestamps and modes: the same inputs give the same bytes, so the same digest."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, data in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            info.external_attr = 0o100644 << 16
            info.compress_type = _compress_type(data)
            info.create_system = 3
            archive.writestr(info, data, compresslevel=9)
    return buffer.getvalue()


def cached_zip(entries: list[tuple[str, bytes]], cache_dir: Path | None) -> bytes | Path:
    """reproducible_zip(entries), reused from ``cache_dir`` when the same entries were zipped before: compressing a
    large model's weights is most of a cached rebuild's time. A cached ZIP is named by its entries' digest and its own
    SHA-256, which is checked on every read; a damaged or missing one is made again. Returned as the cache's own file
    (a bundle links it rather than writing the bytes again), or as the bytes when there is no cache or it cannot be
    written."""
    if cache_dir is None:
        return reproducible_zip(entries)
    key = _entries_key([(name, hashlib.sha256(data).digest()) for name, data in entries])
    cache_dir = Path(cache_dir)
    found = _cached_zip_file(cache_dir, key)
    if found is not None:
        return found
    data = reproducible_zip(entries)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = cache_dir / f".{key}.{os.getpid()}.partial"
        partial.write_bytes(data)
        path = cache_dir / f"{key}-{hashlib.sha256(data).hexdigest()}.zip"
        os.replace(partial, path)
        return path
    except OSError:
        return data  # a cache that cannot be written only costs the next build the compression


def _cached_zip_file(cache_dir: Path, key: str) -> Path | None:
    """The archive cache's ZIP for ``key`` when its bytes still hash to the SHA-256 in its name; a damaged one is
    removed."""
    from compilers.files import file_sha256

    for path in sorted(cache_dir.glob(f"{key}-*.zip")):
        try:
            digest = file_sha256(path)  # and archive_sha256_b64() knows it from now on
        except OSError:
            continue
        if digest == path.stem.rsplit("-", 1)[1]:
            return path
        path.unlink(missing_ok=True)
    return None


def agent_component_name(target: Target) -> str:
    """The agent's Install step checks and provides the device's runtime, which differs per CUDA/TensorRT pair:
    each flavour is its own component, so a CPU and a Jetson build never publish different bytes under one name."""
    if target.device == "cuda":
        return f"{AGENT_COMPONENT}.{_agent_flavour(target)}"
    return AGENT_COMPONENT


def _agent_flavour(target: Target) -> str:
    return f"cuda-{target.options.cuda_ver}.trt-{target.options.trt_ver}" if target.device == "cuda" else "cpu"


def fleet_agent_name(targets: list[Target]) -> str:
    """One agent for a component's targets: the plain flavour's name when they share one, else a name listing every
    flavour it carries (one manifest each), so the same name and version never hold different bytes."""
    names = {agent_component_name(t) for t in targets}
    if len(names) == 1:
        return names.pop()
    return ".".join([AGENT_COMPONENT, *sorted({_agent_flavour(t) for t in targets})])


def agent_dependency(target: Target | list[Target]) -> dict:
    major = int(AGENT_VERSION.split(".")[0])
    name = fleet_agent_name(target if isinstance(target, list) else [target])
    return {name: {"VersionRequirement": f">={AGENT_VERSION} <{major + 1}.0.0", "DependencyType": "HARD"}}


def model_lifecycle(
    component: ComponentIdentity, target: Target, agent_name: str | None = None, archive_root: str = ARCHIVE_ROOT
) -> dict:
    """Register the compiled model with the agent while the component runs; the system python3 suffices."""
    root = f"{{artifacts:decompressedPath}}/{archive_root}"
    registry = f"{{{agent_name or agent_component_name(target)}:work:path}}/{MODEL_REGISTRY_DIR}"
    model_arn = f' --model-arn "{component.model_arn}"' if component.model_arn else ""
    return {
        "Setenv": {"PYTHONPATH": root},
        "Run": {
            "Script": f'python3 -m {EDGE_PACKAGE}.registry add --registry "{registry}" --component {component.name} '
            f'--version {component.version} --model-dir "{root}/{COMPILED_DIR}"{model_arn}'
        },
        "Shutdown": {
            "Script": f'python3 -m {EDGE_PACKAGE}.registry remove --registry "{registry}" --component {component.name}'
        },
    }


def agent_install_script(target: Target, root: str, venv: str) -> str:
    """targets' Install step, in a venv that also sees the system's packages: a device image's TVM, numpy or grpcio
    are used as they are, and pip downloads only what is missing (on a developer machine, nothing)."""
    plain, shared = f"-m venv {venv}", f"-m venv --system-site-packages {venv}"
    script = install_script(target, root, venv)
    if plain not in script:
        raise ValueError(f"targets.runtime.install_script no longer runs '{plain}'; update agent_install_script")
    return script.replace(plain, shared, 1)


def agent_lifecycle(target: Target, archive_root: str = AGENT_ARCHIVE_ROOT) -> dict:
    root = f"{{artifacts:decompressedPath}}/{archive_root}"
    venv = "{work:path}/venv"
    return {
        # spinning BLAS threads only add latency here; the line settings travel as JSON (lookout_edge.settings)
        "Setenv": {
            "PYTHONPATH": root,
            "OPENBLAS_NUM_THREADS": "1",
            **{variable: f"{{configuration:/{key}}}" for key, variable in LINE_SETTINGS_ENVIRONMENT.items()},
        },
        "Install": {"Script": agent_install_script(target, root, venv), "Timeout": 1800},
        "Run": {
            "Script": f'exec {venv}/bin/python -m {EDGE_PACKAGE}.agent --socket "{{configuration:/Socket}}" '
            f"--registry {{work:path}}/{MODEL_REGISTRY_DIR} --max-in-flight {{configuration:/MaxInFlight}} "
            f"--inference-threads {{configuration:/InferenceThreads}} "
            f'--socket-mode "{{configuration:/SocketMode}}" --socket-group "{{configuration:/SocketGroup}}"'
        },
    }


def agent_archive_entries(target: Target) -> list[tuple[str, bytes]]:
    requirements = [*pip_requirements(target), *AGENT_GRPC_REQUIREMENTS, *AGENT_LINE_REQUIREMENTS]
    return sorted([("requirements.txt", ("\n".join(requirements) + "\n").encode()), *_edge_sources()])


def _write_component(
    output_dir: Path,
    recipe: dict,
    files: list[tuple[str, bytes | Path, str, str]],
    s3_location: S3Location | None,
    reports: list[tuple[str, bytes]] = (),
) -> ComponentBundle:
    """files: (name, bytes or a file, uri, Greengrass digest) per artifact, in the recipe's order; reports: (name,
    bytes) written beside them."""
    from packager.greengrass.recipe import recipe_yaml, validate_recipe

    validate_recipe(recipe)
    text = recipe_yaml(recipe)
    name, version = recipe["ComponentName"], recipe["ComponentVersion"]
    artifact_dir = Path(output_dir) / "artifacts" / name / version
    artifact_dir.mkdir(parents=True, exist_ok=True)
    artifacts = []
    for file_name, data, uri, digest in files:
        _place(data, artifact_dir / file_name)
        size = (artifact_dir / file_name).stat().st_size
        artifacts.append(
            BundleArtifact(path=artifact_dir / file_name, name=file_name, sha256_b64=digest, size=size, uri=uri)
        )
    for file_name, data in reports:
        (artifact_dir / file_name).write_bytes(data)
    recipe_path = Path(output_dir) / "recipes" / f"{name}-{version}.yaml"
    recipe_path.parent.mkdir(parents=True, exist_ok=True)
    recipe_path.write_text(text)
    return ComponentBundle(
        root=Path(output_dir),
        component_name=name,
        component_version=version,
        recipe_path=recipe_path,
        recipe_text=text,
        artifacts=tuple(artifacts),
        s3_location=s3_location,
        reports=tuple(artifact_dir / file_name for file_name, _ in reports),
    )


AGENT_DESCRIPTION = "Serves the Lookout for Vision Edge Agent gRPC API for every model component on this device"
AGENT_CONFIGURATION = {
    "Socket": AGENT_DEFAULT_SOCKET,
    "MaxInFlight": AGENT_DEFAULT_MAX_IN_FLIGHT,
    "InferenceThreads": AGENT_DEFAULT_INFERENCE_THREADS,
    "SocketMode": DEFAULT_SOCKET_MODE,
    "SocketGroup": "",
    "Mqtt": DEFAULT_MQTT,
    "Capture": DEFAULT_CAPTURE,
    "Thresholds": DEFAULT_THRESHOLDS,
}


def agent_bundle(target: Target, output_dir: Path, s3_location: S3Location | None = None) -> ComponentBundle:
    """The Edge Agent component: recipes/<agent>-<version>.yaml and artifacts/<agent>/<version>/edge_agent.zip."""
    from packager.greengrass.recipe import RecipeArtifact, model_component_recipe

    data = reproducible_zip(agent_archive_entries(target))
    name = agent_component_name(target)
    uri = (s3_location or S3Location("BUCKET_NAME")).uri_for(name, AGENT_VERSION, AGENT_ARTIFACT_NAME)
    recipe = model_component_recipe(
        name,
        AGENT_VERSION,
        AGENT_DESCRIPTION,
        platform={"os": target.greengrass.os},  # pure Python: one agent for every architecture of a runtime
        artifacts=[RecipeArtifact(uri=uri, digest_b64=sha256_b64(data))],
        lifecycle=agent_lifecycle(target),
        configuration=AGENT_CONFIGURATION,
    )
    return _write_component(output_dir, recipe, [(AGENT_ARTIFACT_NAME, data, uri, sha256_b64(data))], s3_location)


def fleet_agent_bundle(
    targets: list[Target], output_dir: Path, s3_location: S3Location | None = None
) -> ComponentBundle:
    """The agent for several targets: agent_bundle() when they share a flavour, else one manifest per target's
    platform, each with its flavour's edge_agent-<flavour>.zip."""
    from packager.greengrass.recipe import RecipeArtifact, RecipeManifest, component_recipe

    if len({agent_component_name(t) for t in targets}) == 1:
        return agent_bundle(targets[0], output_dir, s3_location)
    name = fleet_agent_name(targets)
    location = s3_location or S3Location("BUCKET_NAME")
    files: dict[str, tuple[bytes, str]] = {}
    manifests = []
    for target in targets:
        root = f"{AGENT_ARCHIVE_ROOT}-{_agent_flavour(target)}"
        file_name = f"{root}.zip"
        if file_name not in files:
            files[file_name] = (
                reproducible_zip(agent_archive_entries(target)),
                location.uri_for(name, AGENT_VERSION, file_name),
            )
        data, uri = files[file_name]
        manifests.append(
            RecipeManifest(
                platform=_platform(target),
                lifecycle=agent_lifecycle(target, root),
                artifacts=[RecipeArtifact(uri=uri, digest_b64=sha256_b64(data))],
            )
        )
    recipe = component_recipe(name, AGENT_VERSION, AGENT_DESCRIPTION, manifests, configuration=AGENT_CONFIGURATION)
    return _write_component(
        output_dir, recipe, [(f, data, uri, sha256_b64(data)) for f, (data, uri) in files.items()], s3_location
    )


def _platform(target: Target) -> dict:
    return {"os": target.greengrass.os, "architecture": target.greengrass.architecture}


def target_slug(target: Target) -> str:
    """A file-name-safe label for a target: LINUX/X86_64 -> linux-x86_64, jetson_xavier as it is."""
    return target.name.lower().replace("/", "-")


def check_distinct_platforms(targets: list[Target]) -> None:
    """A Greengrass nucleus picks the first manifest matching its os and architecture: two targets on one platform
    would leave the second unreachable."""
    from packager.errors import ValidationException

    seen: dict[tuple[str, str], str] = {}
    for target in targets:
        key = (target.greengrass.os, target.greengrass.architecture)
        if key in seen:
            raise ValidationException(
                f"targets {seen[key]} and {target.name} both run on {key[0]}/{key[1]}; one component holds one manifest "
                "per platform, so package them as two components",
                field="targets",
            )
        seen[key] = target.name


def bundle(
    artifact: CompiledArtifact,
    report: BuildReport,
    target: Target,
    component: ComponentIdentity,
    output_dir: Path,
    s3_location: S3Location | None = None,
    archive_cache: Path | None = None,
) -> ComponentBundle:
    """Write the model component and the agent component it depends on, in GDK's layout.
    archive_cache: where to keep (and find) the model's ZIP by its entries (cached_zip); None zips every time."""
    build = TargetBuild(target=target, archive=model_archive(artifact, target, archive_cache), report=report)
    return bundle_targets([build], component, output_dir, s3_location)


def bundle_targets(
    builds: list[TargetBuild], component: ComponentIdentity, output_dir: Path, s3_location: S3Location | None = None
) -> ComponentBundle:
    """One component version for every target built: a manifest per platform, each with its own artifact and digest.
    One target keeps the plain names (model.zip, benchmark.json); several get model-<target>.zip, benchmark-<target>.json."""
    from packager.greengrass.recipe import RecipeArtifact, RecipeManifest, component_recipe

    targets = [b.target for b in builds]
    check_distinct_platforms(targets)
    agent = fleet_agent_bundle(targets, output_dir, s3_location)
    location = s3_location or S3Location("BUCKET_NAME")  # GDK's placeholder until publish fills in the bucket
    files, reports, manifests = [], [], []
    for build in builds:
        suffix = "" if len(builds) == 1 else f"-{target_slug(build.target)}"
        root = f"{ARCHIVE_ROOT}{suffix}"
        file_name = f"{root}.zip"
        uri = location.uri_for(component.name, component.version, file_name)
        digest = _digest_of(build)
        files.append((file_name, build.archive, uri, digest))
        reports.append((REPORT_NAME.replace(".json", f"{suffix}.json"), build.report.to_json().encode()))
        manifests.append(
            RecipeManifest(
                platform=_platform(build.target),
                lifecycle=model_lifecycle(component, build.target, agent.component_name, root),
                artifacts=[RecipeArtifact(uri=uri, digest_b64=digest)],
            )
        )
    recipe = component_recipe(
        component.name, component.version, component.description, manifests, dependencies=agent_dependency(targets)
    )
    model = _write_component(output_dir, recipe, files, s3_location, reports)
    return replace(model, dependencies=(agent,))
