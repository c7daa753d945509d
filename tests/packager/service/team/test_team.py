"""The team's service end to end: two servers and two Celery workers (each its own PACKAGER_HOME, as if on its own host)
sharing only PostgreSQL, Redis and S3. 20 submissions, a worker host killed mid-compile, PostgreSQL stopped for a while."""

from __future__ import annotations

import base64
import hashlib
import time

import psycopg
import pytest
import yaml
from botocore.exceptions import ClientError

from tests.packager.service.team.conftest import OUTPUT_BUCKET
from tests.packager.service.team.harness import lookout, register_model

COMPONENT = "com.team.Line"
FINAL = ("SUCCEEDED", "FAILED")


def gg(version: str) -> dict:
    return {
        "Greengrass": {
            "TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"},
            "ComponentName": COMPONENT,
            "ComponentVersion": version,
            "S3OutputLocation": {"Bucket": OUTPUT_BUCKET, "Prefix": "team"},
        }
    }


def describe(client, job: str) -> dict:
    return client.describe_model_packaging_job(ProjectName="line", JobName=job)["ModelPackagingDescription"]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


@pytest.mark.slow
def test_twenty_jobs_two_servers_two_workers_a_lost_host_and_a_database_restart(
    team, postgres, example_model, s3_loopback, greengrass_loopback
):
    team.env["PACKAGER_REDELIVERY_AFTER_S"] = "45"  # Redis hands a dead host's job out again after this
    team.env["PACKAGER_TAKEOVER_AFTER_S"] = "15"
    servers = [team.start_server("server-a"), team.start_server("server-b")]
    clients = [lookout(s.endpoint, attempts=6) for s in servers]
    register_model(servers[0].endpoint, "line", *example_model)
    workers = {"worker-a": team.start_worker("worker-a"), "worker-b": team.start_worker("worker-b")}

    # The first job registers the Edge Agent component the others depend on.
    first = clients[0].start_model_packaging_job(
        ProjectName="line", ModelVersion="1", Configuration=gg("1.0.0"), ClientToken="token-0"
    )["JobName"]
    wait_for(lambda: describe(clients[1], first)["Status"] in FINAL, 300, "the first job")

    # 19 more submissions, alternating servers: 15 new jobs, 3 repeated ClientTokens (sent to the other server)
    # and one repeated component version.
    names: dict[str, str] = {"1.0.0": first}
    repeats = []
    for i in range(1, 16):
        version = f"1.0.{i}"
        names[version] = clients[i % 2].start_model_packaging_job(
            ProjectName="line", ModelVersion="1", Configuration=gg(version), ClientToken=f"token-{i}"
        )["JobName"]
        if i in (2, 5, 9):
            again = clients[(i + 1) % 2].start_model_packaging_job(
                ProjectName="line", ModelVersion="1", Configuration=gg(version), ClientToken=f"token-{i}"
            )["JobName"]
            repeats.append((names[version], again))
    with pytest.raises(ClientError) as conflict:
        clients[1].start_model_packaging_job(ProjectName="line", ModelVersion="1", Configuration=gg("1.0.7"))
    assert conflict.value.response["Error"]["Code"] == "ConflictException"
    assert len(names) + len(repeats) + 1 == 20
    assert all(a == b for a, b in repeats), repeats

    # Kill worker A's host while it compiles a job.
    def compiling_on_a():
        for job in names.values():
            message = describe(clients[0], job).get("StatusMessage", "")
            if "compiling" in message and "worker-a@team-test" in message:
                return job
        return None

    victim = wait_for(compiling_on_a, 300, "a job compiling on worker A", interval=0.2)
    workers["worker-a"].kill_host()
    assert describe(clients[0], victim)["Status"] == "RUNNING"

    # PostgreSQL stops for a few seconds: servers answer with a retryable error, workers wait.
    postgres.stop("fast")
    try:
        impatient = lookout(servers[1].endpoint, attempts=1)
        with pytest.raises(ClientError) as outage:
            impatient.describe_model_packaging_job(ProjectName="line", JobName=victim)
        assert outage.value.response["Error"]["Code"] in ("ThrottlingException", "InternalServerException")
        assert outage.value.response["ResponseMetadata"]["HTTPStatusCode"] in (429, 500, 503)
        time.sleep(4)
    finally:
        postgres.start()

    # A replacement host for A joins; every job ends, the killed one delivered again.
    workers["worker-a2"] = team.start_worker("worker-a2")
    finals = {}
    for version, job in names.items():
        finals[version] = wait_for(
            lambda job=job: (d := describe(clients[1], job))["Status"] in FINAL and d, 900, f"job {job}"
        )
    logs = {name: w.log.read_text()[-2000:] for name, w in workers.items()}
    assert all(d["Status"] == "SUCCEEDED" for d in finals.values()), (
        {v: (d["Status"], d.get("StatusMessage")) for v, d in finals.items()},
        logs,
    )

    # The killed job was delivered again and finished on another worker.
    with psycopg.connect(team.env["PACKAGER_DATABASE_URL"]) as db:
        worker, deliveries = db.execute("SELECT worker, deliveries FROM jobs WHERE name = %s", (victim,)).fetchone()
        counts = dict(db.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())
    assert deliveries >= 2 and worker != "worker-a@team-test", (worker, deliveries)
    assert counts == {"SUCCEEDED": 16}

    # No record lost: both servers list the same 16 jobs.
    for client in clients:
        listed = client.list_model_packaging_jobs(ProjectName="line")["ModelPackagingJobs"]
        assert sorted(j["JobName"] for j in listed) == sorted(names.values())

    # Each component version registered exactly once, with digests that match its bytes in S3.
    s3 = s3_loopback[1]
    created = [key for key in greengrass_loopback.create_calls if key[0] == COMPONENT]
    assert sorted(created) == sorted((COMPONENT, v) for v in names), created
    for version in names:
        recipe = yaml.safe_load(greengrass_loopback.versions[(COMPONENT, version)])
        artifacts = [a for m in recipe["Manifests"] for a in m.get("Artifacts", [])]
        assert artifacts
        for artifact in artifacts:
            bucket, _, key = artifact["Uri"].removeprefix("s3://").partition("/")
            data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            assert base64.b64encode(hashlib.sha256(data).digest()).decode() == artifact["Digest"], artifact["Uri"]
