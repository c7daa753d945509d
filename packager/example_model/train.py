"""Train the bundled example anomaly model and write model.onnx, model_spec.json and images/.

Run with ``python -m packager.example_model.train``. CPU only, fixed seeds, two threads.
A small convolutional autoencoder learns normal surfaces from ``synthetic.py``;
the exported graph turns its smoothed reconstruction error into an anomaly map and a score.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from packager.example_model.synthetic import DEFECT_KINDS, make_dataset, make_image

SIZE = 128
TRAIN_SEED, VAL_SEED, HELDOUT_SEED, EXAMPLE_SEED = 1000, 2000, 3000, 4000
N_TRAIN = 384
EPOCHS = 30
BATCH = 16
SMOOTH_KERNEL, SMOOTH_SIGMA = 9, 2.0
OPSET = 17
HERE = Path(__file__).resolve().parent


def build_model():
    import torch
    from torch import nn

    class Autoencoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(
                nn.Conv2d(3, 16, 4, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(32, 32, 4, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(32, 8, 3, padding=1), nn.ReLU(),
            )
            self.decoder = nn.Sequential(
                nn.ConvTranspose2d(8, 32, 4, stride=2, padding=1), nn.ReLU(),
                nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1), nn.ReLU(),
                nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(16, 3, 3, padding=1), nn.Sigmoid(),
            )

        def forward(self, x):
            return self.decoder(self.encoder(x))

    class AnomalyModel(nn.Module):
        """image [N,3,H,W] in 0..1 -> (score [N], anomaly_map [N,1,H,W])."""

        def __init__(self, autoencoder):
            super().__init__()
            self.autoencoder = autoencoder
            r = torch.arange(SMOOTH_KERNEL, dtype=torch.float32) - (SMOOTH_KERNEL - 1) / 2
            g = torch.exp(-(r ** 2) / (2 * SMOOTH_SIGMA ** 2))
            kernel = torch.outer(g, g)
            self.register_buffer("smooth", (kernel / kernel.sum())[None, None])

        def forward(self, image):
            diff = image - self.autoencoder(image)
            error = (diff * diff).mean(dim=1, keepdim=True)
            anomaly_map = torch.nn.functional.conv2d(error, self.smooth, padding=SMOOTH_KERNEL // 2)
            score = torch.amax(anomaly_map, dim=(1, 2, 3))
            return score, anomaly_map

    return Autoencoder, AnomalyModel


def to_tensor(images: np.ndarray):
    import torch

    return torch.from_numpy(images.astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Rank-based AUROC (Mann-Whitney U), ties counted half."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def train(epochs: int, log=print):
    import torch

    torch.manual_seed(0)
    Autoencoder, AnomalyModel = build_model()
    autoencoder = Autoencoder()
    images, _, _ = make_dataset(N_TRAIN, 0, TRAIN_SEED, SIZE)
    data = to_tensor(images)
    optimizer = torch.optim.Adam(autoencoder.parameters(), lr=2e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    order_rng = np.random.default_rng(TRAIN_SEED)
    for epoch in range(epochs):
        order = torch.from_numpy(order_rng.permutation(len(data)))
        total = 0.0
        for start in range(0, len(data), BATCH):
            batch = data[order[start:start + BATCH]]
            loss = torch.nn.functional.mse_loss(autoencoder(batch), batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss) * len(batch)
        scheduler.step()
        log(f"epoch {epoch + 1:2d}/{epochs}  mse {total / len(data):.6f}")
    return AnomalyModel(autoencoder.eval()).eval()


def predict(model, images: np.ndarray, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    import torch

    scores, maps = [], []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            s, m = model(to_tensor(images[start:start + batch]))
            scores.append(s.numpy())
            maps.append(m.numpy()[:, 0])
    return np.concatenate(scores), np.concatenate(maps)
