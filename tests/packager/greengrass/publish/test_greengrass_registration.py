"""Registration through a real greengrassv2 client under botocore's Stubber (moto has no greengrassv2),
after uploads to the real S3 server. The Stubber checks every request against the API model."""

from __future__ import annotations

import os

import pytest

from packager.errors import ConflictException, PublishError, ValidationException
from packager.greengrass.publish.component import RECIPE_FILE_NAME, publish
from packager.greengrass.publish.greengrass import recipe_artifact_digests

from .greengrass_stubs import TAGS, VERSION_ARN, expect_create, expect_not_registered, expect_registered
from .loopback import COMPONENT_NAME, COMPONENT_VERSION, make_bundle, read_object


def _files() -> dict[str, bytes]:
    return {"model.zip": os.urandom(50_000), "config.json": b'{"threshold": 0.5}\n'}


def test_registers_once_with_the_s3_recipe_and_the_tags(aws, tmp_path, greengrass_stub, api_calls):
    bundle = make_bundle(tmp_path, aws.location, _files())
    expect_not_registered(greengrass_stub)
    expect_create(greengrass_stub, bundle.recipe_text)

    result = publish(bundle, aws.s3, aws.greengrass, tags=TAGS, progress=False)

    greengrass_stub.assert_no_pending_responses()
    assert result.component_version_arn == VERSION_ARN and result.newly_registered
    # Registration is the last call, after the recipe; the inline recipe sent is the one now in S3.
    assert api_calls[-1] == "CreateComponentVersion" and api_calls.count("CreateComponentVersion") == 1
    assert api_calls[-3:-1] == ["PutObject", "HeadObject"]  # the recipe, written and verified
    assert read_object(aws.s3, aws.bucket, result.recipe_key).decode() == bundle.recipe_text


def test_same_version_already_registered_returns_its_arn(aws, tmp_path, greengrass_stub, api_calls):
    bundle = make_bundle(tmp_path, aws.location, _files())
    expect_not_registered(greengrass_stub)
    expect_create(greengrass_stub, bundle.recipe_text)
    publish(bundle, aws.s3, aws.greengrass, tags=TAGS, progress=False)
    expect_registered(greengrass_stub, bundle.recipe_text)
    api_calls.clear()

    again = publish(bundle, aws.s3, aws.greengrass, tags=TAGS, progress=False)

    greengrass_stub.assert_no_pending_responses()
    assert again.component_version_arn == VERSION_ARN and not again.newly_registered
    assert again.uploaded_keys == () and "CreateComponentVersion" not in api_calls


def test_registered_with_other_digests_conflicts_before_any_upload(aws, tmp_path, greengrass_stub, api_calls):
    registered = make_bundle(tmp_path / "registered", aws.location, _files())
    ours = make_bundle(tmp_path / "ours", aws.location, _files())
    expect_registered(greengrass_stub, registered.recipe_text)

    with pytest.raises(ConflictException) as caught:
        publish(ours, aws.s3, aws.greengrass, tags=TAGS, progress=False)

    assert caught.value.message.startswith("check component version:")
    assert caught.value.resource_id == VERSION_ARN
    assert not {"PutObject", "CreateMultipartUpload", "CreateComponentVersion"} & set(api_calls)


def test_version_in_failed_state_is_reported_not_recreated(aws, tmp_path, greengrass_stub, api_calls):
    bundle = make_bundle(tmp_path, aws.location, _files())
    expect_registered(greengrass_stub, bundle.recipe_text, state="FAILED")

    with pytest.raises(ConflictException) as caught:
        publish(bundle, aws.s3, aws.greengrass, progress=False)

    assert "FAILED" in caught.value.message and "artifact not accessible" in caught.value.message
    assert "CreateComponentVersion" not in api_calls


