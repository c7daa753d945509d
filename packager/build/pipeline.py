"""A packaging job: import -> compile -> benchmark -> bundle -> publish, as one short function."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from compilers.model import CompiledArtifact, CompileOptions, ImportedModel
from packager.build.benchmark import BenchmarkOptions, BenchmarkReport
from packager.errors import AccuracyMismatchError
from packager.greengrass.bundle import ComponentBundle, S3Location
from targets import Target

if TYPE_CHECKING:
    from concurrent.futures import Future

    from compilers.runners import Runner
    from packager.build.remote import RemoteDevice


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
    device: RemoteDevice | None = (
        None  # packager.build.remote.RemoteDevice: run, check and time the model there over TVM RPC
    )
    model_arn: str | None = None  # the registered model's ARN, which the device's agent reports for the component
    compile_cache_dir: Path | None = (
        None  # reuse earlier compiles kept there (compilers/compile_cache.py); None: compile
    )
    max_ratio: float | None = None  # speed gate: fail, bundling nothing, when a measured TVM/ORT p50 ratio is above it
    # The process runs this build alone and then exits (a job worker): after a compile cache hit it loads TVM's runtime
    # library only, as the Edge Agent does, since nothing in it compiles. Never for a process that builds again.
    single_build_process: bool = False


@dataclass(frozen=True)
class PackagingResult:
    bundle: ComponentBundle
    benchmark: BenchmarkReport
    component_version_arn: str | None
    wall_seconds: float
    max_abs_error: dict = field(
        default_factory=dict
    )  # output name -> max |TVM - ORT| of the build's check; {} unchecked
    compile_seconds: float = 0.0
    from_cache: bool = False  # the compile cache supplied the compiled model


ProgressCallback = Callable[[str], None]


def run_packaging(
    request: PackagingRequest,
    *,
    s3_client=None,
    greengrass_client=None,
    sts_client=None,
    progress: ProgressCallback = lambda message: None,
) -> PackagingResult:
    """Import, compile (and check against ONNX Runtime), benchmark, bundle, then publish when an S3 location is given.
    ``sts_client``: the caller's account id comes from it, so registration is checked with documented calls only."""
    import tempfile
    import time

    from compilers.frontends.intake import import_model
    from compilers.tvm_compile import compile_model, forget_failed_compile, runs_on_this_host
    from packager.build.benchmark import benchmark
    from packager.greengrass.bundle import ComponentIdentity, bundle
    from packager.home import tuning_cache_dir

    started = time.perf_counter()
    progress(f"importing {request.model_path}")
    imported = import_model(request.model_path, request.spec_path, cache_dir=request.compile_cache_dir)
    with tempfile.TemporaryDirectory(prefix="packager-") as scratch:
        options = CompileOptions(
            work_dir=request.work_dir or Path(scratch),
            tuning_trials=request.tuning_trials,
            tuning_cache_dir=tuning_cache_dir(),
            compile_cache_dir=request.compile_cache_dir,
        )
        timing = BenchmarkOptions(runs=request.benchmark_runs)
        checked = request.device is not None or runs_on_this_host(request.target)
        # Made while the model compiles or comes from the cache (under a second, like a 176 MB model's session); not
        # beside tuning, whose measurements would share the cores with it.
        reference = reference_in_background(imported, timing) if checked and not request.tuning_trials else None
        progress(f"compiling for {request.target.name}")
        artifact = compile_model(imported, request.target, options, progress=progress)
        if artifact.failed_check is not None:
            progress(
                f"an earlier build of this model for {request.target.name} failed the check ({artifact.failed_check}); "
                "compiling with Winograd's smallest tiles only, which round less"
            )
            options = _precise(options)
            artifact = compile_model(imported, request.target, options, progress=progress)
        if artifact.from_cache:
            progress(f"compile cache hit: reused the library and parameters ({artifact.compile_seconds:.1f} s)")
        if artifact.tuning_trials or artifact.tuning_records_applied:
            progress(
                f"tuning: {artifact.tuning_trials} new trials; tuned records applied to {artifact.tuning_records_applied} kernels"
            )
        errors: dict = {}
        if checked:
            try:
                report, errors = _check_and_time(request, artifact, imported, options, timing, progress, reference)
            except AccuracyMismatchError as exc:
                if options.precise:
                    raise
                forget_failed_compile(artifact, options, str(exc))
                progress(
                    f"{exc}; a compile that may use Winograd's larger tiles must agree within half the tolerance: "
                    "compiling again with its smallest tiles only, which round less"
                )
                options = _precise(options)
                artifact = compile_model(imported, request.target, options, progress=progress)
                try:
                    report, errors = _check_and_time(request, artifact, imported, options, timing, progress, reference)
                except AccuracyMismatchError as again:
                    raise AccuracyMismatchError(
                        f"{again} (compiled with Winograd's smallest tiles; before: {exc})"
                    ) from None
                progress("the precise compile passes the check")
        else:
            progress(
                f"{request.target.name} cannot run here and no device was given: skipping the ONNX Runtime check and the timings"
            )
            report = benchmark(artifact, imported, None, timing)
        check_speed_gate(report, request.max_ratio, progress)
        progress(f"bundling {request.component_name} {request.component_version}")
        component = ComponentIdentity(
            request.component_name, request.component_version, request.component_description, request.model_arn
        )
        archives = request.compile_cache_dir / "archives" if request.compile_cache_dir is not None else None
        result_bundle = bundle(
            artifact, report, request.target, component, request.output_dir, request.s3_location, archive_cache=archives
        )
    arn = None
    if request.s3_location is not None:
        progress(f"publishing to {request.s3_location.uri_for(component.name, component.version, '')}")
        arn = publish_component(
            result_bundle,
            s3_client,
            greengrass_client,
            tags=request.tags,
            register=request.register,
            sts_client=sts_client,
            archive_cache=archives,
        )
    return PackagingResult(
        bundle=result_bundle,
        benchmark=report,
        component_version_arn=arn,
        wall_seconds=time.perf_counter() - started,
        max_abs_error=errors,
        compile_seconds=artifact.compile_seconds,
        from_cache=artifact.from_cache,
    )


