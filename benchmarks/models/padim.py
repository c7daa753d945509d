"""A PaDiM-style anomaly model on a ResNet-18 backbone, with random weights.

layer1-3 features are upsampled to layer1's grid, a fixed random subset of
channels is kept, and each patch's Mahalanobis distance to per-patch Gaussian
statistics becomes the anomaly map, bilinearly upsampled to the input size.
"""

from __future__ import annotations

import numpy as np

EMBEDDING_DIM = 100  # PaDiM-R18 keeps 100 of the 448 channels


def _resnet18_layers(torch, nn):
    def block(cin, cout, stride):
        class BasicBlock(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
                self.bn1 = nn.BatchNorm2d(cout)
                self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
                self.bn2 = nn.BatchNorm2d(cout)
                self.down = None
                if stride != 1 or cin != cout:
                    self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

            def forward(self, x):
                identity = x if self.down is None else self.down(x)
                y = torch.relu(self.bn1(self.conv1(x)))
                return torch.relu(self.bn2(self.conv2(y)) + identity)

        return BasicBlock()

    stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
    layer1 = nn.Sequential(block(64, 64, 1), block(64, 64, 1))
    layer2 = nn.Sequential(block(64, 128, 2), block(128, 128, 1))
    layer3 = nn.Sequential(block(128, 256, 2), block(256, 256, 1))
    return stem, layer1, layer2, layer3


def build_padim(size: int, seed: int = 0):
    """A torch module: image [1,3,size,size] -> (score [1], anomaly_map [1,1,size,size])."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    stem, layer1, layer2, layer3 = _resnet18_layers(torch, nn)
    for module in (stem, layer1, layer2, layer3):
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics, as a trained net has
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    grid = size // 4
    patches = grid * grid
    channels = np.sort(rng.choice(64 + 128 + 256, EMBEDDING_DIM, replace=False))
    mean = rng.standard_normal((patches, EMBEDDING_DIM)).astype(np.float32) * 0.1
    a = rng.standard_normal((EMBEDDING_DIM, EMBEDDING_DIM)).astype(np.float32) / np.sqrt(EMBEDDING_DIM)
    base = a @ a.T + 0.5 * np.eye(EMBEDDING_DIM, dtype=np.float32)
    jitter = rng.uniform(0.9, 1.1, (patches, 1, 1)).astype(np.float32)
    inv_cov = (np.linalg.inv(base)[None] * jitter).astype(np.float32)

    class Padim(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.layer1, self.layer2, self.layer3 = stem, layer1, layer2, layer3
            self.register_buffer("channels", torch.from_numpy(channels.astype(np.int64)))
            self.register_buffer("mean", torch.from_numpy(mean))
            self.register_buffer("inv_cov", torch.from_numpy(inv_cov))

        def forward(self, image):
            f1 = self.layer1(self.stem(image))
            f2 = self.layer2(f1)
            f3 = self.layer3(f2)
            hw = f1.shape[-2:]
            emb = torch.cat(
                [f1, F.interpolate(f2, size=hw, mode="nearest"), F.interpolate(f3, size=hw, mode="nearest")], dim=1
            )
            emb = torch.index_select(emb, 1, self.channels)
            delta = emb.reshape(EMBEDDING_DIM, -1).transpose(0, 1) - self.mean  # [P, D]
            dist = torch.matmul(delta.unsqueeze(1), self.inv_cov).squeeze(1)  # [P, D]
            score_map = torch.sqrt((dist * delta).sum(dim=1)).reshape(1, 1, hw[0], hw[1])
            anomaly_map = F.interpolate(score_map, size=image.shape[-2:], mode="bilinear", align_corners=False)
            return torch.amax(anomaly_map, dim=(1, 2, 3)), anomaly_map

    return Padim().eval()
