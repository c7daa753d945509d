"""DFM (anomalib.models.Dfm): resnet50 layer3 features, 4x4 average pooling, PCA keeping 97% of the variance,
feature-reconstruction error ("fre") as the score and, reshaped to the pooled grid, as the anomaly map.

Its graph computes shapes at run time: the reconstruction error is reshaped to the features' own shape."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.models.anomalib_zoo._layers import AnomalibExport, ResNetFeatures, random_images, settle_batch_norms

POOLING_KERNEL_SIZE = 4
N_COMPONENTS = 0.97


class DFMModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.feature_extractor = ResNetFeatures("resnet50", ("layer3",))
        self.register_buffer("pca_mean", torch.empty(0))
        self.register_buffer("singular_vectors", torch.empty(0))

    def get_features(self, batch):
        features = self.feature_extractor(batch)["layer3"]
        batch_size = len(features)
        features = F.avg_pool2d(input=features, kernel_size=POOLING_KERNEL_SIZE)
        feature_shapes = features.shape
        return features.view(batch_size, -1), feature_shapes

    def fit_pca(self, features: torch.Tensor) -> None:
        mean = features.mean(dim=0)
        _, sig, v_h = torch.linalg.svd(features - mean, full_matrices=False)
        variance_ratios = torch.cumsum(sig * sig, dim=0) / torch.sum(sig * sig)
        n_components = int(torch.nonzero(variance_ratios >= N_COMPONENTS)[0]) + 1
        self.pca_mean = mean
        self.singular_vectors = v_h.transpose(-2, -1)[:, :n_components].contiguous()

    def forward(self, batch):
        features, feature_shapes = self.get_features(batch)
        projected = torch.matmul(features - self.pca_mean, self.singular_vectors)
        reconstructed = torch.matmul(projected, self.singular_vectors.transpose(-2, -1))
        fre = torch.square(features - reconstructed).reshape(feature_shapes)
        score_map = torch.unsqueeze(torch.sum(fre, dim=1), 1)
        score = torch.sum(torch.square(features - reconstructed), dim=1)
        anomaly_map = F.interpolate(score_map, size=batch.shape[-2:], mode="bilinear", align_corners=False)
        return score, anomaly_map


def build(size: int = 256, seed: int = 0) -> AnomalibExport:
    torch.manual_seed(seed)
    model = DFMModel()
    wrapper = AnomalibExport(model, size)
    images = random_images(28, size, seed)
    settle_batch_norms(model.feature_extractor, wrapper.pre_processor(images[:2]))
    with torch.no_grad():
        features, _ = model.get_features(wrapper.pre_processor(images[:24]))
    model.fit_pca(features)
    wrapper.calibrate(images[24:])
    return wrapper.eval()
