"""publish() against a real S3 server on 127.0.0.1: layout, checksums, re-runs, conflicts, multipart."""

from __future__ import annotations

import hashlib
import os

import pytest
import yaml

from packager.errors import ConflictException, PublishError, ValidationException
from packager.greengrass.publish.component import RECIPE_FILE_NAME, publish
from packager.greengrass.publish.s3 import MIB, TransferSettings

from .loopback import COMPONENT_NAME, COMPONENT_VERSION, make_bundle, read_object, sha256_b64

PREFIX = f"jobs/job-1/{COMPONENT_NAME}/{COMPONENT_VERSION}"


def _files() -> dict[str, bytes]:
    return {"model.zip": os.urandom(300_000), "config.json": b'{"threshold": 0.42}\n'}


def _listing(aws) -> dict[str, int]:
    return {o["Key"]: o["Size"] for o in aws.s3.list_objects_v2(Bucket=aws.bucket).get("Contents", [])}


def test_layout_and_checksums_match_the_recipe(aws, tmp_path):
    files = _files()
    bundle = make_bundle(tmp_path, aws.location, files)

    result = publish(bundle, aws.s3, None, register=False, progress=False)

    expected_keys = {f"{PREFIX}/model.zip", f"{PREFIX}/config.json", f"{PREFIX}/{RECIPE_FILE_NAME}"}
    assert _listing(aws) == {
        f"{PREFIX}/model.zip": len(files["model.zip"]),
        f"{PREFIX}/config.json": len(files["config.json"]),
        f"{PREFIX}/{RECIPE_FILE_NAME}": len(bundle.recipe_text.encode()),
    }
    assert set(result.uploaded_keys) == expected_keys and result.skipped_keys == ()
    assert result.recipe_key == f"{PREFIX}/{RECIPE_FILE_NAME}"
    assert result.component_version_arn is None and not result.newly_registered
    # Download and hash: the stored bytes are the files, and the recipe's URIs and Digests name exactly them.
    recipe = yaml.safe_load(read_object(aws.s3, aws.bucket, result.recipe_key))
    assert recipe == yaml.safe_load(bundle.recipe_text)
    for artifact in recipe["Manifests"][0]["Artifacts"]:
        key = artifact["Uri"].removeprefix(f"s3://{aws.bucket}/")
        stored = read_object(aws.s3, aws.bucket, key)
        assert artifact["Digest"] == sha256_b64(stored) == sha256_b64(files[key.rsplit("/", 1)[1]])
    for published in result.artifacts:
        head = aws.s3.head_object(Bucket=aws.bucket, Key=published.key, ChecksumMode="ENABLED")
        assert head["ChecksumSHA256"] == published.s3_checksum == published.sha256_b64


def test_rerun_with_same_bytes_uploads_nothing(aws, tmp_path, api_calls):
    bundle = make_bundle(tmp_path, aws.location, _files())
    first = publish(bundle, aws.s3, None, register=False, progress=False)
    api_calls.clear()

    second = publish(bundle, aws.s3, None, register=False, progress=False)

    assert second.uploaded_keys == ()
    assert set(second.skipped_keys) == set(first.uploaded_keys)
    assert not {"PutObject", "CreateMultipartUpload", "UploadPart"} & set(api_calls)
    assert second.artifacts == tuple(
        type(a)(a.key, a.size, a.sha256_b64, a.s3_checksum, False) for a in first.artifacts
    )


def test_different_bytes_for_a_published_version_conflict_before_any_upload(aws, tmp_path, api_calls):
    original = _files()
    publish(make_bundle(tmp_path / "first", aws.location, original), aws.s3, None, register=False, progress=False)
    changed = {**original, "config.json": b'{"threshold": 0.99}\n'}
    rebuilt = make_bundle(tmp_path / "second", aws.location, changed)
    api_calls.clear()

    with pytest.raises(ConflictException) as caught:
        publish(rebuilt, aws.s3, None, register=False, progress=False)

    message = caught.value.message
    assert "\n" not in message
    assert message.startswith("check recipe:") and f"{PREFIX}/{RECIPE_FILE_NAME}" in message
    assert not {"PutObject", "CreateMultipartUpload"} & set(api_calls)
    assert read_object(aws.s3, aws.bucket, f"{PREFIX}/config.json") == original["config.json"]


def test_different_artifact_bytes_under_a_published_recipe_conflict(aws, tmp_path):
    original = _files()
    bundle = make_bundle(tmp_path / "first", aws.location, original)
    publish(bundle, aws.s3, None, register=False, progress=False)
    # Someone overwrote an artifact of the published version: re-publishing must not silently "repair" it.
    aws.s3.put_object(Bucket=aws.bucket, Key=f"{PREFIX}/model.zip", Body=b"not the model")

    with pytest.raises(ConflictException) as caught:
        publish(bundle, aws.s3, None, register=False, progress=False)

    assert "check artifact model.zip" in caught.value.message
    assert caught.value.resource_id == f"{PREFIX}/model.zip"