def test_failed_registration_names_the_step_and_a_retry_completes(aws, tmp_path, greengrass_stub, api_calls):
    bundle = make_bundle(tmp_path, aws.location, _files())
    expect_not_registered(greengrass_stub)
    greengrass_stub.add_client_error(
        "create_component_version",
        service_error_code="InternalServerException",
        service_message="try again later",
        http_status_code=500,
    )

    with pytest.raises(PublishError) as caught:
        publish(bundle, aws.s3, aws.greengrass, tags=TAGS, progress=False)
    assert caught.value.message == "register component: InternalServerException: try again later"
    assert read_object(aws.s3, aws.bucket, f"jobs/job-1/{COMPONENT_NAME}/{COMPONENT_VERSION}/{RECIPE_FILE_NAME}")

    expect_not_registered(greengrass_stub)
    expect_create(greengrass_stub, bundle.recipe_text)
    api_calls.clear()
    retried = publish(bundle, aws.s3, aws.greengrass, tags=TAGS, progress=False)

    greengrass_stub.assert_no_pending_responses()
    assert retried.component_version_arn == VERSION_ARN and retried.uploaded_keys == ()
    assert api_calls.count("CreateComponentVersion") == 1


def test_version_registered_meanwhile_is_a_conflict(aws, tmp_path, greengrass_stub):
    bundle = make_bundle(tmp_path, aws.location, _files())
    expect_not_registered(greengrass_stub)
    greengrass_stub.add_client_error(
        "create_component_version",
        service_error_code="ConflictException",
        service_message="Component version already exists",
        http_status_code=409,
    )

    with pytest.raises(ConflictException) as caught:
        publish(bundle, aws.s3, aws.greengrass, progress=False)

    assert caught.value.message == "register component: ConflictException: Component version already exists"


def test_no_tags_sends_no_tags_field(aws, tmp_path, greengrass_stub):
    bundle = make_bundle(tmp_path, aws.location, _files())
    expect_not_registered(greengrass_stub)
    expect_create(greengrass_stub, bundle.recipe_text, tags=None)

    result = publish(bundle, aws.s3, aws.greengrass, progress=False)

    greengrass_stub.assert_no_pending_responses()
    assert result.component_version_arn == VERSION_ARN


def test_register_false_makes_no_greengrass_call(aws, tmp_path, greengrass_stub, api_calls):
    bundle = make_bundle(tmp_path, aws.location, _files())
    result = publish(bundle, aws.s3, aws.greengrass, register=False, progress=False)
    assert result.component_version_arn is None
    assert not {"ListComponents", "DescribeComponent", "GetComponent", "CreateComponentVersion"} & set(api_calls)
    assert "PutObject" in api_calls


def test_region_other_than_the_greengrass_clients_is_rejected(aws, tmp_path, api_calls):
    bundle = make_bundle(tmp_path, aws.location, _files())
    with pytest.raises(ValidationException) as caught:
        publish(bundle, aws.s3, aws.greengrass, region="eu-west-1", progress=False)
    assert caught.value.field == "region" and api_calls == []


def test_recipe_digests_are_read_without_regard_to_key_case():
    recipe = (
        '{"manifests": [{"artifacts": [{"URI": "s3://b/k/model.zip", "digest": "abc="},'
        ' {"Uri": "docker:example/image:1"}]}]}'
    )
    assert recipe_artifact_digests(recipe) == {"s3://b/k/model.zip": "abc=", "docker:example/image:1": None}


def test_rebuilt_bundle_replaces_an_unregistered_recipe_and_registers(aws, tmp_path, greengrass_stub):
    """A run that wrote the recipe but failed to register leaves no component: a rebuilt bundle (new
    benchmark timings, so new bytes) must replace those leftovers and register, not conflict."""
    first = make_bundle(tmp_path / "first", aws.location, _files())
    publish(first, aws.s3, None, register=False, progress=False)  # the failed run got as far as the recipe
    rebuilt = make_bundle(tmp_path / "second", aws.location, _files())
    assert rebuilt.recipe_text != first.recipe_text
    expect_not_registered(greengrass_stub)
    expect_create(greengrass_stub, rebuilt.recipe_text)

    result = publish(rebuilt, aws.s3, aws.greengrass, tags=TAGS, progress=False)

    greengrass_stub.assert_no_pending_responses()
    assert result.component_version_arn == VERSION_ARN
    assert read_object(aws.s3, aws.bucket, result.recipe.key) == rebuilt.recipe_text.encode()
    for artifact in rebuilt.artifacts:
        assert (
            read_object(aws.s3, aws.bucket, f"{result.recipe.key.rsplit('/', 1)[0]}/{artifact.name}")
            == artifact.path.read_bytes()
        )
