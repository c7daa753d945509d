"""Reverse Distillation (anomalib.models.ReverseDistillation): wide_resnet50_2 encoder (layer1-3), the one-class
bottleneck embedding (OCBE), a de_wide_resnet50_2 decoder with ConvTranspose upsampling, and an anomaly map that
adds the per-level 1 - cosine similarity maps (anomalib's default ADD mode) and blurs them (sigma 4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.models.anomalib_zoo._layers import (
    AnomalibExport,
    Bottleneck,
    GaussianBlur2d,
    ResNetFeatures,
    random_images,
    settle_batch_norms,
)


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class OCBE(nn.Module):
    """The bottleneck for Bottleneck backbones: three Bottleneck blocks over the fused 3 x 1024 channels."""

    def __init__(self):
        super().__init__()
        exp = 4
        self.conv1 = conv3x3(64 * exp, 128 * exp, 2)
        self.bn1 = nn.BatchNorm2d(128 * exp)
        self.conv2 = conv3x3(128 * exp, 256 * exp, 2)
        self.bn2 = nn.BatchNorm2d(256 * exp)
        self.conv3 = conv3x3(128 * exp, 256 * exp, 2)
        self.bn3 = nn.BatchNorm2d(256 * exp)
        first = Bottleneck(256 * exp * 3, 512, stride=2)
        self.bn_layer = nn.Sequential(first, Bottleneck(512 * exp, 512), Bottleneck(512 * exp, 512))

    def forward(self, features):
        f0 = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(features[0]))))))
        f1 = F.relu(self.bn3(self.conv3(features[1])))
        return self.bn_layer(torch.cat([f0, f1, features[2]], 1)).contiguous()


class DecoderBottleneck(nn.Module):
    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, upsample: nn.Module | None = None, base_width: int = 128
    ):
        super().__init__()
        width = int(planes * (base_width / 64.0))
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.ConvTranspose2d(width, width, 2, stride, bias=False) if stride == 2 else conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.upsample = upsample

    def forward(self, x):
        identity = x if self.upsample is None else self.upsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + identity)


class ResNetDecoder(nn.Module):
    """de_wide_resnet50_2: DecoderBottleneck layers of 3, 4, 6 blocks (256, 128, 64 planes), width per group 128."""

    def __init__(self):
        super().__init__()
        self.inplanes = 2048
        self.layer1 = self._make_layer(256, 3)
        self.layer2 = self._make_layer(128, 4)
        self.layer3 = self._make_layer(64, 6)

    def _make_layer(self, planes: int, blocks: int) -> nn.Sequential:
        upsample = nn.Sequential(
            nn.ConvTranspose2d(self.inplanes, planes * 4, 2, 2, bias=False), nn.BatchNorm2d(planes * 4)
        )
        layers = [DecoderBottleneck(self.inplanes, planes, 2, upsample)]
        self.inplanes = planes * 4
        layers += [DecoderBottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        a = self.layer1(x)
        b = self.layer2(a)
        c = self.layer3(b)
        return [c, b, a]


class ReverseDistillationModel(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.image_size = (size, size)
        self.encoder = ResNetFeatures("wide_resnet50_2", ("layer1", "layer2", "layer3"))
        self.bottleneck = OCBE()
        self.decoder = ResNetDecoder()
        self.blur = GaussianBlur2d(sigma=4)

    def forward(self, images):
        encoder_features = list(self.encoder(images).values())
        decoder_features = self.decoder(self.bottleneck(encoder_features))
        anomaly_map = torch.zeros([encoder_features[0].shape[0], 1, *self.image_size])
        for student, teacher in zip(encoder_features, decoder_features):
            distance_map = torch.unsqueeze(1 - F.cosine_similarity(student, teacher), dim=1)
            anomaly_map = anomaly_map + F.interpolate(
                distance_map, size=self.image_size, mode="bilinear", align_corners=True
            )
        anomaly_map = self.blur(anomaly_map)
        return torch.amax(anomaly_map, dim=(-2, -1)), anomaly_map


def build(size: int = 256, seed: int = 0) -> AnomalibExport:
    torch.manual_seed(seed)
    model = ReverseDistillationModel(size)
    for m in list(model.bottleneck.modules()) + list(model.decoder.modules()):
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    wrapper = AnomalibExport(model, size)
    images = random_images(6, size, seed)
    x = wrapper.pre_processor(images[:2])
    settle_batch_norms(model.encoder, x)
    settle_batch_norms(model, x)
    wrapper.calibrate(images[2:])
    return wrapper.eval()
