"""The bundled example model (packager/example_model/model.onnx) and the same network in PyTorch.

When model.onnx is present its trained weights are loaded into the PyTorch module, so both
engines run the same model; otherwise the architecture runs with random weights.
"""

from __future__ import annotations

from pathlib import Path

SIZE = 128
EXAMPLE_ONNX = Path(__file__).resolve().parents[2] / "packager" / "example_model" / "model.onnx"


def build_autoencoder(seed: int = 0):
    """The example model's torch module with random weights: image [1,3,128,128] -> (score [1], anomaly_map)."""
    import torch

    from packager.example_model.train import build_model

    torch.manual_seed(seed)
    autoencoder_cls, anomaly_cls = build_model()
    return anomaly_cls(autoencoder_cls().eval()).eval()


def example_model() -> tuple[bytes | None, object, str]:
    """(ONNX bytes or None, torch module, description). None means: export the torch module yourself."""
    import onnx
    import torch
    from onnx import numpy_helper

    module = build_autoencoder()
    if not EXAMPLE_ONNX.exists():
        return None, module, "example-model architecture, random weights (model.onnx not found)"
    data = EXAMPLE_ONNX.read_bytes()
    weights = {
        i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in onnx.load_from_string(data).graph.initializer
    }
    module.load_state_dict(weights, strict=True)
    return data, module, "packager/example_model/model.onnx (trained weights)"
