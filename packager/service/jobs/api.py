"""The Lookout for Vision operations, once: the CLI, the Python client and the REST server all call these.

Each operation takes the service's own parameter names (``ProjectName=...``), validates them against
the service model, and returns the service's response dict (timestamps as aware datetimes).
``home`` picks the store; it defaults to $PACKAGER_HOME.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import time
from pathlib import Path
from typing import Callable

from packager.errors import ConflictException, PackagerError, ResourceNotFoundException, ValidationException
from packager.service.jobs import liveness, pagination
from packager.service.jobs.extensions import JobExtensions
from packager.service.jobs.launcher import job_dir, spawn_worker
from packager.service.jobs.store import (
    ACTIVE_STATES, FINAL_STATES, TOKEN_LIFETIME_S, ClientTokenTaken, JobRecord, ModelRecord, Store, open_store,
)
from packager.home import packager_home
from packager.service.jobs.validation import parse_configuration, validate_input, validate_shape

LOCAL_ONLY_OPTIONAL = frozenset({"Configuration.Greengrass.S3OutputLocation"})
DEFAULT_PAGE_SIZE = 100
PACKAGING_METHOD = "Greengrass"
_ACCOUNT = "000000000000"  # no AWS account behind a local store; ARNs still need the field

__all__ = [
    "create_project", "delete_model", "delete_project", "describe_model", "describe_model_packaging_job", "describe_project",
    "job_dir", "list_model_packaging_jobs", "list_models", "list_projects", "register_model", "start_local_packaging_job",
    "start_model_packaging_job",
    "wait_for_model_packaging_job", "OPERATIONS",
]


def _region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def service_region() -> str:
    """The region in this store's ARNs; the REST server accepts requests signed for it alone."""
    return _region()


def _ts(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc)


def _drop_none(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if v is not None}


def _project_or_404(store: Store, name: str):
    project = store.project(name)
    if project is None:
        raise ResourceNotFoundException(f"project {name!r} does not exist", resource_id=name, resource_type="PROJECT")
    return project


def _model_or_404(store: Store, project: str, version: str) -> ModelRecord:
    model = store.latest_model(project) if version == "latest" else store.model(project, int(version))
    if model is None:
        what = "has no model versions" if version == "latest" else f"has no model version {version}"
        raise ResourceNotFoundException(f"project {project!r} {what}", resource_id=f"{project}/{version}", resource_type="MODEL")
    return model


def _idempotent(store: Store, operation: str, params: dict, resource_type: str) -> dict | None:
    """The earlier response for this ClientToken and these parameters, or None for a new request."""
    token = params.get("ClientToken")
    if token is None:
        return None
    earlier = store.token(operation, token, newer_than=time.time() - TOKEN_LIFETIME_S)
    if earlier is None:
        return None
    if earlier.params_hash != pagination.params_fingerprint(params):
        raise ConflictException(f"ClientToken {token!r} was already used with different parameters for {operation}",
                                resource_id=token, resource_type=resource_type)
    return earlier.result


def _remember(store: Store, operation: str, params: dict, result: dict) -> None:
    if params.get("ClientToken") is not None:
        store.put_token(operation, params["ClientToken"], pagination.params_fingerprint(params), result)


# projects
def _project_metadata(project) -> dict:
    return {"ProjectArn": project.arn, "ProjectName": project.name, "CreationTimestamp": _ts(project.created)}


def create_project(*, home: Path | str | None = None, **params) -> dict:
    validate_input("CreateProject", params)
    store = open_store(home)
    try:
        while True:
            try:
                with store.transaction():
                    earlier = _idempotent(store, "CreateProject", params, "PROJECT")
                    if earlier is not None:
                        return {"ProjectMetadata": _project_metadata(_project_or_404(store, earlier["ProjectName"]))}
                    name = params["ProjectName"]
                    # The token first, as for jobs: a racing server with the same token waits on it, then finds this one.
                    _remember(store, "CreateProject", params, {"ProjectName": name})
                    if store.project(name) is not None:
                        raise ConflictException(f"project {name!r} already exists", resource_id=name, resource_type="PROJECT")
                    project = store.insert_project(name, f"arn:aws:lookoutvision:{_region()}:{_ACCOUNT}:project/{name}",
                                                   time.time())
                return {"ProjectMetadata": _project_metadata(project)}
            except ClientTokenTaken:
                continue
    finally:
        store.close()


