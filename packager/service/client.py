"""`packager.client()`: the boto3 ``lookoutvision`` client's shape, served by the local job store.

Methods take and return what boto3's do. Errors are botocore ``ClientError`` subclasses named after
the service's error shapes, reachable as ``client.exceptions.ValidationException`` and so on, so
``except client.exceptions.ConflictException`` and ``e.response["Error"]["Code"]`` work unchanged.
"""

from __future__ import annotations

import sys
import types
import uuid
from collections.abc import Iterator
from pathlib import Path

from botocore.exceptions import ClientError

import packager.service_model as service_model
from packager.errors import PackagerError
from packager.service.jobs import api

_PAGINATED = {"ListProjects": "Projects", "ListModels": "Models", "ListModelPackagingJobs": "ModelPackagingJobs"}
_SNAKE_TO_OPERATION = {
    "list_projects": "ListProjects",
    "list_models": "ListModels",
    "list_model_packaging_jobs": "ListModelPackagingJobs",
}


def _error_class(name: str) -> type[ClientError]:
    return type(name, (ClientError,), {"__module__": __name__})


class ClientExceptions:
    """The error classes, as boto3 exposes them on ``client.exceptions``."""

    ClientError = ClientError
    AccessDeniedException = _error_class("AccessDeniedException")
    ConflictException = _error_class("ConflictException")
    InternalServerException = _error_class("InternalServerException")
    ResourceNotFoundException = _error_class("ResourceNotFoundException")
    ServiceQuotaExceededException = _error_class("ServiceQuotaExceededException")
    ThrottlingException = _error_class("ThrottlingException")
    ValidationException = _error_class("ValidationException")

    @classmethod
    def from_code(cls, code: str) -> type[ClientError]:
        return getattr(cls, code, ClientError) if code in _ERROR_CODES else ClientError


_ERROR_CODES = (
    "AccessDeniedException",
    "ConflictException",
    "InternalServerException",
    "ResourceNotFoundException",
    "ServiceQuotaExceededException",
    "ThrottlingException",
    "ValidationException",
)


def _response_metadata(status: int) -> dict:
    return {"RequestId": str(uuid.uuid4()), "HTTPStatusCode": status, "HTTPHeaders": {}, "RetryAttempts": 0}


def client_error(exc: PackagerError, operation_name: str) -> ClientError:
    """The ClientError botocore would raise for this service error."""
    error = exc.to_error_dict()
    response = {
        "Error": {"Code": error["Code"], "Message": error["Message"]},
        "ResponseMetadata": _response_metadata(exc.http_status),
        **{k: v for k, v in error.items() if k != "Code"},
    }
    return ClientExceptions.from_code(exc.code)(response, operation_name)


class LookoutVisionClient:
    """Same method names, arguments and return shapes as ``boto3.client("lookoutvision")``."""

    exceptions = ClientExceptions

    def __init__(self, home: Path | str | None = None):
        self._home = home

    def _call(self, operation_name: str, params: dict) -> dict:
        input_shape = service_model.operation(operation_name).input_shape
        for member in service_model.members(input_shape):
            if member.idempotency_token and params.get(member.name) is None:
                params[member.name] = str(uuid.uuid4())  # as botocore fills idempotency tokens
        try:
            response = api.OPERATIONS[operation_name](home=self._home, **params)
        except PackagerError as exc:
            raise client_error(exc, operation_name) from None
        return {**response, "ResponseMetadata": _response_metadata(200)}

    def start_model_packaging_job(self, **params) -> dict:
        return self._call("StartModelPackagingJob", params)

    def describe_model_packaging_job(self, **params) -> dict:
        return self._call("DescribeModelPackagingJob", params)

    def list_model_packaging_jobs(self, **params) -> dict:
        return self._call("ListModelPackagingJobs", params)

    def create_project(self, **params) -> dict:
        return self._call("CreateProject", params)

    def describe_project(self, **params) -> dict:
        return self._call("DescribeProject", params)

    def list_projects(self, **params) -> dict:
        return self._call("ListProjects", params)

    def delete_project(self, **params) -> dict:
        return self._call("DeleteProject", params)

    def describe_model(self, **params) -> dict:
        return self._call("DescribeModel", params)

    def list_models(self, **params) -> dict:
        return self._call("ListModels", params)

    def delete_model(self, **params) -> dict:
        return self._call("DeleteModel", params)

    def register_model(
        self,
        *,
        ProjectName: str,
        ModelPath: str | Path,
        SpecPath: str | Path | None = None,
        Description: str | None = None,
        CreateProject: bool = False,
    ) -> dict:
        """Our extension (no boto3 counterpart): the project's next model version from a trained ONNX model."""
        try:
            response = api.register_model(
                ProjectName, ModelPath, SpecPath, description=Description, create_project=CreateProject, home=self._home
            )
        except PackagerError as exc:
            raise client_error(exc, "RegisterModel") from None
        return {**response, "ResponseMetadata": _response_metadata(200)}

    def can_paginate(self, operation_name: str) -> bool:
        return operation_name in _SNAKE_TO_OPERATION

    def get_paginator(self, operation_name: str) -> Paginator:
        if operation_name not in _SNAKE_TO_OPERATION:
            raise ValueError(
                f"operation cannot be paginated: {operation_name}; valid: {', '.join(_SNAKE_TO_OPERATION)}"
            )
        return Paginator(self, _SNAKE_TO_OPERATION[operation_name])


class Paginator:
    """boto3's paginator surface: paginate(**params, PaginationConfig={PageSize, MaxItems, StartingToken})."""

    def __init__(self, client: LookoutVisionClient, operation_name: str):
        self._client = client
        self._operation = operation_name
        self._result_key = _PAGINATED[operation_name]

    def paginate(self, PaginationConfig: dict | None = None, **params) -> PageIterator:
        return PageIterator(self._client, self._operation, self._result_key, params, PaginationConfig or {})


class PageIterator:
    def __init__(self, client: LookoutVisionClient, operation: str, result_key: str, params: dict, config: dict):
        self._client, self._operation, self._result_key = client, operation, result_key
        self._params, self._config = params, config

    def __iter__(self) -> Iterator[dict]:
        params = dict(self._params)
        if self._config.get("PageSize"):
            params["MaxResults"] = self._config["PageSize"]
        token = self._config.get("StartingToken")
        remaining = self._config.get("MaxItems")
        while True:
            page = self._client._call(self._operation, {**params, **({"NextToken": token} if token else {})})
            if remaining is not None:
                page[self._result_key] = page[self._result_key][:remaining]
                remaining -= len(page[self._result_key])
            yield page
            token = page.get("NextToken")
            if not token or remaining == 0:
                return

    def build_full_result(self) -> dict:
        return {self._result_key: [item for page in self for item in page[self._result_key]]}


def client(home: Path | str | None = None) -> LookoutVisionClient:
    return LookoutVisionClient(home)


class _CallableModule(types.ModuleType):
    """Importing packager.service.client rebinds the name ``packager.service.client`` to this module, so the module itself must
    answer ``packager.client()`` just as the lazy function in packager/__init__.py does before the import."""

    def __call__(self, home: Path | str | None = None) -> LookoutVisionClient:
        return client(home)


sys.modules[__name__].__class__ = _CallableModule
