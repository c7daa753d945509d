"""python -m benchmarks.models.anomalib_zoo NAME OUT_DIR [--size 256] [--seed 0]: export one zoo model (or 'all')."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.models.anomalib_zoo import MODELS, export


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", choices=sorted(MODELS) + ["all"])
    parser.add_argument(
        "out_dir", type=Path, help="directory for model.onnx + model.onnx.data ('all': one folder per model)"
    )
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    names = sorted(MODELS) if args.name == "all" else [args.name]
    for name in names:
        out = args.out_dir / name if args.name == "all" else args.out_dir
        print(export(name, out, size=args.size, seed=args.seed))


if __name__ == "__main__":
    main()
