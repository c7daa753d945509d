"""What build's one-target and fleet paths share: the checked request, and starting and waiting for a job.

The jobs API is imported where it is used, so `python -m packager --help` does not load it (nor numpy).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from packager.commands.arguments import flag_error, flag_for_member
from packager.errors import InternalServerException, ValidationException
from packager.home import packager_home
from packager.service.jobs.extensions import JobExtensions
from targets import Target

POLL_SECONDS = 0.1  # how often build looks at its job (a look is one SQLite read)


@dataclass(frozen=True)
class FleetTarget:
    """One of several targets: its catalog record, and the job configuration that builds it alone."""

    target: Target
    configuration: dict  # ModelPackagingConfiguration without S3OutputLocation or Tags: build publishes the whole


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
    tuning_trials: int = 0  # the one target's (also in the configuration's CompilerOptions, as the API records it)


def compile_cache_dir(extensions: JobExtensions) -> Path | None:
    """Where the job's compile cache is, so that build's own intake of the model (and what publishing learns about
    the archives) is kept there too; None with --no-cache."""
    from compilers.compile_cache import default_compile_cache_dir

    if not extensions.use_compile_cache:
        return None
    return extensions.compile_cache_dir or default_compile_cache_dir(packager_home())


def progress(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


def interrupted(project: str, job_names: list[str]) -> int:
    for job_name in job_names:
        print(
            f"interrupted: job {job_name} goes on in the background; follow it with: python -m packager "
            f"describe-model-packaging-job --project-name {project} --job-name {job_name}",
            file=sys.stderr,
        )
    return 130


def start_build_job(request: BuildRequest, model_version: str) -> str:
    from packager.service.jobs import api

    params = {"ProjectName": request.project, "ModelVersion": model_version, "Configuration": request.configuration}
    if request.client_token is not None:
        params["ClientToken"] = request.client_token
    try:
        return api.start_local_packaging_job(request.extensions, **params)["JobName"]
    except ValidationException as exc:
        if flag_for_member(exc.field) is None:
            raise
        raise flag_error(exc) from None


def wait_for_build_job(project: str, job_name: str, poll_seconds: float | None = None):
    """Wait with progress on stderr; a SUCCEEDED job's JobResult, or the error a FAILED one ended with is raised."""
    from packager.service.jobs import api
    from packager.service.jobs.progress import ProgressReader
    from packager.service.jobs.results import job_failure, read_result

    home = packager_home()
    steps = ProgressReader(api.job_dir(home, project, job_name))

    def show(_description: dict) -> None:
        for line in steps.new_lines():
            progress(line)

    final = api.wait_for_model_packaging_job(
        project, job_name, poll_seconds=poll_seconds or POLL_SECONDS, on_update=show
    )
    show(final)
    if final["ModelPackagingDescription"]["Status"] == "FAILED":
        raise job_failure(home, project, job_name)
    result = read_result(api.job_dir(home, project, job_name))
    if result is None:
        raise InternalServerException(
            f"job {job_name} SUCCEEDED but left no {api.job_dir(home, project, job_name)}/result.json"
        )
    return result
