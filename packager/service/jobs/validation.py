"""Input validation driven by the service model's shapes, plus the rules the model cannot express.

`validate_input` checks any operation's parameters against its input shape (required
members, types, lengths, ranges, enums, patterns, unknown members), naming the field
the way the service does. `parse_configuration` then turns a packaging configuration
into a typed `JobConfiguration`, once, at the edge.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from dataclasses import dataclass, field

from packager.greengrass.bundle import S3Location
from packager.errors import ValidationException, shown
import packager.service_model as service_model
from targets import Target, TargetRequest, resolve_target
from targets.catalog import CompilerOptions, parse_compiler_options


@functools.lru_cache(maxsize=1)
def _unicode_classes() -> dict[str, str]:
    """Python `re` lacks Java's \\p{L}; spell each major category out as character ranges (one pass)."""
    ranges: dict[str, list[list[int]]] = {}
    for cp in range(sys.maxunicode + 1):
        spans = ranges.setdefault(unicodedata.category(chr(cp))[0], [])
        if spans and spans[-1][1] == cp - 1:
            spans[-1][1] = cp
        else:
            spans.append([cp, cp])
    return {cat: "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in spans)
            for cat, spans in ranges.items()}


@functools.lru_cache(maxsize=None)
def _compile(pattern: str) -> re.Pattern:
    translated = re.sub(r"\\p\{(\w)\}", lambda m: _unicode_classes()[m.group(1)], pattern)
    return re.compile(translated)


def _fail(path: str, value: object, constraint: str) -> ValidationException:
    return ValidationException(f"1 validation error detected: Value {shown(value)} at '{path}' failed to satisfy constraint: {constraint}",
                               field=path)


def validate_shape(shape_name: str, value: object, path: str, optional: frozenset[str] = frozenset()) -> None:
    """``optional``: member paths that may be missing although the model requires them (build-only jobs)."""
    s = service_model.shape(shape_name)
    kind = s["type"]
    if kind == "structure":
        if not isinstance(value, dict):
            raise ValidationException(f"Invalid type for parameter {path}, value: {shown(value)}, type: {type(value).__name__}, "
                                      "valid types: dict", field=path)
        known = s.get("members", {})
        for name in value:
            if name not in known:
                raise ValidationException(f"Unknown parameter in {path or 'input'}: {shown(name)}, must be one of: {', '.join(known)}",
                                          field=_join(path, name))
        for name in s.get("required", ()):
            if value.get(name) is None and _join(path, name) not in optional:
                raise ValidationException(f"Missing required parameter in {path or 'input'}: {shown(name)}", field=_join(path, name))
        for name, member_value in value.items():
            if member_value is not None:
                validate_shape(known[name]["shape"], member_value, _join(path, name), optional)
    elif kind == "list":
        if not isinstance(value, (list, tuple)):
            raise ValidationException(f"Invalid type for parameter {path}, value: {shown(value)}, type: {type(value).__name__}, "
                                      "valid types: list", field=path)
        if "min" in s and len(value) < s["min"]:
            raise _fail(path, value, f"Member must have length greater than or equal to {s['min']}")
        if "max" in s and len(value) > s["max"]:
            raise _fail(path, f"<{len(value)} items>", f"Member must have length less than or equal to {s['max']}")
        for i, item in enumerate(value):
            validate_shape(s["member"]["shape"], item, f"{path}[{i}]")
    elif kind == "string":
        if not isinstance(value, str):
            raise ValidationException(f"Invalid type for parameter {path}, value: {shown(value)}, type: {type(value).__name__}, "
                                      "valid types: str", field=path)
        if "enum" in s and value not in s["enum"]:
            raise _fail(path, value, f"Member must satisfy enum value set: [{', '.join(s['enum'])}]")
        if "min" in s and len(value) < s["min"]:
            raise _fail(path, value, f"Member must have length greater than or equal to {s['min']}")
        if "max" in s and len(value) > s["max"]:
            raise _fail(path, value, f"Member must have length less than or equal to {s['max']}")
        if "pattern" in s and not _compile(s["pattern"]).fullmatch(value):
            raise _fail(path, value, f"Member must satisfy regular expression pattern: {s['pattern']}")
    elif kind in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValidationException(f"Invalid type for parameter {path}, value: {shown(value)}, type: {type(value).__name__}, "
                                      "valid types: int", field=path)
        if "min" in s and value < s["min"]:
            raise _fail(path, value, f"Member must have value greater than or equal to {s['min']}")
        if "max" in s and value > s["max"]:
            raise _fail(path, value, f"Member must have value less than or equal to {s['max']}")
    elif kind in ("float", "double"):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValidationException(f"Invalid type for parameter {path}, value: {shown(value)}, valid types: float", field=path)
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise ValidationException(f"Invalid type for parameter {path}, value: {shown(value)}, valid types: bool", field=path)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def validate_input(operation_name: str, params: dict, optional: frozenset[str] = frozenset()) -> None:
    """Check an operation's parameters against its input shape; raises ValidationException naming the field."""
    input_shape = service_model.operation(operation_name).input_shape
    if input_shape is None:
        if params:
            raise ValidationException(f"{operation_name} takes no parameters, got {', '.join(params)}")
        return
    validate_shape(input_shape, params, "", optional)


