"""GANomaly (anomalib.models.Ganomaly), a classification-only model: a DCGAN encoder -> decoder -> encoder generator
(64 features, latent 100) whose score is the mean squared distance between the two latent vectors.
Outputs: pred_score and pred_label only."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.models.anomalib_zoo._layers import AnomalibExport, random_images, settle_batch_norms

N_FEATURES = 64
LATENT_VEC_SIZE = 100


def encoder(size: int) -> nn.Sequential:
    layers = [nn.Conv2d(3, N_FEATURES, 4, 2, 4, bias=False), nn.LeakyReLU(0.2)]
    n, dim = N_FEATURES, size // 2
    while dim > 4:
        layers += [nn.Conv2d(n, n * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(n * 2), nn.LeakyReLU(0.2)]
        n, dim = n * 2, dim // 2
    layers.append(nn.Conv2d(n, LATENT_VEC_SIZE, 4, 1, 0, bias=False))
    return nn.Sequential(*layers)


def decoder(size: int) -> nn.Sequential:
    n = N_FEATURES * 2 ** (math.ceil(math.log2(size // 2)) - 2)
    layers = [nn.ConvTranspose2d(LATENT_VEC_SIZE, n, 4, 1, 0, bias=False), nn.BatchNorm2d(n), nn.ReLU()]
    dim = size // 2
    while dim > 4:
        layers += [nn.ConvTranspose2d(n, n // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(n // 2), nn.ReLU()]
        n, dim = n // 2, dim // 2
    layers += [nn.ConvTranspose2d(n, 3, 4, 2, 1, bias=False), nn.Tanh()]
    return nn.Sequential(*layers)


def pad_nextpow2(batch):
    l_dim = 2 ** math.ceil(math.log2(max(*batch.shape[-2:])))
    padding_w = [math.ceil((l_dim - batch.shape[-2]) / 2), math.floor((l_dim - batch.shape[-2]) / 2)]
    padding_h = [math.ceil((l_dim - batch.shape[-1]) / 2), math.floor((l_dim - batch.shape[-1]) / 2)]
    return F.pad(batch, pad=[*padding_h, *padding_w])


class GanomalyModel(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.encoder1, self.decoder, self.encoder2 = encoder(size), decoder(size), encoder(size)
        for m in self.modules():  # GanomalyModel.weights_init
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.constant_(m.bias, 0)

    def forward(self, batch):
        padded = pad_nextpow2(batch)
        latent_i = self.encoder1(padded)
        latent_o = self.encoder2(self.decoder(latent_i))
        return torch.mean(torch.pow(latent_i - latent_o, 2), dim=1).view(-1), None


def build(size: int = 256, seed: int = 0) -> AnomalibExport:
    torch.manual_seed(seed)
    model = GanomalyModel(size)
    wrapper = AnomalibExport(model, size)
    images = random_images(8, size, seed)
    settle_batch_norms(model, wrapper.pre_processor(images[:4]))
    wrapper.calibrate(images[4:])
    return wrapper.eval()
