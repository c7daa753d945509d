"""PyTorch intake: a torch.export ExportedProgram (.pt2) or TorchScript (.pt) file, lowered to ONNX."""

from __future__ import annotations

import tempfile
from pathlib import Path

from compilers.frontends.onnx import import_onnx
from compilers.frontends.spec import ModelSpec
from compilers.model import ImportedModel
from packager.errors import ModelImportError


def import_pytorch(path: Path, spec: ModelSpec | None) -> ImportedModel:
    """The spec is required: a PyTorch file carries neither output names nor thresholds."""
    try:
        import torch
    except ImportError:
        raise ModelImportError(
            f"{path}: PyTorch models need torch; install it with: pip install torch==2.13.0"
        ) from None
    if spec is None:
        raise ModelImportError(
            f"{path}: a PyTorch model needs a model spec (--model-spec) naming its input and outputs"
        )
    try:
        if path.suffix == ".pt2":
            module = torch.export.load(str(path))
        else:
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise ModelImportError(
            f"{path}: cannot load the PyTorch model ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    example = torch.zeros(spec.input.shape, dtype=torch.float32)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / (path.stem + ".onnx")
        try:
            # An ExportedProgram goes through the torch.export-based exporter; TorchScript through the legacy one.
            torch.onnx.export(
                module,
                (example,),
                str(onnx_path),
                input_names=[spec.input.name],
                output_names=[o.name for o in spec.outputs],
                opset_version=18,
                dynamo=path.suffix == ".pt2",
                external_data=False,
                verbose=False,
            )
        except Exception as exc:
            raise ModelImportError(
                f"{path}: cannot convert the PyTorch model to ONNX ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            ) from None
        imported = import_onnx(onnx_path, spec, frontend="pytorch")
    return ImportedModel(
        source_path=path,
        onnx_bytes=imported.onnx_bytes,
        spec=imported.spec,
        sha256=imported.sha256,
        opset=imported.opset,
        frontend="pytorch",
    )
