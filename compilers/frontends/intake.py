"""Model intake: one entry point for every supported model format."""

from __future__ import annotations

from pathlib import Path

from compilers.frontends.onnx import import_onnx, load_onnx, spec_from_anomalib_metadata
from compilers.frontends.pytorch import import_pytorch
from compilers.frontends.spec import load_spec
from compilers.model import ImportedModel
from packager.errors import ModelImportError

ANOMALIB_METADATA = "metadata.json"


def import_model(path: Path, spec_path: Path | None = None, *, cache_dir: Path | None = None) -> ImportedModel:
    """ONNX (.onnx), PyTorch (.pt2 ExportedProgram, .pt TorchScript) and anomalib v1 exports (ONNX + metadata.json).

    With ``cache_dir`` (the compile cache's directory), an unchanged model and spec reuse an earlier intake."""
    path = Path(path)
    if cache_dir is None or not path.is_file():
        return _import_model(path, spec_path)
    from compilers.frontends import import_cache

    return import_cache.cached_intake(
        cache_dir, path, spec_path, path.parent / ANOMALIB_METADATA, lambda: _import_model(path, spec_path)
    )


def _import_model(path: Path, spec_path: Path | None) -> ImportedModel:
    spec = load_spec(spec_path) if spec_path is not None else None
    if not path.exists():
        raise ModelImportError(f"{path}: model file not found")
    if path.suffix == ".onnx":
        metadata = path.parent / ANOMALIB_METADATA
        if spec is None and metadata.exists():
            model = load_onnx(path)
            return import_onnx(path, spec_from_anomalib_metadata(metadata, model, path), frontend="anomalib")
        return import_onnx(path, spec)
    if path.suffix in (".pt2", ".pt"):
        return import_pytorch(path, spec)
    raise ModelImportError(f"{path}: unsupported model format '{path.suffix}'; expected .onnx, .pt2 or .pt")
