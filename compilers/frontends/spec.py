"""The model spec: how to feed a model and how to read its outputs.

A spec is a small JSON document that travels with the model into the bundle,
where the edge runtime reads it. This module turns that JSON into typed
objects, once, at the boundary, and writes it back out.
"""

from __future__ import annotations

import enum
import functools
import json
import math
import re
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from packager.errors import ModelImportError

SPEC_FORMAT = "packager-model-spec/1"
MAX_INPUT_ELEMENTS = 3 * 4096 * 4096  # the Edge Agent's largest image; larger inputs only fail later, out of memory
_HEX_COLOR = re.compile(r"^#[0-9A-Fa-f]{6}$")


class OutputRole(str, enum.Enum):
    SCORE = "score"  # the image's anomaly score (raw, mapped to [0, 1] with the spec's normalization)
    LABEL = "label"  # the graph's own verdict: bool (or 0/1), true when anomalous
    ANOMALY_MAP = "anomaly_map"  # per-pixel scores
    MASK = "mask"  # the graph's own per-pixel verdict: bool (or 0/1)


class Layout(str, enum.Enum):
    NCHW = "NCHW"
    NHWC = "NHWC"


@dataclass(frozen=True)
class Preprocessing:
    """Applied by the edge runtime to an RGB uint8 image before inference."""

    resize: tuple[int, int]  # (height, width)
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int, ...]
    layout: Layout = Layout.NCHW
    dtype: str = "float32"


@dataclass(frozen=True)
class OutputSpec:
    name: str
    role: OutputRole


@dataclass(frozen=True)
class AnomalyClass:
    name: str
    color: str  # "#RRGGBB"


@dataclass(frozen=True)
class Normalization:
    """Maps a raw score to a confidence in [0, 1]: (score - min) / (max - min), clipped."""

    min: float
    max: float


@dataclass(frozen=True)
class ModelSpec:
    input: InputSpec
    preprocessing: Preprocessing
    outputs: tuple[OutputSpec, ...]
    image_threshold: float
    pixel_threshold: float
    normalization: Normalization
    classes: tuple[AnomalyClass, ...] = (AnomalyClass("anomaly", "#FF0000"),)
    background_color: str = "#000000"
    source: str = "explicit"

    def output(self, role: OutputRole) -> OutputSpec | None:
        return next((o for o in self.outputs if o.role is role), None)

    @property
    def is_classification(self) -> bool:
        """No anomaly map and no mask: the model says whether an image is anomalous, not where (Lookout's classification)."""
        return self.output(OutputRole.ANOMALY_MAP) is None and self.output(OutputRole.MASK) is None

    def to_json_dict(self) -> dict:
        doc = asdict(self)
        doc["format"] = SPEC_FORMAT
        doc["input"]["layout"] = self.input.layout.value
        doc["outputs"] = [{"name": o.name, "role": o.role.value} for o in self.outputs]
        return doc

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict(), indent=2, sort_keys=True) + "\n"


def _require(doc: dict, key: str, where: str):
    if key not in doc:
        raise ModelImportError(f"{where}: missing required field '{key}'", field=key)
    return doc[key]


def _floats(values, n: int, field_name: str, where: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ModelImportError(f"{where}: '{field_name}' must be a list of {n} numbers", field=field_name) from None
    if len(out) != n:
        raise ModelImportError(f"{where}: '{field_name}' must have {n} values, got {len(out)}", field=field_name)
    return out


@functools.lru_cache(maxsize=1)
def _spec_schema() -> dict:
    return json.loads(resources.files("compilers.frontends").joinpath("model_spec.schema.json").read_text())


def _schema_field(error) -> str:
    """A schema error's place as the spec's own field path: input.shape, outputs[0].role."""
    parts = list(error.absolute_path)
    if error.validator == "required":  # the missing member, not the object that lacks it
        parts.append(re.search(r"'([^']*)' is a required property", error.message).group(1))
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def check_spec_schema(doc, where: str = "model spec") -> None:
    """Types, required members and ranges, from the schema shipped as compilers/frontends/model_spec.schema.json."""
    import jsonschema

    if not isinstance(doc, dict):
        raise ModelImportError(f"{where}: expected a JSON object")
    if doc.get("format", SPEC_FORMAT) != SPEC_FORMAT:
        raise ModelImportError(
            f"{where}: unsupported format {str(doc.get('format'))[:80]!r}, expected {SPEC_FORMAT!r}", field="format"
        )
    errors = sorted(
        jsonschema.Draft7Validator(_spec_schema()).iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path]
    )
    if errors:
        field_name = _schema_field(errors[0])
        raise ModelImportError(
            f"{where}: {field_name or '(root)'}: {_short(errors[0].message)}", field=field_name or None
        )


def _short(message: str, limit: int = 200) -> str:
    return message if len(message) <= limit else message[:limit] + "..."


