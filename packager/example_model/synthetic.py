"""Procedural textured surfaces with synthetic defects and their ground-truth masks.

Every image comes from its own generator seeded with (seed, index), so a data set
is reproducible image by image and two seeds give independent sets.
"""

from __future__ import annotations

import numpy as np

DEFECT_KINDS = ("scratch", "blob", "stain")

_BASE_COLOR = np.array([0.56, 0.58, 0.62], dtype=np.float32)
_STAIN_COLORS = np.array([[0.55, 0.33, 0.16], [0.35, 0.45, 0.20], [0.25, 0.30, 0.55]], dtype=np.float32)


def render_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A brushed, woven metal surface: float32 HxWx3 in 0..1."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = np.deg2rad(rng.uniform(-4.0, 4.0))
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    period_u, period_v = rng.uniform(9.0, 11.0), rng.uniform(9.0, 11.0)
    weave = np.sin(2 * np.pi * u / period_u + rng.uniform(0, 2 * np.pi)) * np.sin(
        2 * np.pi * v / period_v + rng.uniform(0, 2 * np.pi)
    )
    # Brushing: white noise smoothed along the rows gives horizontal streaks.
    noise = rng.standard_normal((size, size + 15)).astype(np.float32)
    streaks = np.cumsum(noise, axis=1)
    streaks = (streaks[:, 15:] - streaks[:, :-15]) / np.sqrt(15.0)
    direction = rng.uniform(0, 2 * np.pi)
    gradient = ((xx - size / 2) * np.cos(direction) + (yy - size / 2) * np.sin(direction)) / size
    shade = 1.0 + 0.10 * weave + 0.025 * streaks + 0.08 * gradient
    color = _BASE_COLOR * rng.uniform(0.92, 1.08) + rng.uniform(-0.02, 0.02, size=3).astype(np.float32)
    image = shade[..., None] * color[None, None, :]
    image += 0.01 * rng.standard_normal(image.shape).astype(np.float32)
    return image.astype(np.float32)


def _draw_scratch(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = image.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    length = rng.uniform(25.0, 60.0)
    angle = rng.uniform(0, np.pi)
    cx, cy = rng.uniform(0.25 * size, 0.75 * size, size=2)
    dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
    x0, y0, x1, y1 = cx - dx, cy - dy, cx + dx, cy + dy
    # Distance from each pixel to the segment (x0,y0)-(x1,y1).
    t = ((xx - x0) * (x1 - x0) + (yy - y0) * (y1 - y0)) / (length**2)
    t = np.clip(t, 0.0, 1.0)
    dist = np.hypot(xx - (x0 + t * (x1 - x0)), yy - (y0 + t * (y1 - y0)))
    half_width = rng.uniform(0.6, 1.3)
    alpha = np.clip(half_width + 0.5 - dist, 0.0, 1.0)
    delta = rng.uniform(0.18, 0.32) * rng.choice([-1.0, 1.0])
    image += (delta * alpha)[..., None]
    return alpha >= 0.5


def _draw_blob(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = image.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = rng.uniform(0.2 * size, 0.8 * size, size=2)
    a, b = rng.uniform(3.0, 8.0), rng.uniform(2.5, 6.0)
    angle = rng.uniform(0, np.pi)
    u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
    v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    radius = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    alpha = np.clip((1.0 - radius) * min(a, b) + 0.5, 0.0, 1.0)
    shade = rng.uniform(0.15, 0.30) * rng.choice([-1.0, 1.0])
    image[:] = image * (1 - alpha[..., None]) + (image.mean(axis=(0, 1)) + shade) * alpha[..., None]
    return alpha >= 0.5


def _draw_stain(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = image.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = rng.uniform(0.25 * size, 0.75 * size, size=2)
    field = np.zeros((size, size), dtype=np.float32)
    for _ in range(3):
        ox, oy = rng.uniform(-6.0, 6.0, size=2)
        sigma = rng.uniform(4.0, 8.0)
        field = np.maximum(field, np.exp(-((xx - cx - ox) ** 2 + (yy - cy - oy) ** 2) / (2 * sigma**2)))
    alpha = rng.uniform(0.40, 0.60) * field
    tint = _STAIN_COLORS[rng.integers(len(_STAIN_COLORS))]
    image[:] = image * (1 - alpha[..., None]) + tint * alpha[..., None]
    return field >= 0.5


_DRAWERS = {"scratch": _draw_scratch, "blob": _draw_blob, "stain": _draw_stain}


def make_image(seed: int, index: int, size: int, defect: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One uint8 HxWx3 image and its bool HxW defect mask (all False when defect is None)."""
    rng = np.random.default_rng([seed, index])
    image = render_texture(rng, size)
    if defect is None:
        mask = np.zeros((size, size), dtype=bool)
    else:
        mask = _DRAWERS[defect](image, rng)
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8), mask


def make_dataset(n_normal: int, n_defect: int, seed: int, size: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images uint8 NxHxWx3, labels int64 N with 1 = defective, masks bool NxHxW); defects cycle through DEFECT_KINDS."""
    kinds: list[str | None] = [None] * n_normal + [DEFECT_KINDS[i % len(DEFECT_KINDS)] for i in range(n_defect)]
    pairs = [make_image(seed, i, size, kind) for i, kind in enumerate(kinds)]
    images = np.stack([p[0] for p in pairs]) if pairs else np.zeros((0, size, size, 3), np.uint8)
    masks = np.stack([p[1] for p in pairs]) if pairs else np.zeros((0, size, size), bool)
    labels = np.array([0 if k is None else 1 for k in kinds], dtype=np.int64)
    return images, labels, masks
