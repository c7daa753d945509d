"""Projects and model versions: the Lookout for Vision operations on them, plus RegisterModel (our extension).

Each operation takes the service's own parameter names (``ProjectName=...``), validates them against the service
model, and returns the service's response dict (timestamps as aware datetimes). ``home`` picks the store.
"""

from __future__ import annotations

import time
from pathlib import Path

from packager.errors import ConflictException, ValidationException
from packager.home import packager_home
from packager.service.jobs.operations import (
    arn,
    drop_none,
    idempotent,
    model_or_404,
    opened_store,
    page,
    project_or_404,
    remember,
    timestamp,
)
from packager.service.jobs.records import ClientTokenTaken, ModelRecord
from packager.service.jobs.validation import validate_input, validate_shape


def _project_metadata(project) -> dict:
    return {"ProjectArn": project.arn, "ProjectName": project.name, "CreationTimestamp": timestamp(project.created)}


def create_project(*, home: Path | str | None = None, **params) -> dict:
    validate_input("CreateProject", params)
    with opened_store(home) as store:
        while True:
            try:
                with store.transaction():
                    earlier = idempotent(store, "CreateProject", params, "PROJECT")
                    if earlier is not None:
                        return {"ProjectMetadata": _project_metadata(project_or_404(store, earlier["ProjectName"]))}
                    name = params["ProjectName"]
                    # The token first, as for jobs: a racing server with the same token waits on it, then finds this one.
                    remember(store, "CreateProject", params, {"ProjectName": name})
                    if store.project(name) is not None:
                        raise ConflictException(
                            f"project {name!r} already exists", resource_id=name, resource_type="PROJECT"
                        )
                    project = store.insert_project(name, arn(f"project/{name}"), time.time())
                return {"ProjectMetadata": _project_metadata(project)}
            except ClientTokenTaken:
                continue


def describe_project(*, home: Path | str | None = None, **params) -> dict:
    validate_input("DescribeProject", params)
    with opened_store(home) as store:
        project = project_or_404(store, params["ProjectName"])
        return {"ProjectDescription": {**_project_metadata(project), "Datasets": []}}


def list_projects(*, home: Path | str | None = None, **params) -> dict:
    validate_input("ListProjects", params)
    with opened_store(home) as store:
        return page(store, params, "ListProjects", "", "Projects", store.projects, _project_metadata)


def delete_project(*, home: Path | str | None = None, **params) -> dict:
    """Deletes the project with its model versions and job records; refused while one of its jobs runs."""
    validate_input("DeleteProject", params)
    with opened_store(home) as store:
        with store.transaction():
            earlier = idempotent(store, "DeleteProject", params, "PROJECT")
            if earlier is not None:
                return earlier
            project = project_or_404(store, params["ProjectName"])
            active = store.active_jobs(project.name)
            if active:
                raise ConflictException(
                    f"project {project.name!r} has a packaging job in progress ({active[0].name})",
                    resource_id=active[0].name,
                    resource_type="MODEL_PACKAGE_JOB",
                )
            store.delete_project(project.name)
            response = {"ProjectArn": project.arn}
            remember(store, "DeleteProject", params, response)
        return response


def _model_metadata(model: ModelRecord) -> dict:
    return drop_none(
        {
            "CreationTimestamp": timestamp(model.created),
            "ModelVersion": str(model.version),
            "ModelArn": model.arn,
            "Description": model.description,
            "Status": "TRAINED",
            "StatusMessage": "Registered trained model.",
        }
    )


def register_model(
    project: str,
    model_path: Path | str,
    spec_path: Path | str | None = None,
    *,
    description: str | None = None,
    create_project: bool = False,
    reuse_identical: bool = False,
    home: Path | str | None = None,
    intake_cache_dir: Path | None = None,
) -> dict:
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
        raise ValidationException(
            f"CreateProject must be a boolean, got {type(create_project).__name__}", field="CreateProject"
        )
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
    with opened_store(root) as store:
        with store.transaction():
            if store.project(project) is None and create_project:
                store.insert_project(project, arn(f"project/{project}"), time.time())
            project_or_404(store, project)
            model = store.model_with_files(project, model_file, spec_file) if reuse_identical else None
            if model is None:
                version = store.next_model_version(project)
                model = store.insert_model(
                    ModelRecord(
                        seq=0,
                        project=project,
                        version=version,
                        created=time.time(),
                        description=description,
                        arn=arn(f"model/{project}/{version}"),
                        model_file=model_file,
                        spec_file=spec_file,
                    )
                )
        return {"ModelMetadata": _model_metadata(model), "ModelSha256": model_digest}


def describe_model(*, home: Path | str | None = None, **params) -> dict:
    validate_input("DescribeModel", params)
    with opened_store(home) as store:
        project_or_404(store, params["ProjectName"])
        model = model_or_404(store, params["ProjectName"], params["ModelVersion"])
        return {"ModelDescription": _model_metadata(model)}


def list_models(*, home: Path | str | None = None, **params) -> dict:
    validate_input("ListModels", params)
    with opened_store(home) as store:
        project = project_or_404(store, params["ProjectName"]).name
        return page(
            store,
            params,
            "ListModels",
            project,
            "Models",
            lambda after, limit: store.models(project, after, limit),
            _model_metadata,
        )


def delete_model(*, home: Path | str | None = None, **params) -> dict:
    validate_input("DeleteModel", params)
    with opened_store(home) as store:
        with store.transaction():
            earlier = idempotent(store, "DeleteModel", params, "MODEL")
            if earlier is not None:
                return earlier
            project = project_or_404(store, params["ProjectName"]).name
            model = model_or_404(store, project, params["ModelVersion"])
            active = store.active_jobs(project, model.version)
            if active:
                raise ConflictException(
                    f"model version {model.version} has a packaging job in progress ({active[0].name})",
                    resource_id=active[0].name,
                    resource_type="MODEL_PACKAGE_JOB",
                )
            store.delete_model(project, model.version)
            response = {"ModelArn": model.arn}
            remember(store, "DeleteModel", params, response)
        return response
