"""python -m packager build: package a model (the bundled example by default) for a target.

Sugar over the jobs API: register the model in a project (reusing an identical version), start a packaging job
with build's own options, wait for it with progress on stderr, then print the summary from the job's result.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import replace
from pathlib import Path

from packager.commands.arguments import (
    TargetSelection,
    add_target_arguments,
    add_tracker_arguments,
    check_member,
    target_from_args,
)
from packager.commands.build_fleet import fleet_from_args, fleet_target, run_fleet
from packager.commands.build_jobs import (
    BuildRequest,
    compile_cache_dir,
    interrupted,
    progress,
    start_build_job,
    wait_for_build_job,
)
from packager.commands.build_summary import failed_document, row_from_job, succeeded_document, write_summary_json
from packager.commands.build_summary import shown as _shown
from packager.commands.command import Command
from packager.errors import PackagerError, ValidationException
from packager.example_model import example_model_paths
from packager.service.jobs.extensions import JobExtensions
from packager.service.jobs.members import target_members
from targets.options import check_tuning_trials

EXAMPLE_COMPONENT = "com.example.AnomalyDetector"
DEFAULT_PROJECT = "default"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, help="trained model: .onnx, .pt2 or .pt (default: the bundled example)")
    parser.add_argument("--model-spec", type=Path, help="model spec JSON (default: inferred, or the example's)")
    parser.add_argument(
        "--project-name",
        default=DEFAULT_PROJECT,
        help=f"project to register the model in, created if missing (default {DEFAULT_PROJECT}); "
        "the same model and spec reuse their model version",
    )
    parser.add_argument(
        "--component-name", default=EXAMPLE_COMPONENT, help=f"Greengrass component name (default {EXAMPLE_COMPONENT})"
    )
    parser.add_argument(
        "--component-version", help="component version (default <model version>.0.0, so 1.0.0 for a first model)"
    )
    parser.add_argument("--component-description", help="component description")
    parser.add_argument(
        "--output", type=Path, default=Path("greengrass-build"), help="bundle directory (default ./greengrass-build)"
    )
    parser.add_argument(
        "--benchmark-runs", type=int, default=50, help="timed runs for TVM and for ONNX Runtime (default 50)"
    )
    parser.add_argument(
        "--summary-json",
        metavar="FILE",
        help="also write the summary as JSON to FILE ('-': stdout, "
        "instead of the text summary); written for failed builds too, with the error",
    )
    parser.add_argument(
        "--max-ratio",
        type=float,
        metavar="R",
        help="speed gate: fail (exit 13, nothing bundled) when TVM/ORT p50 is above R on a target where "
        "both were timed on this machine; emulated and cross-compiled targets are not measured",
    )
    parser.add_argument(
        "--client-token", help="idempotency token: the same token and flags within 8 hours reuse the job"
    )
    where = parser.add_argument_group(
        "target (as the service's TargetDevice / TargetPlatform; default: this machine's CPU)"
    )
    where.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="NAME",
        dest="targets",
        help="a target by catalog name (jetson_xavier, LINUX/X86_64, LINUX/ARM64, LINUX/<ARCH>/NVIDIA); "
        "repeat it, or give --target-device and --target-platform together, for one component with a "
        "manifest per platform (each target compiles in its own job; --compiler-options apply to the "
        "platform targets)",
    )
    add_target_arguments(where)
    where.add_argument(
        "--tuning-trials",
        type=int,
        metavar="N",
        help="MetaSchedule trials to tune the model with first (CompilerOptions 'tuning-trials'); records are "
        "cached under $PACKAGER_HOME/tuning and reused by every later build of the same model and target",
    )
    cache = parser.add_argument_group(
        "compile cache (an unchanged model, spec, target, tuning records and compiler "
        "reuse the earlier compile; the ONNX Runtime check and benchmark still run)"
    )
    cache.add_argument(
        "--compile-cache",
        type=Path,
        metavar="DIR",
        help="keep compiled models there (default $PACKAGER_COMPILE_CACHE, else $PACKAGER_HOME/compile-cache)",
    )
    cache.add_argument("--no-cache", action="store_true", help="compile afresh; the cache is neither read nor written")
    device = parser.add_argument_group("device to run, check and time the compiled model on (TVM RPC)")
    device.add_argument(
        "--device-rpc", metavar="HOST:PORT", help="a TVM RPC server on the device (targets/jetson/start_rpc_server.sh)"
    )
    add_tracker_arguments(device)
    publish = parser.add_argument_group("publishing (default: only the local bundle)")
    publish.add_argument(
        "--s3-output",
        metavar="s3://BUCKET/PREFIX",
        help="upload the components there (S3OutputLocation) and register them with Greengrass v2",
    )
    publish.add_argument(
        "--no-register",
        action="store_true",
        help="with --s3-output: upload only, do not register (without it nothing is registered anyway)",
    )
    publish.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a tag for the registered component version (repeatable)",
    )


def build_request(args: argparse.Namespace) -> BuildRequest:
    """Arguments -> a typed BuildRequest; every error names its flag."""
    from packager.build.remote import remote_device
    from packager.greengrass.bundle import check_distinct_platforms
    from packager.greengrass.recipe import check_service_string

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
    selection = (
        target_selection(args) if len(fleet) <= 1 else None
    )  # the target flags fail here, named, before any record
    greengrass = {
        "ComponentName": args.component_name,
        **(target_members(selection.request, selection.tuning_trials) if selection else {}),
    }
    optional = {
        "ComponentVersion": args.component_version,
        "ComponentDescription": args.component_description,
        "S3OutputLocation": _s3_location(args.s3_output),
        "Tags": _tags(args.tag),
    }
    greengrass.update({k: v for k, v in optional.items() if v is not None})
    check_member("ProjectName", "ProjectName", args.project_name, "--project-name")
    if args.client_token is not None:
        check_member("ClientToken", "ClientToken", args.client_token, "--client-token")
    for member, shape, flag in (
        ("ComponentDescription", "ComponentDescription", "--component-description"),
        ("S3OutputLocation", "S3Location", "--s3-output"),
        ("Tags", "TagList", "--tag"),
    ):
        if member in greengrass:
            check_member(shape, member, greengrass[member], flag)
    extensions = JobExtensions(
        output_dir=args.output.expanduser().absolute(),
        benchmark_runs=args.benchmark_runs,
        device=remote_device(args.device_rpc, args.rpc_tracker, args.rpc_key),
        register=not args.no_register,
        compile_cache_dir=args.compile_cache.expanduser().absolute() if args.compile_cache else None,
        use_compile_cache=not args.no_cache,
        max_ratio=args.max_ratio,
    )
    fleet_targets = tuple(fleet_target(target_selection(one), greengrass) for _, one in fleet) if len(fleet) > 1 else ()
    if fleet_targets:
        try:
            check_distinct_platforms([t.target for t in fleet_targets])
        except ValidationException as exc:
            raise ValidationException(f"--target: {exc.message}", field="--target") from None
    return BuildRequest(
        project=args.project_name,
        model_path=model,
        spec_path=spec,
        configuration={"Greengrass": greengrass},
        extensions=extensions,
        client_token=args.client_token,
        fleet=fleet_targets,
        target=selection.target if selection else None,
        tuning_trials=selection.tuning_trials if selection else 0,
    )


def target_selection(args: argparse.Namespace) -> TargetSelection:
    """The target flags and --tuning-trials: the flag's trials replace any the CompilerOptions name, as the key
    'tuning-trials' would, so a build's job records them as an API call would."""
    trials = _tuning_trials(args)
    selection = target_from_args(args)
    return selection if trials is None else replace(selection, tuning_trials=trials)


