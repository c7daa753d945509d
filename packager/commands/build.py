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
    where = parser.add_argument_group("target (as the service's TargetDevice / TargetPlatform; default: this machine's CPU)")
    where.add_argument("--target-device", help="a device: jetson_xavier")
    where.add_argument("--target-platform", metavar="OS/ARCH", help="a platform: LINUX/X86_64 or LINUX/ARM64")
    where.add_argument("--accelerator", help="with --target-platform: NVIDIA (needs gpu-code, cuda-ver, trt-ver)")
    where.add_argument("--compiler-options", metavar="JSON",
                       help='CompilerOptions, e.g. \'{"mcpu": "cortex-a72"}\' or \'{"gpu-code": "sm_86", "cuda-ver": "11.4", "trt-ver": "8.2.1"}\'')
    device = parser.add_argument_group("device to run, check and time the compiled model on (TVM RPC)")
    device.add_argument("--device-rpc", metavar="HOST:PORT", help="a TVM RPC server (python -m tvm.exec.rpc_server)")
    device.add_argument("--rpc-tracker", metavar="HOST:PORT", help="a TVM RPC tracker; lease a device registered under --rpc-key")
    device.add_argument("--rpc-key", metavar="KEY", help="with --rpc-tracker: the device kind, e.g. jetson-xavier")


def build_request(args: argparse.Namespace):
    """Arguments -> a typed PackagingRequest."""
    from packager.errors import ValidationException
    from packager.pipeline import PackagingRequest
    from packager.recipe import check_service_string
    from packager.remote import remote_device

    model, spec = args.model, args.model_spec
    if model is None:
        model, default_spec = example_model_paths()
        spec = spec or default_spec
    check_service_string("ComponentName", args.component_name, "--component-name")
    check_service_string("ComponentVersion", args.component_version, "--component-version")
    if args.benchmark_runs < 1:
        raise ValidationException("--benchmark-runs must be at least 1", field="--benchmark-runs")
    return PackagingRequest(model_path=model, spec_path=spec, target=target_from_args(args), component_name=args.component_name,
                            component_version=args.component_version, component_description=args.component_description,
                            output_dir=args.output, benchmark_runs=args.benchmark_runs,
                            device=remote_device(args.device_rpc, args.rpc_tracker, args.rpc_key))


def target_from_args(args: argparse.Namespace):
    """The target flags -> one catalog record, through the same resolve_target the jobs API uses."""
    from packager.errors import ValidationException
    from targets import TargetRequest, resolve_target
    from targets.catalog import parse_compiler_options

    os_name = arch = None
    if args.target_platform is not None:
        os_name, _, arch = args.target_platform.partition("/")
        if not arch:
            raise ValidationException(f"--target-platform must be OS/ARCH like LINUX/ARM64, got {args.target_platform!r}",
                                      field="--target-platform")
    elif args.accelerator is not None:
        raise ValidationException("--accelerator needs --target-platform", field="--accelerator")
    if args.target_device is not None and args.compiler_options is not None:
        raise ValidationException("--compiler-options is not allowed with --target-device", field="--compiler-options")
    try:
        options = parse_compiler_options(args.compiler_options)
        return resolve_target(TargetRequest(target_device=args.target_device, os=os_name, arch=arch,
                                            accelerator=args.accelerator, compiler_options=options))
    except ValidationException as exc:
        flag = _FLAG_FOR_FIELD.get(exc.field or "", "--compiler-options")
        raise ValidationException(f"{flag}: {exc.message}", field=flag) from None


_FLAG_FOR_FIELD = {"TargetDevice": "--target-device", "TargetPlatform.Os": "--target-platform",
                   "TargetPlatform.Arch": "--target-platform", "TargetPlatform.Accelerator": "--accelerator",
                   "Target": "--target-platform"}


def print_summary(result, out=None) -> None:
    out = out or sys.stdout  # looked up per call, so a redirected stdout is honoured
    b, report = result.bundle, result.benchmark
    artifact = b.artifacts[0]
    lines = [
        f"target:      {report.target} ({report.device}{', emulated' if report.emulated else ''})",
        f"component:   {b.component_name} {b.component_version}",
        f"recipe:      {b.recipe_path}",
        f"artifact:    {artifact.path} ({artifact.size} bytes)",
        f"digest:      SHA-256 {artifact.sha256_b64}",
        _latency_line(report),
        f"TVM/ORT:     {f'{report.ratio_tvm_to_ort:.2f}x' if report.tvm else report.not_measured}",
        f"build time:  {result.wall_seconds:.1f} s",
    ]
    if result.component_version_arn:
        lines.append(f"registered:  {result.component_version_arn}")
    print("\n".join(lines), file=out)


def _latency_line(report) -> str:
    ort = f"ONNX Runtime p50 {report.onnxruntime.p50_ms:.3f} ms"
    if report.tvm is None:
        return f"latency:     TVM {report.not_measured}; {ort} ({report.threads} threads, {report.onnxruntime.runs} runs)"
    where = " (emulated: not device timings)" if report.emulated else ""
    return f"latency:     TVM p50 {report.tvm.p50_ms:.3f} ms{where}, {ort} ({report.threads} threads, {report.tvm.runs} runs)"


def run(args: argparse.Namespace) -> int:
    from packager.pipeline import run_packaging

    result = run_packaging(build_request(args), progress=lambda message: print(f"... {message}", file=sys.stderr, flush=True))
    print_summary(result)
    return 0


COMMAND = Command(name="build", help="package a trained model as a Greengrass v2 component", add_arguments=add_arguments, run=run)
