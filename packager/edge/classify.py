"""Classify images with a compiled model: python -m lookout_edge.classify --model-dir DIR IMAGE [IMAGE ...]."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from .model_runner import AnomalyDetector


def read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lookout_edge.classify", description=__doc__)
    parser.add_argument(
        "--model-dir", type=Path, required=True, help="directory with model.so, params.bin, manifest.json, spec.json"
    )
    parser.add_argument("images", nargs="*", type=Path, help="PNG/JPEG images to classify")
    parser.add_argument(
        "--self-check", action="store_true", help="run one inference on a blank image and report the latency"
    )
    args = parser.parse_args(argv)
    if not args.images and not args.self_check:
        parser.error("give at least one image, or --self-check")
    os.environ.setdefault("TVM_USE_RUNTIME_LIB", "1")  # as the agent: TVM's runtime, not its compiler library
    try:
        detector = AnomalyDetector.load(args.model_dir)
    except (OSError, KeyError, ValueError, RuntimeError) as exc:  # RuntimeError: TVM's CUDA runtime did not load
        print(f"error: cannot load the model in {args.model_dir}: {exc}", file=sys.stderr)
        return 2
    if args.self_check:
        height, width = detector.spec["preprocessing"]["resize"]
        start = time.perf_counter()
        result = detector.detect(np.full((height, width, 3), 128, np.uint8))
        print(
            json.dumps(
                {"self_check": "ok", "latency_ms": round((time.perf_counter() - start) * 1e3, 3), "score": result.score}
            ),
            flush=True,
        )
    for path in args.images:
        try:
            rgb = read_rgb(path)
        except OSError as exc:
            print(f"error: cannot read image {path}: {exc}", file=sys.stderr)
            return 2
        result = detector.detect(rgb)
        print(
            json.dumps(
                {
                    "image": str(path),
                    "score": result.score,
                    "threshold": result.threshold,
                    "confidence": result.confidence,
                    "is_anomalous": result.is_anomalous,
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
