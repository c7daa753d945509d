"""anomalib 2.x image models rebuilt in plain torch with seeded random weights, exported the way anomalib exports them.

``export(name, out_dir)`` writes ``out_dir/model.onnx`` and ``out_dir/model.onnx.data`` as anomalib 2.7's
``model.to_onnx(export_root, input_size=(256, 256))`` does: torch.onnx's dynamo exporter (opset 18), input ``input``
with a symbolic ``batch_size`` axis, pre- and post-processing in the graph, outputs ``pred_score``, ``pred_label``
(bool) and, for segmentation models, ``anomaly_map`` and ``pred_mask`` (bool), weights in the external data file.
Nothing is downloaded: backbones are timm's ResNets rebuilt layer for layer, fitted statistics come from random images.
"""

from __future__ import annotations

import importlib
from pathlib import Path

# name -> module in this package; each module has build(size, seed) -> AnomalibExport
MODELS = {
    "patchcore": "patchcore",
    "padim": "padim",
    "efficient_ad_s": "efficient_ad",
    "efficient_ad_m": "efficient_ad",
    "fastflow": "fastflow",
    "reverse_distillation": "reverse_distillation",
    "stfpm": "stfpm",
    "dfm": "dfm",
    "dfkde": "dfkde",
    "ganomaly": "ganomaly",
    "draem": "draem",
}
CLASSIFICATION_ONLY = ("dfkde", "ganomaly")
OPSET = 14  # what anomalib asks torch.onnx for; the dynamo exporter writes opset 18


def build(name: str, size: int = 256, seed: int = 0):
    """The torch module anomalib would export (pre-processing, model, post-processing), in eval mode."""
    if name not in MODELS:
        raise KeyError(f"unknown zoo model {name!r}; choose from {sorted(MODELS)}")
    module = importlib.import_module(f"{__name__}.{MODELS[name]}")
    builder = getattr(module, "build_" + name, None) or module.build
    return builder(size=size, seed=seed)


def export_module(module, out_dir: Path, size: int) -> Path:
    """torch.onnx.export as anomalib's ExportMixin.to_onnx calls it with dynamo=True and a fixed input size."""
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.onnx"
    example = torch.zeros((1, 3, size, size))
    with torch.no_grad():
        torch.onnx.export(
            module,
            (example,),
            str(path),
            opset_version=OPSET,
            input_names=["input"],
            output_names=module.output_names(),
            dynamic_shapes=({0: "batch_size"},),
            dynamo=True,
            external_data=True,
            verbose=False,
        )
    return path


def export(name: str, out_dir, size: int = 256, seed: int = 0) -> Path:
    """Build zoo model ``name`` and write ``out_dir/model.onnx`` + ``model.onnx.data``; returns the model path."""
    return export_module(build(name, size=size, seed=seed), Path(out_dir), size)
