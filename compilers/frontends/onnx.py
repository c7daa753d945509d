"""ONNX intake: read the file, fix its shapes, check every op is one TVM can compile, settle the spec."""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

from compilers.frontends.spec import ModelSpec, OutputRole, spec_from_dict
from compilers.model import ImportedModel
from packager.errors import ModelImportError

# The ONNX ops TVM's Relax frontend converts, recorded per apache-tvm release (record_supported_ops writes it).
SUPPORTED_OPS_FILE = Path(__file__).with_name("relax_onnx_ops.json")


def load_onnx(path: Path):
    """Parse the model and read its external data (anomalib's model.onnx.data, or any location beside it) into it."""
    import onnx

    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ModelImportError(f"{path}: model file not found") from None
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # onnx raises DecodeError and others for corrupt protobufs
        raise ModelImportError(
            f"{path}: not a valid ONNX model ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'cannot parse'})"
        ) from None
    if not model.graph.node:
        raise ModelImportError(f"{path}: ONNX graph has no nodes (corrupt or empty model)")
    if external_data_files(model, path):
        from onnx.external_data_helper import load_external_data_for_model

        try:
            load_external_data_for_model(model, str(Path(path).parent))
        except (OSError, ValueError) as exc:
            raise ModelImportError(f"{path}: cannot read its external data ({exc})") from None
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ModelImportError(f"{path}: ONNX model fails the checker: {str(exc).splitlines()[0]}") from None
    except ValueError as exc:  # a model whose weights exceed protobuf's 2 GiB cannot be checked (or compiled) in memory
        raise ModelImportError(f"{path}: ONNX model cannot be checked: {str(exc).splitlines()[0]}") from None
    return model


def may_name_external_data(data: bytes) -> bool:
    """False when the serialized model names no external data file: every external tensor must carry a "location"
    entry (ONNX's external data spec), so a model whose bytes never spell "location" has none, and need not be parsed
    to find out (a 176 MB single-file model takes ~0.3 s to parse)."""
    return b"location" in data


# data_files_of() by the stat signatures of the model and of each data file it found: build lists them when it checks
# the model, keys its intake and stores it.
_data_files: dict[tuple, tuple[tuple, list[Path]]] = {}


def data_files_of(path: Path, data: bytes | None = None, model=None) -> list[Path]:
    """external_data_files() of the model file at ``path`` (whose bytes or parsed model may be given), without
    parsing a model that names none, and without reading it again while it and its data files are unchanged."""
    from compilers.files import stat_signature

    signature = stat_signature(path)
    if signature in _data_files:
        data_signatures, files = _data_files[signature]
        try:
            if data_signatures == tuple(stat_signature(f) for f in files):
                return list(files)
        except OSError:
            pass
    if model is None:
        data = Path(path).read_bytes() if data is None else data
        if may_name_external_data(data):
            import onnx

            model = onnx.load_from_string(data)
    files = external_data_files(model, path) if model is not None else []
    _data_files.clear()  # one model at a time
    _data_files[signature] = (tuple(stat_signature(f) for f in files), files)
    return list(files)


def external_data_files(model, path: Path) -> list[Path]:
    """The files the model's tensors keep their data in, each checked: a relative location inside the model's folder,
    a regular file, long enough for every tensor's offset and length. Sorted, without duplicates."""
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

    path = Path(path)
    folder = path.parent.resolve()
    files: dict[str, Path] = {}
    for tensor in _get_all_tensors(model):
        if not uses_external_data(tensor):
            continue
        info = ExternalDataInfo(tensor)
        location = info.location or ""
        where = f"{path}: tensor '{tensor.name}' keeps its data in '{location}'"
        if not location or Path(location).is_absolute() or ".." in Path(location).parts:
            raise ModelImportError(f"{where}, which is not a path relative to the model's folder", field="ModelPath")
        data_file = (folder / location).resolve()
        if folder not in data_file.parents:
            raise ModelImportError(f"{where}, which is outside the model's folder", field="ModelPath")
        if not data_file.is_file():
            raise ModelImportError(
                f"{where}, which is missing: put it beside the model ({folder / location})", field="ModelPath"
            )
        end = (info.offset or 0) + (info.length or 0)
        if end > data_file.stat().st_size:
            raise ModelImportError(
                f"{where} at bytes {info.offset or 0}..{end}, but that file has {data_file.stat().st_size} bytes "
                "(truncated or from another export)",
                field="ModelPath",
            )
        files[location] = data_file
    return [files[k] for k in sorted(files)]


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
                f"({dim.dim_param or 'unknown'}); give it in the model spec's input.shape",
                field="input.shape",
            )
    if not dims:
        raise ModelImportError(
            f"{path}: input '{value_info.name}' has no shape; give it in the model spec's input.shape",
            field="input.shape",
        )
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
            raise ModelImportError(
                f"{path}: node '{node.name or node.output[0]}' uses op '{node.domain}.{node.op_type}' "
                f"from a custom domain, which TVM cannot compile"
            )
        if node.op_type not in supported:
            raise ModelImportError(
                f"{path}: node '{node.name or node.output[0]}' uses unsupported operator '{node.op_type}'"
            )


