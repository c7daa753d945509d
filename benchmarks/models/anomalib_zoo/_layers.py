"""Building blocks shared by the zoo: timm-style ResNet feature extractors, anomalib's Gaussian blur, and
anomalib 2.x's exported wrapper (pre-processor -> model -> post-processor) with its in-graph normalisation.

Everything is plain torch, seeded, with no downloads. Backbones stand in for timm's ``features_only`` ResNets:
the same layers, channels, strides and ops, with random weights and batch-norm statistics taken from random images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, base_width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, base_width: int = 64):
        super().__init__()
        width = int(planes * base_width / 64)
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        return F.relu(self.bn3(self.conv3(y)) + identity)


# name -> (block, blocks per layer, base width)
RESNETS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2), 64),
    "resnet50": (Bottleneck, (3, 4, 6, 3), 64),
    "wide_resnet50_2": (Bottleneck, (3, 4, 6, 3), 128),
}


class ResNetFeatures(nn.Module):
    """timm ``create_model(name, features_only=True)`` for a ResNet: a dict of the requested layers' outputs."""

    def __init__(self, name: str, layers: tuple[str, ...]):
        super().__init__()
        block, counts, base_width = RESNETS[name]
        self.layers = tuple(layers)
        depth = max(int(layer[-1]) for layer in layers)
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = 64
        self.out_dims = []
        for i, (planes, count) in enumerate(zip((64, 128, 256, 512), counts)):
            if i >= depth:
                break
            blocks = []
            for j in range(count):
                blocks.append(block(inplanes, planes, 2 if (j == 0 and i > 0) else 1, base_width))
                inplanes = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            if f"layer{i + 1}" in self.layers:
                self.out_dims.append(inplanes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x) -> dict:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        out = {}
        for i in range(1, 5):
            layer = getattr(self, f"layer{i}", None)
            if layer is None:
                break
            x = layer(x)
            if f"layer{i}" in self.layers:
                out[f"layer{i}"] = x
        return out


def settle_batch_norms(module: nn.Module, example: torch.Tensor) -> None:
    """Give every BatchNorm the statistics of a forward pass over ``example``, as training leaves trained ones."""
    norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over this one pass
        m.train()
    with torch.no_grad():
        module(example)
    for m in norms:
        m.eval()
        m.weight.data.uniform_(0.8, 1.2)
        m.bias.data.uniform_(-0.05, 0.05)


def random_images(n: int, size: int, seed: int) -> torch.Tensor:
    """Seeded RGB images in [0, 1]: even ones uniform noise (what the build check feeds), odd ones smooth blobs plus noise."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, max(size // 32, 2), max(size // 32, 2), generator=g)
    smooth = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    noise = torch.rand(n, 3, size, size, generator=g)
    images = (0.7 * smooth + 0.3 * noise).clamp(0, 1)
    images[0::2] = noise[0::2]
    return images


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """anomalib's GaussianBlur2d kernel: size 2*int(4*sigma+0.5)+1, normalised, shape [1, 1, k, k]."""
    k = 2 * int(4.0 * sigma + 0.5) + 1
    x = torch.arange(k, dtype=torch.float32) - k // 2
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    g = g / g.sum()
    kernel = torch.outer(g, g)
    return (kernel / kernel.abs().sum()).view(1, 1, k, k)


class GaussianBlur2d(nn.Module):
    """anomalib.models.components.GaussianBlur2d: reflect padding, 'same' output, one channel."""

    def __init__(self, sigma: float = 4.0):
        super().__init__()
        self.register_buffer("kernel", gaussian_kernel(sigma))
        k = self.kernel.shape[-1]
        self.padding = (k // 2, k // 2, k // 2, k // 2)

    def forward(self, x):
        batch, channel, height, width = x.size()
        out = F.conv2d(F.pad(x, self.padding, mode="reflect"), self.kernel, stride=1, padding=0)
        return out.view(batch, channel, height, width)


class PreProcessor(nn.Module):
    """anomalib 2.x's exported PreProcessor: Resize (antialias off for export), then optionally ImageNet Normalize."""

    def __init__(self, size: int, normalize: bool = True):
        super().__init__()
        self.size = (size, size)
        self.normalize = normalize
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x):
        x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=False)
        return (x - self.mean) / self.std if self.normalize else x


