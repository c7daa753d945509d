"""A packaging job: import -> compile -> benchmark -> bundle -> publish, as one short function."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from packager.bundle import ComponentBundle, S3Location
from targets import Target


@dataclass(frozen=True)
class PackagingRequest:
    model_path: Path  # .onnx (or a PyTorch / anomalib export)
    spec_path: Path | None  # None: inferred from the graph or anomalib's metadata.json
    target: Target
    component_name: str
    component_version: str
    output_dir: Path  # the local greengrass-build directory
    component_description: str | None = None
    s3_location: S3Location | None = None
    tags: dict[str, str] = field(default_factory=dict)
    register: bool = True  # create the Greengrass component version after upload (needs s3_location)
    tuning_trials: int = 0
    benchmark_runs: int = 50
    work_dir: Path | None = None  # scratch space for compile; a temp dir when None


@dataclass(frozen=True)
class PackagingResult:
    bundle: ComponentBundle
    benchmark: "BenchmarkReport"  # packager.benchmark.BenchmarkReport
    component_version_arn: str | None
    wall_seconds: float


ProgressCallback = Callable[[str], None]
