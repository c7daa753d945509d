"""The job store: projects, model versions, packaging jobs and idempotency tokens in SQLite (WAL).

Many processes share one store (CLI calls, the REST server's threads, job workers), so every
write runs in a short `BEGIN IMMEDIATE` transaction and every connection waits on a busy lock.
With PACKAGER_DATABASE_URL=postgresql://... the same records live in PostgreSQL instead (pg_store), so
several servers and workers on several machines share them.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from packager.home import packager_home
from packager.service.jobs.records import JobRecord, ModelRecord, ProjectRecord, TokenRecord

_BUSY_TIMEOUT_MS = 60_000
DATABASE_URL_VARIABLE = "PACKAGER_DATABASE_URL"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    arn TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    project TEXT NOT NULL,
    version INTEGER NOT NULL,
    arn TEXT NOT NULL,
    created REAL NOT NULL,
    description TEXT,
    model_file TEXT NOT NULL,
    spec_file TEXT,
    UNIQUE (project, version)
);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    project TEXT NOT NULL,
    name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    configuration TEXT NOT NULL,
    description TEXT,
    status TEXT NOT NULL,
    status_message TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    component_name TEXT NOT NULL,
    component_version TEXT NOT NULL,
    component_arn TEXT,
    register INTEGER NOT NULL,
    pid INTEGER,
    pid_start TEXT,
    heartbeat REAL,
    extensions TEXT,
    error_type TEXT,
    UNIQUE (project, name)
);
CREATE INDEX IF NOT EXISTS jobs_component ON jobs (component_name, component_version);
CREATE TABLE IF NOT EXISTS tuning_exports (
    target_key TEXT PRIMARY KEY,
    export TEXT NOT NULL,
    records INTEGER NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS client_tokens (
    operation TEXT NOT NULL,
    token TEXT NOT NULL,
    params_hash TEXT NOT NULL,
    result TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (operation, token)
);
"""


def _job(row: sqlite3.Row) -> JobRecord:
    values = dict(row)
    values["configuration"] = json.loads(values["configuration"])
    values["register"] = bool(values["register"])
    values["extensions"] = json.loads(values["extensions"]) if values["extensions"] is not None else None
    return JobRecord(**values)


