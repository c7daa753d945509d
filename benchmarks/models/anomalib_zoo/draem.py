"""DRAEM (anomalib.models.Draem): a reconstructive autoencoder without skip connections (base width 128) and a
discriminative U-Net (base width 64) over the image and its reconstruction: 51 3x3 convolutions from full resolution
down, each with BatchNorm and ReLU, max pooling down and bilinear (align_corners) upsampling up. The anomaly map is
the softmax's anomalous channel, [batch, h, w] as anomalib returns it, and the score its maximum. The input is
resized only: DRAEM trains without ImageNet normalisation."""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.models.anomalib_zoo._layers import AnomalibExport, random_images, settle_batch_norms

RECONSTRUCTIVE_WIDTH = 128
DISCRIMINATIVE_WIDTH = 64


def conv_bn_relu(ci: int, co: int) -> list[nn.Module]:
    return [nn.Conv2d(ci, co, kernel_size=3, padding=1), nn.BatchNorm2d(co), nn.ReLU(inplace=True)]


def block(ci: int, co: int, mid: int | None = None) -> nn.Sequential:
    """Two 3x3 convolutions, each with BatchNorm and ReLU: ci -> mid -> co."""
    mid = co if mid is None else mid
    return nn.Sequential(*conv_bn_relu(ci, mid), *conv_bn_relu(mid, co))


def up(ci: int, co: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True), *conv_bn_relu(ci, co))


class Encoder(nn.Module):
    """Five (reconstructive) or six (discriminative) blocks with 2x2 max pooling between; widths w, 2w, 4w, 8w, 8w..."""

    def __init__(self, ci: int, width: int, blocks: int):
        super().__init__()
        widths = [width, 2 * width, 4 * width, 8 * width] + [8 * width] * (blocks - 4)
        self.blocks = nn.ModuleList(block(a, b) for a, b in zip([ci] + widths[:-1], widths, strict=True))
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        acts = []
        for i, b in enumerate(self.blocks):
            x = b(x if i == 0 else self.pool(x))
            acts.append(x)
        return acts


class ReconstructiveDecoder(nn.Module):
    def __init__(self, width: int, co: int = 3):
        super().__init__()
        w = width
        self.stages = nn.Sequential(
            up(8 * w, 8 * w),
            block(8 * w, 4 * w, mid=8 * w),
            up(4 * w, 4 * w),
            block(4 * w, 2 * w, mid=4 * w),
            up(2 * w, 2 * w),
            block(2 * w, w, mid=2 * w),
            up(w, w),
            block(w, w),
            nn.Conv2d(w, co, kernel_size=3, padding=1),
        )

    def forward(self, x):
        return self.stages(x)


class DiscriminativeDecoder(nn.Module):
    """Upsample, then concatenate the encoder's activation of that size (skip connection), then a block."""

    def __init__(self, width: int, co: int = 2):
        super().__init__()
        w = width
        self.ups = nn.ModuleList([up(8 * w, 8 * w), up(8 * w, 4 * w), up(4 * w, 2 * w), up(2 * w, w), up(w, w)])
        self.blocks = nn.ModuleList(
            [block(16 * w, 8 * w), block(12 * w, 4 * w), block(6 * w, 2 * w), block(3 * w, w), block(2 * w, w)]
        )
        self.fin_out = nn.Conv2d(w, co, kernel_size=3, padding=1)

    def forward(self, acts):
        x = acts[-1]
        for u, b, skip in zip(self.ups, self.blocks, reversed(acts[:-1]), strict=True):
            x = b(torch.cat((u(x), skip), dim=1))
        return self.fin_out(x)


class DraemModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.reconstructive_encoder = Encoder(3, RECONSTRUCTIVE_WIDTH, blocks=5)
        self.reconstructive_decoder = ReconstructiveDecoder(RECONSTRUCTIVE_WIDTH)
        self.discriminative_encoder = Encoder(6, DISCRIMINATIVE_WIDTH, blocks=6)
        self.discriminative_decoder = DiscriminativeDecoder(DISCRIMINATIVE_WIDTH)

    def forward(self, batch):
        reconstruction = self.reconstructive_decoder(self.reconstructive_encoder(batch)[-1])
        prediction = self.discriminative_decoder(self.discriminative_encoder(torch.cat([batch, reconstruction], dim=1)))
        anomaly_map = torch.softmax(prediction, dim=1)[:, 1, ...]  # [batch, h, w], as anomalib returns it
        return torch.amax(anomaly_map, dim=(-2, -1)), anomaly_map


def build(size: int = 256, seed: int = 0) -> AnomalibExport:
    torch.manual_seed(seed)
    model = DraemModel()
    wrapper = AnomalibExport(model, size, normalize_input=False)
    images = random_images(4, size, seed)
    settle_batch_norms(model, wrapper.pre_processor(images[:2]))
    wrapper.calibrate(images[2:])
    return wrapper.eval()
