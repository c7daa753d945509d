"""Job lifecycle across real worker processes: killed, hung and never-started workers end FAILED; concurrent
starts from separate processes; and full runs to SUCCEEDED against moto's S3 over HTTP."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from packager.edge import AGENT_VERSION
from packager.service.jobs import api, packaging
from packager.service.jobs import worker as worker_module
from tests.packager.service.jobs.support import (  # noqa: F401  (fixtures)
    S3_BUCKET,
    gg_config,
    hold_worker_slot,
    home,
    pid_alive,
    s3_server,
    wait_until,
)

REPO_ROOT = Path(__file__).resolve().parents[4]


def _job_row(home: Path, name: str) -> dict:
    with sqlite3.connect(home / "store.sqlite3") as db:
        db.row_factory = sqlite3.Row
        return dict(db.execute("SELECT * FROM jobs WHERE name = ?", (name,)).fetchone())


def _describe(name: str, project: str = "p") -> dict:
    return api.describe_model_packaging_job(ProjectName=project, JobName=name)["ModelPackagingDescription"]


@pytest.fixture
def project(home, tiny_model):
    api.create_project(ProjectName="p")
    api.register_model("p", *tiny_model)
    return "p"


@pytest.fixture
def aws_unreachable(monkeypatch):
    """A region and credentials, so the worker gets past client setup into the pipeline; nothing listens there."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")


def test_killed_waiting_worker_fails_the_job(home, project, monkeypatch):
    with hold_worker_slot(home, monkeypatch):
        name = api.start_model_packaging_job(ProjectName="p", ModelVersion="1", Configuration=gg_config())["JobName"]
        pid = wait_until(lambda: _job_row(home, name)["pid"])
        assert _describe(name)["Status"] == "CREATED"
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid))
        described = _describe(name)
    assert described["Status"] == "FAILED"
    assert f"pid {pid}" in described["StatusMessage"] and "exited" in described["StatusMessage"]
    assert api.list_model_packaging_jobs(ProjectName="p")["ModelPackagingJobs"][0]["Status"] == "FAILED"


def test_killed_running_worker_fails_the_job(home, project, aws_unreachable):
    name = api.start_model_packaging_job(ProjectName="p", ModelVersion="1", Configuration=gg_config())["JobName"]
    wait_until(lambda: _describe(name)["Status"] == "RUNNING", timeout=60)
    pid = _job_row(home, name)["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid))
    described = _describe(name)
    assert described["Status"] == "FAILED", described
    assert "exited before finishing" in described["StatusMessage"]
    assert described["LastUpdatedTimestamp"] >= described["CreationTimestamp"]


def test_hung_worker_is_stopped_and_failed(home, project, aws_unreachable, monkeypatch):
    name = api.start_model_packaging_job(ProjectName="p", ModelVersion="1", Configuration=gg_config())["JobName"]
    wait_until(lambda: _describe(name)["Status"] == "RUNNING", timeout=60)
    pid = _job_row(home, name)["pid"]
    with sqlite3.connect(home / "store.sqlite3") as db:
        db.execute("UPDATE jobs SET heartbeat = ? WHERE name = ?", (time.time() - 120, name))
    monkeypatch.setenv("PACKAGER_HEARTBEAT_TIMEOUT_S", "60")
    described = _describe(name)
    assert described["Status"] == "FAILED" and "stopped reporting" in described["StatusMessage"]
    wait_until(lambda: not pid_alive(pid), timeout=20)  # the reader stopped it too
    assert _describe(name)["Status"] == "FAILED"


def test_worker_that_never_starts(home, project, monkeypatch):
    def no_processes(*args):
        raise OSError(11, "Resource temporarily unavailable")

    with monkeypatch.context() as patched:
        patched.setattr(packaging, "spawn_worker", no_processes)
        name = api.start_model_packaging_job(ProjectName="p", ModelVersion="1", Configuration=gg_config())["JobName"]
    described = _describe(name)
    assert described["Status"] == "FAILED" and "Could not start" in described["StatusMessage"]
    # A job whose starter died before recording a pid is failed once the launch grace has passed.
    with hold_worker_slot(home, monkeypatch):
        other = api.start_model_packaging_job(
            ProjectName="p", ModelVersion="1", Configuration=gg_config(ComponentVersion="7.0.0")
        )["JobName"]
        with sqlite3.connect(home / "store.sqlite3") as db:
            pid = db.execute("SELECT pid FROM jobs WHERE name = ?", (other,)).fetchone()[0]
            db.execute("UPDATE jobs SET pid = NULL, created = ? WHERE name = ?", (time.time() - 3600, other))
        os.kill(pid, signal.SIGKILL)
        assert "did not start" in _describe(other)["StatusMessage"]


_STARTER = """
import json, sys, time
from pathlib import Path
from packager.service.jobs import api
go = Path(sys.argv[1])
while not go.exists():
    time.sleep(0.01)
print(json.dumps(api.start_model_packaging_job(**json.loads(sys.argv[2]))))
"""


def _start_concurrently(tmp_path: Path, requests: list[dict]) -> list[dict]:
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _STARTER, str(go), json.dumps(r)],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in requests
    ]
    time.sleep(1.0)  # let every interpreter reach the starting line
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    return results