def _precise(options: CompileOptions) -> CompileOptions:
    """Winograd's smallest tiles only, untuned, in a directory of its own: a first library of this build stays loaded,
    and dlopen of the same path would return it."""
    return replace(options, precise=True, tuning_trials=0, work_dir=Path(options.work_dir) / "precise")


def check_speed_gate(report, max_ratio: float | None, progress: ProgressCallback = lambda message: None) -> None:
    """Fail when TVM/ORT p50 was measured (both natively on this host) and is above ``max_ratio``; a ratio that was
    not measured neither passes nor fails."""
    from packager.errors import SpeedGateError

    if max_ratio is None:
        return
    if report.ratio_tvm_to_ort is None:
        progress(f"speed gate: {report.ratio_text} on {report.target}; neither passed nor failed")
        return
    if report.ratio_tvm_to_ort > max_ratio:
        raise SpeedGateError(
            f"speed gate: TVM/ORT p50 is {report.ratio_tvm_to_ort:.2f}x on {report.target} (TVM {report.tvm.p50_ms:.3f} ms, "
            f"ONNX Runtime {report.onnxruntime.p50_ms:.3f} ms), above --max-ratio {max_ratio:g}; nothing was bundled"
        )
    progress(f"speed gate: TVM/ORT p50 {report.ratio_tvm_to_ort:.2f}x <= {max_ratio:g} on {report.target}")


def reference_in_background(imported: ImportedModel, timing: BenchmarkOptions) -> Future:
    """The ONNX Runtime session of the check and the timings, made on a thread: ONNX Runtime builds it without the GIL,
    so it overlaps loading the compiled model (about half a second each for a 176 MB model)."""
    from concurrent.futures import ThreadPoolExecutor

    from compilers.runners import OnnxRuntimeRunner
    from packager.build.benchmark import default_threads

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxruntime-session")
    try:
        return pool.submit(OnnxRuntimeRunner.load, imported, threads=timing.threads or default_threads())
    finally:
        pool.shutdown(wait=False)  # the session is still being made; the pool's one thread ends with it


def check_and_time(
    runner: Runner,
    artifact: CompiledArtifact,
    imported: ImportedModel,
    options: CompileOptions,
    timing: BenchmarkOptions,
    progress: ProgressCallback,
    reference: Future | None = None,
) -> tuple[BenchmarkReport, dict[str, float]]:
    """Check ``runner`` (here or on a device) against ONNX Runtime here, then time both: (report, output -> max abs error).
    ``reference``: the ONNX Runtime session being made (reference_in_background); None makes it here."""
    from compilers.verify import check_against_onnxruntime
    from packager.build.benchmark import benchmark

    progress(
        "checking outputs against ONNX Runtime"
        if runner.native
        else f"checking outputs on {runner.label} against ONNX Runtime here"
    )
    reference = (reference or reference_in_background(imported, timing)).result()  # for the check and the timings
    errors = check_against_onnxruntime(runner, imported, options, reference)
    progress(f"benchmarking ({timing.runs} runs each{', emulated' if runner.emulated else ''})")
    return benchmark(artifact, imported, runner, timing, reference, progress), errors


