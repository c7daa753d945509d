"""The records a job store keeps, the same for SQLite (store.py) and PostgreSQL (pg_store.py)."""

from __future__ import annotations

from dataclasses import dataclass

FINAL_STATES = ("SUCCEEDED", "FAILED")
ACTIVE_STATES = ("CREATED", "RUNNING")
TOKEN_LIFETIME_S = 8 * 3600  # how long a ClientToken keeps answering with its first result


@dataclass(frozen=True)
class ProjectRecord:
    seq: int
    name: str
    arn: str
    created: float


@dataclass(frozen=True)
class ModelRecord:
    seq: int
    project: str
    version: int
    arn: str
    created: float
    description: str | None
    model_file: str  # path relative to the store's home
    spec_file: str | None


@dataclass(frozen=True)
class JobRecord:
    seq: int
    project: str
    name: str
    model_version: str
    configuration: dict  # the request's Configuration, with defaults filled in
    description: str | None
    status: str
    status_message: str | None
    created: float
    updated: float
    component_name: str
    component_version: str
    component_arn: str | None
    register: bool
    pid: int | None
    pid_start: str | None
    heartbeat: float | None
    extensions: dict | None = (
        None  # build-only options the service API lacks (see packager.service.jobs.extensions); None for API jobs
    )
    error_type: str | None = (
        None  # the packager.errors class a FAILED job ended with, so the CLI can exit with its code
    )
    queue: str | None = None  # the Celery queue it was sent to; None: a local worker process runs it
    worker: str | None = None  # the Celery worker running (or last running) it
    deliveries: int = 0  # how many times a Celery worker took it up


class ClientTokenTaken(Exception):
    """Another request recorded this ClientToken first, in a transaction that committed while ours ran."""


@dataclass(frozen=True)
class TokenRecord:
    params_hash: str
    result: dict
    created: float
