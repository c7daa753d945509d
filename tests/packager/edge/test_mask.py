from __future__ import annotations

import numpy as np
import pytest

from packager.edge.mask import MaskPalette, render, upsample
from packager.edge.model_runner import resize_bilinear

TWO_CLASSES = {
    "classes": [{"name": "scratch", "color": "#ff0000"}, {"name": "dent", "color": "#00FF00"}],
    "background_color": "#000000",
}


def test_palette_lists_background_first():
    palette = MaskPalette.from_spec(TWO_CLASSES)
    assert [(c.name, c.rgb) for c in palette.classes] == [
        ("background", (0, 0, 0)),
        ("scratch", (255, 0, 0)),
        ("dent", (0, 255, 0)),
    ]


@pytest.mark.parametrize("source, size", [((64, 64), (224, 224)), ((32, 48), (100, 70)), ((64, 64), (64, 64))])
def test_upsample_matches_the_runtimes_bilinear_resize(source, size):
    scores = np.random.default_rng(1).random(source, dtype=np.float32)
    np.testing.assert_allclose(upsample(scores, *size), resize_bilinear(scores, *size), atol=1e-5)


def test_single_channel_map_paints_the_first_class_and_reports_areas():
    scores = np.zeros((64, 64), np.float32)
    scores[:, :16] = 1.0  # the left quarter is anomalous
    mask = render(scores, 0.5, MaskPalette.from_spec(TWO_CLASSES), 128, 256)
    assert mask.pixels.shape == (128, 256, 3) and mask.pixels.dtype == np.uint8
    assert mask.area_fractions == pytest.approx((0.75, 0.25, 0.0), abs=0.01)
    assert tuple(mask.pixels[0, 0]) == (255, 0, 0) and tuple(mask.pixels[0, -1]) == (0, 0, 0)


def test_one_channel_per_class_is_split_by_the_strongest():
    scores = np.zeros((2, 8, 8), np.float32)
    scores[0, :4] = 0.9  # top half: scratch
    scores[1, 4:] = 0.8  # bottom half: dent
    scores[1, :2] = 0.95  # ... except the top two rows, where dent is stronger
    mask = render(scores, 0.5, MaskPalette.from_spec(TWO_CLASSES), 64, 64)
    assert tuple(mask.pixels[0, 32]) == (0, 255, 0)
    assert tuple(mask.pixels[24, 32]) == (255, 0, 0)
    assert tuple(mask.pixels[60, 32]) == (0, 255, 0)
    assert sum(mask.area_fractions) == pytest.approx(1.0)


def test_nothing_above_the_threshold_is_all_background():
    palette = MaskPalette.from_spec({**TWO_CLASSES, "background_color": "#0000FF"})
    scores = np.full((16, 16), 0.2, np.float32)
    scores[3, 4] = 0.5  # at the threshold is not above it
    mask = render(scores, 0.5, palette, 64, 80)
    assert mask.area_fractions == (1.0, 0.0, 0.0)
    assert mask.pixels.shape == (64, 80, 3) and np.all(mask.pixels == (0, 0, 255))
    assert not mask.pixels.flags.writeable  # shared between calls, so nobody may paint on it


@pytest.mark.parametrize("seed", range(6))
def test_painting_only_the_hot_box_matches_thresholding_the_whole_upsampled_map(seed):
    rng = np.random.default_rng(seed)
    scores = rng.random((32, 40), dtype=np.float32) * 0.4
    top, left = rng.integers(0, 28), rng.integers(0, 36)
    scores[top : top + rng.integers(1, 5), left : left + rng.integers(1, 5)] = 0.9  # one small defect
    height, width = int(rng.integers(64, 300)), int(rng.integers(64, 300))
    mask = render(scores, 0.5, MaskPalette.from_spec(TWO_CLASSES), height, width)
    whole = upsample(scores, height, width) > 0.5
    assert 0 < whole.sum() < whole.size / 4
    np.testing.assert_array_equal(np.all(mask.pixels == (255, 0, 0), axis=-1), whole)
    assert mask.area_fractions == pytest.approx((1 - whole.mean(), whole.mean(), 0.0))


def test_per_class_box_matches_the_argmax_of_the_whole_upsampled_maps():
    rng = np.random.default_rng(7)
    scores = rng.random((2, 24, 24), dtype=np.float32) * 0.3
    scores[0, 2:6, 3:8] = 0.8
    scores[1, 15:20, 10:22] = 0.7
    scores[1, 4:6, 6:9] = 0.95  # overlaps the first class, and wins there
    mask = render(scores, 0.5, MaskPalette.from_spec(TWO_CLASSES), 96, 120)
    whole = np.stack([upsample(channel, 96, 120) for channel in scores])
    expected = np.where(whole.max(axis=0) > 0.5, whole.argmax(axis=0) + 1, 0)
    lut = MaskPalette.from_spec(TWO_CLASSES).lookup_table()
    np.testing.assert_array_equal(mask.pixels, lut[expected])
    assert mask.area_fractions == pytest.approx(tuple(np.bincount(expected.ravel(), minlength=3) / expected.size))