@pytest.mark.slow  # 16 interpreters on a small machine: about 10 s
def test_eight_processes_start_jobs_at_once(home, project, tmp_path):
    requests = [
        {
            "ProjectName": "p",
            "ModelVersion": "1",
            "Configuration": gg_config(ComponentVersion=f"1.0.{i}"),
            "Description": f"job {i}",
        }
        for i in range(8)
    ]
    names = [r["JobName"] for r in _start_concurrently(tmp_path, requests)]
    assert len(set(names)) == 8
    # No region is configured, so each worker fails at client setup: a quick, real, final state for all eight.
    finals = [
        api.wait_for_model_packaging_job("p", n, poll_seconds=0.2, timeout_seconds=120)["ModelPackagingDescription"]
        for n in names
    ]
    for i, final in enumerate(finals):
        assert final["Status"] == "FAILED" and "region" in final["StatusMessage"]
        assert final["ModelPackagingJobDescription"] == f"job {i}"
        assert final["ModelPackagingOutputDetails"]["Greengrass"]["ComponentVersion"] == f"1.0.{i}"
    listed = api.list_model_packaging_jobs(ProjectName="p")["ModelPackagingJobs"]
    assert sorted(j["JobName"] for j in listed) == sorted(names)


@pytest.mark.slow
def test_one_client_token_raced_by_eight_processes_makes_one_job(home, project, tmp_path, monkeypatch):
    request = {"ProjectName": "p", "ModelVersion": "1", "Configuration": gg_config(), "ClientToken": "same-token"}
    with hold_worker_slot(home, monkeypatch):
        names = {r["JobName"] for r in _start_concurrently(tmp_path, [request] * 8)}
        assert len(names) == 1
        assert len(api.list_model_packaging_jobs(ProjectName="p")["ModelPackagingJobs"]) == 1


def _s3_keys(s3) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=S3_BUCKET).get("Contents", []))


@pytest.mark.slow
def test_job_runs_to_succeeded_and_uploads(home, project, s3_server):
    name = api.start_model_packaging_job(
        ProjectName="p",
        ModelVersion="latest",
        JobName="tiny-x86",
        Configuration=gg_config(
            TargetPlatform={"Os": "LINUX", "Arch": "X86_64"},
            CompilerOptions="{'mcpu': 'core-avx2'}",
            Tags=[{"Key": "team", "Value": "vision"}],
        ),
    )["JobName"]
    seen = []
    final = api.wait_for_model_packaging_job(
        "p", name, poll_seconds=0.5, timeout_seconds=300, on_update=lambda d: seen.append(d["Status"])
    )
    job = final["ModelPackagingDescription"]
    assert job["Status"] == "SUCCEEDED", job.get("StatusMessage")
    assert seen[0] in ("CREATED", "RUNNING") and seen[-1] == "SUCCEEDED"
    assert job["ModelPackagingOutputDetails"]["Greengrass"] == {
        "ComponentName": "com.example.Tiny",
        "ComponentVersion": "1.0.0",
    }
    keys = _s3_keys(s3_server)
    assert sorted(keys) == [
        "models/com.example.Tiny/1.0.0/benchmark.json",  # the build's report, beside the artifact
        "models/com.example.Tiny/1.0.0/model.zip",
        "models/com.example.Tiny/1.0.0/recipe.yaml",
        f"models/edgepackager.lookoutvision.EdgeAgent/{AGENT_VERSION}/edge_agent.zip",
        f"models/edgepackager.lookoutvision.EdgeAgent/{AGENT_VERSION}/recipe.yaml",
    ], keys
    build = home / "jobs" / "p" / name / "greengrass-build"
    assert (build / "recipes").is_dir()