class Store:
    """One SQLite connection to the store under ``home``; open it with `open_store`."""

    def __init__(self, home: Path, connection: sqlite3.Connection):
        self.home = home
        self._db = connection

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """A write transaction that takes the database's write lock up front, so read-then-write is atomic."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # projects
    def insert_project(self, name: str, arn: str, created: float) -> ProjectRecord:
        cur = self._db.execute("INSERT INTO projects (name, arn, created) VALUES (?, ?, ?)", (name, arn, created))
        return ProjectRecord(cur.lastrowid, name, arn, created)

    def project(self, name: str) -> ProjectRecord | None:
        row = self._db.execute("SELECT * FROM projects WHERE name = ?", (name,)).fetchone()
        return ProjectRecord(**dict(row)) if row else None

    def projects(self, after_seq: int, limit: int) -> list[ProjectRecord]:
        rows = self._db.execute("SELECT * FROM projects WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit))
        return [ProjectRecord(**dict(r)) for r in rows]

    def delete_project(self, name: str) -> None:
        self._db.execute("DELETE FROM jobs WHERE project = ?", (name,))
        self._db.execute("DELETE FROM models WHERE project = ?", (name,))
        self._db.execute("DELETE FROM projects WHERE name = ?", (name,))

    # model versions
    def next_model_version(self, project: str) -> int:
        row = self._db.execute("SELECT MAX(version) FROM models WHERE project = ?", (project,)).fetchone()
        return (row[0] or 0) + 1

    def insert_model(self, record: ModelRecord) -> ModelRecord:
        values = vars(record).copy()
        values.pop("seq")
        cur = self._db.execute(
            f"INSERT INTO models ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})", tuple(values.values())
        )
        return ModelRecord(**{**vars(record), "seq": cur.lastrowid})

    def model_with_files(self, project: str, model_file: str, spec_file: str | None) -> ModelRecord | None:
        """The project's newest version registered with exactly these (content-addressed) files."""
        row = self._db.execute(
            "SELECT * FROM models WHERE project = ? AND model_file = ? AND spec_file IS ? "
            "ORDER BY version DESC LIMIT 1",
            (project, model_file, spec_file),
        ).fetchone()
        return ModelRecord(**dict(row)) if row else None

    def model(self, project: str, version: int) -> ModelRecord | None:
        row = self._db.execute("SELECT * FROM models WHERE project = ? AND version = ?", (project, version)).fetchone()
        return ModelRecord(**dict(row)) if row else None

    def latest_model(self, project: str) -> ModelRecord | None:
        row = self._db.execute(
            "SELECT * FROM models WHERE project = ? ORDER BY version DESC LIMIT 1", (project,)
        ).fetchone()
        return ModelRecord(**dict(row)) if row else None

    def models(self, project: str, after_seq: int, limit: int) -> list[ModelRecord]:
        rows = self._db.execute(
            "SELECT * FROM models WHERE project = ? AND seq > ? ORDER BY seq LIMIT ?", (project, after_seq, limit)
        )
        return [ModelRecord(**dict(r)) for r in rows]

    def delete_model(self, project: str, version: int) -> None:
        self._db.execute("DELETE FROM models WHERE project = ? AND version = ?", (project, version))

    # packaging jobs
    def insert_job(self, record: JobRecord) -> JobRecord:
        values = vars(record).copy()
        values.pop("seq")
        values["configuration"] = json.dumps(values["configuration"], sort_keys=True)
        if values["extensions"] is not None:
            values["extensions"] = json.dumps(values["extensions"], sort_keys=True)
        cur = self._db.execute(
            f"INSERT INTO jobs ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})", tuple(values.values())
        )
        return JobRecord(**{**vars(record), "seq": cur.lastrowid})

    def job(self, project: str, name: str) -> JobRecord | None:
        row = self._db.execute("SELECT * FROM jobs WHERE project = ? AND name = ?", (project, name)).fetchone()
        return _job(row) if row else None

    def jobs(self, project: str, after_seq: int, limit: int) -> list[JobRecord]:
        rows = self._db.execute(
            "SELECT * FROM jobs WHERE project = ? AND seq > ? ORDER BY seq LIMIT ?", (project, after_seq, limit)
        )
        return [_job(r) for r in rows]

    def active_jobs(self, project: str, model_version: int | None = None) -> list[JobRecord]:
        sql = "SELECT * FROM jobs WHERE project = ? AND status IN ('CREATED', 'RUNNING')"
        args: tuple = (project,)
        if model_version is not None:
            sql += " AND model_version = ?"
            args += (str(model_version),)
        return [_job(r) for r in self._db.execute(sql, args)]

    def component_job(self, component_name: str, component_version: str) -> JobRecord | None:
        """The job that published (or is publishing) this component version to S3; failed and local-only jobs do not hold it."""
        row = self._db.execute(
            "SELECT * FROM jobs WHERE component_name = ? AND component_version = ? AND status != 'FAILED' "
            "AND json_extract(configuration, '$.Greengrass.S3OutputLocation') IS NOT NULL LIMIT 1",
            (component_name, component_version),
        ).fetchone()
        return _job(row) if row else None

    def update_job(self, project: str, name: str, *, only_if_status: tuple[str, ...] | None = None, **changes) -> bool:
        """Set columns on one job; with only_if_status, only while it is in one of those states. True if it changed."""
        sql = f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in changes)} WHERE project = ? AND name = ?"
        args = tuple(changes.values()) + (project, name)
        if only_if_status:
            sql += f" AND status IN ({', '.join('?' * len(only_if_status))})"
            args += tuple(only_if_status)
        return self._db.execute(sql, args).rowcount == 1

    def claim_job(self, project: str, name: str, worker: str, stale_before: float) -> JobRecord | None:
        """Take a job for one Celery delivery: it must be waiting, or running on a worker whose heartbeat stopped before
        ``stale_before``; returns the claimed job or None."""
        now = time.time()
        with self.transaction():
            claimed = (
                self._db.execute(
                    "UPDATE jobs SET status = 'RUNNING', worker = ?, deliveries = deliveries + 1, heartbeat = ?, updated = ?, "
                    "pid = NULL, pid_start = NULL WHERE project = ? AND name = ? AND "
                    "(status = 'CREATED' OR (status = 'RUNNING' AND (heartbeat IS NULL OR heartbeat < ?)))",
                    (worker, now, now, project, name, stale_before),
                ).rowcount
                == 1
            )
        return self.job(project, name) if claimed else None

    # idempotency tokens
    def token(self, operation: str, token: str, newer_than: float) -> TokenRecord | None:
        row = self._db.execute(
            "SELECT params_hash, result, created FROM client_tokens WHERE operation = ? AND token = ? AND created > ?",
            (operation, token, newer_than),
        ).fetchone()
        return TokenRecord(row["params_hash"], json.loads(row["result"]), row["created"]) if row else None

    def put_token(self, operation: str, token: str, params_hash: str, result: dict) -> None:
        # BEGIN IMMEDIATE serialises writers, so the caller's earlier read still holds: any row here has expired.
        self._db.execute(
            "INSERT OR REPLACE INTO client_tokens VALUES (?, ?, ?, ?, ?)",
            (operation, token, params_hash, json.dumps(result), time.time()),
        )

    # tuning records shared by every worker of the store
    def tuning_export(self, target_key: str) -> dict | None:
        row = self._db.execute("SELECT export FROM tuning_exports WHERE target_key = ?", (target_key,)).fetchone()
        return json.loads(row["export"]) if row else None

    def put_tuning_export(self, target_key: str, export: dict, records: int) -> None:
        """Keep the larger set: a worker that tuned less than what is stored does not shrink it."""
        self._db.execute(
            "INSERT INTO tuning_exports VALUES (?, ?, ?, ?) ON CONFLICT (target_key) DO UPDATE "
            "SET export = excluded.export, records = excluded.records, updated = excluded.updated "
            "WHERE tuning_exports.records < excluded.records",
            (target_key, json.dumps(export), records, time.time()),
        )

    # settings shared by every process of the store
    def pagination_secret(self) -> bytes:
        """The key that signs NextToken values, kept beside the database."""
        path = self.home / "token-secret"
        try:
            return path.read_bytes()
        except FileNotFoundError:
            pass
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_bytes()  # another process won the race and wrote it in one write
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(32))
        return path.read_bytes()


