"""python -m packager build: package a model (the bundled example by default) for a target.

Sugar over the jobs API: register the model in a project (reusing an identical version), start a packaging job
with build's own options, wait for it with progress on stderr, then print the summary from the job's result.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from packager.cli import Command
from packager.commands.build_summary import shown as _shown

if TYPE_CHECKING:
    from packager.commands.build_fleet import FleetTarget
    from packager.service.jobs.extensions import JobExtensions
    from targets import Target

EXAMPLE_COMPONENT = "com.example.AnomalyDetector"
DEFAULT_PROJECT = "default"


def example_model_paths() -> tuple[Path, Path]:
    root = Path(str(resources.files("packager").joinpath("example_model")))
    return root / "model.onnx", root / "model_spec.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, help="trained model: .onnx, .pt2 or .pt (default: the bundled example)")
    parser.add_argument("--model-spec", type=Path, help="model spec JSON (default: inferred, or the example's)")
    parser.add_argument("--project-name", default=DEFAULT_PROJECT,
                        help=f"project to register the model in, created if missing (default {DEFAULT_PROJECT}); "
                             "the same model and spec reuse their model version")
    parser.add_argument("--component-name", default=EXAMPLE_COMPONENT, help=f"Greengrass component name (default {EXAMPLE_COMPONENT})")
    parser.add_argument("--component-version", help="component version (default <model version>.0.0, so 1.0.0 for a first model)")
    parser.add_argument("--component-description", help="component description")
    parser.add_argument("--output", type=Path, default=Path("greengrass-build"), help="bundle directory (default ./greengrass-build)")
    parser.add_argument("--benchmark-runs", type=int, default=50, help="timed runs for TVM and for ONNX Runtime (default 50)")
    parser.add_argument("--summary-json", metavar="FILE", help="also write the summary as JSON to FILE ('-': stdout, "
                        "instead of the text summary); written for failed builds too, with the error")
    parser.add_argument("--max-ratio", type=float, metavar="R",
                        help="speed gate: fail (exit 13, nothing bundled) when TVM/ORT p50 is above R on a target where "
                             "both were timed on this machine; emulated and cross-compiled targets are not measured")
    parser.add_argument("--client-token", help="idempotency token: the same token and flags within 8 hours reuse the job")
    where = parser.add_argument_group("target (as the service's TargetDevice / TargetPlatform; default: this machine's CPU)")
    where.add_argument("--target", action="append", default=[], metavar="NAME", dest="targets",
                       help="a target by catalog name (jetson_xavier, LINUX/X86_64, LINUX/ARM64, LINUX/<ARCH>/NVIDIA); "
                            "repeat it, or give --target-device and --target-platform together, for one component with a "
                            "manifest per platform (each target compiles in its own job; --compiler-options apply to the "
                            "platform targets)")
    where.add_argument("--target-device", help="a device: jetson_xavier")
    where.add_argument("--target-platform", metavar="OS/ARCH", help="a platform: LINUX/X86_64 or LINUX/ARM64")
    where.add_argument("--accelerator", help="with --target-platform: NVIDIA (needs gpu-code, cuda-ver, trt-ver)")
    where.add_argument("--compiler-options", metavar="JSON",
                       help='CompilerOptions, e.g. \'{"mcpu": "cortex-a72"}\' or \'{"gpu-code": "sm_86", "cuda-ver": "11.4", "trt-ver": "8.2.1"}\'')
    where.add_argument("--tuning-trials", type=int, metavar="N",
                       help="MetaSchedule trials to tune the model with first (CompilerOptions 'tuning-trials'); records are "
                            "cached under $PACKAGER_HOME/tuning and reused by every later build of the same model and target")
    cache = parser.add_argument_group("compile cache (an unchanged model, spec, target, tuning records and compiler "
                                      "reuse the earlier compile; the ONNX Runtime check and benchmark still run)")
    cache.add_argument("--compile-cache", type=Path, metavar="DIR",
                       help="keep compiled models there (default $PACKAGER_COMPILE_CACHE, else $PACKAGER_HOME/compile-cache)")
    cache.add_argument("--no-cache", action="store_true", help="compile afresh; the cache is neither read nor written")
    device = parser.add_argument_group("device to run, check and time the compiled model on (TVM RPC)")
    device.add_argument("--device-rpc", metavar="HOST:PORT", help="a TVM RPC server on the device (targets/jetson/start_rpc_server.sh)")
    device.add_argument("--rpc-tracker", metavar="HOST:PORT", help="a TVM RPC tracker; lease a device registered under --rpc-key")
    device.add_argument("--rpc-key", metavar="KEY", help="with --rpc-tracker: the device kind, e.g. jetson-xavier")
    publish = parser.add_argument_group("publishing (default: only the local bundle)")
    publish.add_argument("--s3-output", metavar="s3://BUCKET/PREFIX",
                         help="upload the components there (S3OutputLocation) and register them with Greengrass v2")
    publish.add_argument("--no-register", action="store_true",
                         help="with --s3-output: upload only, do not register (without it nothing is registered anyway)")
    publish.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                         help="a tag for the registered component version (repeatable)")


@dataclass(frozen=True)
class BuildRequest:
    """build's flags, checked: what to register where, and the packaging job to start for it."""

    project: str
    model_path: Path
    spec_path: Path | None
    configuration: dict  # the service's ModelPackagingConfiguration; S3OutputLocation only with --s3-output
    extensions: JobExtensions
    client_token: str | None = None
    fleet: tuple[FleetTarget, ...] = ()  # several targets: one job each, then one component for all of them
    target: Target | None = None  # the one target, when not a fleet


