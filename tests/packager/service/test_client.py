"""packager.client(): boto3's lookoutvision method names, argument names, response shapes and error classes."""

from __future__ import annotations

import datetime as dt
import threading

import boto3
import pytest
from botocore.exceptions import ClientError

import packager
from packager.service.client import LookoutVisionClient
from packager.service.server.app import ServerConfig, make_server
from tests.packager.service.jobs.support import gg_config, hold_worker_slot, home, wait_until  # noqa: F401  (fixture)


@pytest.fixture
def client(home) -> LookoutVisionClient:
    return packager.client()


def test_every_operation(client, home, tiny_model, monkeypatch):
    created = client.create_project(ProjectName="c1")
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert client.describe_project(ProjectName="c1")["ProjectDescription"]["ProjectName"] == "c1"
    assert [p["ProjectName"] for p in client.list_projects()["Projects"]] == ["c1"]
    model, spec = tiny_model
    assert (
        client.register_model(ProjectName="c1", ModelPath=model, SpecPath=spec)["ModelMetadata"]["ModelVersion"] == "1"
    )
    assert (
        client.register_model(ProjectName="c1", ModelPath=str(model), Description="two")["ModelMetadata"][
            "ModelVersion"
        ]
        == "2"
    )
    assert client.describe_model(ProjectName="c1", ModelVersion="latest")["ModelDescription"]["Description"] == "two"
    assert len(client.list_models(ProjectName="c1", MaxResults=1)["Models"]) == 1
    assert client.delete_model(ProjectName="c1", ModelVersion="2")["ModelArn"].endswith("model/c1/2")
    with hold_worker_slot(home, monkeypatch):
        job = client.start_model_packaging_job(ProjectName="c1", ModelVersion="1", Configuration=gg_config())
        description = client.describe_model_packaging_job(ProjectName="c1", JobName=job["JobName"])[
            "ModelPackagingDescription"
        ]
        assert description["Status"] == "CREATED" and isinstance(description["CreationTimestamp"], dt.datetime)
        assert [j["JobName"] for j in client.list_model_packaging_jobs(ProjectName="c1")["ModelPackagingJobs"]] == [
            job["JobName"]
        ]
    wait_until(
        lambda: (
            client.describe_model_packaging_job(ProjectName="c1", JobName=job["JobName"])["ModelPackagingDescription"][
                "Status"
            ]
            == "FAILED"
        ),
        timeout=60,
    )
    assert client.delete_project(ProjectName="c1")["ProjectArn"] == created["ProjectMetadata"]["ProjectArn"]


def test_errors_look_like_botocore_client_errors(client, home):
    with pytest.raises(client.exceptions.ResourceNotFoundException) as info:
        client.describe_project(ProjectName="ghost")
    error = info.value
    assert isinstance(error, ClientError)
    assert error.response["Error"] == {"Code": "ResourceNotFoundException", "Message": "project 'ghost' does not exist"}
    assert (error.response["ResourceId"], error.response["ResourceType"]) == ("ghost", "PROJECT")
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert error.operation_name == "DescribeProject"
    assert str(error) == (
        "An error occurred (ResourceNotFoundException) when calling the DescribeProject operation: "
        "project 'ghost' does not exist"
    )
    with pytest.raises(client.exceptions.ValidationException) as info:
        client.start_model_packaging_job(
            ProjectName="ghost", ModelVersion="1", Configuration=gg_config(ComponentName="a b")
        )
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert "Configuration.Greengrass.ComponentName" in info.value.response["Error"]["Message"]
    client.create_project(ProjectName="dup")
    with pytest.raises(client.exceptions.ConflictException) as info:
        client.create_project(ProjectName="dup")
    assert info.value.response["ResourceType"] == "PROJECT"
    with pytest.raises(client.exceptions.ClientError):
        client.list_projects(Bogus=1)


def test_same_shapes_as_boto3_against_the_server(client, home):
    """The in-process client and boto3 over HTTP answer with the same keys and values (boto3's timestamps in tzlocal)."""
    server = make_server("127.0.0.1", 0, ServerConfig(keys={"AK": "SK"}, quiet=True))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        remote = boto3.client(
            "lookoutvision",
            endpoint_url=f"http://127.0.0.1:{server.server_address[1]}",
            region_name="us-east-1",
            aws_access_key_id="AK",
            aws_secret_access_key="SK",
        )
        client.create_project(ProjectName="shared")
        ours = client.describe_project(ProjectName="shared")
        theirs = remote.describe_project(ProjectName="shared")
        assert set(ours) == set(theirs)
        a, b = ours["ProjectDescription"], theirs["ProjectDescription"]
        assert set(a) == set(b) and a["ProjectArn"] == b["ProjectArn"]
        assert abs(a["CreationTimestamp"] - b["CreationTimestamp"]) < dt.timedelta(milliseconds=1)
        with pytest.raises(ClientError) as local_error:
            client.describe_model(ProjectName="shared", ModelVersion="3")
        with pytest.raises(ClientError) as remote_error:
            remote.describe_model(ProjectName="shared", ModelVersion="3")
        strip = {"ResponseMetadata"}
        assert {k: v for k, v in local_error.value.response.items() if k not in strip} == {
            k: v for k, v in remote_error.value.response.items() if k not in strip
        }
    finally:
        server.shutdown()
        server.server_close()


def test_paginators(client, home):
    for i in range(5):
        client.create_project(ProjectName=f"p{i}")
    assert client.can_paginate("list_projects") and not client.can_paginate("describe_project")
    pages = list(client.get_paginator("list_projects").paginate(PaginationConfig={"PageSize": 2}))
    assert [len(p["Projects"]) for p in pages] == [2, 2, 1]
    limited = client.get_paginator("list_projects").paginate(PaginationConfig={"PageSize": 2, "MaxItems": 3})
    assert [p["ProjectName"] for p in limited.build_full_result()["Projects"]] == ["p0", "p1", "p2"]
    resumed = client.get_paginator("list_projects").paginate(PaginationConfig={"StartingToken": pages[1]["NextToken"]})
    assert [p["ProjectName"] for p in resumed.build_full_result()["Projects"]] == ["p4"]


def test_packager_client_is_callable_before_and_after_the_submodule_import(home):
    import subprocess
    import sys

    from tests.packager.service.jobs.support import REPO_ROOT, cli_env

    code = (
        "import packager; a = packager.client(); import packager.service.client; b = packager.client(); "
        "from packager.service.client import LookoutVisionClient as C; assert isinstance(a, C) and isinstance(b, C); "
        "print(b.list_projects()['Projects'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=cli_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