def test_leftovers_of_an_unpublished_version_are_overwritten(aws, tmp_path):
    files = _files()
    aws.s3.put_object(Bucket=aws.bucket, Key=f"{PREFIX}/model.zip", Body=b"half-written by a failed run")
    bundle = make_bundle(tmp_path, aws.location, files)

    result = publish(bundle, aws.s3, None, register=False, progress=False)

    assert f"{PREFIX}/model.zip" in result.uploaded_keys
    assert read_object(aws.s3, aws.bucket, f"{PREFIX}/model.zip") == files["model.zip"]


def test_large_artifact_goes_multipart_and_its_composite_checksum_is_verified(aws, tmp_path, api_calls, capsys):
    big = os.urandom(12 * MIB + 4321)
    bundle = make_bundle(tmp_path, aws.location, {"model.zip": big})
    settings = TransferSettings(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, max_concurrency=2)

    result = publish(bundle, aws.s3, None, register=False, transfer=settings, progress=True)

    assert api_calls.count("UploadPart") == 3 and "CompleteMultipartUpload" in api_calls
    (artifact,) = result.artifacts
    value, parts = artifact.s3_checksum.split("-")
    assert parts == "3" and artifact.sha256_b64 == sha256_b64(big)
    part_digests = b"".join(hashlib.sha256(big[i : i + 5 * MIB]).digest() for i in range(0, len(big), 5 * MIB))
    assert value == sha256_b64(part_digests)
    assert hashlib.sha256(read_object(aws.s3, aws.bucket, artifact.key)).digest() == hashlib.sha256(big).digest()
    assert "model.zip" in capsys.readouterr().err  # the tqdm bar
    # A re-run proves the same bytes through the composite checksum, without downloading.
    api_calls.clear()
    again = publish(bundle, aws.s3, None, register=False, transfer=settings, progress=False)
    assert again.uploaded_keys == () and "GetObject" not in api_calls


def test_a_kept_composite_proves_a_rerun_without_reading_the_file(aws, tmp_path, monkeypatch):
    """Composites kept by the bundle digest (the compile cache's archives in a build): a CI rebuild proves the
    multipart object from S3's HeadObject alone; the value kept is what one pass over the file computed."""
    from packager.greengrass.publish import s3

    big = os.urandom(11 * MIB)
    bundle = make_bundle(tmp_path, aws.location, {"model.zip": big})
    settings = TransferSettings(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, max_concurrency=2)
    kept = tmp_path / "archives"
    with s3.composites_kept_in(kept):
        (artifact,) = publish(bundle, aws.s3, None, register=False, transfer=settings, progress=False).artifacts
    [memo] = kept.iterdir()
    assert memo.name == f"{hashlib.sha256(big).hexdigest()}-{5 * MIB}.sha256-composite"
    assert memo.read_text().strip() == artifact.s3_checksum.split("-")[0]

    reads = []
    real = s3._full_and_composite_sha256
    monkeypatch.setattr(s3, "_full_and_composite_sha256", lambda *a: reads.append(a) or real(*a))
    with s3.composites_kept_in(kept):
        again = publish(bundle, aws.s3, None, register=False, transfer=settings, progress=False)
    assert again.uploaded_keys == () and reads == []
    publish(bundle, aws.s3, None, register=False, transfer=settings, progress=False)
    assert len(reads) == 1, "outside the block the file is read, as before"

    memo.write_text("d3Jvbmc=\n")  # a kept composite that S3's does not match: the object is not taken as the same
    with s3.composites_kept_in(kept), pytest.raises(ConflictException):
        publish(bundle, aws.s3, None, register=False, transfer=settings, progress=False)


def test_verify_catches_a_file_changed_after_bundling(aws, tmp_path, api_calls):
    files = _files()
    bundle = make_bundle(tmp_path, aws.location, files)
    model = next(a for a in bundle.artifacts if a.name == "model.zip")
    model.path.write_bytes(os.urandom(len(files["model.zip"])))  # same size, other bytes

    with pytest.raises(PublishError) as caught:
        publish(bundle, aws.s3, None, register=False, progress=False)

    assert caught.value.message.startswith("verify artifact model.zip:")
    assert f"{PREFIX}/{RECIPE_FILE_NAME}" not in _listing(aws)


def test_bundle_whose_uris_point_elsewhere_is_rejected_before_any_call(aws, tmp_path, api_calls):
    bundle = make_bundle(tmp_path, aws.location, _files())
    moved = type(bundle)(**{**bundle.__dict__, "s3_location": type(aws.location)(aws.bucket, "other/prefix")})

    with pytest.raises(ValidationException) as caught:
        publish(moved, aws.s3, None, register=False, progress=False)

    assert "expected s3://" in caught.value.message
    assert api_calls == []


def test_recipe_naming_a_foreign_s3_uri_is_rejected(aws, tmp_path, api_calls):
    bundle = make_bundle(tmp_path, aws.location, _files())
    foreign = bundle.recipe_text.replace(f"{PREFIX}/config.json", "elsewhere/config.json")
    with pytest.raises(ValidationException) as caught:
        publish(
            type(bundle)(**{**bundle.__dict__, "recipe_text": foreign}), aws.s3, None, register=False, progress=False
        )
    assert "not a bundle artifact" in caught.value.message and api_calls == []


def test_transfer_settings_reject_parts_below_s3_minimum():
    with pytest.raises(ValidationException) as caught:
        TransferSettings(multipart_chunksize=MIB)
    assert caught.value.field == "multipart_chunksize"
