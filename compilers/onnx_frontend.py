"""ONNX intake: read the file, fix its shapes, check every op is one TVM can compile, settle the spec."""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

from compilers.model import ImportedModel
from compilers.spec import ModelSpec, OutputRole, spec_from_dict
from packager.errors import ModelImportError

# The ONNX ops TVM's Relax frontend converts, recorded per apache-tvm release (record_supported_ops writes it).
SUPPORTED_OPS_FILE = Path(__file__).with_name("relax_onnx_ops.json")


def _load_onnx(path: Path):
    import onnx

    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ModelImportError(f"{path}: model file not found") from None
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # onnx raises DecodeError and others for corrupt protobufs
        raise ModelImportError(f"{path}: not a valid ONNX model ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'cannot parse'})") from None
    if not model.graph.node:
        raise ModelImportError(f"{path}: ONNX graph has no nodes (corrupt or empty model)")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ModelImportError(f"{path}: ONNX model fails the checker: {str(exc).splitlines()[0]}") from None
    return model


def _graph_inputs(model) -> list:
    initializers = {init.name for init in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def _static_shape(value_info, path: Path) -> tuple[int, ...]:
    dims = value_info.type.tensor_type.shape.dim
    shape = []
    for i, dim in enumerate(dims):
        if dim.HasField("dim_value") and dim.dim_value > 0:
            shape.append(dim.dim_value)
        elif i == 0:
            shape.append(1)  # a symbolic batch dimension is fixed to 1 (edge inference is batch 1)
        else:
            raise ModelImportError(
                f"{path}: input '{value_info.name}' has no static size for dimension {i} "
                f"({dim.dim_param or 'unknown'}); give it in the model spec's input.shape", field="input.shape")
    if not dims:
        raise ModelImportError(f"{path}: input '{value_info.name}' has no shape; give it in the model spec's input.shape",
                               field="input.shape")
    return tuple(shape)


def installed_tvm_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("apache-tvm")
    except PackageNotFoundError:
        return "unknown"


def tvm_onnx_converters() -> frozenset[str]:
    """The ONNX ops the installed TVM's Relax frontend converts, asked of TVM itself (imports it: about 3 s)."""
    from tvm.relax.frontend.onnx import onnx_frontend

    return frozenset(onnx_frontend._get_convert_map())


def record_supported_ops(path: Path = SUPPORTED_OPS_FILE) -> None:
    """Write the installed TVM's converter list; run it after changing the apache-tvm pin."""
    doc = {"apache-tvm": installed_tvm_version(), "ops": sorted(tvm_onnx_converters())}
    Path(path).write_text(json.dumps(doc, indent=1) + "\n")


@lru_cache(maxsize=1)
def _supported_ops() -> frozenset[str]:
    """The recorded list when it was recorded for the installed TVM: registering a model then needs no TVM import."""
    recorded = json.loads(SUPPORTED_OPS_FILE.read_text())
    if recorded["apache-tvm"] == installed_tvm_version():
        return frozenset(recorded["ops"])
    return tvm_onnx_converters()


def check_operators(model, path: Path) -> None:
    """Every node's op must have a Relax converter; name the first node and op that does not."""
    supported = _supported_ops()
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise ModelImportError(f"{path}: node '{node.name or node.output[0]}' uses op '{node.domain}.{node.op_type}' "
                                   f"from a custom domain, which TVM cannot compile")
        if node.op_type not in supported:
            raise ModelImportError(f"{path}: node '{node.name or node.output[0]}' uses unsupported operator '{node.op_type}'")


def infer_spec(model, path: Path, input_shape: tuple[int, ...]) -> dict:
    """A spec from the graph alone: a 4-D output is the anomaly map, a small one the score."""
    outputs = []
    for out in model.graph.output:
        rank = len(out.type.tensor_type.shape.dim)
        outputs.append({"name": out.name, "role": OutputRole.ANOMALY_MAP.value if rank >= 3 else OutputRole.SCORE.value})
    name = _graph_inputs(model)[0].name
    layout = "NHWC" if input_shape[-1] == 3 and input_shape[1] != 3 else "NCHW"
    hw = input_shape[2:4] if layout == "NCHW" else input_shape[1:3]
    return {
        "input": {"name": name, "shape": list(input_shape), "layout": layout},
        "preprocessing": {"resize": list(hw)},
        "outputs": outputs,
        "image_threshold": 0.5,
        "normalization": {"min": 0.0, "max": 1.0},
        "source": f"inferred from {path.name}",
    }


def _fix_input_shape(model, input_name: str, shape: tuple[int, ...]):
    """Pin the model's input to the spec's static shape so every downstream shape is static."""
    from onnx import shape_inference

    for value_info in model.graph.input:
        if value_info.name == input_name:
            dims = value_info.type.tensor_type.shape.dim
            del dims[:]
            for d in shape:
                dims.add().dim_value = d
    del model.graph.value_info[:]
    return shape_inference.infer_shapes(model)


def import_onnx(path: Path, spec: ModelSpec | dict | None = None, frontend: str = "onnx") -> ImportedModel:
    path = Path(path)
    model = _load_onnx(path)
    inputs = _graph_inputs(model)
    if len(inputs) != 1:
        raise ModelImportError(f"{path}: expected exactly one image input, found {len(inputs)}: {[i.name for i in inputs]}")
    check_operators(model, path)
    if spec is None:
        spec = infer_spec(model, path, _static_shape(inputs[0], path))
    if isinstance(spec, dict):
        spec = spec_from_dict(spec, where=f"model spec for {path.name}")
    if spec.input.name != inputs[0].name:
        raise ModelImportError(f"{path}: model spec names input '{spec.input.name}', but the graph's input is '{inputs[0].name}'",
                               field="input.name")
    graph_outputs = [o.name for o in model.graph.output]
    for out in spec.outputs:
        if out.name not in graph_outputs:
            raise ModelImportError(f"{path}: model spec names output '{out.name}', which the graph does not have; "
                                   f"graph outputs: {graph_outputs}", field="outputs")
    model = _fix_input_shape(model, spec.input.name, spec.input.shape)
    data = model.SerializeToString()
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return ImportedModel(source_path=path, onnx_bytes=data, spec=spec, sha256=hashlib.sha256(data).hexdigest(),
                         opset=opset, frontend=frontend)


def spec_from_anomalib_metadata(metadata_path: Path, model, path: Path) -> dict:
    """anomalib v1 exports write metadata.json beside the model: thresholds, normalization and transform."""
    try:
        meta = json.loads(Path(metadata_path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelImportError(f"{metadata_path}: not valid JSON ({exc})") from None
    inputs = _graph_inputs(model)
    shape = _static_shape(inputs[0], path)
    doc = infer_spec(model, path, shape)
    mean, std, size = _anomalib_transform(meta.get("transform"))
    if size is not None:
        shape = (1, 3, size[0], size[1])
        doc["input"]["shape"] = list(shape)
        doc["preprocessing"]["resize"] = list(size)
    if mean is not None:
        doc["preprocessing"]["mean"] = mean
        doc["preprocessing"]["std"] = std
    if "image_threshold" in meta:
        doc["image_threshold"] = float(meta["image_threshold"])
    doc["pixel_threshold"] = float(meta.get("pixel_threshold", doc["image_threshold"]))
    if "pred_scores.min" in meta or "min" in meta:
        doc["normalization"] = {"min": float(meta.get("pred_scores.min", meta.get("min", 0.0))),
                                "max": float(meta.get("pred_scores.max", meta.get("max", 1.0)))}
    doc["source"] = f"anomalib metadata {metadata_path.name}"
    return doc


def _anomalib_transform(transform) -> tuple[list | None, list | None, tuple[int, int] | None]:
    """Pull Normalize mean/std and Resize size out of anomalib's serialized albumentations/torchvision transform."""
    mean = std = size = None
    stack = [transform]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            name = str(node.get("__class_fullname__", node.get("type", "")))
            if name.endswith("Normalize") and "mean" in node:
                mean, std = [float(v) for v in node["mean"]], [float(v) for v in node["std"]]
            if name.endswith("Resize") and "height" in node:
                size = (int(node["height"]), int(node["width"]))
            elif name.endswith("Resize") and "size" in node:
                s = node["size"]
                size = (int(s[0]), int(s[1])) if isinstance(s, (list, tuple)) else (int(s), int(s))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return mean, std, size