def describe_project(*, home: Path | str | None = None, **params) -> dict:
    validate_input("DescribeProject", params)
    store = open_store(home)
    try:
        project = _project_or_404(store, params["ProjectName"])
        return {"ProjectDescription": {**_project_metadata(project), "Datasets": []}}
    finally:
        store.close()


def list_projects(*, home: Path | str | None = None, **params) -> dict:
    validate_input("ListProjects", params)
    store = open_store(home)
    try:
        after = pagination.decode_token(store.pagination_secret(), params.get("NextToken"), "ListProjects", "")
        limit = params.get("MaxResults", DEFAULT_PAGE_SIZE)
        rows = store.projects(after, limit + 1)
        response = {"Projects": [_project_metadata(p) for p in rows[:limit]]}
        if len(rows) > limit:
            response["NextToken"] = pagination.encode_token(store.pagination_secret(), "ListProjects", "", rows[limit - 1].seq)
        return response
    finally:
        store.close()


def delete_project(*, home: Path | str | None = None, **params) -> dict:
    """Deletes the project with its model versions and job records; refused while one of its jobs runs."""
    validate_input("DeleteProject", params)
    store = open_store(home)
    try:
        with store.transaction():
            earlier = _idempotent(store, "DeleteProject", params, "PROJECT")
            if earlier is not None:
                return earlier
            project = _project_or_404(store, params["ProjectName"])
            active = store.active_jobs(project.name)
            if active:
                raise ConflictException(f"project {project.name!r} has a packaging job in progress ({active[0].name})",
                                        resource_id=active[0].name, resource_type="MODEL_PACKAGE_JOB")
            store.delete_project(project.name)
            response = {"ProjectArn": project.arn}
            _remember(store, "DeleteProject", params, response)
        return response
    finally:
        store.close()


# model versions
def _model_metadata(model: ModelRecord) -> dict:
    return _drop_none({
        "CreationTimestamp": _ts(model.created), "ModelVersion": str(model.version), "ModelArn": model.arn,
        "Description": model.description, "Status": "TRAINED", "StatusMessage": "Registered trained model.",
    })


def register_model(project: str, model_path: Path | str, spec_path: Path | str | None = None, *, description: str | None = None,
                   create_project: bool = False, reuse_identical: bool = False, home: Path | str | None = None,
                   intake_cache_dir: Path | None = None) -> dict:
    """Our extension: record a trained ONNX model (plus its spec) as the project's next model version.
    With reuse_identical, the project's newest version with the same model and spec bytes is returned instead.
    With intake_cache_dir (a compile cache directory), an unchanged model's intake check is not run again."""
    from compilers.frontends.intake import import_model
    from packager.service.jobs.model_files import check_model_file, store_file, store_model
    from packager.service.jobs.shared_models import model_bucket, model_files, upload_model_files

    validate_shape("ProjectName", project, "ProjectName")
    if description is not None:
        validate_shape("ModelDescriptionMessage", description, "Description")
    if not isinstance(create_project, bool):
        raise ValidationException(f"CreateProject must be a boolean, got {type(create_project).__name__}", field="CreateProject")
    model_path = Path(model_path)
    check_model_file(model_path)
    # build's intake checks, before any record
    import_model(model_path, Path(spec_path) if spec_path is not None else None, cache_dir=intake_cache_dir)
    root = packager_home(home)
    root.mkdir(parents=True, exist_ok=True)
    model_file, model_digest = store_model(root, model_path)
    spec_file = store_file(root, Path(spec_path), ".json") if spec_path is not None else None
    shared = model_bucket()
    if shared is not None:  # other build hosts fetch it from there; uploaded before the version is recorded
        from packager.greengrass.publish.clients import make_clients

        upload_model_files(make_clients(None)[0], shared, root, model_files(root, model_file, spec_file))
    store = open_store(root)
    try:
        with store.transaction():
            if store.project(project) is None and create_project:
                store.insert_project(project, f"arn:aws:lookoutvision:{_region()}:{_ACCOUNT}:project/{project}", time.time())
            _project_or_404(store, project)
            model = store.model_with_files(project, model_file, spec_file) if reuse_identical else None
            if model is None:
                version = store.next_model_version(project)
                model = store.insert_model(ModelRecord(
                    seq=0, project=project, version=version, created=time.time(), description=description,
                    arn=f"arn:aws:lookoutvision:{_region()}:{_ACCOUNT}:model/{project}/{version}",
                    model_file=model_file, spec_file=spec_file))
        return {"ModelMetadata": _model_metadata(model), "ModelSha256": model_digest}
    finally:
        store.close()


