"""PatchCore (anomalib.models.Patchcore): wide_resnet50_2 layer2 + layer3, 3x3 average pooling, nearest neighbour
over a 16384 x 1536 memory bank, and the paper's top-k re-weighting of the image score (num_neighbors=9)."""

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

MEMORY_BANK_SIZE = 16384
NUM_NEIGHBORS = 9
CHUNK_SIZE = 1024  # anomalib's DEFAULT_CHUNK_SIZE for the nearest-neighbour search


class PatchcoreModel(nn.Module):
    def __init__(self, memory_bank: torch.Tensor | None = None):
        super().__init__()
        self.layers = ("layer2", "layer3")
        self.feature_extractor = ResNetFeatures("wide_resnet50_2", self.layers)
        self.feature_pooler = nn.AvgPool2d(3, 1, 1)
        self.blur = GaussianBlur2d(sigma=4)
        self.register_buffer("memory_bank", torch.empty(0) if memory_bank is None else memory_bank)

    def embed(self, x):
        features = {k: self.feature_pooler(v) for k, v in self.feature_extractor(x).items()}
        embedding = features[self.layers[0]]
        for layer in self.layers[1:]:
            up = F.interpolate(features[layer], size=embedding.shape[-2:], mode="bilinear")
            embedding = torch.cat((embedding, up), 1)
        return embedding

    @staticmethod
    def euclidean_dist(x, y):
        x_norm = x.pow(2).sum(dim=-1, keepdim=True)
        y_norm = y.pow(2).sum(dim=-1, keepdim=True)
        res = torch.matmul(x, y.transpose(-2, -1)) * -2 + x_norm + y_norm.transpose(-2, -1)
        return res.clamp_min(0).sqrt()

    def nearest_neighbors(self, embedding, n_neighbors: int):
        if n_neighbors == 1:
            return self.euclidean_dist(embedding, self.memory_bank).min(1)
        return self.euclidean_dist(embedding, self.memory_bank).topk(k=n_neighbors, largest=False, dim=1)

    def compute_anomaly_score(self, patch_scores, locations, embedding):
        batch_size, num_patches = patch_scores.shape
        max_patches = torch.argmax(patch_scores, dim=1)
        max_patches_features = embedding.reshape(batch_size, num_patches, -1)[torch.arange(batch_size), max_patches]
        score = patch_scores[torch.arange(batch_size), max_patches]
        nn_index = locations[torch.arange(batch_size), max_patches]
        nn_sample = self.memory_bank[nn_index, :]
        _, support_samples = self.nearest_neighbors(
            nn_sample, n_neighbors=min(NUM_NEIGHBORS, self.memory_bank.shape[0])
        )
        distances = self.euclidean_dist(max_patches_features.unsqueeze(1), self.memory_bank[support_samples])
        weights = (1 - F.softmax(distances.squeeze(1), 1))[..., 0]
        return weights * score

    def forward(self, x):
        output_size = x.shape[-2:]
        embedding = self.embed(x)
        batch_size, _, width, height = embedding.shape
        embedding = embedding.permute(0, 2, 3, 1).reshape(-1, embedding.size(1))
        patch_scores, locations = self.nearest_neighbors(embedding, n_neighbors=1)
        patch_scores = patch_scores.reshape((batch_size, -1))
        locations = locations.reshape((batch_size, -1))
        pred_score = self.compute_anomaly_score(patch_scores, locations, embedding)
        patch_scores = patch_scores.reshape((batch_size, 1, width, height))
        anomaly_map = self.blur(F.interpolate(patch_scores, size=(output_size[0], output_size[1])))
        return pred_score, anomaly_map


def build(size: int = 256, seed: int = 0) -> AnomalibExport:
    torch.manual_seed(seed)
    model = PatchcoreModel()
    wrapper = AnomalibExport(model, size)
    images = random_images(6, size, seed)
    settle_batch_norms(model.feature_extractor, wrapper.pre_processor(images[:2]))
    with (
        torch.no_grad()
    ):  # the memory bank: training patches (a coreset in anomalib), here jittered patches of random images
        patches = model.embed(wrapper.pre_processor(images[:2]))
        patches = patches.permute(0, 2, 3, 1).reshape(-1, patches.shape[1])
        g = torch.Generator().manual_seed(seed + 1)
        picks = torch.randint(0, patches.shape[0], (MEMORY_BANK_SIZE,), generator=g)
        bank = patches[picks] + 0.3 * patches.std() * torch.randn(MEMORY_BANK_SIZE, patches.shape[1], generator=g)
    model.memory_bank = bank.contiguous()
    wrapper.calibrate(images[2:])  # two uniform-noise and two smooth images
    return wrapper.eval()
