"""Train the bundled example anomaly model and write model.onnx, model_spec.json and images/.

Run with ``python -m packager.example_model.train``. CPU only, fixed seeds, two threads.
A small convolutional autoencoder learns normal surfaces from ``synthetic.py``;
the exported graph turns its smoothed reconstruction error into an anomaly map and a score.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from packager.example_model.synthetic import DEFECT_KINDS, make_dataset, make_image

SIZE = 128
TRAIN_SEED, VAL_SEED, HELDOUT_SEED, EXAMPLE_SEED = 1000, 2000, 3000, 4000
N_TRAIN = 384
STEPS, BATCH, CROP, LEARNING_RATE = 600, 32, 64, 3e-3
N_EVAL = 60  # normal and defective images each, in the validation and held-out sets
SMOOTH_KERNEL, SMOOTH_SIGMA = 9, 2.0
OPSET = 17
HERE = Path(__file__).resolve().parent


def build_model():
    import torch
    from torch import nn

    class Autoencoder(nn.Module):
        def __init__(self):
            super().__init__()
            # Three stride-2 stages squeeze 128x128x3 into 16x16x8, too narrow to copy defects through.
            self.encoder = nn.Sequential(
                nn.Conv2d(3, 16, 4, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(16, 32, 4, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(32, 32, 4, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(32, 8, 3, padding=1),
                nn.ReLU(),
            )
            self.decoder = nn.Sequential(
                nn.ConvTranspose2d(8, 32, 4, stride=2, padding=1),
                nn.ReLU(),
                nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1),
                nn.ReLU(),
                nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(16, 3, 3, padding=1),
                nn.Sigmoid(),
            )

        def forward(self, x):
            return self.decoder(self.encoder(x))

    class AnomalyModel(nn.Module):
        """image [N,3,H,W] in 0..1 -> (score [N], anomaly_map [N,1,H,W])."""

        def __init__(self, autoencoder):
            super().__init__()
            self.autoencoder = autoencoder
            r = torch.arange(SMOOTH_KERNEL, dtype=torch.float32) - (SMOOTH_KERNEL - 1) / 2
            g = torch.exp(-(r**2) / (2 * SMOOTH_SIGMA**2))
            kernel = torch.outer(g, g)
            self.register_buffer("smooth", (kernel / kernel.sum())[None, None])

        def forward(self, image):
            diff = image - self.autoencoder(image)
            error = (diff * diff).mean(dim=1, keepdim=True)
            anomaly_map = torch.nn.functional.conv2d(error, self.smooth, padding=SMOOTH_KERNEL // 2)
            score = torch.amax(anomaly_map, dim=(1, 2, 3))
            return score, anomaly_map

    return Autoencoder, AnomalyModel


def to_tensor(images: np.ndarray):
    import torch

    return torch.from_numpy(images.astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Rank-based AUROC (Mann-Whitney U), ties counted half."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def train(log=print):
    """Fit the autoencoder on random crops of normal images; the model is fully convolutional."""
    import torch

    torch.manual_seed(0)
    Autoencoder, AnomalyModel = build_model()
    autoencoder = Autoencoder()
    images, _, _ = make_dataset(N_TRAIN, 0, TRAIN_SEED, SIZE)
    data = to_tensor(images)
    optimizer = torch.optim.Adam(autoencoder.parameters(), lr=LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LEARNING_RATE, total_steps=STEPS, pct_start=0.1)
    rng = np.random.default_rng(TRAIN_SEED)
    for step in range(STEPS):
        batch_index = torch.from_numpy(rng.integers(0, len(data), BATCH))
        # Offsets on the encoder's stride grid (8 px) keep crops aligned with full-image inference.
        top, left = (rng.integers(0, SIZE - CROP + 1, size=2) // 8 * 8).tolist()
        batch = data[batch_index][:, :, top : top + CROP, left : left + CROP]
        loss = torch.nn.functional.mse_loss(autoencoder(batch), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == STEPS - 1:
            log(f"step {step:4d}/{STEPS}  mse {loss.item():.6f}")
    return AnomalyModel(autoencoder.eval()).eval()


def predict(model, images: np.ndarray, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    import torch

    scores, maps = [], []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            s, m = model(to_tensor(images[start : start + batch]))
            scores.append(s.numpy())
            maps.append(m.numpy()[:, 0])
    return np.concatenate(scores), np.concatenate(maps)


def export_onnx(model, path: Path) -> None:
    import torch

    example = torch.zeros(1, 3, SIZE, SIZE)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["image"],
        output_names=["score", "anomaly_map"],
        opset_version=OPSET,
        dynamo=False,
        do_constant_folding=True,
    )


def onnx_predict(path: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores [N] and maps [N,H,W] from the exported graph, one image at a time as the edge runs it."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    scores, maps = [], []
    for image in images:
        x = (image.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        score, anomaly_map = session.run(["score", "anomaly_map"], {"image": x})
        scores.append(float(np.asarray(score).reshape(-1)[0]))
        maps.append(anomaly_map[0, 0])
    return np.array(scores, dtype=np.float32), np.stack(maps)


def image_threshold_from(scores: np.ndarray, labels: np.ndarray) -> float:
    """Midpoint between neighbouring sorted scores that maximises TPR - FPR (Youden's J)."""
    ordered = np.sort(np.unique(scores))
    cuts = (ordered[:-1] + ordered[1:]) / 2
    pos, neg = scores[labels == 1], scores[labels == 0]
    youden = [(pos > c).mean() - (neg > c).mean() for c in cuts]
    return float(cuts[int(np.argmax(youden))])


def pixel_threshold_from(maps: np.ndarray, masks: np.ndarray) -> float:
    """The map value that maximises pixel-level F1 over all validation pixels."""
    values, truth = maps.reshape(-1), masks.reshape(-1)
    order = np.argsort(-values, kind="stable")
    values, truth = values[order], truth[order]
    true_pos = np.cumsum(truth)
    predicted = np.arange(1, len(values) + 1)
    f1 = 2 * true_pos / (predicted + truth.sum())
    best = int(np.argmax(f1))
    return float((values[best] + values[best + 1]) / 2)


def write_spec(path: Path, image_threshold: float, pixel_threshold: float, low: float, high: float):
    from compilers.frontends.spec import spec_from_dict

    doc = {
        "format": "packager-model-spec/1",
        "input": {"name": "image", "shape": [1, 3, SIZE, SIZE], "layout": "NCHW", "dtype": "float32"},
        "preprocessing": {
            "resize": [SIZE, SIZE],
            "scale": 1.0 / 255.0,
            "mean": [0.0, 0.0, 0.0],
            "std": [1.0, 1.0, 1.0],
        },
        "outputs": [{"name": "score", "role": "score"}, {"name": "anomaly_map", "role": "anomaly_map"}],
        "image_threshold": image_threshold,
        "pixel_threshold": pixel_threshold,
        "normalization": {"min": low, "max": high},
        "classes": [{"name": "anomaly", "color": "#FF0000"}],
        "background_color": "#000000",
        "source": "packager.example_model.train",
    }
    spec = spec_from_dict(doc, where=str(path))
    path.write_text(spec.to_json())
    return spec


def write_examples(folder: Path, model_path: Path, image_threshold: float) -> list[str]:
    """Write normal_*.png, defect_<kind>_01.png and their masks; fail if the model gets one wrong."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    wanted = [("normal_01", None), ("normal_02", None)] + [(f"defect_{kind}_01", kind) for kind in DEFECT_KINDS]
    pairs = [make_image(EXAMPLE_SEED, i, SIZE, kind) for i, (_, kind) in enumerate(wanted)]
    scores, _ = onnx_predict(model_path, np.stack([image for image, _ in pairs]))
    lines = []
    for (name, kind), (image, mask), score in zip(wanted, pairs, scores):
        if (score > image_threshold) != (kind is not None):
            raise RuntimeError(f"example {name} is misclassified: score {score:.6f}, threshold {image_threshold:.6f}")
        Image.fromarray(image).save(folder / f"{name}.png", optimize=True)
        if kind is not None:
            Image.fromarray(mask).save(folder / f"mask_{name}.png", optimize=True)
        lines.append(f"{name}: score {score:.6f}")
    return lines


def check_tvm(model_path: Path) -> None:
    import onnx
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    mod = from_onnx(onnx.load(str(model_path)), keep_params_in_input=True)
    tvm.compile(mod, target=tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu"}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=HERE, help="where model.onnx, model_spec.json and images/ go")
    parser.add_argument("--check-tvm", action="store_true", help="also import and compile the ONNX with TVM Relax")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    model_path, spec_path = args.out_dir / "model.onnx", args.out_dir / "model_spec.json"

    started = time.perf_counter()
    model = train()
    print(f"training took {time.perf_counter() - started:.1f} s")

    val_images, val_labels, val_masks = make_dataset(N_EVAL, N_EVAL, VAL_SEED, SIZE)
    torch_scores, torch_maps = predict(model, val_images)
    export_onnx(model, model_path)
    val_scores, val_maps = onnx_predict(model_path, val_images)
    np.testing.assert_allclose(val_scores, torch_scores, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(val_maps, torch_maps, rtol=1e-4, atol=1e-6)
    print(f"onnxruntime matches torch: max |score diff| {np.abs(val_scores - torch_scores).max():.2e}")

    image_threshold = image_threshold_from(val_scores, val_labels)
    pixel_threshold = pixel_threshold_from(val_maps, val_masks)
    write_spec(spec_path, image_threshold, pixel_threshold, float(val_scores.min()), float(val_scores.max()))
    for line in write_examples(args.out_dir / "images", model_path, image_threshold):
        print(line)

    test_images, test_labels, _ = make_dataset(N_EVAL, N_EVAL, HELDOUT_SEED, SIZE)
    test_scores, _ = onnx_predict(model_path, test_images)
    predicted = test_scores > image_threshold
    print(
        json.dumps(
            {
                "validation_auroc": round(auroc(val_scores, val_labels), 4),
                "heldout_auroc": round(auroc(test_scores, test_labels), 4),
                "heldout_accuracy": round(float((predicted == (test_labels == 1)).mean()), 4),
                "image_threshold": image_threshold,
                "pixel_threshold": pixel_threshold,
                "onnx_bytes": model_path.stat().st_size,
            },
            indent=2,
        )
    )
    if args.check_tvm:
        check_tvm(model_path)
        print("TVM Relax imported and compiled the model")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
