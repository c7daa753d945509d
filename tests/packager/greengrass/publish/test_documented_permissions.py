"""Issue 15 item 10: a job publishes with exactly the S3 permissions StartModelPackagingJob documents (s3:PutObject,
s3:GetBucketLocation), enforced by moto's server (IAM auth on), and uses s3:GetObject's read-back when granted."""

from __future__ import annotations

import json
import os
import uuid

import boto3
import pytest

from packager.errors import PublishError
from packager.greengrass.bundle import S3Location
from packager.greengrass.publish.component import publish
from packager.greengrass.publish.s3 import TransferSettings

from .conftest import (
    FAKE_ACCESS_KEY_ID,
    FAKE_SECRET_ACCESS_KEY,
    REGION,
    TEST_CLIENT_CONFIG,
)
from .loopback import make_bundle, read_object

DOCUMENTED_S3_ACTIONS = ["s3:PutObject", "s3:GetBucketLocation"]


def _user_client(aws, actions: list[str]):
    """An S3 client for a new IAM user allowed exactly ``actions`` on the test bucket, and the calls it makes."""
    iam = boto3.client(
        "iam",
        endpoint_url=aws.server.endpoint,
        region_name=REGION,
        aws_access_key_id=FAKE_ACCESS_KEY_ID,
        aws_secret_access_key=FAKE_SECRET_ACCESS_KEY,
    )
    user = f"packager-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": actions,
                "Resource": [f"arn:aws:s3:::{aws.bucket}", f"arn:aws:s3:::{aws.bucket}/*"],
            }
        ],
    }
    iam.put_user_policy(UserName=user, PolicyName="documented", PolicyDocument=json.dumps(policy))
    client = boto3.session.Session(
        region_name=REGION, aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"]
    ).client("s3", config=TEST_CLIENT_CONFIG)
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
        assert (
            read_object(
                aws.s3,
                aws.bucket,
                f"{aws.location.prefix}/{bundle.component_name}/{bundle.component_version}/{artifact.name}",
            )
            == artifact.path.read_bytes()
        )
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

    assert (
        caught.value.message.startswith("verify artifact model.zip: s3://")
        and "changed after bundling" in caught.value.message
    )


def test_without_read_back_a_multipart_file_changed_after_bundling_still_fails(aws, tmp_path, enforced):
    bundle = make_bundle(tmp_path, aws.location, {"model.zip": os.urandom(12 << 20)})
    client, _ = _user_client(aws, DOCUMENTED_S3_ACTIONS)
    bundle.artifacts[0].path.write_bytes(os.urandom(12 << 20))
    enforced()

    with pytest.raises(PublishError) as caught:
        publish(
            bundle,
            client,
            None,
            register=False,
            region=REGION,
            progress=False,
            transfer=TransferSettings(multipart_threshold=8 << 20, multipart_chunksize=5 << 20),
        )

    assert caught.value.message.startswith("verify artifact model.zip: s3://") and "-3" in caught.value.message


def test_a_missing_bucket_is_still_named(aws, tmp_path, enforced):
    from packager.errors import ResourceNotFoundException

    bundle = make_bundle(tmp_path, S3Location(f"missing-{uuid.uuid4().hex[:8]}", "p"), {"model.zip": b"abc"})
    with pytest.raises(ResourceNotFoundException):
        publish(bundle, aws.s3, None, register=False, region=REGION, progress=False)


# -- Greengrass: DescribeComponent and CreateComponentVersion (+ TagResource for tags), GetComponent when granted ----

DOCUMENTED_GREENGRASS = {"CreateComponentVersion", "DescribeComponent", "TagResource"}
ACCOUNT = "123456789012"


def _version_arn(name: str, version: str) -> str:
    return f"arn:aws:greengrass:{REGION}:{ACCOUNT}:components:{name}:versions:{version}"


def _not_found(stub, name: str, version: str) -> None:
    stub.add_client_error(
        "describe_component",
        service_error_code="ResourceNotFoundException",
        http_status_code=404,
        expected_params={"arn": _version_arn(name, version)},
    )


def _created(stub, name: str, version: str, tags=None) -> None:
    from botocore.stub import ANY

    stub.add_response(
        "create_component_version",
        {
            "arn": _version_arn(name, version),
            "componentName": name,
            "componentVersion": version,
            "creationTimestamp": 0,
            "status": {"componentState": "REQUESTED"},
        },
        {"inlineRecipe": ANY, **({"tags": tags} if tags else {})},
    )


def _described(stub, name: str, version: str) -> None:
    stub.add_response(
        "describe_component",
        {
            "arn": _version_arn(name, version),
            "componentName": name,
            "componentVersion": version,
            "creationTimestamp": 0,
            "status": {"componentState": "DEPLOYABLE"},
        },
        {"arn": _version_arn(name, version)},
    )


