"""Run a greengrass-build directory's components on this machine, the way the Greengrass nucleus would.

plan_deployment(build_dir, options) -> DeploymentPlan: reads every recipe, keeps each component's newest version,
picks the first manifest whose platform matches this machine, orders components so dependencies come first, and
checks each dependency's version range. prepare_component() verifies each artifact's SHA-256 digest, copies it under
the root and unarchives ZIPs, refusing entries that escape the directory, absolute paths and symlinks.
packager.greengrass.local.nucleus then runs Install, then Startup or Run, with the recipe's timeouts and Setenv.

The root mirrors the nucleus's layout: packages/artifacts/<name>/<version>/, packages/artifacts-unarchived/<name>/
<version>/<archive stem>/, work/<name>/, logs/<name>.log, plus deploy-local.pid and state.json.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import re
import shutil
import stat
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import yaml

from packager.errors import ResourceNotFoundException, ValidationException
from packager.greengrass.local.configuration import effective_configuration, read_configuration, resolve_updates
from packager.greengrass.recipe import check_component_identity, recipe_key

THING_NAME = "deploy-local"
_VARIABLE = re.compile(r"\{(?:([A-Za-z0-9._-]+):)?(artifacts|work|configuration|kernel|iot):([^{}]*)\}")
_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")
_COMPARATOR = re.compile(r"(>=|<=|>|<|=|\^|~)?(\d+\.\d+\.\d+)")
_ARCHITECTURES = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "aarch64",
    "arm64": "aarch64",
    "armv7l": "arm",
    "armv8l": "arm",
    "i686": "x86",
    "i386": "x86",
}


@dataclass(frozen=True)
class DeployOptions:
    root: Path
    # component (or deploy_configuration.EDGE_AGENT) -> ConfigurationUpdate, or {"MERGE": {...}, "RESET": [...]} as
    # greengrass-cli takes it; applied on top of what the root's last deployment left (configuration.json)
    configuration_updates: dict = field(default_factory=dict)
    thing_name: str = THING_NAME


@dataclass(frozen=True)
class ArtifactRef:
    uri: str
    file_name: str
    source: Path  # the file in the build directory
    digest_b64: str | None
    unarchive: bool
    read: str  # NONE | OWNER | ALL
    execute: str


@dataclass(frozen=True)
class LocalComponent:
    name: str
    version: str
    lifecycle: dict  # the selected manifest's, keys as written
    configuration: dict  # DefaultConfiguration, what earlier deployments left, and the options' update
    dependencies: dict  # name -> "HARD" | "SOFT"
    artifacts: tuple[ArtifactRef, ...]
    recipe_path: Path


@dataclass(frozen=True)
class DeploymentPlan:
    build_dir: Path
    root: Path
    platform: dict
    components: tuple[LocalComponent, ...]  # dependencies first
    thing_name: str = THING_NAME

    def component(self, name: str) -> LocalComponent:
        return next(c for c in self.components if c.name == name)

    def artifacts_path(self, c: LocalComponent) -> Path:
        return under_root(self.root, "packages", "artifacts", c.name, c.version)

    def decompressed_path(self, c: LocalComponent) -> Path:
        return under_root(self.root, "packages", "artifacts-unarchived", c.name, c.version)

    def work_path(self, c: LocalComponent) -> Path:
        return under_root(self.root, "work", c.name)

    def log_path(self, c: LocalComponent) -> Path:
        return under_root(self.root, "logs", f"{c.name}.log")


def under_root(root: Path, *parts: str) -> Path:
    """root/parts, refused unless it stays strictly inside root once '..' and symlinks are resolved."""
    path = root.joinpath(*parts)
    resolved = path.resolve()
    if (
        any(p in ("", ".", "..") or "/" in p for p in parts)
        or resolved == root.resolve()
        or not resolved.is_relative_to(root.resolve())
    ):
        raise ValidationException(f"{'/'.join(parts)[:200]!r} would leave the deploy-local root {root}", field="root")
    return path


def this_platform() -> dict:
    system = {"linux": "linux", "darwin": "darwin", "win32": "windows"}.get(sys.platform, sys.platform)
    machine = platform.machine().lower()
    return {"os": system, "architecture": _ARCHITECTURES.get(machine, machine)}


def _platform_matches(wanted: dict | None, here: dict) -> bool:
    for key, value in (wanted or {}).items():
        value = str(value)
        if value == "*":
            continue
        if len(value) > 1 and value.startswith("/") and value.endswith("/"):
            if not re.fullmatch(value[1:-1], here.get(key, "")):
                return False
        elif here.get(key) != value:
            return False
    return True


def _version(text: str, where: str) -> tuple[int, int, int]:
    match = _VERSION.fullmatch(str(text))
    if not match:
        raise ValidationException(f"{where}: version {text!r} is not MAJOR.MINOR.PATCH", field="ComponentVersion")
    return tuple(int(p) for p in match.groups())


def version_satisfies(version: str, requirement: str) -> bool:
    """npm-style ranges as Greengrass writes them: '>=1.0.0 <2.0.0', '^1.2.0', '~1.2.0', '1.0.0', '*'."""
    have = _version(version, "dependency")
    for token in str(requirement).split():
        if token == "*":
            continue
        match = _COMPARATOR.fullmatch(token)
        if not match:
            raise ValidationException(
                f"VersionRequirement {requirement!r}: cannot read {token!r}", field="VersionRequirement"
            )
        op, bound = match.group(1) or "=", _version(match.group(2), "VersionRequirement")
        upper = {"^": (bound[0] + 1, 0, 0), "~": (bound[0], bound[1] + 1, 0)}.get(op)
        ok = {
            ">=": have >= bound,
            "<=": have <= bound,
            ">": have > bound,
            "<": have < bound,
            "=": have == bound,
            "^": bound <= have < (upper or bound),
            "~": bound <= have < (upper or bound),
        }[op]
        if not ok:
            return False
    return True


def _read_recipes(build_dir: Path) -> dict[str, tuple[dict, Path]]:
    """Newest version of each component among recipes/*.yaml|*.yml|*.json."""
    recipes_dir = build_dir / "recipes"
    if not recipes_dir.is_dir():
        raise ResourceNotFoundException(
            f"{build_dir} has no recipes/ directory; give a greengrass-build directory", str(build_dir), "Directory"
        )
    newest: dict[str, tuple[dict, Path]] = {}
    for path in sorted(recipes_dir.iterdir()):
        if path.suffix not in (".yaml", ".yml", ".json"):
            continue
        try:
            recipe = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ValidationException(f"{path}: not a readable recipe ({exc})", field=str(path)) from None
        if (
            not isinstance(recipe, dict)
            or not recipe_key(recipe, "ComponentName")
            or not recipe_key(recipe, "ComponentVersion")
        ):
            raise ValidationException(f"{path}: a recipe needs ComponentName and ComponentVersion", field=str(path))
        name, version = recipe_key(recipe, "ComponentName"), recipe_key(recipe, "ComponentVersion")
        check_component_identity(name, version, str(path))
        if name not in newest or _version(version, str(path)) > _version(
            recipe_key(newest[name][0], "ComponentVersion"), name
        ):
            newest[name] = (recipe, path)
    if not newest:
        raise ResourceNotFoundException(f"{recipes_dir} holds no recipes", str(recipes_dir), "Directory")
    return newest


def _artifact_refs(build_dir: Path, name: str, version: str, manifest: dict, where: Path) -> tuple[ArtifactRef, ...]:
    refs = []
    for artifact in recipe_key(manifest, "Artifacts", []) or []:
        uri = str(recipe_key(artifact, "Uri", ""))
        file_name = uri.rstrip("/").rsplit("/", 1)[-1]
        if not file_name or file_name in (".", "..") or "\\" in file_name or "\0" in file_name:
            raise ValidationException(f"{where}: artifact URI {uri!r} names no file", field="Uri")
        algorithm = str(recipe_key(artifact, "Algorithm", "SHA-256"))
        if algorithm.upper() != "SHA-256":
            raise ValidationException(
                f"{where}: artifact {file_name} uses Algorithm {algorithm}; only SHA-256 is supported",
                field="Algorithm",
            )
        permission = recipe_key(artifact, "Permission", {}) or {}
        refs.append(
            ArtifactRef(
                uri=uri,
                file_name=file_name,
                source=build_dir / "artifacts" / name / version / file_name,
                digest_b64=recipe_key(artifact, "Digest"),
                unarchive=str(recipe_key(artifact, "Unarchive", "NONE")).upper() == "ZIP",
                read=str(recipe_key(permission, "Read", "OWNER")).upper(),
                execute=str(recipe_key(permission, "Execute", "NONE")).upper(),
            )
        )
    return tuple(refs)


def _dependency_order(components: dict[str, LocalComponent]) -> list[LocalComponent]:
    ordered: list[LocalComponent] = []
    visiting: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if any(c.name == name for c in ordered):
            return
        if name in visiting:
            raise ValidationException(
                f"dependency cycle: {' -> '.join(chain + (name,))}", field="ComponentDependencies"
            )
        visiting.add(name)
        for dependency in sorted(components[name].dependencies):
            visit(dependency, chain + (name,))
        ordered.append(components[name])

    for name in sorted(components):
        visit(name, ())
    return ordered


def plan_deployment(build_dir: Path, options: DeployOptions) -> DeploymentPlan:
    build_dir, here = Path(build_dir), this_platform()
    recipes = _read_recipes(build_dir)
    updates = resolve_updates(options.configuration_updates, list(recipes), build_dir)
    _, kept = read_configuration(options.root)
    components: dict[str, LocalComponent] = {}
    for name, (recipe, path) in recipes.items():
        version = str(recipe_key(recipe, "ComponentVersion"))
        manifest = next(
            (
                m
                for m in recipe_key(recipe, "Manifests", []) or []
                if _platform_matches(recipe_key(m, "Platform"), here)
            ),
            None,
        )
        if manifest is None:
            raise ValidationException(
                f"{path}: no manifest matches this machine ({here['os']}/{here['architecture']})", field="Manifests"
            )
        lifecycle = recipe_key(manifest, "Lifecycle")
        if lifecycle is None:
            raise ValidationException(
                f"{path}: the matching manifest has no Lifecycle (Selections are not supported)", field="Lifecycle"
            )
        defaults = recipe_key(recipe_key(recipe, "ComponentConfiguration", {}) or {}, "DefaultConfiguration", {}) or {}
        dependencies = {}
        for dep, spec in (recipe_key(recipe, "ComponentDependencies", {}) or {}).items():
            if dep not in recipes:
                raise ResourceNotFoundException(
                    f"{name} depends on {dep}, which has no recipe in {build_dir / 'recipes'}", dep, "Component"
                )
            requirement = str(recipe_key(spec, "VersionRequirement", "*"))
            dep_version = str(recipe_key(recipes[dep][0], "ComponentVersion"))
            if not version_satisfies(dep_version, requirement):
                raise ValidationException(
                    f"{name} needs {dep} {requirement}, but the build has {dep_version}", field="VersionRequirement"
                )
            dependencies[dep] = str(recipe_key(spec, "DependencyType", "HARD")).upper()
        components[name] = LocalComponent(
            name=name,
            version=version,
            lifecycle=lifecycle,
            configuration=effective_configuration(name, defaults, kept.get(name), updates.get(name)),
            dependencies=dependencies,
            artifacts=_artifact_refs(build_dir, name, version, manifest, path),
            recipe_path=path,
        )
    return DeploymentPlan(
        build_dir=build_dir,
        root=Path(options.root).resolve(),
        platform=here,
        components=tuple(_dependency_order(components)),
        thing_name=options.thing_name,
    )


def verify_digest(ref: ArtifactRef, component: str) -> bytes:
    if not ref.source.is_file():
        raise ResourceNotFoundException(
            f"{component}: artifact {ref.file_name} is missing: expected {ref.source}", str(ref.source), "Artifact"
        )
    data = ref.source.read_bytes()
    actual = base64.b64encode(hashlib.sha256(data).digest()).decode()
    if ref.digest_b64 is not None and actual != ref.digest_b64:
        raise ValidationException(
            f"{component}: artifact {ref.file_name} has SHA-256 {actual} but the recipe says "
            f"{ref.digest_b64}; refusing to deploy it",
            field="Digest",
        )
    return data


def _check_entry(info: zipfile.ZipInfo, archive: Path) -> PurePosixPath:
    name = info.filename.replace("\\", "/")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise ValidationException(
            f"{archive.name}: entry {info.filename!r} is a symlink; refusing to unarchive", field="Unarchive"
        )
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: the archiver recorded no file type
        raise ValidationException(
            f"{archive.name}: entry {info.filename!r} is not a file or directory", field="Unarchive"
        )
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        raise ValidationException(
            f"{archive.name}: entry {info.filename!r} is an absolute path; refusing to unarchive", field="Unarchive"
        )
    path = PurePosixPath(name)
    if ".." in path.parts or not path.parts:
        raise ValidationException(
            f"{archive.name}: entry {info.filename!r} escapes the destination (zip-slip); refusing to unarchive",
            field="Unarchive",
        )
    return path


def safe_unzip(archive: Path, destination: Path) -> None:
    """Check every entry first, extract into a scratch directory, then swap it in: nothing half-done is left."""
    try:
        with zipfile.ZipFile(archive) as zf:
            entries = [(info, _check_entry(info, archive)) for info in zf.infolist()]
            scratch = destination.with_name(destination.name + ".partial")
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
            for info, path in entries:
                target = scratch.joinpath(*path.parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except zipfile.BadZipFile as exc:
        raise ValidationException(f"{archive.name}: not a ZIP archive ({exc})", field="Unarchive") from None
    shutil.rmtree(destination, ignore_errors=True)
    scratch.rename(destination)


def _mode(ref: ArtifactRef) -> int:
    bits = {"NONE": 0, "OWNER": 0o400, "ALL": 0o444}.get(ref.read, 0o400)
    bits |= {"NONE": 0, "OWNER": 0o100, "ALL": 0o111}.get(ref.execute, 0)
    return bits | 0o200  # the owner keeps write so the next deploy can replace the file


def prepare_component(plan: DeploymentPlan, component: LocalComponent) -> None:
    """Verify, copy and unarchive every artifact, then create the work directory."""
    artifacts_dir = plan.artifacts_path(component)
    payloads = [(ref, verify_digest(ref, component.name)) for ref in component.artifacts]  # all checked before any copy
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    for ref, data in payloads:
        target = artifacts_dir / ref.file_name
        target.unlink(missing_ok=True)
        target.write_bytes(data)
        target.chmod(_mode(ref))
        if ref.unarchive:
            destination = under_root(
                plan.root,
                "packages",
                "artifacts-unarchived",
                component.name,
                component.version,
                PurePosixPath(ref.file_name).stem,
            )
            destination.parent.mkdir(parents=True, exist_ok=True)
            safe_unzip(target, destination)
            for path in destination.rglob("*"):
                if path.is_file():
                    path.chmod(_mode(ref))
    plan.work_path(component).mkdir(parents=True, exist_ok=True)
    plan.log_path(component).parent.mkdir(parents=True, exist_ok=True)


def _json_pointer(document, pointer: str, where: str):
    if pointer in ("", "/"):
        return document
    value = document
    for token in pointer.lstrip("/").split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict) and token in value:
            value = value[token]
        elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
            value = value[int(token)]
        else:
            raise ValidationException(
                f"{where}: {{configuration:{pointer}}} is not in the component's configuration", field="configuration"
            )
    return value


def interpolate(text: str, plan: DeploymentPlan, component: LocalComponent) -> str:
    """Replace the recipe variables Greengrass defines; another component's may be named only if it is a dependency."""

    def value(match: re.Match) -> str:
        owner_name, namespace, key = match.group(1), match.group(2), match.group(3)
        if owner_name and owner_name != component.name:
            if owner_name not in component.dependencies or namespace not in ("artifacts", "work", "configuration"):
                raise ValidationException(
                    f"{component.name}: {match.group(0)} names {owner_name}, which is not one of its dependencies",
                    field="Lifecycle",
                )
            owner = plan.component(owner_name)
        else:
            owner = component
        resolved = {
            ("artifacts", "path"): lambda: str(plan.artifacts_path(owner)),
            ("artifacts", "decompressedPath"): lambda: str(plan.decompressed_path(owner)),
            ("work", "path"): lambda: str(plan.work_path(owner)),
            ("kernel", "rootPath"): lambda: str(plan.root),
            ("iot", "thingName"): lambda: plan.thing_name,
        }.get((namespace, key))
        if resolved is not None:
            return resolved()
        if namespace == "configuration" and key.startswith("/"):
            found = _json_pointer(owner.configuration, key, component.name)
            return found if isinstance(found, str) else json.dumps(found)
        return match.group(0)  # not a variable Greengrass knows: left as written, as the nucleus does

    return _VARIABLE.sub(value, text)


def environment(plan: DeploymentPlan, component: LocalComponent, step: dict | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"AWS_IOT_THING_NAME": plan.thing_name, "GG_ROOT_PATH": str(plan.root)})
    for source in (
        recipe_key(component.lifecycle, "Setenv", {}) or {},
        (recipe_key(step, "Setenv", {}) or {}) if step else {},
    ):
        env.update({str(k): interpolate(str(v), plan, component) for k, v in source.items()})
    return env
