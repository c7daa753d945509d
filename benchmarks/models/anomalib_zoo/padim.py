"""PaDiM (anomalib.models.Padim): resnet18 layer1-3, 100 of the 448 channels chosen at random, a Gaussian per patch
(mean [100, H*W], inverse covariance [H*W, 100, 100]), Mahalanobis distance, bilinear upsampling, Gaussian blur."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.models.anomalib_zoo._layers import (
    AnomalibExport,
    GaussianBlur2d,
    ResNetFeatures,
    random_images,
    settle_batch_norms,
)

N_FEATURES = 100  # anomalib's default for resnet18


class PadimModel(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.layers = ("layer1", "layer2", "layer3")
        self.feature_extractor = ResNetFeatures("resnet18", self.layers)
        self.register_buffer("idx", torch.randperm(sum(self.feature_extractor.out_dims))[:N_FEATURES])
        patches = (size // 4) ** 2
        self.register_buffer("mean", torch.zeros(N_FEATURES, patches))
        self.register_buffer("inv_covariance", torch.zeros(patches, N_FEATURES, N_FEATURES))
        self.blur = GaussianBlur2d(sigma=4)

    def generate_embedding(self, x):
        features = self.feature_extractor(x)
        embeddings = features[self.layers[0]]
        for layer in self.layers[1:]:
            embeddings = torch.cat(
                (embeddings, F.interpolate(features[layer], size=embeddings.shape[-2:], mode="nearest")), 1
            )
        return torch.index_select(embeddings, 1, self.idx)

    def forward(self, x):
        output_size = x.shape[-2:]
        embedding = self.generate_embedding(x)
        batch, channel, height, width = embedding.shape
        embedding = embedding.reshape(batch, channel, height * width)
        delta = (embedding - self.mean).permute(2, 0, 1)
        distances = (torch.matmul(delta, self.inv_covariance) * delta).sum(2).permute(1, 0)
        distances = distances.reshape(batch, 1, height, width).clamp(0).sqrt()
        anomaly_map = self.blur(F.interpolate(distances, size=output_size, mode="bilinear", align_corners=False))
        return torch.amax(anomaly_map, dim=(-2, -1)), anomaly_map


def build(size: int = 256, seed: int = 0) -> AnomalibExport:
    torch.manual_seed(seed)
    model = PadimModel(size)
    wrapper = AnomalibExport(model, size)
    images = random_images(8, size, seed)
    settle_batch_norms(model.feature_extractor, wrapper.pre_processor(images[:2]))
    with torch.no_grad():  # MultiVariateGaussian.fit over "training" embeddings, with a shrunk covariance
        emb = model.generate_embedding(wrapper.pre_processor(images[:4]))
        b, c, h, w = emb.shape
        vectors = emb.reshape(b, c, h * w)
        model.mean = vectors.mean(0)
        centred = (vectors - model.mean).permute(2, 1, 0)  # [P, C, B]
        cov = centred @ centred.transpose(1, 2) / max(b - 1, 1)
        cov = cov + 0.01 * torch.eye(c) + 0.5 * torch.diag(vectors.var(dim=(0, 2)))  # anomalib adds 0.01*I
        model.inv_covariance = torch.linalg.inv(cov).contiguous()
    wrapper.calibrate(images[4:])
    return wrapper.eval()