def build_request(args: argparse.Namespace) -> BuildRequest:
    """Arguments -> a typed BuildRequest; every error names its flag."""
    from packager.commands.build_fleet import fleet_from_args, fleet_target
    from packager.errors import ValidationException
    from packager.service.jobs.extensions import JobExtensions
    from packager.greengrass.recipe import check_service_string
    from packager.build.remote import remote_device

    model, spec = args.model, args.model_spec
    if model is None:
        model, default_spec = example_model_paths()
        spec = spec or default_spec
    check_service_string("ComponentName", args.component_name, "--component-name")
    if args.component_version is not None:
        check_service_string("ComponentVersion", args.component_version, "--component-version")
    if args.benchmark_runs < 1:
        raise ValidationException("--benchmark-runs must be at least 1", field="--benchmark-runs")
    if args.max_ratio is not None and not args.max_ratio > 0:
        raise ValidationException(f"--max-ratio must be above 0, got {args.max_ratio:g}", field="--max-ratio")
    fleet = fleet_from_args(args)
    if len(fleet) == 1:  # one --target NAME is the one-target flags
        args = fleet[0][1]
    single_target = None
    if len(fleet) <= 1:
        _fold_tuning_trials(args)
        single_target = target_from_args(args)  # the target flags fail here, named, before anything is recorded
    greengrass = {"ComponentName": args.component_name, **(_target_members(args) if len(fleet) <= 1 else {})}
    optional = {"ComponentVersion": args.component_version, "ComponentDescription": args.component_description,
                "S3OutputLocation": _s3_location(args.s3_output), "Tags": _tags(args.tag)}
    greengrass.update({k: v for k, v in optional.items() if v is not None})
    _check_shape("ProjectName", "ProjectName", args.project_name, "--project-name")
    if args.client_token is not None:
        _check_shape("ClientToken", "ClientToken", args.client_token, "--client-token")
    for member, shape, flag in (("ComponentDescription", "ComponentDescription", "--component-description"),
                                ("S3OutputLocation", "S3Location", "--s3-output"), ("Tags", "TagList", "--tag")):
        if member in greengrass:
            _check_shape(shape, member, greengrass[member], flag)
    extensions = JobExtensions(output_dir=args.output.expanduser().absolute(), benchmark_runs=args.benchmark_runs,
                               device=remote_device(args.device_rpc, args.rpc_tracker, args.rpc_key),
                               register=not args.no_register,
                               compile_cache_dir=args.compile_cache.expanduser().absolute() if args.compile_cache else None,
                               use_compile_cache=not args.no_cache, max_ratio=args.max_ratio)
    fleet_targets = tuple(fleet_target(one, greengrass) for _, one in fleet) if len(fleet) > 1 else ()
    if fleet_targets:
        from packager.greengrass.bundle import check_distinct_platforms

        try:
            check_distinct_platforms([t.target for t in fleet_targets])
        except ValidationException as exc:
            raise ValidationException(f"--target: {exc.message}", field="--target") from None
    return BuildRequest(project=args.project_name, model_path=model, spec_path=spec, configuration={"Greengrass": greengrass},
                        extensions=extensions, client_token=args.client_token, fleet=fleet_targets,
                        target=single_target)


def _check_shape(shape: str, member: str, value, flag: str) -> None:
    """The service model's rules for one member, with the error naming the flag it came from."""
    from packager.errors import ValidationException
    from packager.service.jobs.validation import validate_shape

    try:
        validate_shape(shape, value, member)
    except ValidationException as exc:
        raise ValidationException(f"{flag}: {exc.message}", field=flag) from None


