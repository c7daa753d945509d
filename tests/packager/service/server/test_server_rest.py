"""The REST server through the real botocore 1.39.17 lookoutvision client over HTTP: every operation, errors, paging."""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import threading
import urllib.request

import boto3
import botocore
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from packager.service.server.app import ServerConfig, make_server
from tests.packager.service.jobs.support import (  # noqa: F401  (fixtures)
    REPO_ROOT,
    cli_argv,
    cli_env,
    gg_config,
    hold_worker_slot,
    home,
    wait_until,
)

ACCESS_KEY, SECRET_KEY = "AKIDPACKAGERTEST", "packager-test-secret"


@pytest.fixture
def endpoint(home):
    server = make_server("127.0.0.1", 0, ServerConfig(keys={ACCESS_KEY: SECRET_KEY}, quiet=True))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def lookout(endpoint: str, secret: str = SECRET_KEY, key: str = ACCESS_KEY):
    return boto3.client(
        "lookoutvision",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )


def signed_call(endpoint: str, method: str, path: str, body: bytes = b"") -> tuple[int, dict, dict]:
    """A request signed with botocore's SigV4 signer, for routes boto3 has no method for."""
    request = AWSRequest(method=method, url=endpoint + path, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "lookoutvision", "us-east-1").add_auth(request)
    prepared = request.prepare()
    http = urllib.request.Request(prepared.url, data=body or None, method=method, headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(http) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def test_botocore_is_the_pinned_release():
    assert botocore.__version__ == "1.39.17"


def test_every_operation_over_http(endpoint, home, tiny_model, monkeypatch):
    client = lookout(endpoint)
    created = client.create_project(ProjectName="rest-proj")["ProjectMetadata"]
    assert isinstance(created["CreationTimestamp"], dt.datetime)
    assert client.describe_project(ProjectName="rest-proj")["ProjectDescription"]["ProjectArn"] == created["ProjectArn"]
    assert [p["ProjectName"] for p in client.list_projects()["Projects"]] == ["rest-proj"]

    model, spec = tiny_model
    body = json.dumps(
        {
            "Model": base64.b64encode(model.read_bytes()).decode(),
            "Spec": json.loads(spec.read_text()),
            "Description": "from-rest",
        }
    ).encode()
    for expected in ("1", "2"):
        status, _, registered = signed_call(endpoint, "POST", "/x-packager/projects/rest-proj/models", body)
        assert status == 200 and registered["ModelMetadata"]["ModelVersion"] == expected
    described = client.describe_model(ProjectName="rest-proj", ModelVersion="latest")["ModelDescription"]
    assert described["ModelVersion"] == "2" and described["Description"] == "from-rest"
    assert [m["ModelVersion"] for m in client.list_models(ProjectName="rest-proj")["Models"]] == ["1", "2"]
    assert client.delete_model(ProjectName="rest-proj", ModelVersion="2")["ModelArn"] == described["ModelArn"]

    with hold_worker_slot(home, monkeypatch):
        job = client.start_model_packaging_job(
            ProjectName="rest-proj",
            ModelVersion="1",
            JobName="rest-job",
            Description="over http",
            Configuration=gg_config(
                TargetPlatform={"Os": "LINUX", "Arch": "X86_64"}, Tags=[{"Key": "k", "Value": "v"}]
            ),
        )
        assert job["JobName"] == "rest-job"
        description = client.describe_model_packaging_job(ProjectName="rest-proj", JobName="rest-job")[
            "ModelPackagingDescription"
        ]
        assert description["Status"] == "CREATED" and description["ModelPackagingMethod"] == "Greengrass"
        assert description["ModelPackagingConfiguration"]["Greengrass"]["Tags"] == [{"Key": "k", "Value": "v"}]
        assert description["ModelPackagingOutputDetails"]["Greengrass"]["ComponentVersion"] == "1.0.0"
        assert isinstance(description["LastUpdatedTimestamp"], dt.datetime)
        listed = client.list_model_packaging_jobs(ProjectName="rest-proj")["ModelPackagingJobs"]
        assert [j["JobName"] for j in listed] == ["rest-job"]
    wait_until(
        lambda: (
            client.describe_model_packaging_job(ProjectName="rest-proj", JobName="rest-job")[
                "ModelPackagingDescription"
            ]["Status"]
            == "FAILED"
        ),
        timeout=60,
    )
    assert client.delete_project(ProjectName="rest-proj")["ProjectArn"] == created["ProjectArn"]
    assert client.list_projects()["Projects"] == []


def test_service_errors_parse_as_botocore_errors(endpoint, home, tiny_model, monkeypatch):
    client = lookout(endpoint)
    with pytest.raises(client.exceptions.ResourceNotFoundException) as info:
        client.describe_project(ProjectName="ghost")
    assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert (info.value.response["ResourceId"], info.value.response["ResourceType"]) == ("ghost", "PROJECT")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    client.create_project(ProjectName="p")
    with pytest.raises(client.exceptions.ConflictException) as info:
        client.create_project(ProjectName="p")
    assert info.value.response["ResourceType"] == "PROJECT"
    with pytest.raises(client.exceptions.ValidationException) as info:
        client.describe_project(ProjectName="bad.name")
    assert "ProjectName" in info.value.response["Error"]["Message"]
    with pytest.raises(client.exceptions.ValidationException):
        client.list_projects(MaxResults=101)
    with pytest.raises(client.exceptions.ValidationException, match="NextToken"):
        client.list_projects(NextToken="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
    with pytest.raises(client.exceptions.ValidationException, match="mutually exclusive"):
        client.start_model_packaging_job(
            ProjectName="p",
            ModelVersion="1",
            Configuration=gg_config(TargetDevice="jetson_xavier", TargetPlatform={"Os": "LINUX", "Arch": "ARM64"}),
        )
    with pytest.raises(client.exceptions.ResourceNotFoundException) as info:
        client.start_model_packaging_job(ProjectName="p", ModelVersion="1", Configuration=gg_config())
    assert info.value.response["ResourceType"] == "MODEL"
    client.get_paginator("list_projects")  # the service model's paginators are usable against us
    status, headers, body = signed_call(endpoint, "GET", "/2020-11-20/nowhere")
    assert status == 404 and headers["x-amzn-ErrorType"] == "UnknownOperationException"


def test_idempotency_and_pagination_over_http(endpoint, home, tiny_model, monkeypatch):
    client = lookout(endpoint)
    for i in range(7):
        client.create_project(ProjectName=f"p{i}")
    pages = list(client.get_paginator("list_projects").paginate(PaginationConfig={"PageSize": 3}))
    assert [len(p["Projects"]) for p in pages] == [3, 3, 1]
    signed_call(
        endpoint,
        "POST",
        "/x-packager/projects/p0/models",
        json.dumps({"Model": base64.b64encode(tiny_model[0].read_bytes()).decode()}).encode(),
    )
    with hold_worker_slot(home, monkeypatch):
        params = dict(ProjectName="p0", ModelVersion="1", Configuration=gg_config(), ClientToken="http-retry")
        first = client.start_model_packaging_job(**params)["JobName"]
        assert client.start_model_packaging_job(**params)["JobName"] == first
        with pytest.raises(client.exceptions.ConflictException):
            client.start_model_packaging_job(**{**params, "Description": "different"})
        # boto3 fills ClientToken itself when it is left out, so plain retries never double-start.
        second = client.start_model_packaging_job(
            ProjectName="p0", ModelVersion="1", Configuration=gg_config(ComponentVersion="2.0.0")
        )["JobName"]
        jobs = list(
            client.get_paginator("list_model_packaging_jobs").paginate(
                ProjectName="p0", PaginationConfig={"PageSize": 1}
            )
        )
    assert [j["JobName"] for page in jobs for j in page["ModelPackagingJobs"]] == [first, second]


def test_serve_command_end_to_end(home, tmp_path):
    proc = subprocess.Popen(
        cli_argv("serve", "--port", "0", "--quiet"),
        cwd=REPO_ROOT,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(PACKAGER_ACCESS_KEY_ID=ACCESS_KEY, PACKAGER_SECRET_ACCESS_KEY=SECRET_KEY),
    )
    try:
        line = proc.stderr.readline()
        assert "http://127.0.0.1:" in line, line
        port = int(line.split("http://127.0.0.1:")[1].split()[0])
        client = lookout(f"http://127.0.0.1:{port}")
        assert client.create_project(ProjectName="served")["ProjectMetadata"]["ProjectName"] == "served"
        with pytest.raises(client.exceptions.AccessDeniedException):
            lookout(f"http://127.0.0.1:{port}", secret="nope").list_projects()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    refused = subprocess.run(
        cli_argv("serve", "--port", "0"),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={
            k: v
            for k, v in cli_env().items()
            if not k.startswith("PACKAGER_ACCESS") and not k.startswith("PACKAGER_SECRET")
        },
        timeout=60,
    )
    assert refused.returncode == 2 and "PACKAGER_ACCESS_KEY_ID" in refused.stderr


def test_register_model_with_external_data_over_http(endpoint, home, tmp_path):
    from tests.compilers.frontends.test_anomalib_intake import anomalib_like

    path = anomalib_like(tmp_path / "export" / "model.onnx")
    data = (tmp_path / "export" / "model.onnx.data").read_bytes()
    body = {
        "Model": base64.b64encode(path.read_bytes()).decode(),
        "CreateProject": True,
        "ExternalData": {"model.onnx.data": base64.b64encode(data).decode()},
    }
    status, _, registered = signed_call(endpoint, "POST", "/x-packager/projects/zoo/models", json.dumps(body).encode())
    assert status == 200, registered
    assert (home / "models" / "sha256" / registered["ModelSha256"] / "model.onnx.data").read_bytes() == data
    status, _, error = signed_call(
        endpoint, "POST", "/x-packager/projects/zoo/models", json.dumps({**body, "ExternalData": {}}).encode()
    )  # the data file left out
    assert status == 400 and "model.onnx.data" in error["Message"] and "missing" in error["Message"]
    status, _, error = signed_call(
        endpoint,
        "POST",
        "/x-packager/projects/zoo/models",
        json.dumps({**body, "ExternalData": {"../x.data": "AA=="}}).encode(),
    )
    assert status == 400 and "ExternalData" in error["Message"]
