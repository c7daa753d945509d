"""Shared test helpers for the jobs API, the client, the REST server and the CLI commands."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import sqlite3
import sys
import time
import urllib.request
from pathlib import Path

import pytest


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh $PACKAGER_HOME with no AWS region or credentials, so a started job's worker fails fast unless a
    test sets AWS up; every worker a test started is stopped when it ends."""
    yield from fresh_home(tmp_path, monkeypatch)


def fresh_home(tmp_path, monkeypatch):
    """The `home` fixture's body, for fixtures that add to it (a PostgreSQL job store)."""
    path = tmp_path / "packager-home"
    monkeypatch.setenv("PACKAGER_HOME", str(path))
    for name in (
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "PACKAGER_NO_REGISTER",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    yield path
    stop_workers(path)


def worker_pids(home: Path) -> list[int]:
    if os.environ.get("PACKAGER_DATABASE_URL"):
        import psycopg

        with psycopg.connect(os.environ["PACKAGER_DATABASE_URL"]) as db:
            if db.execute("SELECT to_regclass('jobs')").fetchone() == (None,):
                return []
            return [pid for (pid,) in db.execute("SELECT pid FROM jobs WHERE pid IS NOT NULL")]
    if not (home / "store.sqlite3").exists():
        return []
    with sqlite3.connect(home / "store.sqlite3") as db:
        return [pid for (pid,) in db.execute("SELECT pid FROM jobs WHERE pid IS NOT NULL")]


def stop_workers(home: Path) -> None:
    pids = [pid for pid in worker_pids(home) if pid != os.getpid() and pid_alive(pid)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in pids:
        wait_until(lambda pid=pid: not pid_alive(pid), timeout=10)


@contextlib.contextmanager
def hold_worker_slot(home: Path, monkeypatch):
    """Take the only worker slot, so started jobs stay CREATED (their workers wait) until the block ends."""
    monkeypatch.setenv("PACKAGER_MAX_WORKERS", "1")
    slots = home / "worker-slots"
    slots.mkdir(parents=True, exist_ok=True)
    with open(slots / "0.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def gg_config(component: str = "com.example.Tiny", bucket: str = "packager-test-bucket", **extra) -> dict:
    return {
        "Greengrass": {"S3OutputLocation": {"Bucket": bucket, "Prefix": "models"}, "ComponentName": component, **extra}
    }


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (ProcessLookupError, FileNotFoundError):
        return False
    return state not in ("Z", "X")


S3_BUCKET = "packager-test-bucket"


@pytest.fixture
def s3_server(home, monkeypatch):
    """moto's S3 over HTTP on 127.0.0.1 with a bucket, reached by workers through AWS_ENDPOINT_URL and fake
    credentials; PACKAGER_NO_REGISTER=1 because moto has no Greengrass v2."""
    import boto3

    from tests.packager.greengrass.publish.loopback import LoopbackS3

    server = LoopbackS3()
    server.start()
    # moto keeps buckets in this process across servers; start every test from an empty account.
    urllib.request.urlopen(urllib.request.Request(f"{server.endpoint}/moto-api/reset", method="POST")).close()
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("PACKAGER_NO_REGISTER", "1")
    s3 = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=S3_BUCKET)
    yield s3
    stop_workers(home)
    server.stop()


# `python -m packager` with the Lookout and serve commands present, whether or not packager/cli.py lists them yet.
_CLI = """
import sys
import packager.cli as cli
from packager.commands import lookout, serve
listed = cli._command_table()
names = {c.name for c in listed}
extra = tuple(c for c in (*lookout.COMMANDS, serve.COMMAND) if c.name not in names)
cli._command_table = lambda: listed + extra
sys.exit(cli.main(sys.argv[1:]))
"""
REPO_ROOT = Path(__file__).resolve().parents[4]


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-c", _CLI, *args]


def cli_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), **extra}