def open_store(home: Path | str | None = None, *, wait_for_database_s: float = 0.0):
    """Open (creating on first use) the store under $PACKAGER_HOME, or PostgreSQL at $PACKAGER_DATABASE_URL.

    ``wait_for_database_s``: how long to keep trying while PostgreSQL cannot be reached (workers wait, servers answer
    at once with a retryable error). The home directory still holds job logs and model files either way."""
    root = packager_home(home)
    root.mkdir(parents=True, exist_ok=True)
    url = os.environ.get(DATABASE_URL_VARIABLE)
    if url:
        from packager.service.jobs.pg_store import open_postgres_store  # psycopg is only needed with a database URL

        return open_postgres_store(url, root, wait_for_database_s=wait_for_database_s)
    db = sqlite3.connect(
        root / "store.sqlite3", timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    db.row_factory = sqlite3.Row
    db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    # In WAL mode NORMAL syncs at checkpoints, not at every commit: the store stays consistent, and a power loss can undo
    # only the last commits. Each commit's fsync otherwise waited for ext4 to flush whatever else was being written (a
    # 176 MB model just stored, a restored compile cache): 1-1.6 s stalls between two progress messages of a job.
    db.execute("PRAGMA synchronous = NORMAL")
    if db.execute("PRAGMA user_version").fetchone()[0] != _SCHEMA_VERSION:
        _create_schema(db)
    return Store(root, db)


_SCHEMA_VERSION = 3
# Columns added after version 1; an older store gains them on open.
_ADDED_JOB_COLUMNS = {
    "extensions": "TEXT",
    "error_type": "TEXT",  # version 2
    "queue": "TEXT",
    "worker": "TEXT",
    "deliveries": "INTEGER NOT NULL DEFAULT 0",
}  # version 3


def _create_schema(db: sqlite3.Connection) -> None:
    # WAL lets readers (describe, list) run while a worker or another CLI writes.
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("BEGIN IMMEDIATE")
    try:
        for statement in filter(str.strip, _SCHEMA.split(";")):
            db.execute(statement)
        present = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
        for column, kind in _ADDED_JOB_COLUMNS.items():
            if column not in present:
                db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
        db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
