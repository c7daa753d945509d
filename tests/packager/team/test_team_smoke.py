"""One job through a server and a Celery worker on another 'host': queued, then on that worker, then SUCCEEDED."""

from __future__ import annotations

import time

import pytest

from tests.packager.team.conftest import OUTPUT_BUCKET
from tests.packager.team.harness import lookout, register_model


def gg(version: str) -> dict:
    return {"Greengrass": {"TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}, "ComponentName": "com.team.Example",
                           "ComponentVersion": version, "S3OutputLocation": {"Bucket": OUTPUT_BUCKET, "Prefix": "c"}}}


@pytest.mark.slow
def test_a_job_runs_on_a_celery_worker_that_fetches_the_model_from_s3(team, example_model, greengrass_loopback):
    server = team.start_server("server-a")
    register_model(server.endpoint, "line1", *example_model)
    client = lookout(server.endpoint)
    job = client.start_model_packaging_job(ProjectName="line1", ModelVersion="1", Configuration=gg("1.0.0"))["JobName"]
    described = client.describe_model_packaging_job(ProjectName="line1", JobName=job)["ModelPackagingDescription"]
    assert described["Status"] == "CREATED" and described["StatusMessage"] == "Queued on x86_64-cpu; waiting for a worker."
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
