"""python -m packager build: package a model (the bundled example by default) for a target."""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from packager.cli import Command

EXAMPLE_COMPONENT = "com.example.AnomalyDetector"


def example_model_paths() -> tuple[Path, Path]:
    root = Path(str(resources.files("packager").joinpath("example_model")))
    return root / "model.onnx", root / "model_spec.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, help="trained model: .onnx, .pt2 or .pt (default: the bundled example)")
    parser.add_argument("--model-spec", type=Path, help="model spec JSON (default: inferred, or the example's)")
    parser.add_argument("--component-name", default=EXAMPLE_COMPONENT, help=f"Greengrass component name (default {EXAMPLE_COMPONENT})")
    parser.add_argument("--component-version", default="1.0.0", help="component version (default <model version>.0.0 = 1.0.0)")
    parser.add_argument("--component-description", help="component description")
    parser.add_argument("--output", type=Path, default=Path("greengrass-build"), help="bundle directory (default ./greengrass-build)")
    parser.add_argument("--benchmark-runs", type=int, default=50, help="timed runs for TVM and for ONNX Runtime (default 50)")


def build_request(args: argparse.Namespace):
    """Arguments -> a typed PackagingRequest."""
    from packager.errors import ValidationException
    from packager.pipeline import PackagingRequest
    from packager.recipe import check_service_string
    from targets import host_target

    model, spec = args.model, args.model_spec
    if model is None:
        model, default_spec = example_model_paths()
        spec = spec or default_spec
    check_service_string("ComponentName", args.component_name, "--component-name")
    check_service_string("ComponentVersion", args.component_version, "--component-version")
    if args.benchmark_runs < 1:
        raise ValidationException("--benchmark-runs must be at least 1", field="--benchmark-runs")
    return PackagingRequest(model_path=model, spec_path=spec, target=host_target(), component_name=args.component_name,
                            component_version=args.component_version, component_description=args.component_description,
                            output_dir=args.output, benchmark_runs=args.benchmark_runs)


def print_summary(result, out=sys.stdout) -> None:
    b, report = result.bundle, result.benchmark
    artifact = b.artifacts[0]
    lines = [
        f"target:      {report.target} ({report.device}{', emulated' if report.emulated else ''})",
        f"component:   {b.component_name} {b.component_version}",
        f"recipe:      {b.recipe_path}",
        f"artifact:    {artifact.path} ({artifact.size} bytes)",
        f"digest:      SHA-256 {artifact.sha256_b64}",
        f"latency:     TVM p50 {report.tvm.p50_ms:.3f} ms, ONNX Runtime p50 {report.onnxruntime.p50_ms:.3f} ms "
        f"({report.threads} threads, {report.tvm.runs} runs)",
        f"TVM/ORT:     {report.ratio_tvm_to_ort:.2f}x",
        f"build time:  {result.wall_seconds:.1f} s",
    ]
    if result.component_version_arn:
        lines.append(f"registered:  {result.component_version_arn}")
    print("\n".join(lines), file=out)


def run(args: argparse.Namespace) -> int:
    from packager.pipeline import run_packaging

    result = run_packaging(build_request(args), progress=lambda message: print(f"... {message}", file=sys.stderr, flush=True))
    print_summary(result)
    return 0


COMMAND = Command(name="build", help="package a trained model as a Greengrass v2 component", add_arguments=add_arguments, run=run)