def spec_from_dict(doc: dict, where: str = "model spec") -> ModelSpec:
    """Validate a spec document and turn it into a ModelSpec. Errors name the field."""
    check_spec_schema(doc, where)
    inp = _require(doc, "input", where)
    shape = tuple(int(d) for d in _require(inp, "shape", where + ".input"))
    if len(shape) != 4 or any(d <= 0 for d in shape):
        raise ModelImportError(
            f"{where}: input.shape must be 4 positive dimensions, got {list(shape)}", field="input.shape"
        )
    if math.prod(shape) > MAX_INPUT_ELEMENTS:
        raise ModelImportError(
            f"{where}: input.shape {list(shape)} has {math.prod(shape)} elements; at most "
            f"{MAX_INPUT_ELEMENTS} (one 4096x4096 RGB image) are accepted",
            field="input.shape",
        )
    try:
        layout = Layout(inp.get("layout", "NCHW"))
    except ValueError:
        raise ModelImportError(
            f"{where}: input.layout must be NCHW or NHWC, got {inp.get('layout')!r}", field="input.layout"
        ) from None
    input_spec = InputSpec(
        name=str(_require(inp, "name", where + ".input")),
        shape=shape,
        layout=layout,
        dtype=str(inp.get("dtype", "float32")),
    )
    hw = (shape[2], shape[3]) if layout is Layout.NCHW else (shape[1], shape[2])
    pre = doc.get("preprocessing", {})
    preprocessing = Preprocessing(
        resize=tuple(int(v) for v in pre.get("resize", hw)),
        scale=float(pre.get("scale", 1.0 / 255.0)),
        mean=_floats(pre.get("mean", (0.0, 0.0, 0.0)), 3, "preprocessing.mean", where),
        std=_floats(pre.get("std", (1.0, 1.0, 1.0)), 3, "preprocessing.std", where),
    )
    if preprocessing.resize != hw:
        raise ModelImportError(
            f"{where}: preprocessing.resize {list(preprocessing.resize)} does not match the input's H,W {list(hw)}",
            field="preprocessing.resize",
        )
    if any(s == 0 for s in preprocessing.std):
        raise ModelImportError(f"{where}: preprocessing.std must not contain 0", field="preprocessing.std")
    outputs = []
    for i, out in enumerate(_require(doc, "outputs", where)):
        try:
            role = OutputRole(out.get("role"))
        except ValueError:
            raise ModelImportError(
                f"{where}: outputs[{i}].role must be one of {[r.value for r in OutputRole]}, got {out.get('role')!r}",
                field=f"outputs[{i}].role",
            ) from None
        outputs.append(OutputSpec(name=str(_require(out, "name", f"{where}.outputs[{i}]")), role=role))
    for i, out in enumerate(outputs):
        if any(o.role is out.role for o in outputs[:i]):
            raise ModelImportError(
                f"{where}: outputs[{i}] ({out.name!r}) has role {out.role.value!r}, which an earlier output has; "
                f"each role goes to one output",
                field=f"outputs[{i}].role",
            )
        if any(o.name == out.name for o in outputs[:i]):
            raise ModelImportError(
                f"{where}: outputs[{i}]: output {out.name!r} is listed twice; each output has exactly one role",
                field=f"outputs[{i}].name",
            )
    if not any(o.role in (OutputRole.SCORE, OutputRole.LABEL, OutputRole.ANOMALY_MAP) for o in outputs):
        raise ModelImportError(
            f"{where}: outputs must include one with role 'score', 'label' or 'anomaly_map'", field="outputs"
        )
    norm = doc.get("normalization", {})
    image_threshold = float(_require(doc, "image_threshold", where))
    classes = tuple(
        AnomalyClass(str(c["name"]), str(c["color"]))
        for c in doc.get("classes", [{"name": "anomaly", "color": "#FF0000"}])
    )
    for c in classes:
        if not _HEX_COLOR.match(c.color):
            raise ModelImportError(
                f"{where}: classes: {c.name!r} color must be '#RRGGBB', got {c.color!r}", field="classes"
            )
    normalization = Normalization(
        min=float(norm.get("min", 0.0)), max=float(norm.get("max", 2.0 * image_threshold or 1.0))
    )
    if normalization.max <= normalization.min:
        raise ModelImportError(
            f"{where}: normalization.max must be greater than normalization.min", field="normalization"
        )
    return ModelSpec(
        input=input_spec,
        preprocessing=preprocessing,
        outputs=tuple(outputs),
        image_threshold=image_threshold,
        pixel_threshold=float(doc.get("pixel_threshold", image_threshold)),
        normalization=normalization,
        classes=classes,
        background_color=str(doc.get("background_color", "#000000")),
        source=str(doc.get("source", "explicit")),
    )


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number a spec may hold")


def load_spec(path: Path) -> ModelSpec:
    path = Path(path)
    try:
        doc = json.loads(Path(path).read_text(), parse_constant=_no_constant)
    except FileNotFoundError:
        raise ModelImportError(f"{path}: model spec file not found") from None
    except IsADirectoryError:
        raise ModelImportError(f"{path}: model spec is a directory, not a file") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ModelImportError(f"{path.name}: model spec is not valid JSON ({_short(str(exc))})") from None
    return spec_from_dict(doc, where=str(path))
