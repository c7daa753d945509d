"""The bundled, trained example model that `build` and `tune` use when given no --model."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def example_model_paths() -> tuple[Path, Path]:
    root = Path(str(resources.files("packager").joinpath("example_model")))
    return root / "model.onnx", root / "model_spec.json"
