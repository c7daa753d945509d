"""The job store in PostgreSQL (psycopg 3), for a team: several servers and workers on several machines share it.

Same records and methods as the SQLite `Store`. The rules that must hold across machines are the database's own:
unique job names per project and one ClientToken per operation are unique constraints, and a component version
is held by one job with an S3 output through a partial unique index, so two servers that race both run their
checks and the database refuses the second insert. The schema is versioned; `open_postgres_store` upgrades it.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from packager.errors import ConflictException, InternalServerException
from packager.service.jobs.records import (
    TOKEN_LIFETIME_S,
    ClientTokenTaken,
    JobRecord,
    ModelRecord,
    ProjectRecord,
    TokenRecord,
)

_CONNECT_TIMEOUT_S = 5
_RETRY_INTERVAL_S = 0.5
_MIGRATION_LOCK = 0x7061636B  # pg_advisory_xact_lock key: one process upgrades the schema at a time

# Each entry upgrades the schema from the version before it; a database records the last one applied.
MIGRATIONS: tuple[str, ...] = (
    # 1: the SQLite store's records
    """
    CREATE TABLE projects (
        seq BIGSERIAL PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        arn TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE models (
        seq BIGSERIAL PRIMARY KEY,
        project TEXT NOT NULL,
        version INTEGER NOT NULL,
        arn TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL,
        description TEXT,
        model_file TEXT NOT NULL,
        spec_file TEXT,
        UNIQUE (project, version)
    );
    CREATE TABLE jobs (
        seq BIGSERIAL PRIMARY KEY,
        project TEXT NOT NULL,
        name TEXT NOT NULL,
        model_version TEXT NOT NULL,
        configuration JSONB NOT NULL,
        description TEXT,
        status TEXT NOT NULL,
        status_message TEXT,
        created DOUBLE PRECISION NOT NULL,
        updated DOUBLE PRECISION NOT NULL,
        component_name TEXT NOT NULL,
        component_version TEXT NOT NULL,
        component_arn TEXT,
        register BOOLEAN NOT NULL,
        pid INTEGER,
        pid_start TEXT,
        heartbeat DOUBLE PRECISION,
        extensions JSONB,
        error_type TEXT,
        CONSTRAINT jobs_unique_name UNIQUE (project, name)
    );
    CREATE INDEX jobs_component ON jobs (component_name, component_version);
    -- Published Greengrass versions are immutable: one live job with an S3 output per component version.
    CREATE UNIQUE INDEX jobs_one_published_component ON jobs (component_name, component_version)
        WHERE status <> 'FAILED' AND (configuration -> 'Greengrass' -> 'S3OutputLocation') IS NOT NULL;
    CREATE TABLE client_tokens (
        operation TEXT NOT NULL,
        token TEXT NOT NULL,
        params_hash TEXT NOT NULL,
        result JSONB NOT NULL,
        created DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (operation, token)
    );
    """,
    # 2: the Celery engine's job columns, settings every server shares, and shared tuning records
    """
    ALTER TABLE jobs ADD COLUMN queue TEXT, ADD COLUMN worker TEXT, ADD COLUMN deliveries INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE settings (name TEXT PRIMARY KEY, value BYTEA NOT NULL);
    CREATE TABLE tuning_exports (
        target_key TEXT PRIMARY KEY,
        export JSONB NOT NULL,
        records INTEGER NOT NULL,
        updated DOUBLE PRECISION NOT NULL
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

_JOB_COLUMNS = (
    "project",
    "name",
    "model_version",
    "configuration",
    "description",
    "status",
    "status_message",
    "created",
    "updated",
    "component_name",
    "component_version",
    "component_arn",
    "register",
    "pid",
    "pid_start",
    "heartbeat",
    "extensions",
    "error_type",
    "queue",
    "worker",
    "deliveries",
)


class StoreUnavailable(InternalServerException):
    """PostgreSQL cannot be reached or dropped the connection; the request can be retried."""


def _unavailable(exc: BaseException) -> StoreUnavailable:
    detail = " ".join(str(exc).split())[:200] or type(exc).__name__
    return StoreUnavailable(f"the job database is unavailable ({detail}); retry the request")


def _job(row: dict) -> JobRecord:
    return JobRecord(**row)


def _conflict(exc: pg_errors.UniqueViolation, record: JobRecord) -> ConflictException:
    constraint = exc.diag.constraint_name or ""
    if constraint == "jobs_one_published_component":
        return ConflictException(
            f"component {record.component_name} version {record.component_version} is already produced by another job",
            resource_id=record.name,
            resource_type="MODEL_PACKAGE_JOB",
        )
    return ConflictException(
        f"a packaging job named {record.name!r} already exists in project {record.project!r}",
        resource_id=record.name,
        resource_type="MODEL_PACKAGE_JOB",
    )


class PostgresStore:
    """One PostgreSQL connection; open it with `open_postgres_store`. Outside `transaction()`, each statement commits."""

    def __init__(self, home: Path, connection: psycopg.Connection):
        self.home = home
        self._db = connection
        self._in_transaction = False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One database transaction; a constraint that fails inside it rolls all of it back."""
        try:
            with self._db.transaction():
                self._in_transaction = True
                try:
                    yield
                finally:
                    self._in_transaction = False
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise _unavailable(exc) from None

    def _execute(self, sql: str, args: tuple | dict = ()) -> psycopg.Cursor:
        try:
            return self._db.execute(sql, args)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise _unavailable(exc) from None

    def _one(self, sql: str, args: tuple | dict = ()) -> dict | None:
        return self._execute(sql, args).fetchone()

    # projects
    def insert_project(self, name: str, arn: str, created: float) -> ProjectRecord:
        try:
            row = self._one(
                "INSERT INTO projects (name, arn, created) VALUES (%s, %s, %s) RETURNING seq", (name, arn, created)
            )
        except pg_errors.UniqueViolation:
            raise ConflictException(
                f"project {name!r} already exists", resource_id=name, resource_type="PROJECT"
            ) from None
        return ProjectRecord(row["seq"], name, arn, created)

    def project(self, name: str) -> ProjectRecord | None:
        row = self._one("SELECT * FROM projects WHERE name = %s", (name,))
        return ProjectRecord(**row) if row else None

    def projects(self, after_seq: int, limit: int) -> list[ProjectRecord]:
        rows = self._execute("SELECT * FROM projects WHERE seq > %s ORDER BY seq LIMIT %s", (after_seq, limit))
        return [ProjectRecord(**r) for r in rows]

    def delete_project(self, name: str) -> None:
        self._execute("DELETE FROM jobs WHERE project = %s", (name,))
        self._execute("DELETE FROM models WHERE project = %s", (name,))
        self._execute("DELETE FROM projects WHERE name = %s", (name,))

    # model versions
    def next_model_version(self, project: str) -> int:
        # The project's row lock serialises registrations into one project across servers.
        self._execute("SELECT 1 FROM projects WHERE name = %s FOR UPDATE", (project,))
        row = self._one("SELECT MAX(version) AS v FROM models WHERE project = %s", (project,))
        return (row["v"] or 0) + 1

    def insert_model(self, record: ModelRecord) -> ModelRecord:
        values = vars(record).copy()
        values.pop("seq")
        row = self._one(
            f"INSERT INTO models ({', '.join(values)}) VALUES ({', '.join(['%s'] * len(values))}) RETURNING seq",
            tuple(values.values()),
        )
        return ModelRecord(**{**vars(record), "seq": row["seq"]})

    def model_with_files(self, project: str, model_file: str, spec_file: str | None) -> ModelRecord | None:
        row = self._one(
            "SELECT * FROM models WHERE project = %s AND model_file = %s AND spec_file IS NOT DISTINCT FROM %s "
            "ORDER BY version DESC LIMIT 1",
            (project, model_file, spec_file),
        )
        return ModelRecord(**row) if row else None

    def model(self, project: str, version: int) -> ModelRecord | None:
        row = self._one("SELECT * FROM models WHERE project = %s AND version = %s", (project, version))
        return ModelRecord(**row) if row else None

    def latest_model(self, project: str) -> ModelRecord | None:
        row = self._one("SELECT * FROM models WHERE project = %s ORDER BY version DESC LIMIT 1", (project,))
        return ModelRecord(**row) if row else None

    def models(self, project: str, after_seq: int, limit: int) -> list[ModelRecord]:
        rows = self._execute(
            "SELECT * FROM models WHERE project = %s AND seq > %s ORDER BY seq LIMIT %s", (project, after_seq, limit)
        )
        return [ModelRecord(**r) for r in rows]

    def delete_model(self, project: str, version: int) -> None:
        self._execute("DELETE FROM models WHERE project = %s AND version = %s", (project, version))

    # packaging jobs
    def insert_job(self, record: JobRecord) -> JobRecord:
        values = {c: getattr(record, c) for c in _JOB_COLUMNS}
        values["configuration"] = Jsonb(values["configuration"])
        values["extensions"] = Jsonb(values["extensions"]) if values["extensions"] is not None else None
        try:
            with self._db.transaction():  # a savepoint: the caller's transaction survives to report the conflict
                row = self._one(
                    f"INSERT INTO jobs ({', '.join(values)}) VALUES ({', '.join(['%s'] * len(values))}) RETURNING seq",
                    tuple(values.values()),
                )
        except pg_errors.UniqueViolation as exc:
            raise _conflict(exc, record) from None
        return JobRecord(**{**vars(record), "seq": row["seq"]})

    def job(self, project: str, name: str) -> JobRecord | None:
        row = self._one("SELECT * FROM jobs WHERE project = %s AND name = %s", (project, name))
        return _job(row) if row else None

    def jobs(self, project: str, after_seq: int, limit: int) -> list[JobRecord]:
        rows = self._execute(
            "SELECT * FROM jobs WHERE project = %s AND seq > %s ORDER BY seq LIMIT %s", (project, after_seq, limit)
        )
        return [_job(r) for r in rows]

    def active_jobs(self, project: str, model_version: int | None = None) -> list[JobRecord]:
        sql = "SELECT * FROM jobs WHERE project = %s AND status IN ('CREATED', 'RUNNING')"
        args: tuple = (project,)
        if model_version is not None:
            sql += " AND model_version = %s"
            args += (str(model_version),)
        return [_job(r) for r in self._execute(sql, args)]

    def component_job(self, component_name: str, component_version: str) -> JobRecord | None:
        row = self._one(
            "SELECT * FROM jobs WHERE component_name = %s AND component_version = %s AND status <> 'FAILED' "
            "AND (configuration -> 'Greengrass' -> 'S3OutputLocation') IS NOT NULL LIMIT 1",
            (component_name, component_version),
        )
        return _job(row) if row else None

    def update_job(self, project: str, name: str, *, only_if_status: tuple[str, ...] | None = None, **changes) -> bool:
        sql = f"UPDATE jobs SET {', '.join(f'{k} = %s' for k in changes)} WHERE project = %s AND name = %s"
        args = tuple(changes.values()) + (project, name)
        if only_if_status:
            sql += " AND status = ANY(%s)"
            args += (list(only_if_status),)
        try:
            return self._execute(sql, args).rowcount == 1
        except pg_errors.UniqueViolation:  # a FAILED job coming back while another job took its component version
            raise ConflictException(
                f"job {name}'s component version was taken by another job meanwhile",
                resource_id=name,
                resource_type="MODEL_PACKAGE_JOB",
            ) from None

    def claim_job(self, project: str, name: str, worker: str, stale_before: float) -> JobRecord | None:
        """Take a job for one Celery delivery: it must be waiting, or running on a worker whose heartbeat stopped before
        ``stale_before``. The row lock makes one of two racing workers win; returns the claimed job or None."""
        now = time.time()
        row = self._one(
            "UPDATE jobs SET status = 'RUNNING', worker = %s, deliveries = deliveries + 1, heartbeat = %s, "
            "updated = %s, pid = NULL, pid_start = NULL WHERE project = %s AND name = %s AND "
            "(status = 'CREATED' OR (status = 'RUNNING' AND (heartbeat IS NULL OR heartbeat < %s))) RETURNING *",
            (worker, now, now, project, name, stale_before),
        )
        return _job(row) if row else None

    # idempotency tokens
    def token(self, operation: str, token: str, newer_than: float) -> TokenRecord | None:
        row = self._one(
            "SELECT params_hash, result, created FROM client_tokens WHERE operation = %s AND token = %s "
            "AND created > %s",
            (operation, token, newer_than),
        )
        return TokenRecord(row["params_hash"], row["result"], row["created"]) if row else None

    def put_token(self, operation: str, token: str, params_hash: str, result: dict) -> None:
        """Record the token; an expired row is replaced, a live one (another server's, committed meanwhile) is not."""
        now = time.time()
        cur = self._execute(
            "INSERT INTO client_tokens VALUES (%s, %s, %s, %s, %s) ON CONFLICT (operation, token) DO UPDATE "
            "SET params_hash = excluded.params_hash, result = excluded.result, created = excluded.created "
            "WHERE client_tokens.created <= %s",
            (operation, token, params_hash, Jsonb(result), now, now - TOKEN_LIFETIME_S),
        )
        if cur.rowcount == 0:
            raise ClientTokenTaken(f"{operation} ClientToken {token!r}")

    # settings shared by every server
    def pagination_secret(self) -> bytes:
        """The key that signs NextToken values: one for the whole team, so a page from one server continues on another."""
        self._execute(
            "INSERT INTO settings VALUES ('pagination-secret', %s) ON CONFLICT (name) DO NOTHING",
            (secrets.token_bytes(32),),
        )
        return bytes(self._one("SELECT value FROM settings WHERE name = 'pagination-secret'")["value"])

    # tuning records shared by every worker
    def tuning_export(self, target_key: str) -> dict | None:
        row = self._one("SELECT export FROM tuning_exports WHERE target_key = %s", (target_key,))
        return row["export"] if row else None

    def put_tuning_export(self, target_key: str, export: dict, records: int) -> None:
        """Keep the larger set: a worker that tuned less than what is stored does not shrink it."""
        self._execute(
            "INSERT INTO tuning_exports VALUES (%s, %s, %s, %s) ON CONFLICT (target_key) DO UPDATE "
            "SET export = excluded.export, records = excluded.records, updated = excluded.updated "
            "WHERE tuning_exports.records < excluded.records",
            (target_key, Jsonb(export), records, time.time()),
        )


def schema_version(db: psycopg.Connection) -> int:
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = db.execute("SELECT version FROM schema_version").fetchone()
    return row["version"] if row else 0


def upgrade_schema(db: psycopg.Connection) -> int:
    """Apply the migrations this database lacks, in one transaction; returns the version it is now at."""
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        current = schema_version(db)
        if current > SCHEMA_VERSION:
            raise InternalServerException(
                f"the job database has schema version {current}, newer than this packager's "
                f"{SCHEMA_VERSION}; upgrade the packager"
            )
        for script in MIGRATIONS[current:]:
            db.execute(script)
        if current == 0:
            db.execute("INSERT INTO schema_version VALUES (%s)", (SCHEMA_VERSION,))
        elif current < SCHEMA_VERSION:
            db.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION,))
    return SCHEMA_VERSION


_upgraded: set[str] = set()  # URLs this process has already brought up to date


def open_postgres_store(url: str, home: Path, *, wait_for_database_s: float = 0.0) -> PostgresStore:
    deadline = time.monotonic() + wait_for_database_s
    while True:
        try:
            db = psycopg.connect(url, autocommit=True, row_factory=dict_row, connect_timeout=_CONNECT_TIMEOUT_S)
            break
        except psycopg.OperationalError as exc:
            if time.monotonic() >= deadline:
                raise _unavailable(exc) from None
            time.sleep(_RETRY_INTERVAL_S)
    try:
        if url not in _upgraded:
            upgrade_schema(db)
            _upgraded.add(url)
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        db.close()
        raise _unavailable(exc) from None
    except BaseException:
        db.close()
        raise
    return PostgresStore(home, db)
