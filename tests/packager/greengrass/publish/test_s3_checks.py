"""Checks before any upload, against the real S3 server: each failure is one line, names its step, shows no secret."""

from __future__ import annotations

import json
import os
import uuid

import boto3
import pytest

from packager.errors import AccessDeniedException, PackagerError, ResourceNotFoundException, ValidationException
from packager.greengrass.bundle import S3Location
from packager.greengrass.publish.clients import make_clients
from packager.greengrass.publish.component import publish

from .conftest import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY, REGION, TEST_CLIENT_CONFIG, isolate_aws_environment
from .loopback import make_bundle


def _one_line(error: PackagerError) -> str:
    text = str(error)
    assert text == error.message and "\n" not in text and "Traceback" not in text
    return text


def _object_count(s3_client, bucket: str) -> int:
    return s3_client.list_objects_v2(Bucket=bucket).get("KeyCount", 0)


def test_missing_bucket(aws, tmp_path, api_calls):
    missing = f"missing-{uuid.uuid4().hex[:10]}"
    bundle = make_bundle(tmp_path, S3Location(missing, "jobs/job-1"), {"model.zip": b"abc"})

    with pytest.raises(ResourceNotFoundException) as caught:
        publish(bundle, aws.s3, None, register=False, progress=False)

    assert _one_line(caught.value) == f"check bucket: bucket {missing} does not exist (NoSuchBucket)"
    assert caught.value.resource_type == "S3Bucket"
    assert api_calls == ["GetBucketLocation"]


def test_bucket_in_another_region_than_greengrass(aws, tmp_path):
    bucket = f"eu-{uuid.uuid4().hex[:12]}"
    aws.s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    bundle = make_bundle(tmp_path, S3Location(bucket, "jobs/job-1"), {"model.zip": b"abc"})

    with pytest.raises(ValidationException) as caught:
        publish(bundle, aws.s3, None, register=False, region=REGION, progress=False)

    message = _one_line(caught.value)
    assert message.startswith("check bucket:") and "eu-west-1" in message and REGION in message
    assert _object_count(aws.s3, bucket) == 0


def test_no_credentials_anywhere_in_the_chain(s3_server, monkeypatch, tmp_path):
    isolate_aws_environment(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint)

    with pytest.raises(AccessDeniedException) as from_factory:
        make_clients(REGION)
    assert "no AWS credentials found" in _one_line(from_factory.value)

    # A client built some other way fails on its first request, before any upload.
    s3_client = boto3.session.Session(region_name=REGION).client("s3", config=TEST_CLIENT_CONFIG)
    bundle = make_bundle(tmp_path, S3Location("any-bucket", "p"), {"model.zip": b"abc"})
    with pytest.raises(AccessDeniedException) as from_publish:
        publish(bundle, s3_client, None, register=False, progress=False)
    assert _one_line(from_publish.value).startswith("check bucket: no AWS credentials found")


def test_access_denied_names_the_step_and_shows_no_secret(aws, tmp_path):
    # An IAM user on the same server that may read but not write; moto enforces it once auth is on.
    iam = boto3.client(
        "iam",
        endpoint_url=aws.server.endpoint,
        region_name=REGION,
        aws_access_key_id=FAKE_ACCESS_KEY_ID,
        aws_secret_access_key=FAKE_SECRET_ACCESS_KEY,
    )
    user = f"reader-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "s3:PutObject", "Resource": "*"},
        ],
    }
    iam.put_user_policy(UserName=user, PolicyName="read-only", PolicyDocument=json.dumps(policy))
    reader = boto3.session.Session(
        region_name=REGION, aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"]
    ).client("s3", config=TEST_CLIENT_CONFIG)
    bundle = make_bundle(tmp_path, aws.location, {"model.zip": os.urandom(1000)})

    aws.server.set_auth(True)
    try:
        with pytest.raises(AccessDeniedException) as caught:
            publish(bundle, reader, None, register=False, progress=False)
    finally:
        aws.server.set_auth(False)

    message = _one_line(caught.value)
    assert message == "upload artifact model.zip: access denied (AccessDenied)"
    for secret in (key["SecretAccessKey"], key["AccessKeyId"], FAKE_SECRET_ACCESS_KEY):
        assert secret not in message
    assert _object_count(aws.s3, aws.bucket) == 0


def test_register_without_a_greengrass_client_is_a_validation_error(aws, tmp_path, api_calls):
    bundle = make_bundle(tmp_path, aws.location, {"model.zip": b"abc"})
    with pytest.raises(ValidationException) as caught:
        publish(bundle, aws.s3, None, progress=False)
    assert caught.value.field == "register" and api_calls == []
