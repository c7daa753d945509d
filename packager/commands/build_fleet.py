"""build with several targets: a job per target, then one component version with a manifest per platform.

The jobs are the service's own, one target each, started with build's options into scratch directories; when every one
has succeeded, their artifacts become one component (packager.build.pipeline.package_targets), published as a whole.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from packager.commands.arguments import TargetSelection
from packager.commands.build_jobs import (
    BuildRequest,
    FleetTarget,
    compile_cache_dir,
    interrupted,
    progress,
    start_build_job,
    wait_for_build_job,
)
from packager.commands.build_summary import print_fleet_summary, row_from_job, succeeded_document, write_summary_json
from packager.errors import PackagerError, ValidationException
from packager.service.jobs.members import target_members
from targets.catalog import TARGET_DEVICES


def fleet_from_args(args: argparse.Namespace) -> list[tuple[str, argparse.Namespace]]:
    """Each target the flags name, as (name, the one-target flags for it); [] for the default (this machine).
    ``args`` is left as it is: each target gets its own copy of the flags."""
    names = list(args.targets)
    if args.targets and (args.target_device or args.target_platform or args.accelerator):
        raise ValidationException(
            "--target cannot be mixed with --target-device/--target-platform/--accelerator; "
            "name every target with --target",
            field="--target",
        )
    if args.target_device is not None and args.target_platform is not None:
        names = [args.target_device, args.target_platform + (f"/{args.accelerator}" if args.accelerator else "")]
    if not names:
        return [] if args.target_device is None and args.target_platform is None else [("", args)]
    if len(set(names)) != len(names):
        raise ValidationException(
            f"--target: {min(n for n in set(names) if names.count(n) > 1)} is named twice", field="--target"
        )
    fleet = []
    for name in names:
        one = argparse.Namespace(
            **{**vars(args), "targets": [], "target_device": None, "target_platform": None, "accelerator": None}
        )
        if name in TARGET_DEVICES:
            one.target_device, one.compiler_options = name, None if len(names) > 1 else args.compiler_options
            if one.tuning_trials is not None and len(names) > 1:
                one.tuning_trials = None  # GPU targets take no tuning; the CPU targets of the fleet do
        else:
            parts = name.split("/")
            one.target_platform, one.accelerator = "/".join(parts[:2]), (parts[2] if len(parts) > 2 else None)
        fleet.append((name, one))
    if len(fleet) > 1:
        for flag, value in (
            ("--device-rpc", args.device_rpc),
            ("--rpc-tracker", args.rpc_tracker),
            ("--client-token", args.client_token),
        ):
            if value is not None:
                raise ValidationException(f"{flag} applies to one target; this build names {len(fleet)}", field=flag)
    return fleet


def fleet_target(selection: TargetSelection, greengrass: dict) -> FleetTarget:
    """One target's job: the component's name, version and description, and this target alone."""
    shared = {
        k: greengrass[k] for k in ("ComponentName", "ComponentVersion", "ComponentDescription") if k in greengrass
    }
    members = target_members(selection.request, selection.tuning_trials)
    return FleetTarget(target=selection.target, configuration={"Greengrass": {**shared, **members}})


def run_fleet(request: BuildRequest, model_version: str, summary_json: str | None) -> int:
    """A job per target, in parallel as the worker slots allow, each into its own scratch directory; then one
    component with a manifest per platform, bundled (and published) only when every target succeeded."""
    import tempfile
    import time
    from dataclasses import replace

    from packager.build.pipeline import package_targets
    from packager.greengrass.bundle import ComponentIdentity, TargetBuild, target_slug
    from packager.service.jobs import api

    started = time.perf_counter()
    output = request.extensions.output_dir
    output.mkdir(parents=True, exist_ok=True)
    greengrass = request.configuration["Greengrass"]
    with tempfile.TemporaryDirectory(prefix=".targets-", dir=output) as staging:
        jobs = []
        for fleet_target in request.fleet:
            extensions = replace(
                request.extensions, output_dir=Path(staging) / target_slug(fleet_target.target), register=False
            )
            job_request = replace(request, configuration=fleet_target.configuration, extensions=extensions, fleet=())
            jobs.append((fleet_target, start_build_job(job_request, model_version)))
            progress(f"started job {jobs[-1][1]} for {fleet_target.target.name} in project {request.project}")
        results, failures = [], []
        try:
            for fleet_target, job_name in jobs:
                try:
                    results.append((fleet_target, wait_for_build_job(request.project, job_name)))
                except PackagerError as exc:  # wait for every job, so none is left running; then report the first
                    failures.append((fleet_target, exc))
        except KeyboardInterrupt:
            return interrupted(request.project, [name for _, name in jobs])
        if failures:
            fleet_target, error = failures[0]
            error.message = f"{fleet_target.target.name}: {error.message}; nothing was bundled"
            error.args = (error.message,)
            raise error
        builds = [
            TargetBuild(
                target=t.target,
                archive=r.artifact_path,
                report=r.benchmark,
                known_digest=(r.artifact_sha256_b64, r.artifact_size),
            )
            for t, r in results
        ]
        version = results[0][1].component_version
        model_arn = api.describe_model(ProjectName=request.project, ModelVersion=model_version)["ModelDescription"][
            "ModelArn"
        ]
        component = ComponentIdentity(
            greengrass["ComponentName"], version, greengrass.get("ComponentDescription"), model_arn
        )
        location = _bundle_location(greengrass)
        s3_client = greengrass_client = sts_client = None
        register = request.extensions.register and location is not None
        if location is not None:
            from packager.greengrass.publish.clients import make_clients, make_sts_client

            s3_client, greengrass_client = make_clients(None)
            sts_client = make_sts_client(greengrass_client.meta.region_name) if register else None
        component_bundle, arn = package_targets(
            builds,
            component,
            output,
            location,
            tags=_tag_dict(greengrass),
            register=register,
            s3_client=s3_client,
            greengrass_client=greengrass_client,
            sts_client=sts_client,
            progress=progress,
            archive_cache=cache / "archives" if (cache := compile_cache_dir(request.extensions)) else None,
        )
    rows = [
        row_from_job(r, f"{t.target.greengrass.os}/{t.target.greengrass.architecture}", artifact, report_path)
        for (t, r), artifact, report_path in zip(results, component_bundle.artifacts, component_bundle.reports)
    ]
    wall = time.perf_counter() - started
    print_fleet_summary(
        component.name,
        component.version,
        component_bundle.recipe_path,
        rows,
        arn,
        wall,
        out=sys.stderr if summary_json == "-" else None,
    )
    if summary_json:
        write_summary_json(
            succeeded_document(
                component.name,
                component.version,
                component_bundle.recipe_path,
                rows,
                arn,
                wall,
                request.extensions.max_ratio,
            ),
            summary_json,
        )
    return 0


def _bundle_location(greengrass: dict):
    from packager.greengrass.bundle import S3Location

    location = greengrass.get("S3OutputLocation")
    return S3Location(location["Bucket"], location.get("Prefix", "")) if location else None


def _tag_dict(greengrass: dict) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in greengrass.get("Tags") or []}