@pytest.mark.slow
def test_two_jobs_with_exactly_the_documented_permissions(aws, tiny_model, tmp_path, enforced, greengrass_stub):
    from botocore.stub import Stubber

    from packager.build.pipeline import PackagingRequest, run_packaging
    from packager.edge import AGENT_VERSION
    from packager.greengrass.bundle import agent_component_name
    from packager.greengrass.publish.clients import make_sts_client
    from targets import host_target

    agent = agent_component_name(host_target())
    s3_client, _ = _user_client(aws, DOCUMENTED_S3_ACTIONS)
    sts = make_sts_client(REGION, config=TEST_CLIENT_CONFIG)
    sts_stub = Stubber(sts)
    gg_calls: list[str] = []
    aws.greengrass.meta.events.register(
        "before-parameter-build.greengrassv2", lambda model, **_: gg_calls.append(model.name)
    )
    tags = {"team": "one"}

    def job(name: str, prefix: str):
        return PackagingRequest(
            model_path=tiny_model[0],
            spec_path=tiny_model[1],
            target=host_target(),
            component_name=name,
            component_version="1.0.0",
            output_dir=tmp_path / name,
            s3_location=S3Location(aws.bucket, prefix),
            benchmark_runs=2,
            work_dir=tmp_path / f"work-{name}",
            tags=tags,
        )

    sts_stub.add_response(
        "get_caller_identity", {"Account": ACCOUNT, "Arn": f"arn:aws:iam::{ACCOUNT}:user/u", "UserId": "U"}
    )
    _not_found(greengrass_stub, agent, AGENT_VERSION)
    _created(greengrass_stub, agent, AGENT_VERSION, tags)
    _not_found(greengrass_stub, "com.teamone.Model", "1.0.0")
    _created(greengrass_stub, "com.teamone.Model", "1.0.0", tags)
    enforced()
    with sts_stub:
        first = run_packaging(
            job("com.teamone.Model", "teamone"), s3_client=s3_client, greengrass_client=aws.greengrass, sts_client=sts
        )
    greengrass_stub.assert_no_pending_responses()
    assert first.component_version_arn == _version_arn("com.teamone.Model", "1.0.0")
    assert set(gg_calls) <= DOCUMENTED_GREENGRASS

    # The next job, to another prefix: the agent's version is registered; reading its recipe is refused.
    gg_calls.clear()
    sts_stub.add_response(
        "get_caller_identity", {"Account": ACCOUNT, "Arn": f"arn:aws:iam::{ACCOUNT}:user/u", "UserId": "U"}
    )
    _described(greengrass_stub, agent, AGENT_VERSION)
    greengrass_stub.add_client_error("get_component", service_error_code="AccessDeniedException", http_status_code=403)
    _not_found(greengrass_stub, "com.teamtwo.Model", "1.0.0")
    _created(greengrass_stub, "com.teamtwo.Model", "1.0.0", tags)
    with sts_stub:
        second = run_packaging(
            job("com.teamtwo.Model", "teamtwo"), s3_client=s3_client, greengrass_client=aws.greengrass, sts_client=sts
        )
    greengrass_stub.assert_no_pending_responses()
    assert second.component_version_arn == _version_arn("com.teamtwo.Model", "1.0.0")
    assert set(gg_calls) - DOCUMENTED_GREENGRASS == {"GetComponent"}  # tried, refused, and the job went on
    assert "ListComponents" not in gg_calls


def test_a_registered_model_version_whose_recipe_cannot_be_read_conflicts(aws, tmp_path, greengrass_stub, api_calls):
    from packager.errors import ConflictException

    bundle = make_bundle(tmp_path, aws.location, {"model.zip": os.urandom(1000)})
    _described(greengrass_stub, bundle.component_name, bundle.component_version)
    greengrass_stub.add_client_error("get_component", service_error_code="AccessDeniedException", http_status_code=403)

    with pytest.raises(ConflictException) as caught:
        publish(bundle, aws.s3, aws.greengrass, progress=False, account_id=ACCOUNT)

    assert "greengrass:GetComponent" in caught.value.message
    assert not {"PutObject", "CreateComponentVersion", "ListComponents"} & set(api_calls)


def test_with_get_component_granted_other_digests_conflict(aws, tmp_path, greengrass_stub, api_calls):
    from packager.errors import ConflictException

    registered = make_bundle(tmp_path / "registered", aws.location, {"model.zip": os.urandom(1000)})
    ours = make_bundle(tmp_path / "ours", aws.location, {"model.zip": os.urandom(1000)})
    arn = _version_arn(ours.component_name, ours.component_version)
    _described(greengrass_stub, ours.component_name, ours.component_version)
    greengrass_stub.add_response(
        "get_component",
        {"recipeOutputFormat": "YAML", "recipe": registered.recipe_text.encode()},
        {"arn": arn, "recipeOutputFormat": "YAML"},
    )

    with pytest.raises(ConflictException) as caught:
        publish(ours, aws.s3, aws.greengrass, progress=False, account_id=ACCOUNT)

    assert "different artifacts or digests" in caught.value.message
    assert not {"PutObject", "CreateComponentVersion", "ListComponents"} & set(api_calls)
