"""The S3 server goes away in the middle of a publish: nothing is registered, and running it again completes it."""

from __future__ import annotations

import os

import pytest

from packager.errors import PublishError
from packager.greengrass.publish.component import RECIPE_FILE_NAME, publish
from packager.greengrass.publish.s3 import MIB, TransferSettings

from .greengrass_stubs import TAGS, VERSION_ARN, expect_create, expect_not_registered
from .loopback import COMPONENT_NAME, COMPONENT_VERSION, make_bundle, read_object, sha256_b64

PREFIX = f"jobs/job-1/{COMPONENT_NAME}/{COMPONENT_VERSION}"


def _stop_server_on(aws, operation: str, occurrence: int) -> list[int]:
    """Stop the S3 listener just before the ``occurrence``-th call of ``operation`` is sent."""
    seen = [0]

    def maybe_stop(**kwargs):
        seen[0] += 1
        if seen[0] == occurrence:
            aws.server.stop()

    aws.s3.meta.events.register(f"before-call.s3.{operation}", maybe_stop, unique_id="fault-injection")
    return seen


def _stop_no_more(aws, operation: str) -> None:
    aws.s3.meta.events.unregister(f"before-call.s3.{operation}", unique_id="fault-injection")


def test_outage_between_artifacts_registers_nothing_and_a_retry_completes(aws, tmp_path, greengrass_stub, api_calls):
    files = {"a.bin": os.urandom(20_000), "b.bin": os.urandom(30_000), "c.bin": os.urandom(40_000)}
    bundle = make_bundle(tmp_path, aws.location, files)
    expect_not_registered(greengrass_stub)  # the check before uploads; nothing else is queued
    _stop_server_on(aws, "PutObject", occurrence=2)

    with pytest.raises(PublishError) as caught:
        publish(bundle, aws.s3, aws.greengrass, tags=TAGS, progress=False)

    assert (
        caught.value.message == f"upload artifact b.bin: cannot reach {aws.server.endpoint}/{aws.bucket}/{PREFIX}/b.bin"
    )
    assert "CreateComponentVersion" not in api_calls
    greengrass_stub.assert_no_pending_responses()

    # The listener comes back on the same port; moto's backend kept what was written before the outage.
    _stop_no_more(aws, "PutObject")
    aws.server.start()
    listed = {o["Key"] for o in aws.s3.list_objects_v2(Bucket=aws.bucket)["Contents"]}
    assert listed == {f"{PREFIX}/a.bin"}  # no recipe: nothing points at the missing artifacts
    expect_not_registered(greengrass_stub)
    expect_create(greengrass_stub, bundle.recipe_text)
    api_calls.clear()

    result = publish(bundle, aws.s3, aws.greengrass, tags=TAGS, progress=False)

    greengrass_stub.assert_no_pending_responses()
    assert api_calls.count("CreateComponentVersion") == 1
    assert result.component_version_arn == VERSION_ARN
    assert result.skipped_keys == (f"{PREFIX}/a.bin",)
    assert set(result.uploaded_keys) == {f"{PREFIX}/b.bin", f"{PREFIX}/c.bin", f"{PREFIX}/{RECIPE_FILE_NAME}"}
    for name, data in files.items():
        assert sha256_b64(read_object(aws.s3, aws.bucket, f"{PREFIX}/{name}")) == sha256_b64(data)


def test_outage_inside_a_multipart_upload_registers_nothing_and_a_retry_completes(
    aws, tmp_path, greengrass_stub, api_calls
):
    big = os.urandom(11 * MIB)
    bundle = make_bundle(tmp_path, aws.location, {"model.zip": big, "config.json": b"{}"})
    settings = TransferSettings(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, max_concurrency=1)
    expect_not_registered(greengrass_stub)
    _stop_server_on(aws, "UploadPart", occurrence=2)

    with pytest.raises(PublishError) as caught:
        publish(bundle, aws.s3, aws.greengrass, transfer=settings, progress=False)

    assert caught.value.message.startswith("upload artifact model.zip: cannot reach")
    assert "CreateComponentVersion" not in api_calls
    _stop_no_more(aws, "UploadPart")
    aws.server.start()
    assert aws.s3.list_objects_v2(Bucket=aws.bucket).get("KeyCount", 0) == 0
    expect_not_registered(greengrass_stub)
    expect_create(greengrass_stub, bundle.recipe_text, tags=None)
    api_calls.clear()

    result = publish(bundle, aws.s3, aws.greengrass, transfer=settings, progress=False)

    greengrass_stub.assert_no_pending_responses()
    assert api_calls.count("CreateComponentVersion") == 1 and api_calls.count("UploadPart") == 3
    assert sha256_b64(read_object(aws.s3, aws.bucket, f"{PREFIX}/model.zip")) == sha256_b64(big)
    assert result.artifacts[0].s3_checksum.endswith("-3")
