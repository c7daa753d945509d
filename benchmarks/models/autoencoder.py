"""The example model's architecture with random weights: a stand-in until packager/example_model/model.onnx exists."""

from __future__ import annotations

SIZE = 128


def build_autoencoder(seed: int = 0):
    """A torch module: image [1,3,128,128] -> (score [1], anomaly_map [1,1,128,128])."""
    import torch

    from packager.example_model.train import build_model

    torch.manual_seed(seed)
    autoencoder_cls, anomaly_cls = build_model()
    return anomaly_cls(autoencoder_cls().eval()).eval()
