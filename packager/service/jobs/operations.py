"""What every operation shares: the store as a context manager, 404s for missing records, ClientToken idempotency,
and the region and account in the ARNs."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from packager.errors import ConflictException, ResourceNotFoundException
from packager.service.jobs import pagination
from packager.service.jobs.records import TOKEN_LIFETIME_S, ModelRecord
from packager.service.jobs.store import Store, open_store

DEFAULT_PAGE_SIZE = 100
ACCOUNT = "000000000000"  # no AWS account behind a local store; ARNs still need the field


@contextmanager
def opened_store(home: Path | str | None) -> Iterator[Store]:
    """The store under ``home`` ($PACKAGER_HOME when None), closed when the operation is done."""
    store = open_store(home)
    try:
        yield store
    finally:
        store.close()


def service_region() -> str:
    """The region in this store's ARNs; the REST server accepts requests signed for it alone."""
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def arn(resource: str) -> str:
    return f"arn:aws:lookoutvision:{service_region()}:{ACCOUNT}:{resource}"


def timestamp(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


def drop_none(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if v is not None}


def project_or_404(store: Store, name: str):
    project = store.project(name)
    if project is None:
        raise ResourceNotFoundException(f"project {name!r} does not exist", resource_id=name, resource_type="PROJECT")
    return project


def model_or_404(store: Store, project: str, version: str) -> ModelRecord:
    model = store.latest_model(project) if version == "latest" else store.model(project, int(version))
    if model is None:
        what = "has no model versions" if version == "latest" else f"has no model version {version}"
        raise ResourceNotFoundException(
            f"project {project!r} {what}", resource_id=f"{project}/{version}", resource_type="MODEL"
        )
    return model


def idempotent(store: Store, operation: str, params: dict, resource_type: str) -> dict | None:
    """The earlier response for this ClientToken and these parameters, or None for a new request."""
    token = params.get("ClientToken")
    if token is None:
        return None
    earlier = store.token(operation, token, newer_than=time.time() - TOKEN_LIFETIME_S)
    if earlier is None:
        return None
    if earlier.params_hash != pagination.params_fingerprint(params):
        raise ConflictException(
            f"ClientToken {token!r} was already used with different parameters for {operation}",
            resource_id=token,
            resource_type=resource_type,
        )
    return earlier.result


def remember(store: Store, operation: str, params: dict, result: dict) -> None:
    if params.get("ClientToken") is not None:
        store.put_token(operation, params["ClientToken"], pagination.params_fingerprint(params), result)


def page(
    store: Store,
    params: dict,
    operation: str,
    scope: str,
    key: str,
    fetch: Callable[[int, int], Sequence],
    render: Callable[[object], dict],
) -> dict:
    """One page of a List operation: ``fetch(after_seq, limit)`` rows after the NextToken, each rendered, under ``key``,
    with a NextToken (signed for this operation and scope) when more rows follow."""
    after = pagination.decode_token(store.pagination_secret(), params.get("NextToken"), operation, scope)
    limit = params.get("MaxResults", DEFAULT_PAGE_SIZE)
    rows = fetch(after, limit + 1)
    response = {key: [render(row) for row in rows[:limit]]}
    if len(rows) > limit:
        response["NextToken"] = pagination.encode_token(
            store.pagination_secret(), operation, scope, rows[limit - 1].seq
        )
    return response
