"""A packaging job: import -> compile -> benchmark -> bundle -> publish, as one short function."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from packager.bundle import ComponentBundle, S3Location
from targets import Target

if TYPE_CHECKING:
    from packager.remote import RemoteDevice


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
    device: RemoteDevice | None = None  # packager.remote.RemoteDevice: run, check and time the model there over TVM RPC
    model_arn: str | None = None  # the registered model's ARN, which the device's agent reports for the component


@dataclass(frozen=True)
class PackagingResult:
    bundle: ComponentBundle
    benchmark: "BenchmarkReport"  # packager.benchmark.BenchmarkReport
    component_version_arn: str | None
    wall_seconds: float


ProgressCallback = Callable[[str], None]


def run_packaging(request: PackagingRequest, *, s3_client=None, greengrass_client=None,
                  progress: ProgressCallback = lambda message: None) -> PackagingResult:
    """Import, compile (and check against ONNX Runtime), benchmark, bundle, then publish when an S3 location is given."""
    import tempfile
    import time

    from compilers.intake import import_model
    from compilers.model import CompileOptions
    from compilers.tvm_compile import compile_model, runs_on_this_host, verify_on_host
    from packager.benchmark import benchmark
    from packager.bundle import ComponentIdentity, bundle

    started = time.perf_counter()
    progress(f"importing {request.model_path}")
    imported = import_model(request.model_path, request.spec_path)
    with tempfile.TemporaryDirectory(prefix="packager-") as scratch:
        options = CompileOptions(work_dir=request.work_dir or Path(scratch), tuning_trials=request.tuning_trials)
        progress(f"compiling for {request.target.name}")
        artifact = compile_model(imported, request.target, options, progress=progress)
        if artifact.tuning_trials or artifact.tuning_records_applied:
            progress(f"tuning: {artifact.tuning_trials} new trials; tuned records applied to {artifact.tuning_records_applied} kernels")
        if request.device is not None:
            report = _check_on_device(request, artifact, imported, options, progress)
        elif runs_on_this_host(request.target):
            progress("checking outputs against ONNX Runtime")
            verify_on_host(artifact, imported, options)
            progress(f"benchmarking ({request.benchmark_runs} runs each)")
            report = benchmark(artifact, imported, runs=request.benchmark_runs)
        else:
            progress(f"{request.target.name} cannot run here and no device was given: skipping the ONNX Runtime check and TVM timings")
            report = benchmark(artifact, imported, runs=request.benchmark_runs, measure_tvm=False)
        progress(f"bundling {request.component_name} {request.component_version}")
        component = ComponentIdentity(request.component_name, request.component_version, request.component_description,
                                      request.model_arn)
        result_bundle = bundle(artifact, report, request.target, component, request.output_dir, request.s3_location)
    arn = None
    if request.s3_location is not None:
        from packager.publish import publish

        progress(f"publishing to {request.s3_location.uri_for(component.name, component.version, '')}")
        for dependency in result_bundle.dependencies:  # the Edge Agent the model's recipe depends on goes first
            publish(dependency, s3_client, greengrass_client if request.register else None, tags=request.tags,
                    register=request.register)
        published = publish(result_bundle, s3_client, greengrass_client if request.register else None,
                            tags=request.tags, register=request.register)
        arn = published.component_version_arn
    return PackagingResult(bundle=result_bundle, benchmark=report, component_version_arn=arn,
                           wall_seconds=time.perf_counter() - started)


def _check_on_device(request: PackagingRequest, artifact, imported, options, progress: ProgressCallback):
    """Upload to the device over TVM RPC, check against ONNX Runtime here, and time it there."""
    from packager.benchmark import benchmark
    from packager.remote import open_device, verify_on_device

    progress(f"connecting to {request.device.label}")
    with open_device(request.device) as device:
        progress(f"uploading {artifact.library_path.name} to {device.label}")
        model = device.load(artifact)
        progress(f"checking outputs on {device.label} against ONNX Runtime here")
        verify_on_device(model, imported, options, device.label)
        progress(f"benchmarking ({request.benchmark_runs} runs each{', emulated' if device.emulator else ''})")
        return benchmark(artifact, imported, runs=request.benchmark_runs, tvm_timer=model.time, device_label=device.label,
                         emulated=device.emulator is not None)
