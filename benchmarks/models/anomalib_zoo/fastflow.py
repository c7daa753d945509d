"""FastFlow (anomalib.models.Fastflow): resnet18 layer1-3, LayerNorm per level, 8 AllInOneBlock flow steps per level
(3x3 and 1x1 subnets alternating, hidden ratio 1.0, clamp 2.0), map = mean over levels of -exp(-0.5 * mean(z^2))."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.models.anomalib_zoo._layers import AnomalibExport, ResNetFeatures, random_images, settle_batch_norms

FLOW_STEPS = 8
HIDDEN_RATIO = 1.0
CLAMP = 2.0


def subnet(kernel_size: int, in_channels: int, out_channels: int) -> nn.Sequential:
    hidden = int(in_channels * HIDDEN_RATIO)
    pad = (kernel_size // 2 - ((1 + kernel_size) % 2), kernel_size // 2)
    padding = (*pad, *pad)
    return nn.Sequential(
        nn.ZeroPad2d(padding),
        nn.Conv2d(in_channels, hidden, kernel_size),
        nn.ReLU(),
        nn.ZeroPad2d(padding),
        nn.Conv2d(hidden, out_channels, kernel_size),
    )


class AllInOneBlock(nn.Module):
    """FrEIA's AllInOneBlock as anomalib vendors it, forward direction only (the log-Jacobian is not exported)."""

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        self.splits = [channels - channels // 2, channels // 2]
        global_scale = 2.0 * torch.log(torch.exp(torch.tensor(0.5 * 10.0)) - 1)
        self.global_scale = nn.Parameter(
            torch.ones(1, channels, 1, 1) * global_scale + 0.2 * torch.randn(1, channels, 1, 1)
        )
        self.global_offset = nn.Parameter(0.05 * torch.randn(1, channels, 1, 1))
        w = torch.zeros(channels, channels)
        w[torch.arange(channels), torch.randperm(channels)] = 1.0
        self.w_perm = nn.Parameter(w.view(channels, channels, 1, 1), requires_grad=False)
        self.subnet = subnet(kernel_size, self.splits[0], 2 * self.splits[1])

    def forward(self, x):
        x1, x2 = torch.split(x, self.splits, dim=1)
        a = self.subnet(x1) * 0.1
        ch = x2.shape[1]
        sub_jac = CLAMP * torch.tanh(a[:, :ch])
        x2 = x2 * torch.exp(sub_jac) + a[:, ch:]
        x_out = torch.cat((x1, x2), 1)
        scale = 0.1 * F.softplus(self.global_scale, beta=0.5)
        return F.conv2d(x_out * scale + self.global_offset, self.w_perm)


class FastflowModel(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.input_size = (size, size)
        self.feature_extractor = ResNetFeatures("resnet18", ("layer1", "layer2", "layer3"))
        channels, scales = self.feature_extractor.out_dims, (4, 8, 16)
        self.norms = nn.ModuleList(
            nn.LayerNorm([c, size // s, size // s], elementwise_affine=True) for c, s in zip(channels, scales)
        )
        self.fast_flow_blocks = nn.ModuleList(
            nn.Sequential(*(AllInOneBlock(c, 1 if i % 2 == 1 else 3) for i in range(FLOW_STEPS))) for c in channels
        )

    def forward(self, x):
        features = [norm(f) for norm, f in zip(self.norms, self.feature_extractor(x).values())]
        flow_maps = []
        for block, feature in zip(self.fast_flow_blocks, features):
            hidden = block(feature)
            prob = torch.exp(-torch.mean(hidden**2, dim=1, keepdim=True) * 0.5)
            flow_maps.append(F.interpolate(-prob, size=self.input_size, mode="bilinear", align_corners=False))
        anomaly_map = torch.mean(torch.stack(flow_maps, dim=-1), dim=-1)
        return torch.amax(anomaly_map, dim=(-2, -1)), anomaly_map


def build(size: int = 256, seed: int = 0) -> AnomalibExport:
    torch.manual_seed(seed)
    model = FastflowModel(size)
    wrapper = AnomalibExport(model, size)
    images = random_images(6, size, seed)
    settle_batch_norms(model.feature_extractor, wrapper.pre_processor(images[:2]))
    with torch.no_grad():
        for norm in model.norms:
            norm.weight.uniform_(0.8, 1.2)
            norm.bias.uniform_(-0.1, 0.1)
    wrapper.calibrate(images[2:])
    return wrapper.eval()