def _fold_tuning_trials(args: argparse.Namespace) -> None:
    """--tuning-trials N is the CompilerOptions key 'tuning-trials', so a build's job records it like an API call would."""
    import ast
    import json

    from packager.errors import ValidationException

    if args.tuning_trials is None:
        return
    if args.tuning_trials < 0:
        raise ValidationException(f"--tuning-trials must be 0 or more, got {args.tuning_trials}", field="--tuning-trials")
    if args.target_device is not None:
        raise ValidationException("--tuning-trials is not allowed with --target-device (a GPU target)", field="--tuning-trials")
    options = {}
    if args.compiler_options:
        try:
            options = json.loads(args.compiler_options)
        except json.JSONDecodeError:
            try:
                options = ast.literal_eval(args.compiler_options)
            except (ValueError, SyntaxError):
                raise ValidationException("--compiler-options is neither JSON nor a quoted dict", field="--compiler-options") from None
        if not isinstance(options, dict):
            raise ValidationException("--compiler-options must be an object", field="--compiler-options")
    args.compiler_options = json.dumps({**options, "tuning-trials": args.tuning_trials})


def _target_members(args: argparse.Namespace) -> dict:
    """The target flags as GreengrassConfiguration members (already checked by target_from_args)."""
    members: dict = {}
    if args.target_device is not None:
        members["TargetDevice"] = args.target_device
    if args.target_platform is not None:
        os_name, _, arch = args.target_platform.partition("/")
        members["TargetPlatform"] = {"Os": os_name, "Arch": arch}
        if args.accelerator is not None:
            members["TargetPlatform"]["Accelerator"] = args.accelerator
    if args.compiler_options is not None:
        members["CompilerOptions"] = args.compiler_options
    return members


def _s3_location(uri: str | None) -> dict | None:
    from packager.errors import ValidationException

    if uri is None:
        return None
    match = re.fullmatch(r"s3://([^/]+)/*(.*)", uri)
    if not match:
        raise ValidationException(f"--s3-output must be s3://BUCKET or s3://BUCKET/PREFIX, got {uri!r}", field="--s3-output")
    prefix = match[2].rstrip("/")
    return {"Bucket": match[1], **({"Prefix": prefix} if prefix else {})}