def _tuning_trials(args: argparse.Namespace) -> int | None:
    if args.tuning_trials is None:
        return None
    if args.target_device is not None:
        raise ValidationException(
            "--tuning-trials is not allowed with --target-device (a GPU target)", field="--tuning-trials"
        )
    try:
        return check_tuning_trials(args.tuning_trials)
    except ValidationException as exc:
        raise ValidationException(f"--tuning-trials: {exc.message}", field="--tuning-trials") from None


def _s3_location(uri: str | None) -> dict | None:
    if uri is None:
        return None
    match = re.fullmatch(r"s3://([^/]+)/*(.*)", uri)
    if not match:
        raise ValidationException(
            f"--s3-output must be s3://BUCKET or s3://BUCKET/PREFIX, got {uri!r}", field="--s3-output"
        )
    prefix = match[2].rstrip("/")
    return {"Bucket": match[1], **({"Prefix": prefix} if prefix else {})}


def _tags(pairs: list[str]) -> list[dict] | None:
    tags = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValidationException(f"--tag must be KEY=VALUE, got {pair!r}", field="--tag")
        if any(t["Key"] == key for t in tags):
            raise ValidationException(f"--tag: duplicate tag key {key!r}", field="--tag")
        tags.append({"Key": key, "Value": value})
    return tags or None


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
    if report.tvm is None:
        return f"latency:     {report.not_measured} (neither TVM nor ONNX Runtime was timed)"
    ort = f"ONNX Runtime p50 {report.onnxruntime.p50_ms:.3f} ms"
    where = " (emulated: not device timings)" if report.emulated else ""
    return f"latency:     TVM p50 {report.tvm.p50_ms:.3f} ms{where}, {ort} ({report.threads} threads, {report.tvm.runs} runs)"


