"""EfficientAD (anomalib.models.EfficientAd), small and medium: a patch description network teacher (384 channels),
a student with twice the channels, an autoencoder, maps padded by 4 and upsampled, quantile normalisation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.models.anomalib_zoo._layers import IMAGENET_MEAN, IMAGENET_STD, AnomalibExport, random_images

TEACHER_OUT_CHANNELS = 384


def imagenet_norm_batch(x):
    mean = torch.tensor(IMAGENET_MEAN)[None, :, None, None]
    std = torch.tensor(IMAGENET_STD)[None, :, None, None]
    return (x - mean) / std


class SmallPDN(nn.Module):
    def __init__(self, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 128, kernel_size=4, stride=1, padding=0)
        self.conv2 = nn.Conv2d(128, 256, kernel_size=4, stride=1, padding=0)
        self.conv3 = nn.Conv2d(256, 256, kernel_size=3, stride=1, padding=0)
        self.conv4 = nn.Conv2d(256, out_channels, kernel_size=4, stride=1, padding=0)
        self.avgpool1 = nn.AvgPool2d(kernel_size=2, stride=2, padding=0)
        self.avgpool2 = nn.AvgPool2d(kernel_size=2, stride=2, padding=0)

    def forward(self, x):
        x = imagenet_norm_batch(x)
        x = self.avgpool1(F.relu(self.conv1(x)))
        x = self.avgpool2(F.relu(self.conv2(x)))
        return self.conv4(F.relu(self.conv3(x)))


class MediumPDN(nn.Module):
    def __init__(self, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 256, kernel_size=4, stride=1, padding=0)
        self.conv2 = nn.Conv2d(256, 512, kernel_size=4, stride=1, padding=0)
        self.conv3 = nn.Conv2d(512, 512, kernel_size=1, stride=1, padding=0)
        self.conv4 = nn.Conv2d(512, 512, kernel_size=3, stride=1, padding=0)
        self.conv5 = nn.Conv2d(512, out_channels, kernel_size=4, stride=1, padding=0)
        self.conv6 = nn.Conv2d(out_channels, out_channels, kernel_size=1, stride=1, padding=0)
        self.avgpool1 = nn.AvgPool2d(kernel_size=2, stride=2, padding=0)
        self.avgpool2 = nn.AvgPool2d(kernel_size=2, stride=2, padding=0)

    def forward(self, x):
        x = imagenet_norm_batch(x)
        x = self.avgpool1(F.relu(self.conv1(x)))
        x = self.avgpool2(F.relu(self.conv2(x)))
        x = F.relu(self.conv3(x))
        x = F.relu(self.conv4(x))
        x = F.relu(self.conv5(x))
        return self.conv6(x)


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.enconv1 = nn.Conv2d(3, 32, kernel_size=4, stride=2, padding=1)
        self.enconv2 = nn.Conv2d(32, 32, kernel_size=4, stride=2, padding=1)
        self.enconv3 = nn.Conv2d(32, 64, kernel_size=4, stride=2, padding=1)
        self.enconv4 = nn.Conv2d(64, 64, kernel_size=4, stride=2, padding=1)
        self.enconv5 = nn.Conv2d(64, 64, kernel_size=4, stride=2, padding=1)
        self.enconv6 = nn.Conv2d(64, 64, kernel_size=8, stride=1, padding=0)

    def forward(self, x):
        for conv in (self.enconv1, self.enconv2, self.enconv3, self.enconv4, self.enconv5):
            x = F.relu(conv(x))
        return self.enconv6(x)


class Decoder(nn.Module):
    def __init__(self, out_channels: int):
        super().__init__()
        for i in range(1, 7):
            setattr(self, f"deconv{i}", nn.Conv2d(64, 64, kernel_size=4, stride=1, padding=2))
        self.deconv7 = nn.Conv2d(64, 64, kernel_size=3, stride=1, padding=1)
        self.deconv8 = nn.Conv2d(64, out_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x, image_size):
        h, w = image_size
        sizes = [
            (h // 64 - 1, w // 64 - 1),
            (h // 32, w // 32),
            (h // 16 - 1, w // 16 - 1),
            (h // 8, w // 8),
            (h // 4 - 1, w // 4 - 1),
            (h // 2 - 1, w // 2 - 1),
        ]
        for i, s in enumerate(sizes, start=1):
            x = F.interpolate(x, size=s, mode="bilinear")
            x = F.relu(getattr(self, f"deconv{i}")(x))  # dropout is the identity in eval
        x = F.interpolate(x, size=(math.ceil(h / 4) - 8, math.ceil(w / 4) - 8), mode="bilinear")
        x = F.relu(self.deconv7(x))
        return self.deconv8(x)


class AutoEncoder(nn.Module):
    def __init__(self, out_channels: int):
        super().__init__()
        self.encoder = Encoder()
        self.decoder = Decoder(out_channels)

    def forward(self, x, image_size):
        return self.decoder(self.encoder(imagenet_norm_batch(x)), image_size)


class EfficientAdModel(nn.Module):
    def __init__(self, model_size: str):
        super().__init__()
        pdn = MediumPDN if model_size == "medium" else SmallPDN
        self.teacher = pdn(TEACHER_OUT_CHANNELS)
        self.student = pdn(TEACHER_OUT_CHANNELS * 2)
        self.ae = AutoEncoder(TEACHER_OUT_CHANNELS)
        self.register_buffer("mean", torch.zeros(1, TEACHER_OUT_CHANNELS, 1, 1))
        self.register_buffer("std", torch.ones(1, TEACHER_OUT_CHANNELS, 1, 1))
        self.register_buffer("quantiles", torch.tensor([0.0, 1.0, 0.0, 1.0]))  # qa_st, qb_st, qa_ae, qb_ae
        self.normalize_maps = False

    def maps(self, batch):
        teacher_output = (self.teacher(batch) - self.mean) / self.std
        student_output = self.student(batch)
        distance_st = torch.pow(teacher_output - student_output[:, :TEACHER_OUT_CHANNELS, :, :], 2)
        image_size = batch.shape[-2:]
        ae_output = self.ae(batch, image_size)
        map_st = torch.mean(distance_st, dim=1, keepdim=True)
        map_stae = torch.mean((ae_output - student_output[:, TEACHER_OUT_CHANNELS:]) ** 2, dim=1, keepdim=True)
        map_st = F.interpolate(F.pad(map_st, (4, 4, 4, 4)), size=image_size, mode="bilinear")
        map_stae = F.interpolate(F.pad(map_stae, (4, 4, 4, 4)), size=image_size, mode="bilinear")
        if self.normalize_maps:
            q = self.quantiles
            map_st = 0.1 * (map_st - q[0]) / (q[1] - q[0])
            map_stae = 0.1 * (map_stae - q[2]) / (q[3] - q[2])
        return map_st, map_stae

    def forward(self, batch):
        map_st, map_stae = self.maps(batch)
        anomaly_map = 0.5 * map_st + 0.5 * map_stae
        return torch.amax(anomaly_map, dim=(-2, -1)), anomaly_map


def _build(model_size: str, size: int, seed: int) -> AnomalibExport:
    torch.manual_seed(seed)
    model = EfficientAdModel(model_size).eval()
    wrapper = AnomalibExport(model, size, normalize_input=False)  # EfficientAD normalises inside its networks
    images = random_images(6, size, seed)
    with torch.no_grad():
        for net in (model.student, model.ae):  # a student and autoencoder that nearly reproduce the teacher
            for p in net.parameters():
                p.mul_(0.5)
        teacher = model.teacher(images[:2])
        model.mean = teacher.mean(dim=(0, 2, 3), keepdim=True)
        model.std = teacher.std(dim=(0, 2, 3), keepdim=True)
        map_st, map_stae = model.maps(images[:2])
        model.quantiles = torch.stack(
            [
                torch.quantile(map_st.flatten()[::7], 0.9),
                torch.quantile(map_st.flatten()[::7], 0.995),
                torch.quantile(map_stae.flatten()[::7], 0.9),
                torch.quantile(map_stae.flatten()[::7], 0.995),
            ]
        )
        model.normalize_maps = True
    wrapper.calibrate(images[2:])
    return wrapper.eval()


def build_efficient_ad_s(size: int = 256, seed: int = 0) -> AnomalibExport:
    return _build("small", size, seed)


def build_efficient_ad_m(size: int = 256, seed: int = 0) -> AnomalibExport:
    return _build("medium", size, seed)
