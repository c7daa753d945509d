"""Issue 15 item 1: the Edge Agent is shared by every job. Its version, once registered from one S3 location, is
reused by jobs that publish to another bucket or prefix, instead of conflicting with its first registration."""

from __future__ import annotations

import time

import pytest
from botocore.stub import ANY

from packager.build.pipeline import PackagingRequest, run_packaging
from packager.edge import AGENT_VERSION
from packager.errors import ConflictException
from packager.greengrass.bundle import S3Location, agent_bundle, agent_component_name
from targets import host_target

from .greengrass_stubs import ACCOUNT

AGENT = agent_component_name(host_target())
AGENT_ARN = f"arn:aws:greengrass:us-east-1:{ACCOUNT}:components:{AGENT}"
AGENT_VERSION_ARN = f"{AGENT_ARN}:versions:{AGENT_VERSION}"


def _created(name: str, version: str) -> dict:
    return {
        "arn": f"arn:aws:greengrass:us-east-1:{ACCOUNT}:components:{name}:versions:{version}",
        "componentName": name,
        "componentVersion": version,
        "creationTimestamp": time.time(),
        "status": {"componentState": "DEPLOYABLE"},
    }


def _expect_agent_registered(stub, recipe_text: str) -> None:
    stub.add_response(
        "list_components", {"components": [{"arn": AGENT_ARN, "componentName": AGENT}]}, {"scope": "PRIVATE"}
    )
    stub.add_response(
        "describe_component",
        {
            "arn": AGENT_VERSION_ARN,
            "componentName": AGENT,
            "componentVersion": AGENT_VERSION,
            "creationTimestamp": time.time(),
            "status": {"componentState": "DEPLOYABLE"},
        },
        {"arn": AGENT_VERSION_ARN},
    )
    stub.add_response(
        "get_component",
        {"recipeOutputFormat": "YAML", "recipe": recipe_text.encode()},
        {"arn": AGENT_VERSION_ARN, "recipeOutputFormat": "YAML"},
    )


def _keys(s3_client, bucket: str) -> list[str]:
    return [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket).get("Contents", [])]


@pytest.mark.slow
def test_second_location_reuses_the_registered_agent(aws, tiny_model, tmp_path, greengrass_stub, api_calls):
    """The issue's reproduction: bkt-one/teamone, then another component to bkt-two/teamtwo."""
    aws.s3.create_bucket(Bucket="bkt-two")
    first_location, second_location = S3Location(aws.bucket, "teamone"), S3Location("bkt-two", "teamtwo")

    def request(name: str, location: S3Location) -> PackagingRequest:
        return PackagingRequest(
            model_path=tiny_model[0],
            spec_path=tiny_model[1],
            target=host_target(),
            component_name=name,
            component_version="1.0.0",
            output_dir=tmp_path / name,
            s3_location=location,
            benchmark_runs=2,
            work_dir=tmp_path / f"work-{name}",
        )

    greengrass_stub.add_response("list_components", {"components": []}, {"scope": "PRIVATE"})
    greengrass_stub.add_response("create_component_version", _created(AGENT, AGENT_VERSION), {"inlineRecipe": ANY})
    greengrass_stub.add_response("list_components", {"components": []}, {"scope": "PRIVATE"})
    greengrass_stub.add_response(
        "create_component_version", _created("com.teamone.Model", "1.0.0"), {"inlineRecipe": ANY}
    )
    first = run_packaging(
        request("com.teamone.Model", first_location), s3_client=aws.s3, greengrass_client=aws.greengrass
    )
    greengrass_stub.assert_no_pending_responses()
    agent_recipe = first.bundle.dependencies[0].recipe_text
    assert f"s3://{aws.bucket}/teamone/{AGENT}/{AGENT_VERSION}/edge_agent.zip" in agent_recipe

    _expect_agent_registered(greengrass_stub, agent_recipe)  # registered with bkt-one's URIs
    greengrass_stub.add_response(
        "list_components", {"components": [{"arn": AGENT_ARN, "componentName": AGENT}]}, {"scope": "PRIVATE"}
    )
    greengrass_stub.add_response(
        "create_component_version", _created("com.teamtwo.Model", "1.0.0"), {"inlineRecipe": ANY}
    )
    api_calls.clear()
    second = run_packaging(
        request("com.teamtwo.Model", second_location), s3_client=aws.s3, greengrass_client=aws.greengrass
    )

    greengrass_stub.assert_no_pending_responses()
    assert second.component_version_arn.endswith(":components:com.teamtwo.Model:versions:1.0.0")
    assert api_calls.count("CreateComponentVersion") == 1  # the model only: the agent's version was reused
    # The agent's bytes stay where they were first published; bkt-two holds only the second model.
    assert all(key.startswith("teamtwo/com.teamtwo.Model/1.0.0/") for key in _keys(aws.s3, "bkt-two"))
    assert f"teamone/{AGENT}/{AGENT_VERSION}/edge_agent.zip" in _keys(aws.s3, aws.bucket)


def test_agent_registered_with_other_bytes_still_conflicts(aws, tmp_path, greengrass_stub, api_calls):
    from packager.greengrass.publish.component import publish_shared

    registered = agent_bundle(host_target(), tmp_path / "one", S3Location(aws.bucket, "teamone"))
    tampered = registered.recipe_text.replace(registered.artifacts[0].sha256_b64, "A" * 43 + "=")
    assert tampered != registered.recipe_text
    ours = agent_bundle(host_target(), tmp_path / "two", S3Location(aws.bucket, "teamtwo"))
    _expect_agent_registered(greengrass_stub, tampered)

    with pytest.raises(ConflictException) as caught:
        publish_shared(ours, aws.s3, aws.greengrass, progress=False)

    assert "already registered with different artifacts or digests" in caught.value.message
    assert not {"PutObject", "CreateComponentVersion"} & set(api_calls)


def test_agent_not_yet_registered_goes_to_the_jobs_location(aws, tmp_path, greengrass_stub):
    from packager.greengrass.publish.component import publish_shared

    ours = agent_bundle(host_target(), tmp_path / "two", S3Location(aws.bucket, "teamtwo"))
    greengrass_stub.add_response("list_components", {"components": []}, {"scope": "PRIVATE"})
    greengrass_stub.add_response("create_component_version", _created(AGENT, AGENT_VERSION), {"inlineRecipe": ANY})

    assert publish_shared(ours, aws.s3, aws.greengrass, progress=False) == AGENT_VERSION_ARN

    greengrass_stub.assert_no_pending_responses()
    assert f"teamtwo/{AGENT}/{AGENT_VERSION}/edge_agent.zip" in _keys(aws.s3, aws.bucket)
