"""One job through a server and a Celery worker on another 'host': queued, then on that worker, then SUCCEEDED."""

from __future__ import annotations

import os
import signal
import time

import psycopg
import pytest

from tests.packager.service.team.conftest import OUTPUT_BUCKET
from tests.packager.service.team.harness import lookout, register_model


def gg(version: str) -> dict:
    return {
        "Greengrass": {
            "TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"},
            "ComponentName": "com.team.Example",
            "ComponentVersion": version,
            "S3OutputLocation": {"Bucket": OUTPUT_BUCKET, "Prefix": "c"},
        }
    }


@pytest.mark.slow
def test_a_job_runs_on_a_celery_worker_that_fetches_the_model_from_s3(team, example_model, greengrass_loopback):
    server = team.start_server("server-a")
    register_model(server.endpoint, "line1", *example_model)
    client = lookout(server.endpoint)
    job = client.start_model_packaging_job(ProjectName="line1", ModelVersion="1", Configuration=gg("1.0.0"))["JobName"]
    described = client.describe_model_packaging_job(ProjectName="line1", JobName=job)["ModelPackagingDescription"]
    assert (
        described["Status"] == "CREATED" and described["StatusMessage"] == "Queued on x86_64-cpu; waiting for a worker."
    )
    worker = team.start_worker("worker-a")
    seen, started = set(), time.monotonic()
    while described["Status"] not in ("SUCCEEDED", "FAILED"):
        assert time.monotonic() - started < 600, described
        time.sleep(0.5)
        described = client.describe_model_packaging_job(ProjectName="line1", JobName=job)["ModelPackagingDescription"]
        seen.add(described.get("StatusMessage", ""))
    assert described["Status"] == "SUCCEEDED", (described, worker.log.read_text()[-3000:])
    assert any("compiling" in m and "(on worker-a@team-test)" in m for m in seen), seen
    assert "on worker-a@team-test" in described["StatusMessage"]
    assert list((worker.home / "models" / "sha256").glob("*.onnx")), "the worker fetched the model into its own home"
    assert ("com.team.Example", "1.0.0") in greengrass_loopback.versions
    print(f"job took {time.monotonic() - started:.1f} s")


def _children(pid: int) -> list[int]:
    from pathlib import Path

    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@pytest.mark.slow
def test_a_pool_process_killed_mid_compile_is_a_failed_delivery_run_again_at_once(team, example_model):
    team.env["PACKAGER_REDELIVERY_AFTER_S"] = "3600"  # so only the worker-lost path can bring the job back in time
    team.env["PACKAGER_TAKEOVER_AFTER_S"] = "8"
    server = team.start_server("server-a")
    register_model(server.endpoint, "line1", *example_model)
    worker = team.start_worker("worker-a")
    client = lookout(server.endpoint)
    job = client.start_model_packaging_job(ProjectName="line1", ModelVersion="1", Configuration=gg("2.0.0"))["JobName"]
    started = time.monotonic()
    while "compiling" not in (
        described := client.describe_model_packaging_job(ProjectName="line1", JobName=job)["ModelPackagingDescription"]
    ).get("StatusMessage", ""):
        assert time.monotonic() - started < 300 and described["Status"] != "FAILED", described
        time.sleep(0.2)
    (pool,) = _children(worker.popen.pid)
    os.kill(pool, signal.SIGKILL)
    killed = time.monotonic()
    while (
        described := client.describe_model_packaging_job(ProjectName="line1", JobName=job)["ModelPackagingDescription"]
    )["Status"] not in ("SUCCEEDED", "FAILED"):
        assert time.monotonic() - killed < 300, described
        time.sleep(0.5)
    assert described["Status"] == "SUCCEEDED", (described, worker.log.read_text()[-3000:])
    assert time.monotonic() - killed < 200  # long before the 3600 s visibility timeout
    with psycopg.connect(team.env["PACKAGER_DATABASE_URL"]) as db:
        assert db.execute("SELECT deliveries FROM jobs WHERE name = %s", (job,)).fetchone() == (2,)
    assert "WorkerLostError" in worker.log.read_text()