def describe_model(*, home: Path | str | None = None, **params) -> dict:
    validate_input("DescribeModel", params)
    store = open_store(home)
    try:
        _project_or_404(store, params["ProjectName"])
        model = _model_or_404(store, params["ProjectName"], params["ModelVersion"])
        return {"ModelDescription": _model_metadata(model)}
    finally:
        store.close()


def list_models(*, home: Path | str | None = None, **params) -> dict:
    validate_input("ListModels", params)
    store = open_store(home)
    try:
        project = _project_or_404(store, params["ProjectName"]).name
        after = pagination.decode_token(store.pagination_secret(), params.get("NextToken"), "ListModels", project)
        limit = params.get("MaxResults", DEFAULT_PAGE_SIZE)
        rows = store.models(project, after, limit + 1)
        response = {"Models": [_model_metadata(m) for m in rows[:limit]]}
        if len(rows) > limit:
            response["NextToken"] = pagination.encode_token(store.pagination_secret(), "ListModels", project, rows[limit - 1].seq)
        return response
    finally:
        store.close()


def delete_model(*, home: Path | str | None = None, **params) -> dict:
    validate_input("DeleteModel", params)
    store = open_store(home)
    try:
        with store.transaction():
            earlier = _idempotent(store, "DeleteModel", params, "MODEL")
            if earlier is not None:
                return earlier
            project = _project_or_404(store, params["ProjectName"]).name
            model = _model_or_404(store, project, params["ModelVersion"])
            active = store.active_jobs(project, model.version)
            if active:
                raise ConflictException(f"model version {model.version} has a packaging job in progress ({active[0].name})",
                                        resource_id=active[0].name, resource_type="MODEL_PACKAGE_JOB")
            store.delete_model(project, model.version)
            response = {"ModelArn": model.arn}
            _remember(store, "DeleteModel", params, response)
        return response
    finally:
        store.close()


# packaging jobs
def _job_metadata(job: JobRecord) -> dict:
    return _drop_none({
        "JobName": job.name, "ProjectName": job.project, "ModelVersion": job.model_version,
        "ModelPackagingJobDescription": job.description, "ModelPackagingMethod": PACKAGING_METHOD,
        "Status": job.status, "StatusMessage": job.status_message,
        "CreationTimestamp": _ts(job.created), "LastUpdatedTimestamp": _ts(job.updated),
    })


def _job_description(job: JobRecord) -> dict:
    doc = _job_metadata(job)
    doc["ModelPackagingConfiguration"] = job.configuration
    doc["ModelPackagingOutputDetails"] = {"Greengrass": _drop_none({
        "ComponentVersionArn": job.component_arn, "ComponentName": job.component_name, "ComponentVersion": job.component_version,
    })}
    return doc


def _new_job_name() -> str:
    return f"job-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(4)}"


def start_model_packaging_job(*, home: Path | str | None = None, **params) -> dict:
    """Validate, record the job as CREATED and start its worker process; returns the JobName at once."""
    validate_input("StartModelPackagingJob", params)
    register = os.environ.get("PACKAGER_NO_REGISTER", "") not in ("1", "true", "yes")
    return _start_job(home, params, register, extensions=None)


def start_local_packaging_job(extensions: JobExtensions, *, home: Path | str | None = None, **params) -> dict:
    """`build`'s way in: StartModelPackagingJob plus options the service lacks, and S3OutputLocation may be left out
    (the job then only writes the local bundle). Same store, names, tokens, conflict rules and worker as the API's."""
    validate_input("StartModelPackagingJob", params, optional=LOCAL_ONLY_OPTIONAL)
    if extensions.output_dir is not None and not extensions.output_dir.is_absolute():
        raise ValidationException(f"the output directory must be absolute, got {extensions.output_dir}", field="OutputDir")
    register = extensions.register and "S3OutputLocation" in params["Configuration"]["Greengrass"]
    return _start_job(home, params, register, extensions)


