"""The vendored Lookout for Vision service model, read once: shapes, operations, HTTP routes.

Everything that must agree with the service (validation, the REST routes, CLI flags,
skeletons) reads it from here, so the JSON file stays the one authority.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

MODEL_PATH = Path(__file__).resolve().parent / "data" / "lookoutvision-2020-11-20.service-2.json"

# The operations we implement, in the order the CLI lists them.
SUPPORTED_OPERATIONS = (
    "StartModelPackagingJob",
    "DescribeModelPackagingJob",
    "ListModelPackagingJobs",
    "CreateProject",
    "DescribeProject",
    "ListProjects",
    "DeleteProject",
    "DescribeModel",
    "ListModels",
    "DeleteModel",
)


@dataclass(frozen=True)
class Member:
    name: str
    shape: str
    location: str | None  # "uri" | "querystring" | "header" | None (JSON body)
    location_name: str | None
    idempotency_token: bool
    documentation: str  # the model's HTML documentation, as shipped

    @property
    def summary(self) -> str:
        """The documentation's first sentence as plain text, for --help."""
        text = " ".join(re.sub(r"<[^>]+>", "", self.documentation).split())
        return text.split(". ")[0].rstrip(".") + "." if text else ""


@dataclass(frozen=True)
class Operation:
    name: str
    http_method: str
    request_uri: str
    input_shape: str | None
    output_shape: str | None
    errors: tuple[str, ...]


@functools.lru_cache(maxsize=1)
def service_model() -> dict:
    return json.loads(MODEL_PATH.read_text())


def shape(name: str) -> dict:
    return service_model()["shapes"][name]


def operation(name: str) -> Operation:
    op = service_model()["operations"][name]
    return Operation(
        name=name,
        http_method=op["http"]["method"],
        request_uri=op["http"]["requestUri"],
        input_shape=op.get("input", {}).get("shape"),
        output_shape=op.get("output", {}).get("shape"),
        errors=tuple(e["shape"] for e in op.get("errors", ())),
    )


def members(shape_name: str | None) -> tuple[Member, ...]:
    if shape_name is None:
        return ()
    return tuple(
        Member(
            name=n,
            shape=m["shape"],
            location=m.get("location"),
            location_name=m.get("locationName"),
            idempotency_token=bool(m.get("idempotencyToken")),
            documentation=m.get("documentation", ""),
        )
        for n, m in shape(shape_name).get("members", {}).items()
    )


def required_members(shape_name: str | None) -> tuple[str, ...]:
    return tuple(shape(shape_name).get("required", ())) if shape_name else ()


def skeleton(shape_name: str, *, required_only: bool = False) -> object:
    """A document with every member filled by a placeholder, as `aws ... --generate-cli-skeleton` prints."""
    s = shape(shape_name)
    kind = s["type"]
    if kind == "structure":
        required = set(s.get("required", ()))
        return {n: skeleton(m["shape"]) for n, m in s.get("members", {}).items() if not required_only or n in required}
    if kind == "list":
        return [skeleton(s["member"]["shape"])]
    if kind == "map":
        return {"KeyName": skeleton(s["value"]["shape"])}
    if kind == "string":
        return s["enum"][0] if "enum" in s else ""
    if kind in ("integer", "long"):
        return 0
    if kind in ("float", "double"):
        return 0.0
    if kind == "boolean":
        return True
    if kind == "timestamp":
        return "1970-01-01T00:00:00"
    return ""


def yaml_skeleton(shape_name: str, indent: int = 0) -> str:
    """YAML input skeleton with '# [REQUIRED]' and valid values as comments, like the AWS CLI v2."""
    lines: list[str] = []
    s = shape(shape_name)
    required = set(s.get("required", ()))
    pad = "  " * indent
    for name, m in s.get("members", {}).items():
        child = shape(m["shape"])
        notes = []
        if name in required:
            notes.append("[REQUIRED]")
        if "enum" in child:
            notes.append("Valid values are: " + ", ".join(child["enum"]) + ".")
        comment = f"  # {' '.join(notes)}" if notes else ""
        if child["type"] == "structure":
            lines.append(f"{pad}{name}:{comment}")
            lines.append(yaml_skeleton(m["shape"], indent + 1))
        elif child["type"] == "list" and shape(child["member"]["shape"])["type"] == "structure":
            lines.append(f"{pad}{name}:{comment}")
            inner = yaml_skeleton(child["member"]["shape"], indent + 1).splitlines()
            inner[0] = f"{pad}- " + inner[0].lstrip()
            lines.extend(inner)
        else:
            value = json.dumps(skeleton(m["shape"]))
            lines.append(f"{pad}{name}: {value}{comment}")
    return "\n".join(lines)
