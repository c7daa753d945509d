"""DFKDE (anomalib.models.Dfkde), a classification-only model: resnet18 layer4 features, global average pooling,
PCA to 16 components, scaling by the longest training vector, a Gaussian kernel density estimate, and
``1 / (1 + exp(0.05 * (log density - 12)))`` as the score. Outputs: pred_score and pred_label only."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.models.anomalib_zoo._layers import AnomalibExport, ResNetFeatures, random_images, settle_batch_norms

N_PCA_COMPONENTS = 16


class DfkdeModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.feature_extractor = ResNetFeatures("resnet18", ("layer4",))
        for name in ("pca_mean", "singular_vectors", "max_length", "bw_transform", "dataset", "norm"):
            self.register_buffer(name, torch.empty(0))

    def get_features(self, batch):
        outputs = []
        for value in self.feature_extractor(batch).values():
            outputs.append(F.adaptive_avg_pool2d(value, (1, 1)).view(len(value), -1))
        return torch.cat(outputs)

    def fit(self, features: torch.Tensor) -> None:
        """PCA.fit_transform, KDEClassifier.pre_process (SCALE) and GaussianKDE.fit, as anomalib does them."""
        mean = features.mean(dim=0)
        _, _, v_h = torch.linalg.svd(features - mean, full_matrices=False)
        self.pca_mean, self.singular_vectors = mean, v_h.transpose(-2, -1)[:, :N_PCA_COMPONENTS].contiguous()
        stack = torch.matmul(features - mean, self.singular_vectors)
        self.max_length = torch.max(torch.linalg.norm(stack, ord=2, dim=1))
        stack = stack / self.max_length
        num_samples, dimension = stack.shape
        factor = num_samples ** (-1 / (dimension + 4))
        centred = stack.T - stack.T.mean(dim=1, keepdim=True)
        cov = centred @ centred.T / (num_samples - 1) + 1e-3 * torch.eye(dimension)
        bw_transform = torch.linalg.cholesky(torch.linalg.inv(cov) / factor**2)
        self.bw_transform = bw_transform
        self.dataset = torch.matmul(stack, bw_transform)
        self.norm = torch.prod(torch.diag(bw_transform)) * math.pow(2 * math.pi, -dimension / 2)

    def forward(self, batch):
        features = self.get_features(batch)
        features = torch.matmul(features - self.pca_mean, self.singular_vectors) / self.max_length
        features = torch.matmul(features, self.bw_transform)
        # GaussianKDE.forward's loop over the batch, written for every row at once
        distances = ((self.dataset.unsqueeze(0) - features.unsqueeze(1)) ** 2).sum(dim=2)
        estimate = torch.mean(torch.exp(-distances / 2) * self.norm, dim=1) + 1e-300
        scores = 1 / (1 + torch.exp(0.05 * (torch.log(estimate) - 12)))
        return scores, None


def build(size: int = 256, seed: int = 0) -> AnomalibExport:
    torch.manual_seed(seed)
    model = DfkdeModel()
    wrapper = AnomalibExport(model, size)
    images = random_images(44, size, seed)
    settle_batch_norms(model.feature_extractor, wrapper.pre_processor(images[:2]))
    with torch.no_grad():
        model.fit(model.get_features(wrapper.pre_processor(images[:40])))
    wrapper.calibrate(images[40:])
    return wrapper.eval()