def _start_job(home: Path | str | None, params: dict, register: bool, extensions: JobExtensions | None) -> dict:
    configuration = parse_configuration(params["Configuration"])
    # A build's own options are part of its request: the same ClientToken with other options is a conflict.
    fingerprinted = params if extensions is None else {**params, "x-packager-extensions": extensions.to_dict()}
    store = open_store(home)
    try:
        while True:
            with store.transaction():
                earlier = _idempotent(store, "StartModelPackagingJob", fingerprinted, "MODEL_PACKAGE_JOB")
            if earlier is not None:
                _retry_if_failed(store, params["ProjectName"], earlier["JobName"])
                return earlier
            try:
                project, job_name = _insert_job(store, params, fingerprinted, configuration, register, extensions)
                break
            except ClientTokenTaken:
                continue  # another server recorded the same token meanwhile: answer with its job
        _launch_worker(store, project, job_name)
        return {"JobName": job_name}
    finally:
        store.close()


def _insert_job(store: Store, params: dict, fingerprinted: dict, configuration, register: bool,
                extensions: JobExtensions | None) -> tuple[str, str]:
    """Record the job as CREATED, in one transaction with its ClientToken; returns (project, job name)."""
    with store.transaction():
        project = _project_or_404(store, params["ProjectName"]).name
        model = _model_or_404(store, project, params["ModelVersion"])
        job_name = params.get("JobName") or _new_job_name()
        # The token first: a second server racing with the same token waits on it, then retries and finds this job.
        _remember(store, "StartModelPackagingJob", fingerprinted, {"JobName": job_name})
        if store.job(project, job_name) is not None:
            raise ConflictException(f"a packaging job named {job_name!r} already exists in project {project!r}",
                                    resource_id=job_name, resource_type="MODEL_PACKAGE_JOB")
        version = configuration.component_version or f"{model.version}.0.0"
        # Published Greengrass versions are immutable, so only jobs with an S3 output hold or need a component version;
        # a local-only build may be repeated and overwrites its local bundle.
        holder = store.component_job(configuration.component_name, version) if configuration.s3_location else None
        if holder is not None:
            raise ConflictException(
                f"component {configuration.component_name} version {version} was already produced by job "
                f"{holder.name} in project {holder.project}", resource_id=holder.name, resource_type="MODEL_PACKAGE_JOB")
        stored_config = {"Greengrass": {**params["Configuration"]["Greengrass"], "ComponentVersion": version}}
        now = time.time()
        store.insert_job(JobRecord(
            seq=0, project=project, name=job_name, model_version=str(model.version), configuration=stored_config,
            description=params.get("Description"), status="CREATED", status_message="Waiting for a worker.",
            created=now, updated=now, component_name=configuration.component_name, component_version=version,
            component_arn=None, register=register, pid=None, pid_start=None, heartbeat=None,
            extensions=extensions.to_dict() if extensions is not None else None))
    return project, job_name


def _launch_worker(store: Store, project: str, job_name: str) -> None:
    """Start the job: on the team's Celery queue when PACKAGER_BROKER_URL is set, else in a local worker process."""
    broker = os.environ.get("PACKAGER_BROKER_URL")
    if broker:
        _enqueue(store, broker, project, job_name)
        return
    try:
        pid, pid_start = spawn_worker(store.home, project, job_name)
    except OSError as exc:
        with store.transaction():
            store.update_job(project, job_name, only_if_status=ACTIVE_STATES, status="FAILED", updated=time.time(),
                             status_message=f"Could not start the job's worker process: {exc}")
        return
    with store.transaction():
        store.update_job(project, job_name, only_if_status=ACTIVE_STATES, pid=pid, pid_start=pid_start)