def register_build_model(request: BuildRequest) -> str:
    """Check the model here (cheap, and fails before any record), then register it or reuse its identical version."""
    import tempfile

    from compilers.frontends.intake import import_model
    from packager.service.jobs import api

    progress(f"reading {request.model_path}")
    cache_dir = compile_cache_dir(request.extensions)
    imported = import_model(request.model_path, request.spec_path, cache_dir=cache_dir)
    with tempfile.TemporaryDirectory(prefix="packager-build-") as scratch:
        model_file, spec_file = request.model_path, request.spec_path
        if Path(model_file).suffix.lower() != ".onnx":  # PyTorch: the store keeps the ONNX graph intake made of it
            model_file = Path(scratch) / "model.onnx"
            model_file.write_bytes(imported.onnx_bytes)
        if spec_file is None:  # inferred, or read from anomalib's metadata.json: the job gets it spelled out
            spec_file = Path(scratch) / "model_spec.json"
            spec_file.write_text(imported.spec.to_json())
        registered = api.register_model(
            request.project,
            model_file,
            spec_file,
            create_project=True,
            reuse_identical=True,
            intake_cache_dir=cache_dir,
        )
    version = registered["ModelMetadata"]["ModelVersion"]
    progress(f"model version {version} of project {request.project} (sha256 {registered['ModelSha256'][:12]})")
    return version


def run(args: argparse.Namespace) -> int:
    # The wait's modules are imported before it starts. A Ctrl-C that lands inside an import, in the exec() that
    # dataclasses run, makes CPython 3.11 kill itself with SIGINT at exit even after the handler below returned 130.
    import packager.service.jobs.progress  # noqa: F401
    import packager.service.jobs.results  # noqa: F401

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


def _run_one(request: BuildRequest, model_version: str, summary_json: str | None) -> int:
    job_name = start_build_job(request, model_version)
    try:
        progress(f"started job {job_name} in project {request.project}")
        result = wait_for_build_job(request.project, job_name)
    except KeyboardInterrupt:
        return interrupted(request.project, [job_name])
    print_summary(result, out=sys.stderr if summary_json == "-" else None)
    if summary_json:
        platform = request.target.greengrass
        row = row_from_job(result, f"{platform.os}/{platform.architecture}")
        write_summary_json(
            succeeded_document(
                result.component_name,
                result.component_version,
                result.recipe_path,
                [row],
                result.component_version_arn,
                result.wall_seconds,
                request.extensions.max_ratio,
            ),
            summary_json,
        )
    return 0


COMMAND = Command(
    name="build", help="package a trained model as a Greengrass v2 component", add_arguments=add_arguments, run=run
)