class PostProcessor(nn.Module):
    """anomalib 2.x's PostProcessor as exported: min-max normalisation around the threshold, thresholds at 0.5.

    ``pred_score = clamp((raw - threshold) / (max - min) + 0.5, 0, 1)``; ``pred_label = pred_score > 0.5``; the same
    for ``anomaly_map`` / ``pred_mask`` with the pixel statistics.
    """

    def __init__(self, image_stats: tuple[float, float, float], pixel_stats: tuple[float, float, float] | None):
        super().__init__()
        self.register_buffer("image_stats", torch.tensor(image_stats))  # threshold, min, max
        self.register_buffer("pixel_stats", torch.tensor(pixel_stats if pixel_stats else image_stats))
        self.has_pixel = pixel_stats is not None

    @staticmethod
    def _normalize(preds, stats):
        return (((preds - stats[0]) / (stats[2] - stats[1])) + 0.5).clamp(min=0, max=1)

    def forward(self, pred_score, anomaly_map):
        if pred_score is None:
            pred_score = torch.amax(anomaly_map, dim=(-2, -1))
        pred_score = self._normalize(pred_score, self.image_stats)
        pred_label = pred_score > 0.5
        if anomaly_map is None:
            return pred_score, pred_label, None, None
        anomaly_map = self._normalize(anomaly_map, self.pixel_stats)
        return pred_score, pred_label, anomaly_map, anomaly_map > 0.5


def _widened(values: torch.Tensor) -> tuple[float, float, float]:
    """(threshold, min, max) from calibration values, the range doubled around its middle."""
    lo, hi = float(values.min()), float(values.max())
    spread = max(hi - lo, 1e-3 * max(abs(hi), 1.0))
    mid = (lo + hi) / 2
    return mid, mid - spread, mid + spread


class AnomalibExport(nn.Module):
    """What ``AnomalibModule.forward`` runs in an export: pre_processor -> torch model -> post_processor.

    The torch model returns ``(pred_score, anomaly_map)``, either of which may be None, as anomalib's InferenceBatch.
    """

    def __init__(self, model: nn.Module, size: int, normalize_input: bool = True):
        super().__init__()
        self.pre_processor = PreProcessor(size, normalize_input)
        self.model = model
        self.post_processor: PostProcessor | None = None

    def raw(self, images):
        return self.model(self.pre_processor(images))

    def calibrate(self, images: torch.Tensor) -> None:
        """Stand-in for anomalib's validation epoch: min, max and threshold of the raw scores and maps."""
        with torch.no_grad():
            scores, maps = [], []
            for i in range(images.shape[0]):
                score, amap = self.raw(images[i : i + 1])
                if score is None:
                    score = torch.amax(amap, dim=(-2, -1))
                scores.append(score.flatten())
                if amap is not None:
                    maps.append(amap.flatten())
        # the spread of a few images is narrow: widen it so unseen inputs land inside (0, 1) rather than at its ends
        image_stats = _widened(torch.cat(scores))
        pixel_stats = _widened(torch.cat(maps)[:: max(1, sum(m.numel() for m in maps) // 200000)]) if maps else None
        self.post_processor = PostProcessor(image_stats, pixel_stats)

    def forward(self, images):
        score, amap = self.raw(images)
        return tuple(t for t in self.post_processor(score, amap) if t is not None)

    def output_names(self) -> list[str]:
        names = ["pred_score", "pred_label"]
        if self.post_processor.has_pixel:
            names += ["anomaly_map", "pred_mask"]
        return names
