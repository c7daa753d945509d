"""Issue 15 item 10: a job publishes with exactly the S3 permissions StartModelPackagingJob documents (s3:PutObject,
s3:GetBucketLocation), enforced by moto's server (IAM auth on), and uses s3:GetObject's read-back when granted."""

from __future__ import annotations

import json
import os
import uuid

import boto3
import pytest

from packager.bundle import S3Location
from packager.errors import PublishError
from packager.publish import TransferSettings, publish

from .conftest import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY, REGION, TEST_CLIENT_CONFIG
from .loopback import make_bundle, read_object

DOCUMENTED_S3_ACTIONS = ["s3:PutObject", "s3:GetBucketLocation"]


def _user_client(aws, actions: list[str]):
    """An S3 client for a new IAM user allowed exactly ``actions`` on the test bucket, and the calls it makes."""
    iam = boto3.client("iam", endpoint_url=aws.server.endpoint, region_name=REGION, aws_access_key_id=FAKE_ACCESS_KEY_ID,
                       aws_secret_access_key=FAKE_SECRET_ACCESS_KEY)
    user = f"packager-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions,
                                                      "Resource": [f"arn:aws:s3:::{aws.bucket}", f"arn:aws:s3:::{aws.bucket}/*"]}]}
    iam.put_user_policy(UserName=user, PolicyName="documented", PolicyDocument=json.dumps(policy))
    client = boto3.session.Session(region_name=REGION, aws_access_key_id=key["AccessKeyId"],
                                   aws_secret_access_key=key["SecretAccessKey"]).client("s3", config=TEST_CLIENT_CONFIG)
    calls: list[str] = []
    client.meta.events.register("before-parameter-build.s3", lambda model, **_: calls.append(model.name))
    return client, calls


@pytest.fixture
def enforced(aws):
    """moto's IAM checks on for the test's duration (the fixture's own admin calls happen before)."""
    yield lambda: aws.server.set_auth(True)
    aws.server.set_auth(False)


@pytest.mark.parametrize("multipart", [False, True], ids=["single-part", "multipart"])
def test_publish_with_exactly_the_documented_s3_actions(aws, tmp_path, enforced, multipart):
    files = {"model.zip": os.urandom(12 << 20 if multipart else 50_000), "config.json": b'{"threshold": 0.5}\n'}
    bundle = make_bundle(tmp_path, aws.location, files)
    client, calls = _user_client(aws, DOCUMENTED_S3_ACTIONS)
    transfer = TransferSettings(multipart_threshold=8 << 20, multipart_chunksize=5 << 20)
    enforced()

    result = publish(bundle, client, None, register=False, region=REGION, transfer=transfer, progress=False)

    aws.server.set_auth(False)
    assert set(result.uploaded_keys) == {a.key for a in result.artifacts} | {result.recipe_key}
    for artifact in bundle.artifacts:
        assert read_object(aws.s3, aws.bucket, f"{aws.location.prefix}/{bundle.component_name}/{bundle.component_version}/"
                                                f"{artifact.name}") == artifact.path.read_bytes()
    assert "HeadBucket" not in calls and calls[0] == "GetBucketLocation"
    assert "PutObject" in calls or "CompleteMultipartUpload" in calls


def test_with_get_object_granted_the_read_back_is_used(aws, tmp_path, enforced):
    bundle = make_bundle(tmp_path, aws.location, {"model.zip": os.urandom(20_000)})
    client, calls = _user_client(aws, [*DOCUMENTED_S3_ACTIONS, "s3:GetObject"])
    enforced()

    publish(bundle, client, None, register=False, region=REGION, progress=False)

    assert calls.count("HeadObject") >= 4  # before and after each upload: the artifact and the recipe
    calls.clear()
    again = publish(bundle, client, None, register=False, region=REGION, progress=False)
    assert again.uploaded_keys == () and "PutObject" not in calls  # same bytes already there: nothing re-sent


def test_without_read_back_a_file_changed_after_bundling_still_fails(aws, tmp_path, enforced):
    bundle = make_bundle(tmp_path, aws.location, {"model.zip": os.urandom(20_000)})
    client, _ = _user_client(aws, DOCUMENTED_S3_ACTIONS)
    bundle.artifacts[0].path.write_bytes(os.urandom(20_000))  # same size, other bytes
    enforced()

    with pytest.raises(PublishError) as caught:
        publish(bundle, client, None, register=False, region=REGION, progress=False)

    assert caught.value.message.startswith("verify artifact model.zip: s3://") and "changed after bundling" in caught.value.message


def test_without_read_back_a_multipart_file_changed_after_bundling_still_fails(aws, tmp_path, enforced):
    bundle = make_bundle(tmp_path, aws.location, {"model.zip": os.urandom(12 << 20)})
    client, _ = _user_client(aws, DOCUMENTED_S3_ACTIONS)
    bundle.artifacts[0].path.write_bytes(os.urandom(12 << 20))
    enforced()

    with pytest.raises(PublishError) as caught:
        publish(bundle, client, None, register=False, region=REGION, progress=False,
                transfer=TransferSettings(multipart_threshold=8 << 20, multipart_chunksize=5 << 20))

    assert caught.value.message.startswith("verify artifact model.zip: s3://") and "-3" in caught.value.message


def test_a_missing_bucket_is_still_named(aws, tmp_path, enforced):
    from packager.errors import ResourceNotFoundException

    bundle = make_bundle(tmp_path, S3Location(f"missing-{uuid.uuid4().hex[:8]}", "p"), {"model.zip": b"abc"})
    with pytest.raises(ResourceNotFoundException):
        publish(bundle, aws.s3, None, register=False, region=REGION, progress=False)