def _check_and_time(request, artifact, imported, options, timing, progress, reference):
    """The check and timings of ``artifact`` on the request's device, or here."""
    from compilers.runners import TvmRunner

    if request.device is not None:
        return _check_on_device(request, artifact, imported, options, timing, progress, reference)
    runner = TvmRunner.load(artifact, runtime_only=artifact.from_cache and request.single_build_process)
    return check_and_time(runner, artifact, imported, options, timing, progress, reference)


def _check_on_device(
    request: PackagingRequest,
    artifact: CompiledArtifact,
    imported: ImportedModel,
    options: CompileOptions,
    timing: BenchmarkOptions,
    progress: ProgressCallback,
    reference: Future | None = None,
) -> tuple[BenchmarkReport, dict[str, float]]:
    """Upload to the device over TVM RPC, check against ONNX Runtime here, and time it there."""
    from packager.build.remote import open_device

    progress(f"connecting to {request.device.label}")
    with open_device(request.device) as device:
        progress(f"uploading {artifact.library_path.name} to {device.label}")
        return check_and_time(device.load(artifact), artifact, imported, options, timing, progress, reference)


def publish_component(
    component_bundle: ComponentBundle,
    s3_client,
    greengrass_client,
    *,
    tags: dict[str, str],
    register: bool,
    sts_client=None,
    archive_cache: Path | None = None,
) -> str | None:
    """The agent it depends on first, then the component, then its reports; returns the component version's ARN.

    The Edge Agent is shared by every job: a version registered with the same digests is reused wherever its bytes live.
    ``archive_cache``: where the archives' S3 checksums are kept for the next publish of the same bytes.
    """
    from packager.greengrass.publish.component import publish, publish_shared
    from packager.greengrass.publish.greengrass import caller_account_id
    from packager.greengrass.publish.s3 import composites_kept_in

    greengrass_client = greengrass_client if register else None
    account = caller_account_id(sts_client) if register and sts_client is not None else None
    with composites_kept_in(archive_cache):
        for dependency in component_bundle.dependencies:
            publish_shared(dependency, s3_client, greengrass_client, tags=tags, register=register, account_id=account)
        published = publish(
            component_bundle, s3_client, greengrass_client, tags=tags, register=register, account_id=account
        )
    upload_reports(component_bundle, s3_client)
    return published.component_version_arn


def package_targets(
    builds: list,
    component,
    output_dir: Path,
    s3_location: S3Location | None = None,
    *,
    tags: dict[str, str] | None = None,
    register: bool = True,
    s3_client=None,
    greengrass_client=None,
    sts_client=None,
    progress: ProgressCallback = lambda message: None,
    archive_cache: Path | None = None,
) -> tuple[ComponentBundle, str | None]:
    """Several targets' builds (packager.greengrass.bundle.TargetBuild) -> one component with a manifest per platform, published
    when an S3 location is given: (bundle, component version ARN or None). ``archive_cache``: as publish_component's."""
    from packager.greengrass.bundle import bundle_targets

    progress(f"bundling {component.name} {component.version} for {', '.join(b.target.name for b in builds)}")
    result_bundle = bundle_targets(builds, component, output_dir, s3_location)
    arn = None
    if s3_location is not None:
        progress(f"publishing to {s3_location.uri_for(component.name, component.version, '')}")
        arn = publish_component(
            result_bundle,
            s3_client,
            greengrass_client,
            tags=tags or {},
            register=register,
            sts_client=sts_client,
            archive_cache=archive_cache,
        )
    return result_bundle, arn


def upload_reports(published, s3_client) -> None:
    """The per-build benchmark reports go beside the published artifacts, after them: they are not part of the
    component, and each build overwrites its own."""
    from packager.greengrass.publish.s3 import put_bytes

    for path in published.reports:
        key = published.s3_location.key_for(published.component_name, published.component_version, path.name)
        put_bytes(
            s3_client,
            published.s3_location.bucket,
            key,
            path.read_bytes(),
            "application/json",
            step=f"upload report {path.name}",
        )
