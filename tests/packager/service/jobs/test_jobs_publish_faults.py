"""Issue 5's fault injection at the job level: the S3 server stops in the middle of a job's multi-file upload.
The job ends FAILED naming the step, nothing is registered, and starting it again with the same ClientToken
completes it with exactly one component version per component."""

from __future__ import annotations

import os
import signal
import sqlite3
import time

import boto3
import pytest
from botocore.stub import ANY, Stubber

from packager.edge import AGENT_VERSION
from packager.service.jobs import api
from packager.service.jobs import worker as worker_module
from tests.packager.greengrass.publish.loopback import LoopbackS3
from tests.packager.service.jobs.support import gg_config, hold_worker_slot, home, wait_until  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

BUCKET = "fault-bucket"
AGENT = "edgepackager.lookoutvision.EdgeAgent"


@pytest.fixture
def s3(monkeypatch):
    server = LoopbackS3()
    server.start()
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = boto3.client("s3", region_name="us-east-1", endpoint_url=server.endpoint)
    client.create_bucket(Bucket=BUCKET)
    yield server, client
    server.stop()


def _run_in_process(home, name, clients):
    """Keep the spawned worker parked, then run the job here, where the Greengrass client can be stubbed."""
    with sqlite3.connect(home / "store.sqlite3") as db:
        pid = db.execute("SELECT pid FROM jobs WHERE name = ?", (name,)).fetchone()[0]
    if pid:
        os.kill(pid, signal.SIGKILL)
    with sqlite3.connect(home / "store.sqlite3") as db:
        db.execute("UPDATE jobs SET pid = NULL WHERE name = ?", (name,))
    return worker_module.run_job(home, "p", name, clients=clients)


def _created(name: str, arn: str, version: str = "1.0.0") -> dict:
    return {
        "arn": arn,
        "componentName": name,
        "componentVersion": version,
        "creationTimestamp": time.time(),
        "status": {"componentState": "DEPLOYABLE"},
    }


def test_outage_mid_upload_fails_the_job_and_the_same_client_token_completes_it(home, tiny_model, s3, monkeypatch):
    server, s3_client = s3
    api.create_project(ProjectName="p")
    api.register_model("p", *tiny_model)
    params = dict(
        ProjectName="p",
        ModelVersion="1",
        ClientToken="line-3-retry",
        Configuration=gg_config(bucket=BUCKET, Tags=[{"Key": "line", "Value": "3"}]),
    )
    greengrass = boto3.client("greengrassv2", region_name="us-east-1")
    calls = []
    greengrass.meta.events.register(
        "before-parameter-build.greengrassv2.*", lambda model, **_: calls.append(model.name)
    )

    # First run: the agent's artifact goes up, then the server stops before the model's artifact.
    puts = []

    def stop_on_second_artifact(params, **_):
        if params["Key"].endswith(".zip"):
            puts.append(params["Key"])
            if len(puts) == 2:
                server.stop()

    s3_client.meta.events.register("before-parameter-build.s3.PutObject", stop_on_second_artifact, unique_id="outage")
    with hold_worker_slot(home, monkeypatch):
        name = api.start_model_packaging_job(**params)["JobName"]
        wait_until(lambda: api.describe_model_packaging_job(ProjectName="p", JobName=name))
    stub = Stubber(greengrass)
    stub.add_response("list_components", {"components": []}, {"scope": "PRIVATE"})  # the agent's pre-check
    stub.add_response(
        "create_component_version",
        _created(AGENT, f"arn:aws:greengrass:us-east-1:1:components:{AGENT}:versions:{AGENT_VERSION}", AGENT_VERSION),
        {"inlineRecipe": ANY, "tags": {"line": "3"}},
    )
    stub.add_response("list_components", {"components": []}, {"scope": "PRIVATE"})  # the model's pre-check
    with stub:
        _run_in_process(home, name, (s3_client, greengrass))
    failed = api.describe_model_packaging_job(ProjectName="p", JobName=name)["ModelPackagingDescription"]
    assert failed["Status"] == "FAILED"
    assert failed["StatusMessage"].startswith("upload artifact model.zip")
    assert calls.count("CreateComponentVersion") == 1  # the agent only: the model was never registered
    assert "ComponentVersionArn" not in failed["ModelPackagingOutputDetails"]["Greengrass"]

    # Retry: the same ClientToken returns the same JobName and runs the job again.
    s3_client.meta.events.unregister("before-parameter-build.s3.PutObject", unique_id="outage")
    server.start()
    calls.clear()
    with hold_worker_slot(home, monkeypatch):
        assert api.start_model_packaging_job(**params) == {"JobName": name}
        assert (
            api.describe_model_packaging_job(ProjectName="p", JobName=name)["ModelPackagingDescription"]["Status"]
            == "CREATED"
        )
    model_arn = "arn:aws:greengrass:us-east-1:1:components:com.example.Tiny:versions:1.0.0"
    agent_component = {
        "arn": f"arn:aws:greengrass:us-east-1:1:components:{AGENT}",
        "componentName": AGENT,
        "latestVersion": {
            "arn": f"arn:aws:greengrass:us-east-1:1:components:{AGENT}:versions:{AGENT_VERSION}",
            "componentVersion": AGENT_VERSION,
        },
    }
    stub = Stubber(greengrass)
    stub.add_response("list_components", {"components": [agent_component]}, {"scope": "PRIVATE"})
    stub.add_response(
        "describe_component",
        {
            "arn": agent_component["latestVersion"]["arn"],
            "componentName": AGENT,
            "componentVersion": AGENT_VERSION,
            "creationTimestamp": time.time(),
            "status": {"componentState": "DEPLOYABLE"},
        },
        {"arn": ANY},
    )
    agent_recipe = (
        home / "jobs" / "p" / name / "greengrass-build" / "recipes" / f"{AGENT}-{AGENT_VERSION}.yaml"
    ).read_bytes()
    stub.add_response(
        "get_component",
        {"recipeOutputFormat": "YAML", "recipe": agent_recipe},
        {"arn": ANY, "recipeOutputFormat": "YAML"},
    )
    stub.add_response("list_components", {"components": [agent_component]}, {"scope": "PRIVATE"})
    stub.add_response(
        "create_component_version",
        _created("com.example.Tiny", model_arn),
        {"inlineRecipe": ANY, "tags": {"line": "3"}},
    )
    with stub:
        assert _run_in_process(home, name, (s3_client, greengrass)) == 0
        stub.assert_no_pending_responses()
    done = api.describe_model_packaging_job(ProjectName="p", JobName=name)["ModelPackagingDescription"]
    assert done["Status"] == "SUCCEEDED", done["StatusMessage"]
    assert done["ModelPackagingOutputDetails"]["Greengrass"]["ComponentVersionArn"] == model_arn
    assert calls.count("CreateComponentVersion") == 1  # the model, once; the agent was already registered
    keys = {o["Key"] for o in s3_client.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert {"models/com.example.Tiny/1.0.0/model.zip", "models/com.example.Tiny/1.0.0/recipe.yaml"} <= keys
    # A third call with the token is plain idempotency: the job SUCCEEDED, so nothing runs again.
    assert api.start_model_packaging_job(**params) == {"JobName": name}
    assert (
        api.describe_model_packaging_job(ProjectName="p", JobName=name)["ModelPackagingDescription"]["Status"]
        == "SUCCEEDED"
    )