def _enqueue(store: Store, broker: str, project: str, job_name: str) -> None:
    from packager.service.jobs import celery_engine  # celery is only needed with a broker

    job = store.job(project, job_name)
    queue = celery_engine.queue_for(parse_configuration(job.configuration).target)
    with store.transaction():
        store.update_job(project, job_name, only_if_status=("CREATED",), queue=queue, worker=None,
                         status_message=f"Queued on {queue}; waiting for a worker.")
    try:
        celery_engine.enqueue(broker, project, job_name, queue)
    except Exception as exc:  # noqa: BLE001  (kombu raises its own and the socket's errors; any of them means not queued)
        with store.transaction():
            store.update_job(project, job_name, only_if_status=("CREATED",), status="FAILED", updated=time.time(),
                             status_message=f"Could not queue the job on {queue}: {type(exc).__name__}: {exc}"[:500])


def _retry_if_failed(store: Store, project: str, job_name: str) -> None:
    """The same ClientToken again after a FAILED run (an upload cut off, a registration refused) runs the same job
    once more; a job still going or already SUCCEEDED is left alone, so the call stays idempotent."""
    job = store.job(project, job_name)
    if job is None or liveness.settle(store, job).status != "FAILED":
        return
    with store.transaction():
        restarted = store.update_job(project, job_name, only_if_status=("FAILED",), status="CREATED", updated=time.time(),
                                     status_message="Retrying with the same ClientToken; waiting for a worker.",
                                     pid=None, pid_start=None, heartbeat=None, error_type=None, component_arn=None,
                                     deliveries=0)
    if restarted:
        _launch_worker(store, project, job_name)


def describe_model_packaging_job(*, home: Path | str | None = None, **params) -> dict:
    validate_input("DescribeModelPackagingJob", params)
    store = open_store(home)
    try:
        project = _project_or_404(store, params["ProjectName"]).name
        job = store.job(project, params["JobName"])
        if job is None:
            raise ResourceNotFoundException(f"packaging job {params['JobName']!r} does not exist in project {project!r}",
                                            resource_id=params["JobName"], resource_type="MODEL_PACKAGE_JOB")
        return {"ModelPackagingDescription": _job_description(liveness.settle(store, job))}
    finally:
        store.close()


def list_model_packaging_jobs(*, home: Path | str | None = None, **params) -> dict:
    validate_input("ListModelPackagingJobs", params)
    store = open_store(home)
    try:
        project = _project_or_404(store, params["ProjectName"]).name
        after = pagination.decode_token(store.pagination_secret(), params.get("NextToken"), "ListModelPackagingJobs", project)
        limit = params.get("MaxResults", DEFAULT_PAGE_SIZE)
        rows = store.jobs(project, after, limit + 1)
        response = {"ModelPackagingJobs": [_job_metadata(liveness.settle(store, j)) for j in rows[:limit]]}
        if len(rows) > limit:
            response["NextToken"] = pagination.encode_token(store.pagination_secret(), "ListModelPackagingJobs", project, rows[limit - 1].seq)
        return response
    finally:
        store.close()


def wait_for_model_packaging_job(project: str, job_name: str, *, home: Path | str | None = None, poll_seconds: float = 1.0,
                                 timeout_seconds: float | None = None,
                                 on_update: Callable[[dict], None] | None = None) -> dict:
    """Poll DescribeModelPackagingJob until SUCCEEDED or FAILED; calls on_update with each changed description."""
    deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
    last = None
    while True:
        description = describe_model_packaging_job(home=home, ProjectName=project, JobName=job_name)["ModelPackagingDescription"]
        seen = (description["Status"], description.get("StatusMessage"))
        if seen != last and on_update is not None:
            on_update(description)
        last = seen
        if description["Status"] in FINAL_STATES:
            return {"ModelPackagingDescription": description}
        if deadline is not None and time.monotonic() >= deadline:
            raise PackagerError(f"timed out after {timeout_seconds:g} s waiting for job {job_name}; it is still {seen[0]}")
        time.sleep(poll_seconds)


# The one table from operation name to implementation, for the client, the server and the CLI.
OPERATIONS: dict[str, Callable[..., dict]] = {
    "StartModelPackagingJob": start_model_packaging_job,
    "DescribeModelPackagingJob": describe_model_packaging_job,
    "ListModelPackagingJobs": list_model_packaging_jobs,
    "CreateProject": create_project,
    "DescribeProject": describe_project,
    "ListProjects": list_projects,
    "DeleteProject": delete_project,
    "DescribeModel": describe_model,
    "ListModels": list_models,
    "DeleteModel": delete_model,
}
