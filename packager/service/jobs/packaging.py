"""Packaging jobs: StartModelPackagingJob (and build's start_local_packaging_job), Describe, List, and a waiter.

The configuration is parsed once, here at the boundary (packager/service/jobs/configuration.py); the job record keeps
the request's own configuration, and the worker rebuilds the typed object from it with ``load_configuration``.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from packager.errors import ConflictException, PackagerError, ResourceNotFoundException, ValidationException
from packager.service.jobs import liveness
from packager.service.jobs.configuration import PackagingConfiguration, load_configuration, parse_configuration
from packager.service.jobs.extensions import JobExtensions
from packager.service.jobs.launcher import spawn_worker
from packager.service.jobs.operations import (
    drop_none,
    idempotent,
    model_or_404,
    opened_store,
    page,
    project_or_404,
    remember,
    timestamp,
)
from packager.service.jobs.records import ACTIVE_STATES, FINAL_STATES, ClientTokenTaken, JobRecord
from packager.service.jobs.store import Store
from packager.service.jobs.validation import validate_input
from targets import Target

LOCAL_ONLY_OPTIONAL = frozenset({"Configuration.Greengrass.S3OutputLocation"})
PACKAGING_METHOD = "Greengrass"
NO_REGISTER_VARIABLE = "PACKAGER_NO_REGISTER"


def register_by_default() -> bool:
    """Whether a job started without saying registers its component: yes, unless PACKAGER_NO_REGISTER=1
    (for packager.client() and the CLI's commands; `serve` passes its own setting)."""
    return os.environ.get(NO_REGISTER_VARIABLE, "") not in ("1", "true", "yes")


def _job_metadata(job: JobRecord) -> dict:
    return drop_none(
        {
            "JobName": job.name,
            "ProjectName": job.project,
            "ModelVersion": job.model_version,
            "ModelPackagingJobDescription": job.description,
            "ModelPackagingMethod": PACKAGING_METHOD,
            "Status": job.status,
            "StatusMessage": job.status_message,
            "CreationTimestamp": timestamp(job.created),
            "LastUpdatedTimestamp": timestamp(job.updated),
        }
    )


def _job_description(job: JobRecord) -> dict:
    doc = _job_metadata(job)
    doc["ModelPackagingConfiguration"] = job.configuration
    doc["ModelPackagingOutputDetails"] = {
        "Greengrass": drop_none(
            {
                "ComponentVersionArn": job.component_arn,
                "ComponentName": job.component_name,
                "ComponentVersion": job.component_version,
            }
        )
    }
    return doc


def _new_job_name() -> str:
    return f"job-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(4)}"


def start_model_packaging_job(*, home: Path | str | None = None, register: bool | None = None, **params) -> dict:
    """Validate, record the job as CREATED and start its worker process; returns the JobName at once.
    ``register``: create the Greengrass component version after the upload (None: register_by_default())."""
    validate_input("StartModelPackagingJob", params)
    return _start_job(home, params, register_by_default() if register is None else register, extensions=None)


def start_local_packaging_job(extensions: JobExtensions, *, home: Path | str | None = None, **params) -> dict:
    """`build`'s way in: StartModelPackagingJob plus options the service lacks, and S3OutputLocation may be left out
    (the job then only writes the local bundle). Same store, names, tokens, conflict rules and worker as the API's."""
    validate_input("StartModelPackagingJob", params, optional=LOCAL_ONLY_OPTIONAL)
    if extensions.output_dir is not None and not extensions.output_dir.is_absolute():
        raise ValidationException(
            f"the output directory must be absolute, got {extensions.output_dir}", field="OutputDir"
        )
    register = extensions.register and "S3OutputLocation" in params["Configuration"]["Greengrass"]
    return _start_job(home, params, register, extensions)


def _start_job(home: Path | str | None, params: dict, register: bool, extensions: JobExtensions | None) -> dict:
    configuration = parse_configuration(params["Configuration"])
    # A build's own options are part of its request: the same ClientToken with other options is a conflict.
    fingerprinted = params if extensions is None else {**params, "x-packager-extensions": extensions.to_dict()}
    with opened_store(home) as store:
        while True:
            with store.transaction():
                earlier = idempotent(store, "StartModelPackagingJob", fingerprinted, "MODEL_PACKAGE_JOB")
            if earlier is not None:
                _retry_if_failed(store, params["ProjectName"], earlier["JobName"])
                return earlier
            try:
                project, job_name = _insert_job(store, params, fingerprinted, configuration, register, extensions)
                break
            except ClientTokenTaken:
                continue  # another server recorded the same token meanwhile: answer with its job
        _launch_worker(store, project, job_name, configuration.target)
        return {"JobName": job_name}


def _insert_job(
    store: Store,
    params: dict,
    fingerprinted: dict,
    configuration: PackagingConfiguration,
    register: bool,
    extensions: JobExtensions | None,
) -> tuple[str, str]:
    """Record the job as CREATED, in one transaction with its ClientToken; returns (project, job name)."""
    with store.transaction():
        project = project_or_404(store, params["ProjectName"]).name
        model = model_or_404(store, project, params["ModelVersion"])
        job_name = params.get("JobName") or _new_job_name()
        # The token first: a second server racing with the same token waits on it, then retries and finds this job.
        remember(store, "StartModelPackagingJob", fingerprinted, {"JobName": job_name})
        if store.job(project, job_name) is not None:
            raise ConflictException(
                f"a packaging job named {job_name!r} already exists in project {project!r}",
                resource_id=job_name,
                resource_type="MODEL_PACKAGE_JOB",
            )
        version = configuration.component_version or f"{model.version}.0.0"
        # Published Greengrass versions are immutable, so only jobs with an S3 output hold or need a component version;
        # a local-only build may be repeated and overwrites its local bundle.
        holder = store.component_job(configuration.component_name, version) if configuration.s3_location else None
        if holder is not None:
            raise ConflictException(
                f"component {configuration.component_name} version {version} was already produced by job "
                f"{holder.name} in project {holder.project}",
                resource_id=holder.name,
                resource_type="MODEL_PACKAGE_JOB",
            )
        stored_config = {"Greengrass": {**params["Configuration"]["Greengrass"], "ComponentVersion": version}}
        now = time.time()
        store.insert_job(
            JobRecord(
                seq=0,
                project=project,
                name=job_name,
                model_version=str(model.version),
                configuration=stored_config,
                description=params.get("Description"),
                status="CREATED",
                status_message="Waiting for a worker.",
                created=now,
                updated=now,
                component_name=configuration.component_name,
                component_version=version,
                component_arn=None,
                register=register,
                pid=None,
                pid_start=None,
                heartbeat=None,
                extensions=extensions.to_dict() if extensions is not None else None,
            )
        )
    return project, job_name


def _launch_worker(store: Store, project: str, job_name: str, target: Target) -> None:
    """Start the job: on the team's Celery queue when PACKAGER_BROKER_URL is set, else in a local worker process."""
    broker = os.environ.get("PACKAGER_BROKER_URL")
    if broker:
        _enqueue(store, broker, project, job_name, target)
        return
    try:
        pid, pid_start = spawn_worker(store.home, project, job_name)
    except OSError as exc:
        with store.transaction():
            store.update_job(
                project,
                job_name,
                only_if_status=ACTIVE_STATES,
                status="FAILED",
                updated=time.time(),
                status_message=f"Could not start the job's worker process: {exc}",
            )
        return
    with store.transaction():
        store.update_job(project, job_name, only_if_status=ACTIVE_STATES, pid=pid, pid_start=pid_start)


def _enqueue(store: Store, broker: str, project: str, job_name: str, target: Target) -> None:
    from packager.service.jobs import celery_engine  # celery is only needed with a broker

    queue = celery_engine.queue_for(target)
    with store.transaction():
        store.update_job(
            project,
            job_name,
            only_if_status=("CREATED",),
            queue=queue,
            worker=None,
            status_message=f"Queued on {queue}; waiting for a worker.",
        )
    try:
        celery_engine.enqueue(broker, project, job_name, queue)
    except Exception as exc:  # noqa: BLE001  (kombu raises its own and the socket's errors; any of them means not queued)
        with store.transaction():
            store.update_job(
                project,
                job_name,
                only_if_status=("CREATED",),
                status="FAILED",
                updated=time.time(),
                status_message=f"Could not queue the job on {queue}: {type(exc).__name__}: {exc}"[:500],
            )


def _retry_if_failed(store: Store, project: str, job_name: str) -> None:
    """The same ClientToken again after a FAILED run (an upload cut off, a registration refused) runs the same job
    once more; a job still going or already SUCCEEDED is left alone, so the call stays idempotent."""
    job = store.job(project, job_name)
    if job is None or liveness.settle(store, job).status != "FAILED":
        return
    with store.transaction():
        restarted = store.update_job(
            project,
            job_name,
            only_if_status=("FAILED",),
            status="CREATED",
            updated=time.time(),
            status_message="Retrying with the same ClientToken; waiting for a worker.",
            pid=None,
            pid_start=None,
            heartbeat=None,
            error_type=None,
            component_arn=None,
            deliveries=0,
        )
    if restarted:
        _launch_worker(store, project, job_name, load_configuration(job.configuration).target)


def describe_model_packaging_job(*, home: Path | str | None = None, **params) -> dict:
    validate_input("DescribeModelPackagingJob", params)
    with opened_store(home) as store:
        project = project_or_404(store, params["ProjectName"]).name
        job = store.job(project, params["JobName"])
        if job is None:
            raise ResourceNotFoundException(
                f"packaging job {params['JobName']!r} does not exist in project {project!r}",
                resource_id=params["JobName"],
                resource_type="MODEL_PACKAGE_JOB",
            )
        return {"ModelPackagingDescription": _job_description(liveness.settle(store, job))}


def list_model_packaging_jobs(*, home: Path | str | None = None, **params) -> dict:
    validate_input("ListModelPackagingJobs", params)
    with opened_store(home) as store:
        project = project_or_404(store, params["ProjectName"]).name
        return page(
            store,
            params,
            "ListModelPackagingJobs",
            project,
            "ModelPackagingJobs",
            lambda after, limit: store.jobs(project, after, limit),
            lambda job: _job_metadata(liveness.settle(store, job)),
        )


def wait_for_model_packaging_job(
    project: str,
    job_name: str,
    *,
    home: Path | str | None = None,
    poll_seconds: float = 1.0,
    timeout_seconds: float | None = None,
    on_update: Callable[[dict], None] | None = None,
) -> dict:
    """Poll DescribeModelPackagingJob until SUCCEEDED or FAILED; calls on_update with each changed description."""
    deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
    last = None
    while True:
        description = describe_model_packaging_job(home=home, ProjectName=project, JobName=job_name)[
            "ModelPackagingDescription"
        ]
        seen = (description["Status"], description.get("StatusMessage"))
        if seen != last and on_update is not None:
            on_update(description)
        last = seen
        if description["Status"] in FINAL_STATES:
            return {"ModelPackagingDescription": description}
        if deadline is not None and time.monotonic() >= deadline:
            raise PackagerError(
                f"timed out after {timeout_seconds:g} s waiting for job {job_name}; it is still {seen[0]}"
            )
        time.sleep(poll_seconds)
