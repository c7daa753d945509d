"""The bundled example model is really trained: it separates unseen normal and defective surfaces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from compilers.frontends.spec import OutputRole, load_spec
from packager.example_model import train
from packager.example_model.synthetic import DEFECT_KINDS, make_dataset

MODEL_DIR = Path(train.__file__).resolve().parent
MODEL_PATH = MODEL_DIR / "model.onnx"
SPEC_PATH = MODEL_DIR / "model_spec.json"
IMAGES_DIR = MODEL_DIR / "images"
UNSEEN_SEED = 777  # none of train.py's seeds
USED_SEEDS = {train.TRAIN_SEED, train.VAL_SEED, train.HELDOUT_SEED, train.EXAMPLE_SEED}


@pytest.fixture(scope="module")
def spec():
    return load_spec(SPEC_PATH)


@pytest.fixture(scope="module")
def session():
    return ort.InferenceSession(str(MODEL_PATH), providers=["CPUExecutionProvider"])


def run_model(session, spec, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Preprocess as the spec says and return (scores [N], maps [N,H,W])."""
    score_name = spec.output(OutputRole.SCORE).name
    map_name = spec.output(OutputRole.ANOMALY_MAP).name
    scale, mean, std = spec.preprocessing.scale, np.array(spec.preprocessing.mean), np.array(spec.preprocessing.std)
    scores, maps = [], []
    for image in images:
        x = ((image.astype(np.float32) * scale - mean) / std).astype(np.float32).transpose(2, 0, 1)[None]
        score, anomaly_map = session.run([score_name, map_name], {spec.input.name: x})
        scores.append(float(np.asarray(score).reshape(-1)[0]))
        maps.append(anomaly_map[0, 0])
    return np.array(scores), np.stack(maps)


def rank_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney U from average ranks, so ties count half."""
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    n_pos, n_neg = int((labels == 1).sum()), int((labels == 0).sum())
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def test_rank_auroc_matches_hand_counts():
    labels = np.array([0, 0, 1, 1])
    assert rank_auroc(np.array([0.1, 0.2, 0.3, 0.4]), labels) == 1.0
    assert rank_auroc(np.array([0.4, 0.3, 0.2, 0.1]), labels) == 0.0
    # Of the four (pos, neg) pairs two are ordered, one tied, one inverted: (2 + 0.5) / 4.
    assert rank_auroc(np.array([0.1, 0.3, 0.3, 0.2]), labels) == pytest.approx(0.625)


def test_spec_loads_and_names_outputs_in_the_graph(spec):
    graph = onnx.load(str(MODEL_PATH)).graph
    inputs = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    outputs = {o.name for o in graph.output}
    assert inputs == {spec.input.name: list(spec.input.shape)}
    assert {o.name for o in spec.outputs} <= outputs
    assert spec.output(OutputRole.SCORE) is not None and spec.output(OutputRole.ANOMALY_MAP) is not None
    assert spec.normalization.min < spec.image_threshold < spec.normalization.max
    assert spec.source == "packager.example_model.train"


def test_committed_files_stay_small():
    total = MODEL_PATH.stat().st_size + sum(p.stat().st_size for p in IMAGES_DIR.glob("*.png"))
    assert MODEL_PATH.stat().st_size < 1_000_000
    assert total < 2_000_000


def test_unseen_seed_is_not_a_training_seed():
    assert UNSEEN_SEED not in USED_SEEDS


def test_model_separates_unseen_normal_and_defective_images(session, spec):
    images, labels, masks = make_dataset(40, 42, UNSEEN_SEED, spec.input.shape[2])
    scores, maps = run_model(session, spec, images)
    assert rank_auroc(scores, labels) >= 0.90
    for k, kind in enumerate(DEFECT_KINDS):
        kind_scores = np.concatenate([scores[labels == 0], scores[40 + k :: len(DEFECT_KINDS)]])
        kind_labels = np.r_[np.zeros(40, int), np.ones(14, int)]
        assert rank_auroc(kind_scores, kind_labels) >= 0.85, kind
    # The map points at the defect: its hottest pixel lies inside the (slightly grown) ground-truth mask mostly.
    hits = []
    for anomaly_map, mask in zip(maps[labels == 1], masks[labels == 1]):
        y, x = np.unravel_index(np.argmax(anomaly_map), anomaly_map.shape)
        hits.append(mask[max(y - 4, 0) : y + 5, max(x - 4, 0) : x + 5].any())
    assert np.mean(hits) >= 0.8


def test_example_images_are_classified_by_the_spec_threshold(session, spec):
    names = sorted(p.stem for p in IMAGES_DIR.glob("*.png") if not p.stem.startswith("mask_"))
    assert {"normal_01", "normal_02"} <= set(names)
    assert {f"defect_{kind}_01" for kind in DEFECT_KINDS} <= set(names)
    images = np.stack([np.asarray(Image.open(IMAGES_DIR / f"{name}.png").convert("RGB")) for name in names])
    assert images.shape[1:3] == tuple(spec.preprocessing.resize)
    scores, maps = run_model(session, spec, images)
    for name, score, anomaly_map in zip(names, scores, maps):
        if name.startswith("normal_"):
            assert score <= spec.image_threshold, name
        else:
            assert score > spec.image_threshold, name
            mask = np.asarray(Image.open(IMAGES_DIR / f"mask_{name}.png")) > 0
            assert (anomaly_map > spec.pixel_threshold)[mask].any(), name
