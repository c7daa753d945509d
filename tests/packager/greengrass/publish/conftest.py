"""Fixtures: a real S3 server over HTTP on 127.0.0.1, fake credentials from the standard chain, and clients built
by make_clients() so the endpoint override (AWS_ENDPOINT_URL_S3) is what points them at it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
from botocore.config import Config
from botocore.stub import Stubber

from packager.greengrass.bundle import S3Location
from packager.greengrass.publish.clients import make_clients

from .loopback import LoopbackS3

REGION = "us-east-1"
FAKE_ACCESS_KEY_ID = "AKIAPUBLISHTESTKEY01"
FAKE_SECRET_ACCESS_KEY = "publishTestSecretKey/0123456789abcdefghij"  # 40 characters, like a real one
# No retries: a stopped server must fail the first request, not after seconds of back-off.
TEST_CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=2, read_timeout=30)


@dataclass
class AwsForTests:
    server: LoopbackS3
    s3: object
    greengrass: object  # a real greengrassv2 client; wrap it in a Stubber, moto has no greengrassv2
    bucket: str
    location: S3Location


def isolate_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Nothing from the machine's own AWS setup may leak in; no instance-metadata lookups."""
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


@pytest.fixture(scope="session")
def s3_server():
    server = LoopbackS3()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def aws(s3_server, monkeypatch, tmp_path) -> AwsForTests:
    if not s3_server.running:  # a fault-injection test stopped it and did not get to restart it
        s3_server.start()
    isolate_aws_environment(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET_ACCESS_KEY)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint)
    s3_client, greengrass_client = make_clients(REGION, config=TEST_CLIENT_CONFIG)
    assert s3_client.meta.endpoint_url == s3_server.endpoint
    bucket = f"publish-{uuid.uuid4().hex[:12]}"  # moto's backend is process-wide; unique names keep tests apart
    s3_client.create_bucket(Bucket=bucket)
    return AwsForTests(s3_server, s3_client, greengrass_client, bucket, S3Location(bucket, "jobs/job-1"))


@pytest.fixture
def greengrass_stub(aws):
    """The real greengrassv2 client with a Stubber: every request is checked against the API model,
    and any call without a queued response fails."""
    stubber = Stubber(aws.greengrass)
    stubber.activate()
    yield stubber
    stubber.deactivate()


@pytest.fixture
def api_calls(aws):
    """Names of the S3 and Greengrass operations the clients actually called, in order."""
    calls: list[str] = []

    def record(model, **kwargs):
        calls.append(model.name)

    # before-parameter-build, not before-call: the Stubber answers before-call and stops later handlers there.
    aws.s3.meta.events.register("before-parameter-build.s3", record)
    aws.greengrass.meta.events.register("before-parameter-build.greengrassv2", record)
    return calls