# anomalib 2.x exports name their outputs after InferenceBatch's fields
ANOMALIB_V2_ROLES = {
    "pred_score": OutputRole.SCORE,
    "pred_label": OutputRole.LABEL,
    "anomaly_map": OutputRole.ANOMALY_MAP,
    "pred_mask": OutputRole.MASK,
}


def _output_role(out) -> OutputRole:
    """By anomalib v2's name, else by type: bool outputs are verdicts (label, mask), floats are scores (score, map)."""
    import onnx

    if out.name in ANOMALIB_V2_ROLES:
        return ANOMALIB_V2_ROLES[out.name]
    rank = len(out.type.tensor_type.shape.dim)
    if out.type.tensor_type.elem_type == onnx.TensorProto.BOOL:
        return OutputRole.MASK if rank >= 3 else OutputRole.LABEL
    return OutputRole.ANOMALY_MAP if rank >= 3 else OutputRole.SCORE


def is_anomalib_v2(model) -> bool:
    names = {o.name for o in model.graph.output}
    return "pred_score" in names and ("pred_label" in names or "anomaly_map" in names)


def infer_spec(model, path: Path, input_shape: tuple[int, ...]) -> dict:
    """A spec from the graph alone. Each output gets one role; a second output that would take a taken role is an error.

    anomalib v2 exports (pred_score, pred_label, anomaly_map, pred_mask) normalise and threshold inside the graph:
    their scores are already in [0, 1] and the graph's threshold is 0.5."""
    outputs, taken = [], {}
    for out in model.graph.output:
        role = _output_role(out)
        if role in taken:
            raise ModelImportError(
                f"{path}: outputs '{taken[role]}' and '{out.name}' would both be the {role.value!r}; "
                "give the roles in a model spec",
                field="outputs",
            )
        taken[role] = out.name
        outputs.append({"name": out.name, "role": role.value})
    if not any(role in taken for role in (OutputRole.SCORE, OutputRole.LABEL, OutputRole.ANOMALY_MAP)):
        raise ModelImportError(
            f"{path}: no output is a score, label or anomaly map; give the roles in a model spec", field="outputs"
        )
    name = _graph_inputs(model)[0].name
    layout = "NHWC" if input_shape[-1] == 3 and input_shape[1] != 3 else "NCHW"
    hw = input_shape[2:4] if layout == "NCHW" else input_shape[1:3]
    anomalib = is_anomalib_v2(model)
    return {
        "input": {"name": name, "shape": list(input_shape), "layout": layout},
        "preprocessing": {"resize": list(hw)},
        "outputs": outputs,
        "image_threshold": 0.5,
        "pixel_threshold": 0.5,
        "normalization": {"min": 0.0, "max": 1.0},
        "source": f"{'anomalib v2 export' if anomalib else 'inferred from'} {path.name}",
    }


def _check_input_shape(value_info, shape: tuple[int, ...], path: Path) -> None:
    """The spec's shape must agree with every static dimension the graph declares; symbolic ones take the spec's value."""
    dims = value_info.type.tensor_type.shape.dim
    if len(dims) != len(shape):
        raise ModelImportError(
            f"{path}: input '{value_info.name}' has {len(dims)} dimensions, the spec's input.shape {list(shape)} "
            f"has {len(shape)}",
            field="input.shape",
        )
    for i, (dim, want) in enumerate(zip(dims, shape)):
        if dim.HasField("dim_value") and dim.dim_value > 0 and dim.dim_value != want:
            raise ModelImportError(
                f"{path}: input '{value_info.name}' dimension {i} is {dim.dim_value} in the graph, "
                f"{want} in the spec's input.shape",
                field="input.shape",
            )


