"""Input validation driven by the service model's shapes.

`validate_input` checks any operation's parameters against its input shape (required
members, types, lengths, ranges, enums, patterns, unknown members), naming the field
the way the service does. The rules the model cannot express, and the typed packaging
configuration, are in packager/service/jobs/configuration.py.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata

import packager.service_model as service_model
from packager.errors import ValidationException, shown


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
    return {
        cat: "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in spans)
        for cat, spans in ranges.items()
    }


@functools.cache
def _compile(pattern: str) -> re.Pattern:
    translated = re.sub(r"\\p\{(\w)\}", lambda m: _unicode_classes()[m.group(1)], pattern)
    return re.compile(translated)


def _fail(path: str, value: object, constraint: str) -> ValidationException:
    return ValidationException(
        f"1 validation error detected: Value {shown(value)} at '{path}' failed to satisfy constraint: {constraint}",
        field=path,
    )


def validate_shape(shape_name: str, value: object, path: str, optional: frozenset[str] = frozenset()) -> None:
    """``optional``: member paths that may be missing although the model requires them (build-only jobs)."""
    s = service_model.shape(shape_name)
    kind = s["type"]
    if kind == "structure":
        if not isinstance(value, dict):
            raise ValidationException(
                f"Invalid type for parameter {path}, value: {shown(value)}, type: {type(value).__name__}, "
                "valid types: dict",
                field=path,
            )
        known = s.get("members", {})
        for name in value:
            if name not in known:
                raise ValidationException(
                    f"Unknown parameter in {path or 'input'}: {shown(name)}, must be one of: {', '.join(known)}",
                    field=_join(path, name),
                )
        for name in s.get("required", ()):
            if value.get(name) is None and _join(path, name) not in optional:
                raise ValidationException(
                    f"Missing required parameter in {path or 'input'}: {shown(name)}", field=_join(path, name)
                )
        for name, member_value in value.items():
            if member_value is not None:
                validate_shape(known[name]["shape"], member_value, _join(path, name), optional)
    elif kind == "list":
        if not isinstance(value, (list, tuple)):
            raise ValidationException(
                f"Invalid type for parameter {path}, value: {shown(value)}, type: {type(value).__name__}, "
                "valid types: list",
                field=path,
            )
        if "min" in s and len(value) < s["min"]:
            raise _fail(path, value, f"Member must have length greater than or equal to {s['min']}")
        if "max" in s and len(value) > s["max"]:
            raise _fail(path, f"<{len(value)} items>", f"Member must have length less than or equal to {s['max']}")
        for i, item in enumerate(value):
            validate_shape(s["member"]["shape"], item, f"{path}[{i}]")
    elif kind == "string":
        if not isinstance(value, str):
            raise ValidationException(
                f"Invalid type for parameter {path}, value: {shown(value)}, type: {type(value).__name__}, "
                "valid types: str",
                field=path,
            )
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
            raise ValidationException(
                f"Invalid type for parameter {path}, value: {shown(value)}, type: {type(value).__name__}, "
                "valid types: int",
                field=path,
            )
        if "min" in s and value < s["min"]:
            raise _fail(path, value, f"Member must have value greater than or equal to {s['min']}")
        if "max" in s and value > s["max"]:
            raise _fail(path, value, f"Member must have value less than or equal to {s['max']}")
    elif kind in ("float", "double"):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValidationException(
                f"Invalid type for parameter {path}, value: {shown(value)}, valid types: float", field=path
            )
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise ValidationException(
                f"Invalid type for parameter {path}, value: {shown(value)}, valid types: bool", field=path
            )


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
