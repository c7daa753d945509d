"""The service's CompilerOptions string, parsed once: the target's options and the build's tuning trials.

Lookout's CompilerOptions carried both kinds of setting in one string; here they part at the parse. ``CompilerOptions``
is what the catalog resolves a target with; ``tuning_trials`` is a compile setting (``compilers.model.CompileOptions``).
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field

from packager.errors import ValidationException, shown


@dataclass(frozen=True)
class CompilerOptions:
    """Typed form of the target settings in the service's CompilerOptions string."""

    mcpu: str | None = None
    mattr: tuple[str, ...] = ()
    gpu_code: str | None = None  # "sm_72"
    trt_ver: str | None = None
    cuda_ver: str | None = None
    num_cores: int | None = None

    @property
    def sm(self) -> int | None:
        return int(self.gpu_code[3:]) if self.gpu_code else None


@dataclass(frozen=True)
class ParsedCompilerOptions:
    """A CompilerOptions string, split: what selects and tunes the target, and how many trials to tune the build with."""

    options: CompilerOptions = field(default_factory=CompilerOptions)
    tuning_trials: int = 0


MAX_OPTION_CHARS = 64  # mcpu, gpu-code, trt-ver, cuda-ver: names like 'cortex-a72' or 'sm_72'
MAX_MATTR = 64
TUNING_TRIALS_RANGE = (0, 100_000)  # MetaSchedule trials per build, not per kernel
_INTEGER_RANGES = {"num-cores": (1, 1024), "tuning-trials": TUNING_TRIALS_RANGE}
# The service's key -> the CompilerOptions attribute; "tuning-trials" is ParsedCompilerOptions.tuning_trials.
OPTION_KEYS = {
    "mcpu": "mcpu",
    "mattr": "mattr",
    "gpu-code": "gpu_code",
    "trt-ver": "trt_ver",
    "cuda-ver": "cuda_ver",
    "num-cores": "num_cores",
    "tuning-trials": "tuning_trials",
}


def parse_compiler_options(text: str | None) -> ParsedCompilerOptions:
    """Parse the service's CompilerOptions string: real JSON or the docs' single-quoted dict form.
    Errors name the key (``field``: "mcpu", "tuning-trials", ...) or the whole string ("CompilerOptions")."""
    if text is None or text == "":
        return ParsedCompilerOptions()
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or JSON past the int-digit or nesting limits
        try:
            doc = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):  # TypeError: {[]: 1}
            raise ValidationException(
                f"CompilerOptions is neither JSON nor a quoted dict: {shown(text)}", field="CompilerOptions"
            ) from None
    if not isinstance(doc, dict):
        raise ValidationException(
            'CompilerOptions must be an object such as {"mcpu": "core-avx2"}', field="CompilerOptions"
        )
    unknown = sorted(repr(k)[:50] for k in doc if not isinstance(k, str) or k not in OPTION_KEYS)
    if unknown:
        raise ValidationException(
            f"CompilerOptions has unknown keys [{', '.join(unknown[:10])}]; valid: {sorted(OPTION_KEYS)}",
            field="CompilerOptions",
        )
    values = {OPTION_KEYS[key]: _option_value(key, value) for key, value in doc.items()}
    tuning_trials = values.pop("tuning_trials", 0)
    return ParsedCompilerOptions(CompilerOptions(**values), tuning_trials)


def check_tuning_trials(value, key: str = "tuning-trials") -> int:
    """The range every way in shares (CompilerOptions 'tuning-trials', build --tuning-trials)."""
    low, high = TUNING_TRIALS_RANGE
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValidationException(
            f"CompilerOptions {key} must be an integer in {low}..{high}, got {shown(value)}", field=key
        )
    return value


def _option_value(key: str, value):
    if key == "mattr":
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if (
            not isinstance(value, list)
            or len(value) > MAX_MATTR
            or not all(
                isinstance(v, str) and len(v) <= MAX_OPTION_CHARS and re.fullmatch(r"[+-][\w.-]+", v) for v in value
            )
        ):
            raise ValidationException(
                f"CompilerOptions mattr must be a list of at most {MAX_MATTR} like ['+neon'], got {shown(value)}",
                field="mattr",
            )
        return tuple(value)
    if key in _INTEGER_RANGES:
        low, high = _INTEGER_RANGES[key]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ValidationException(
                f"CompilerOptions {key} must be an integer in {low}..{high}, got {shown(value)}", field=key
            )
        return value
    if (
        not isinstance(value, (str, int, float))
        or isinstance(value, bool)
        or (isinstance(value, int) and value.bit_length() > 64)
    ):
        raise ValidationException(f"CompilerOptions {key} must be a string, got {shown(value)}", field=key)
    value = str(value)
    if len(value) > MAX_OPTION_CHARS:
        raise ValidationException(
            f"CompilerOptions {key} must be at most {MAX_OPTION_CHARS} characters, got {shown(value)}", field=key
        )
    if key == "mcpu" and not re.fullmatch(r"[\w.-]+", value):
        raise ValidationException(
            f"CompilerOptions mcpu must be a CPU name like 'core-avx2', got {shown(value)}", field="mcpu"
        )
    return value


def format_compiler_options(parsed: ParsedCompilerOptions) -> str | None:
    """The inverse of parse_compiler_options: the service's CompilerOptions string (JSON) for typed options; None for none."""
    doc: dict = {}
    for key, attr in OPTION_KEYS.items():
        value = parsed.tuning_trials if attr == "tuning_trials" else getattr(parsed.options, attr)
        if value not in (None, (), 0):
            doc[key] = list(value) if attr == "mattr" else value
    return json.dumps(doc) if doc else None