@dataclass(frozen=True)
class JobConfiguration:
    """A packaging job's GreengrassConfiguration, validated and resolved."""

    target: Target
    target_request: TargetRequest
    s3_location: S3Location | None  # None only for build's local-only jobs: the service requires it
    component_name: str
    component_version: str | None  # None: the API defaults it to <ModelVersion>.0.0
    component_description: str | None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def tuning_trials(self) -> int:
        return self.target_request.compiler_options.tuning_trials


def parse_configuration(configuration: dict) -> JobConfiguration:
    """Turn a shape-valid ModelPackagingConfiguration into a JobConfiguration; applies the cross-field rules."""
    gg = configuration["Greengrass"]
    path = "Configuration.Greengrass"
    if "TargetDevice" in gg and "TargetPlatform" in gg:
        raise ValidationException(f"{path}.TargetDevice and {path}.TargetPlatform are mutually exclusive; give one",
                                  field=f"{path}.TargetDevice")
    if "TargetDevice" in gg and "CompilerOptions" in gg:
        raise ValidationException(f"{path}.CompilerOptions is not allowed with {path}.TargetDevice",
                                  field=f"{path}.CompilerOptions")
    if gg["ComponentName"] in (".", ".."):  # the service's pattern allows them; as a path part they leave the directory
        raise ValidationException(f"{path}.ComponentName {gg['ComponentName']!r} names no component",
                                  field=f"{path}.ComponentName")
    options = _compiler_options(gg.get("CompilerOptions"), f"{path}.CompilerOptions")
    platform = gg.get("TargetPlatform", {})
    request = TargetRequest(target_device=gg.get("TargetDevice"), os=platform.get("Os"), arch=platform.get("Arch"),
                            accelerator=platform.get("Accelerator"), compiler_options=options)
    try:
        target = resolve_target(request)
    except ValidationException as exc:
        raise ValidationException(f"{_field_path(path, exc.field)}: {exc.message}", field=_field_path(path, exc.field)) from None
    tags: dict[str, str] = {}
    for i, tag in enumerate(gg.get("Tags", ())):
        if tag["Key"] in tags:
            raise ValidationException(f"{path}.Tags[{i}].Key: duplicate tag key {tag['Key']!r}", field=f"{path}.Tags[{i}].Key")
        tags[tag["Key"]] = tag["Value"]
    s3 = gg.get("S3OutputLocation")
    return JobConfiguration(
        target=target,
        target_request=request,
        s3_location=S3Location(bucket=s3["Bucket"], prefix=s3.get("Prefix", "")) if s3 is not None else None,
        component_name=gg["ComponentName"],
        component_version=gg.get("ComponentVersion"),
        component_description=gg.get("ComponentDescription"),
        tags=tags,
    )


def _compiler_options(text: str | None, path: str) -> CompilerOptions:
    try:
        return parse_compiler_options(text)
    except ValidationException as exc:
        where = path if exc.field in (None, "CompilerOptions") else f"{path}.{exc.field}"
        raise ValidationException(f"{where}: {exc.message}", field=where) from None


def _field_path(path: str, field_name: str | None) -> str:
    """Map the catalog's short field names onto the request's member paths."""
    if field_name in (None, "Target"):
        return path
    if field_name.startswith("TargetPlatform") or field_name in ("TargetDevice", "CompilerOptions"):
        return f"{path}.{field_name}"
    return f"{path}.CompilerOptions.{field_name}"
