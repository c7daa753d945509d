"""The anomaly mask: the model's anomaly map, at the input image's size, painted with each class's colour.

Lookout's response lists ``background`` first, then every anomaly class, each with the fraction (0..1) of the
image it covers and its hex colour on the mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .model_runner import bilinear_axis

BACKGROUND = "background"


@dataclass(frozen=True)
class MaskClass:
    name: str
    hex_color: str  # "#RRGGBB"

    @property
    def rgb(self) -> tuple[int, int, int]:
        return tuple(int(self.hex_color[i : i + 2], 16) for i in (1, 3, 5))


@dataclass(frozen=True)
class MaskPalette:
    """Label 0 is the background; label i + 1 is anomaly class i."""

    classes: tuple[MaskClass, ...]  # background first

    @classmethod
    def from_spec(cls, spec: dict) -> MaskPalette:
        anomaly_classes = spec.get("classes") or [{"name": "anomaly", "color": "#FF0000"}]
        return cls(
            (
                MaskClass(BACKGROUND, spec.get("background_color", "#000000")),
                *(MaskClass(str(c["name"]), str(c["color"])) for c in anomaly_classes),
            )
        )

    def lookup_table(self) -> np.ndarray:
        return np.asarray([c.rgb for c in self.classes], np.uint8)


@dataclass(frozen=True)
class AnomalyMask:
    pixels: np.ndarray  # uint8 HxWx3, the input image's size
    area_fractions: tuple[float, ...]  # per palette class, background first; they sum to 1
    palette: MaskPalette


@lru_cache(maxsize=64)
@lru_cache(maxsize=64)
def _interpolation_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) weights of the same interpolation, so that a resize is a matrix product."""
    low, high, weight = bilinear_axis(src, dst)
    matrix = np.zeros((dst, src), np.float64)
    np.add.at(matrix, (np.arange(dst), low), 1 - weight)
    np.add.at(matrix, (np.arange(dst), high), weight)
    matrix = matrix.astype(np.float32)
    matrix.setflags(write=False)
    return matrix


def upsample(scores: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a whole HxW map as two matrix products: the reference the mask's box is checked against."""
    rows = _interpolation_matrix(scores.shape[0], height)
    cols = _interpolation_matrix(scores.shape[1], width)
    return rows @ np.asarray(scores, np.float32) @ cols.T


def _reach(hot: np.ndarray, dst: int) -> tuple[slice, slice] | None:
    """Along one axis: the output span that hot source pixels reach, and the source span that output reads.

    A bilinear output pixel is a weighted mean of its two sources, so it can exceed the threshold only where one
    of them does; everything outside the span is background.
    """
    low, high, _ = bilinear_axis(hot.size, dst)
    reached = np.flatnonzero(hot[low] | hot[high])
    if reached.size == 0:
        return None
    first, last = int(reached[0]), int(reached[-1])
    return slice(first, last + 1), slice(int(low[first]), int(high[last]) + 1)


def _labels_in_box(
    scores: np.ndarray, pixel_threshold: float, per_class: bool, height: int, width: int
) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """The box of the output that can hold anomalous pixels, and the uint8 labels inside it; None if there is none."""
    hot = scores > pixel_threshold
    if per_class:
        hot = hot.any(axis=0)
    rows = _reach(hot.any(axis=1), height)
    cols = _reach(hot.any(axis=0), width)
    if rows is None or cols is None:
        return None
    (out_y, src_y), (out_x, src_x) = rows, cols
    row_weights = _interpolation_matrix(hot.shape[0], height)[out_y, src_y]
    col_weights = _interpolation_matrix(hot.shape[1], width)[out_x, src_x].T

    def upsampled(channel: np.ndarray) -> np.ndarray:
        return row_weights @ channel[src_y, src_x] @ col_weights

    if not per_class:
        return (out_y, out_x), (upsampled(scores) > pixel_threshold).view(np.uint8)
    stacked = np.stack([upsampled(channel) for channel in scores], axis=-1)
    strongest = stacked.argmax(axis=-1)
    peak = np.take_along_axis(stacked, strongest[..., None], axis=-1)[..., 0]
    return (out_y, out_x), np.where(peak > pixel_threshold, strongest + 1, 0).astype(np.uint8)


def _class_scores(anomaly_map: np.ndarray, n_classes: int) -> tuple[np.ndarray, bool]:
    """float32 scores, and whether they hold one channel per class; channels that are not classes: the strongest."""
    scores = np.asarray(anomaly_map, np.float32)
    if scores.ndim == 3 and scores.shape[0] == n_classes and n_classes > 1:
        return scores, True
    if scores.ndim == 3:
        scores = scores.max(axis=0)
    return scores, False


@lru_cache(maxsize=8)
def _background(palette: MaskPalette, height: int, width: int) -> np.ndarray:
    pixels = np.empty((height, width, 3), np.uint8)
    pixels[:] = palette.classes[0].rgb
    pixels.setflags(write=False)
    return pixels


def render(
    anomaly_map: np.ndarray, pixel_threshold: float, palette: MaskPalette, height: int, width: int
) -> AnomalyMask:
    n = len(palette.classes)
    scores, per_class = _class_scores(anomaly_map, n - 1)
    found = _labels_in_box(scores, pixel_threshold, per_class, height, width)
    if found is None:  # nothing above the threshold: nothing to paint
        return AnomalyMask(
            pixels=_background(palette, height, width), area_fractions=(1.0,) + (0.0,) * (n - 1), palette=palette
        )
    box, inside = found
    counts = np.bincount(inside.ravel(), minlength=n)[:n]
    counts[0] += height * width - inside.size  # the background outside the box
    pixels = _background(palette, height, width).copy()
    pixels[box] = np.take(palette.lookup_table(), inside, axis=0)
    return AnomalyMask(
        pixels=pixels, area_fractions=tuple(float(c) / (height * width) for c in counts), palette=palette
    )