def _fix_input_shape(model, input_name: str, shape: tuple[int, ...]):
    """Pin the model's input to the spec's static shape so every downstream shape is static.

    A symbolic dimension named on the input (anomalib's ``batch_size``) takes the same value on the outputs."""
    from onnx import shape_inference

    named = {}
    for value_info in model.graph.input:
        if value_info.name == input_name:
            dims = value_info.type.tensor_type.shape.dim
            named = {d.dim_param: v for d, v in zip(dims, shape) if d.dim_param}
            del dims[:]
            for d in shape:
                dims.add().dim_value = d
    for value_info in model.graph.output:
        for dim in value_info.type.tensor_type.shape.dim:
            if dim.dim_param in named:
                dim.dim_value = named[dim.dim_param]
    del model.graph.value_info[:]
    return shape_inference.infer_shapes(model)


SHAPE_OPS = frozenset({"Shape", "Size", "ConstantOfShape", "Range", "NonZero"})


def computes_shapes(model) -> bool:
    """Whether the graph works out shapes at run time (Shape -> Gather -> Concat -> Reshape and the like)."""
    return any(node.op_type in SHAPE_OPS for node in model.graph.node)


def fold_shape_computations(model, path: Path):
    """With the input shape fixed, fold what the graph computes from shapes into constants, so TVM's ONNX frontend sees
    static Reshape/Expand/Resize arguments. onnxslim (a maintained ONNX simplifier) does the folding: constant folding,
    dead-node and common-subexpression elimination; its operator fusions are left out, so the ops stay the user's."""
    import onnxslim

    try:
        folded = onnxslim.slim(model, skip_optimizations=["graph_fusion", "weight_tying"])
    except Exception as exc:  # onnxslim raises what onnx and its own passes raise
        raise ModelImportError(
            f"{path}: folding the graph's shape computations failed ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else 'no message'})"
        ) from None
    if folded is None:
        raise ModelImportError(f"{path}: folding the graph's shape computations failed")
    return _small_initializers_as_constants(folded)


def _small_initializers_as_constants(model, max_elements: int = 64):
    """Folding leaves axes, shapes and sizes as initializers; TVM's frontend takes initializers as run-time parameters,
    and then cannot see e.g. a ReduceL2's axes. Small integer initializers go back to being Constant nodes."""
    import onnx
    from onnx import helper

    small = [
        t
        for t in model.graph.initializer
        if t.data_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32) and _elements(t) <= max_elements
    ]
    if not small:
        return model
    names = {t.name for t in small}
    keep = [t for t in model.graph.initializer if t.name not in names]
    constants = [helper.make_node("Constant", [], [t.name], value=t, name=f"folded_{t.name}") for t in small]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    nodes = constants + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    inputs = [i for i in model.graph.input if i.name not in names]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    return model


def _elements(tensor) -> int:
    count = 1
    for d in tensor.dims:
        count *= d
    return count


def import_onnx(path: Path, spec: ModelSpec | dict | None = None, frontend: str = "onnx") -> ImportedModel:
    path = Path(path)
    model = load_onnx(path)
    inputs = _graph_inputs(model)
    if len(inputs) != 1:
        raise ModelImportError(
            f"{path}: expected exactly one image input, found {len(inputs)}: {[i.name for i in inputs]}"
        )
    check_operators(model, path)
    if spec is None:
        spec = infer_spec(model, path, _static_shape(inputs[0], path))
    if isinstance(spec, dict):
        spec = spec_from_dict(spec, where=f"model spec for {path.name}")
    if spec.input.name != inputs[0].name:
        raise ModelImportError(
            f"{path}: model spec names input '{spec.input.name}', but the graph's input is '{inputs[0].name}'",
            field="input.name",
        )
    graph_outputs = [o.name for o in model.graph.output]
    for out in spec.outputs:
        if out.name not in graph_outputs:
            raise ModelImportError(
                f"{path}: model spec names output '{out.name}', which the graph does not have; "
                f"graph outputs: {graph_outputs}",
                field="outputs",
            )
    _check_input_shape(inputs[0], spec.input.shape, path)
    model = _fix_input_shape(model, spec.input.name, spec.input.shape)
    if computes_shapes(model):
        model = fold_shape_computations(model, path)
    data = model.SerializeToString()
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return ImportedModel(
        source_path=path,
        onnx_bytes=data,
        spec=spec,
        sha256=hashlib.sha256(data).hexdigest(),
        opset=opset,
        frontend=frontend,
    )


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
        doc["normalization"] = {
            "min": float(meta.get("pred_scores.min", meta.get("min", 0.0))),
            "max": float(meta.get("pred_scores.max", meta.get("max", 1.0))),
        }
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