@pytest.mark.slow
def test_eight_concurrent_jobs_all_succeed(home, project, s3_server, tmp_path):
    requests = [
        {"ProjectName": "p", "ModelVersion": "1", "Configuration": gg_config(component=f"com.example.Tiny{i}")}
        for i in range(8)
    ]
    names = [r["JobName"] for r in _start_concurrently(tmp_path, requests)]
    finals = [
        api.wait_for_model_packaging_job("p", n, poll_seconds=1, timeout_seconds=900)["ModelPackagingDescription"]
        for n in names
    ]
    assert [f["Status"] for f in finals] == ["SUCCEEDED"] * 8, [f.get("StatusMessage") for f in finals]
    keys = _s3_keys(s3_server)
    for i, final in enumerate(finals):
        assert final["ModelPackagingOutputDetails"]["Greengrass"]["ComponentName"] == f"com.example.Tiny{i}"
        assert any(k.startswith(f"models/com.example.Tiny{i}/1.0.0/") for k in keys)


@pytest.mark.slow
def test_registered_component_version_arn_is_recorded(home, project, s3_server, monkeypatch):
    """In-process worker with a Stubber Greengrass v2 client, so registration happens and its ARN lands in the job."""
    import boto3
    from botocore.stub import ANY, Stubber

    monkeypatch.delenv("PACKAGER_NO_REGISTER")
    with hold_worker_slot(home, monkeypatch):
        name = api.start_model_packaging_job(
            ProjectName="p",
            ModelVersion="1",
            Configuration=gg_config(
                TargetPlatform={"Os": "LINUX", "Arch": "X86_64"}, Tags=[{"Key": "team", "Value": "vision"}]
            ),
        )["JobName"]
        os.kill(_job_row(home, name)["pid"], signal.SIGKILL)  # this test runs the job itself, below
    with sqlite3.connect(home / "store.sqlite3") as db:
        db.execute("UPDATE jobs SET pid = NULL, status = 'CREATED' WHERE name = ?", (name,))
    arn = "arn:aws:greengrass:us-east-1:123456789012:components:com.example.Tiny:versions:1.0.0"
    greengrass = boto3.client("greengrassv2", region_name="us-east-1")
    stub = Stubber(greengrass)
    agent_arn = f"arn:aws:greengrass:us-east-1:123456789012:components:edgepackager.lookoutvision.EdgeAgent:versions:{AGENT_VERSION}"
    stub.add_response("list_components", {"components": []}, {"scope": "PRIVATE"})
    stub.add_response(
        "create_component_version",
        {
            "arn": agent_arn,
            "componentName": "edgepackager.lookoutvision.EdgeAgent",
            "componentVersion": AGENT_VERSION,
            "creationTimestamp": time.time(),
            "status": {"componentState": "DEPLOYABLE"},
        },
        {"inlineRecipe": ANY, "tags": {"team": "vision"}},
    )
    stub.add_response("list_components", {"components": []}, {"scope": "PRIVATE"})
    stub.add_response(
        "create_component_version",
        {
            "arn": arn,
            "componentName": "com.example.Tiny",
            "componentVersion": "1.0.0",
            "creationTimestamp": time.time(),
            "status": {"componentState": "DEPLOYABLE"},
        },
        {"inlineRecipe": ANY, "tags": {"team": "vision"}},
    )
    with stub:
        assert worker_module.run_job(home, "p", name, clients=(s3_server, greengrass)) == 0
        stub.assert_no_pending_responses()
    job = _describe(name)
    assert job["Status"] == "SUCCEEDED", job.get("StatusMessage")
    assert job["ModelPackagingOutputDetails"]["Greengrass"]["ComponentVersionArn"] == arn


def test_unexpected_worker_error_fails_with_short_message_and_logs_traceback(home, project, monkeypatch):
    with hold_worker_slot(home, monkeypatch):
        name = api.start_model_packaging_job(ProjectName="p", ModelVersion="1", Configuration=gg_config())["JobName"]
        with sqlite3.connect(
            home / "store.sqlite3"
        ) as db:  # a record no API call can produce: the worker's own bug path
            db.execute("UPDATE jobs SET configuration = ? WHERE name = ?", ('{"Greengrass": {}}', name))
    final = api.wait_for_model_packaging_job("p", name, poll_seconds=0.1, timeout_seconds=60)[
        "ModelPackagingDescription"
    ]
    assert final["Status"] == "FAILED"
    assert final["StatusMessage"].startswith("Internal error: KeyError") and final["StatusMessage"].endswith(
        "(see worker.log)"
    )
    log = (api.job_dir(home, "p", name) / "worker.log").read_text()
    assert "Traceback (most recent call last)" in log and "KeyError" in log


def test_store_is_sqlite_in_wal_mode(home, project):
    with sqlite3.connect(home / "store.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # Commits do not wait for fsync (the WAL is synced at checkpoints): a job's progress write after a build wrote
    # hundreds of MB otherwise waited for the file system to flush them.
    from packager.service.jobs.store import open_store

    store = open_store(home)
    try:
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    finally:
        store.close()