def _tags(pairs: list[str]) -> list[dict] | None:
    from packager.errors import ValidationException

    tags = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValidationException(f"--tag must be KEY=VALUE, got {pair!r}", field="--tag")
        if any(t["Key"] == key for t in tags):
            raise ValidationException(f"--tag: duplicate tag key {key!r}", field="--tag")
        tags.append({"Key": key, "Value": value})
    return tags or None


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
    """result: packager.service.jobs.results.JobResult, what the job left beside its log."""
    out = out or sys.stdout  # looked up per call, so a redirected stdout is honoured
    report = result.benchmark
    lines = [
        f"target:      {report.target} ({report.device}{', emulated' if report.emulated else ''})",
        f"component:   {result.component_name} {result.component_version}",
        f"recipe:      {_shown(result.recipe_path)}",
        f"artifact:    {_shown(result.artifact_path)} ({result.artifact_size} bytes)",
        f"digest:      SHA-256 {result.artifact_sha256_b64}",
        _latency_line(report),
        f"TVM/ORT:     {report.ratio_text}",
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


def _progress(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


def register_build_model(request: BuildRequest) -> str:
    """Check the model here (cheap, and fails before any record), then register it or reuse its identical version."""
    import tempfile

    from compilers.frontends.intake import import_model
    from packager.service.jobs import api

    _progress(f"reading {request.model_path}")
    cache_dir = _compile_cache_dir(request.extensions)
    imported = import_model(request.model_path, request.spec_path, cache_dir=cache_dir)
    with tempfile.TemporaryDirectory(prefix="packager-build-") as scratch:
        model_file, spec_file = request.model_path, request.spec_path
        if Path(model_file).suffix.lower() != ".onnx":  # PyTorch: the store keeps the ONNX graph intake made of it
            model_file = Path(scratch) / "model.onnx"
            model_file.write_bytes(imported.onnx_bytes)
        if spec_file is None:  # inferred, or read from anomalib's metadata.json: the job gets it spelled out
            spec_file = Path(scratch) / "model_spec.json"
            spec_file.write_text(imported.spec.to_json())
        registered = api.register_model(request.project, model_file, spec_file, create_project=True, reuse_identical=True,
                                        intake_cache_dir=cache_dir)
    version = registered["ModelMetadata"]["ModelVersion"]
    _progress(f"model version {version} of project {request.project} (sha256 {registered['ModelSha256'][:12]})")
    return version


def _compile_cache_dir(extensions: JobExtensions) -> Path | None:
    """Where the job's compile cache is, so that build's own intake of the model is kept there too (None: --no-cache)."""
    from compilers.compile_cache import default_compile_cache_dir
    from packager.home import packager_home

    if not extensions.use_compile_cache:
        return None
    return extensions.compile_cache_dir or default_compile_cache_dir(packager_home())


def start_build_job(request: BuildRequest, model_version: str) -> str:
    from packager.errors import ValidationException
    from packager.service.jobs import api

    params = {"ProjectName": request.project, "ModelVersion": model_version, "Configuration": request.configuration}
    if request.client_token is not None:
        params["ClientToken"] = request.client_token
    try:
        return api.start_local_packaging_job(request.extensions, **params)["JobName"]
    except ValidationException as exc:
        flag = next((f for prefix, f in _FLAG_FOR_MEMBER if (exc.field or "").startswith(prefix)), None)
        if flag is None:
            raise
        raise ValidationException(f"{flag}: {exc.message}", field=flag) from None


_FLAG_FOR_MEMBER = (("Configuration.Greengrass.TargetDevice", "--target-device"),
                    ("Configuration.Greengrass.TargetPlatform.Accelerator", "--accelerator"),
                    ("Configuration.Greengrass.TargetPlatform", "--target-platform"),
                    ("Configuration.Greengrass.CompilerOptions", "--compiler-options"),
                    ("Configuration.Greengrass.S3OutputLocation", "--s3-output"), ("Configuration.Greengrass.Tags", "--tag"),
                    ("Configuration.Greengrass.ComponentName", "--component-name"),
                    ("Configuration.Greengrass.ComponentVersion", "--component-version"),
                    ("Configuration.Greengrass.ComponentDescription", "--component-description"),
                    ("ClientToken", "--client-token"), ("ProjectName", "--project-name"))


POLL_SECONDS = 0.25  # how often build looks at its job


def wait_for_build_job(project: str, job_name: str, poll_seconds: float | None = None):
    """Wait with progress on stderr; a SUCCEEDED job's JobResult, or the error a FAILED one ended with is raised."""
    from packager.errors import InternalServerException
    from packager.service.jobs import api
    from packager.service.jobs.progress import ProgressReader
    from packager.service.jobs.results import job_failure, read_result
    from packager.home import packager_home

    home = packager_home()
    steps = ProgressReader(api.job_dir(home, project, job_name))

    def show(_description: dict) -> None:
        for line in steps.new_lines():
            _progress(line)

    final = api.wait_for_model_packaging_job(project, job_name, poll_seconds=poll_seconds or POLL_SECONDS, on_update=show)
    show(final)
    if final["ModelPackagingDescription"]["Status"] == "FAILED":
        raise job_failure(home, project, job_name)
    result = read_result(api.job_dir(home, project, job_name))
    if result is None:
        raise InternalServerException(f"job {job_name} SUCCEEDED but left no {api.job_dir(home, project, job_name)}/result.json")
    return result


def run(args: argparse.Namespace) -> int:
    # The wait's modules are imported before it starts. A Ctrl-C that lands inside an import, in the exec() that
    # dataclasses run, makes CPython 3.11 kill itself with SIGINT at exit even after the handler below returned 130.
    import packager.service.jobs.progress  # noqa: F401
    import packager.service.jobs.results  # noqa: F401
    from packager.commands.build_fleet import run_fleet
    from packager.commands.build_summary import failed_document, write_summary_json
    from packager.errors import PackagerError

    try:
        request = build_request(args)
        model_version = register_build_model(request)
        if request.fleet:
            return run_fleet(request, model_version, args.summary_json)
        return _run_one(request, model_version, args.summary_json)
    except PackagerError as exc:
        if args.summary_json:
            write_summary_json(failed_document(exc, args.max_ratio), args.summary_json)
        raise


def _interrupted(project: str, job_names: list[str]) -> int:
    for job_name in job_names:
        print(f"interrupted: job {job_name} goes on in the background; follow it with: python -m packager "
              f"describe-model-packaging-job --project-name {project} --job-name {job_name}", file=sys.stderr)
    return 130


def _run_one(request: BuildRequest, model_version: str, summary_json: str | None) -> int:
    from packager.commands.build_summary import (
        row_from_job,
        succeeded_document,
        write_summary_json,
    )

    job_name = start_build_job(request, model_version)
    try:
        _progress(f"started job {job_name} in project {request.project}")
        result = wait_for_build_job(request.project, job_name)
    except KeyboardInterrupt:
        return _interrupted(request.project, [job_name])
    print_summary(result, out=sys.stderr if summary_json == "-" else None)
    if summary_json:
        platform = request.target.greengrass
        row = row_from_job(result, f"{platform.os}/{platform.architecture}")
        write_summary_json(succeeded_document(result.component_name, result.component_version, result.recipe_path, [row],
                                              result.component_version_arn, result.wall_seconds,
                                              request.extensions.max_ratio), summary_json)
    return 0


COMMAND = Command(name="build", help="package a trained model as a Greengrass v2 component", add_arguments=add_arguments, run=run)
