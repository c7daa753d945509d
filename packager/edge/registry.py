"""Which model components are deployed on this device: one JSON file per component, in a directory the agent reads.

A model component's Run step adds its file and its Shutdown step removes it:
    python3 -m lookout_edge.registry add --registry DIR --component NAME --version V --model-dir DIR/compiled
    python3 -m lookout_edge.registry remove --registry DIR --component NAME
The agent rescans the directory on every control call, so models come and go without restarting it.
Standard library only: the model component runs this with the device's system python3.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REGISTRATION_FORMAT = "lookout-edge-model/1"
_COMPONENT_NAME = re.compile(r"[a-zA-Z0-9_-][a-zA-Z0-9._-]{0,127}")  # Greengrass's pattern, minus a leading dot
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRegistration:
    component: str
    version: str
    model_dir: Path  # holds model.so, params.bin, manifest.json, spec.json
    model_arn: str = ""


def check_component_name(name: str) -> str:
    if not _COMPONENT_NAME.fullmatch(name or ""):
        raise ValueError(
            f"component name {name!r} must match [a-zA-Z0-9-_.]+, 1..128 characters, not starting with '.'"
        )
    return name


def _path_for(registry_dir: Path, component: str) -> Path:
    return Path(registry_dir) / f"{check_component_name(component)}.json"


def add(registry_dir: Path, registration: ModelRegistration) -> Path:
    """Write the registration atomically, so the agent never reads half a file."""
    path = _path_for(registry_dir, registration.component)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": REGISTRATION_FORMAT,
        "component": registration.component,
        "version": registration.version,
        "model_dir": str(Path(registration.model_dir).resolve()),
        "model_arn": registration.model_arn,
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    with os.fdopen(fd, "w") as out:
        json.dump(doc, out, indent=2, sort_keys=True)
    os.replace(tmp, path)
    return path


def remove(registry_dir: Path, component: str) -> bool:
    try:
        _path_for(registry_dir, component).unlink()
        return True
    except FileNotFoundError:
        return False


def _parse(path: Path) -> ModelRegistration:
    doc = json.loads(path.read_text())
    if doc.get("format") != REGISTRATION_FORMAT:
        raise ValueError(f"format {doc.get('format')!r} is not {REGISTRATION_FORMAT!r}")
    registration = ModelRegistration(
        component=check_component_name(str(doc["component"])),
        version=str(doc["version"]),
        model_dir=Path(doc["model_dir"]),
        model_arn=str(doc.get("model_arn", "")),
    )
    if path.stem != registration.component:
        raise ValueError(f"names component {registration.component!r}")
    return registration


def scan(registry_dir: Path) -> dict[str, ModelRegistration]:
    """Every readable registration; a broken file is logged and skipped so one bad model cannot hide the rest."""
    found: dict[str, ModelRegistration] = {}
    try:
        paths = sorted(Path(registry_dir).glob("*.json"))
    except OSError as exc:
        log.warning("cannot read the model registry %s: %s", registry_dir, exc)
        return found
    for path in paths:
        try:
            registration = _parse(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("skipping model registration %s: %s", path, exc)
            continue
        found[registration.component] = registration
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m lookout_edge.registry", description="add or remove a model component"
    )
    sub = parser.add_subparsers(dest="action", required=True)
    add_parser = sub.add_parser("add", help="register a model component with the agent")
    remove_parser = sub.add_parser("remove", help="unregister a model component")
    for p in (add_parser, remove_parser):
        p.add_argument("--registry", type=Path, required=True, help="the agent's model registry directory")
        p.add_argument("--component", required=True, help="the model component's name")
    add_parser.add_argument("--version", required=True, help="the model component's version")
    add_parser.add_argument(
        "--model-dir", type=Path, required=True, help="directory with model.so, params.bin, manifest.json, spec.json"
    )
    add_parser.add_argument("--model-arn", default="", help="the Lookout model ARN, reported by ListModels")
    args = parser.parse_args(argv)
    try:
        if args.action == "add":
            if not (args.model_dir / "manifest.json").is_file():
                raise ValueError(f"{args.model_dir} has no manifest.json: not a compiled model directory")
            path = add(args.registry, ModelRegistration(args.component, args.version, args.model_dir, args.model_arn))
            print(f"registered {args.component} {args.version} at {path}", flush=True)
        else:
            removed = remove(args.registry, args.component)
            print(f"{'unregistered' if removed else 'was not registered:'} {args.component}", flush=True)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
