"""STFPM (anomalib.models.Stfpm): resnet18 teacher and student, layer1-3, the product of per-layer
0.5 * ||normalise(teacher) - normalise(student)||^2 maps upsampled bilinearly to the image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.models.anomalib_zoo._layers import AnomalibExport, ResNetFeatures, random_images, settle_batch_norms


class StfpmModel(nn.Module):
    def __init__(self):
        super().__init__()
        layers = ("layer1", "layer2", "layer3")
        self.teacher_model = ResNetFeatures("resnet18", layers)
        self.student_model = ResNetFeatures("resnet18", layers)

    def forward(self, images):
        output_size = images.shape[-2:]
        teacher_features = self.teacher_model(images)
        student_features = self.student_model(images)
        batch_size = next(iter(teacher_features.values())).shape[0]
        anomaly_map = torch.ones(batch_size, 1, output_size[0], output_size[1])
        for layer in teacher_features:
            t = F.normalize(teacher_features[layer])
            s = F.normalize(student_features[layer])
            layer_map = 0.5 * torch.norm(t - s, p=2, dim=-3, keepdim=True) ** 2
            anomaly_map = anomaly_map * F.interpolate(layer_map, size=output_size, align_corners=False, mode="bilinear")
        return torch.amax(anomaly_map, dim=(-2, -1)), anomaly_map


def build(size: int = 256, seed: int = 0) -> AnomalibExport:
    torch.manual_seed(seed)
    model = StfpmModel()
    wrapper = AnomalibExport(model, size)
    images = random_images(6, size, seed)
    x = wrapper.pre_processor(images[:2])
    settle_batch_norms(model.teacher_model, x)
    model.student_model.load_state_dict(
        model.teacher_model.state_dict()
    )  # a student trained to mimic the teacher, nearly
    with torch.no_grad():
        for p in model.student_model.parameters():
            p.add_(0.05 * p.std() * torch.randn_like(p))
    wrapper.calibrate(images[2:])
    return wrapper.eval()
