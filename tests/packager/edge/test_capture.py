"""Images kept for retraining: sampling, the capped spool, and the uploader against moto's S3 over HTTP
(each file arrives once, also when the uploader is killed mid-upload or the network goes away)."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from botocore.exceptions import BotoCoreError, ClientError
from PIL import Image

from packager.edge import edge_agent_pb2 as pb
from packager.edge.capture import ANOMALY, NORMAL, ImageCapture, Spool, png_bytes
from packager.edge.line import Detection
from packager.edge.mask import MaskPalette, render
from packager.edge.model_runner import AnomalyResult
from packager.edge.settings import parse_capture
from packager.edge.uploader import IN_FLIGHT, SpoolUploader, s3_client
from tests.packager.edge.conftest import MODEL, bitmap, defective_image, normal_image, wait_for_status
from tests.packager.greengrass.publish.conftest import (
    FAKE_ACCESS_KEY_ID,
    FAKE_SECRET_ACCESS_KEY,
    isolate_aws_environment,
)
from tests.packager.greengrass.publish.loopback import LoopbackS3

REPO = Path(__file__).resolve().parents[3]
PALETTE = MaskPalette.from_spec({"classes": [{"name": "scratch", "color": "#FF0000"}], "background_color": "#FFFFFF"})


def detection(anomalous: bool, timestamp: float | None = None, size: int = 64, seed: int = 0) -> Detection:
    """A detection record as the agent makes one; the noise image does not compress, so its PNG is ~size*size*3 bytes."""
    image = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    anomaly_map = np.zeros((8, 8), np.float32)
    anomaly_map[2:5, 2:5] = 2.0 if anomalous else 0.0
    result = AnomalyResult(
        score=float(anomaly_map.max()), threshold=1.0, is_anomalous=anomalous, confidence=0.5, anomaly_map=anomaly_map
    )
    return Detection(
        "com.acme.Tiny",
        "arn:aws:lookoutvision:us-east-1:123456789012:model/p/1",
        uuid.uuid4().hex,
        time.time() if timestamp is None else timestamp,
        0.002,
        result,
        render(anomaly_map, 1.0, PALETTE, size, size),
        image,
    )


def decoded(path: Path) -> np.ndarray:
    with Image.open(io.BytesIO(path.read_bytes()) if isinstance(path, Path) else io.BytesIO(path)) as image:
        return np.asarray(image.convert("RGB"))


def on_disk(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("level", [0, 1, 9])
def test_png_round_trips(level):
    image = np.random.default_rng(1).integers(0, 256, (37, 91, 3), dtype=np.uint8)
    assert np.array_equal(decoded(png_bytes(image, level)), image)


def test_an_item_is_image_mask_and_result_in_the_date_component_label_layout(tmp_path):
    spool = Spool(tmp_path / "spool", max_bytes=1 << 30, retention_days=30)
    record = detection(True, timestamp=1_790_000_000.25)
    item = spool.add(record)
    assert item.directory == tmp_path / "spool" / "2026-09-21" / "com.acme.Tiny" / ANOMALY
    png, mask, result = item.files()
    assert np.array_equal(decoded(png), record.image) and np.array_equal(decoded(mask), record.mask.pixels)
    document = json.loads(result.read_text())
    assert document["image_id"] == record.image_id and document["is_anomalous"] is True
    assert document["timestamp"] == "2026-09-21T14:13:20.250Z"
    assert [i.stem for i in spool.items()] == [item.stem] and not list(spool.root.rglob(".*.tmp"))


def test_a_classification_models_item_is_image_and_result_without_mask_or_anomalies(tmp_path):
    """A classification model has no mask: the agent hands the sinks mask=None, as it answers the client."""
    from dataclasses import replace

    from packager.edge.line import result_document

    record = replace(detection(True, timestamp=1_790_000_000.25), mask=None)
    assert result_document(record)["anomalies"] == []
    item = Spool(tmp_path / "spool", max_bytes=1 << 30, retention_days=30).add(record)
    png, mask, result = item.files()
    assert np.array_equal(decoded(png), record.image) and not mask.exists()
    assert (
        json.loads(result.read_text())["anomalies"] == [] and item.size() == png.stat().st_size + result.stat().st_size
    )


def test_a_spool_at_its_cap_keeps_its_limit_and_drops_the_oldest_normal_images_first(tmp_path):
    cap = 200_000  # about eight 64x64 items of noise
    spool = Spool(tmp_path / "spool", max_bytes=cap, retention_days=30)
    start = time.time() - 100
    anomalous = [spool.add(detection(True, start + i, seed=i)).stem for i in range(3)]
    normal = []
    for i in range(3, 40):
        normal.append(spool.add(detection(False, start + i, seed=i)).stem)
        assert on_disk(spool.root) <= cap
    kept = {item.stem: item.label for item in spool.items()}
    assert set(anomalous) <= set(kept)  # normal images went first
    kept_normal = [stem for stem in normal if stem in kept]
    assert kept_normal == normal[-len(kept_normal) :] and 0 < len(kept_normal) < len(normal)  # the newest ones
    for i in range(40, 60):  # only anomalous ones now: the normal ones go, then the oldest anomalous
        spool.add(detection(True, start + i, seed=i))
        assert on_disk(spool.root) <= cap
    labels = [item.label for item in spool.items()]
    assert NORMAL not in labels and anomalous[0] not in {i.stem for i in spool.items()}


def test_items_past_the_retention_go(tmp_path):
    spool = Spool(tmp_path / "spool", max_bytes=1 << 30, retention_days=1)
    old = spool.add(detection(True, time.time() - 2 * 86400))
    new = spool.add(detection(False, time.time()))
    spool.enforce()
    assert [i.stem for i in spool.items()] == [new.stem] and not any(p.exists() for p in old.files())


@pytest.mark.slow
def test_the_agent_keeps_every_anomalous_image_and_a_share_of_normal_ones(tmp_path, make_agent):
    spool = Spool(tmp_path / "spool", max_bytes=1 << 30, retention_days=30)
    capture = ImageCapture(parse_capture({"Enabled": True, "NormalShare": 0.25}), spool, rng=random.Random(7))
    agent = make_agent(sinks=(capture,))
    agent.stub.StartModel(pb.StartModelRequest(model_component=MODEL))
    assert wait_for_status(agent.stub, MODEL, pb.RUNNING).status == pb.RUNNING
    answers = []
    for image in [defective_image()] * 5 + [normal_image()] * 40:
        answer = agent.stub.DetectAnomalies(pb.DetectAnomaliesRequest(model_component=MODEL, bitmap=bitmap(image)))
        answers.append((image, answer.detect_anomaly_result))
    capture.flush()
    items = spool.items()
    draws = random.Random(7)
    expected_normal = sum(draws.random() < 0.25 for _ in range(40))  # the same draws, in the same order
    assert [i.label for i in items].count(ANOMALY) == 5 and [i.label for i in items].count(NORMAL) == expected_normal
    assert 0 < expected_normal < 40
    image, answer = answers[0]
    png, mask, result = items[0].files()
    assert np.array_equal(decoded(png), image)
    assert np.array_equal(decoded(mask), np.frombuffer(answer.anomaly_mask.byte_data, np.uint8).reshape(image.shape))
    assert json.loads(result.read_text())["anomaly_score"] == pytest.approx(answer.anomaly_score, rel=1e-6)


# -- the uploader, against moto's S3 over HTTP ----------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_server():
    server = LoopbackS3()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def bucket(s3_server, monkeypatch, tmp_path):
    """A fresh versioned bucket: every PUT makes a version, so a file sent twice shows two."""
    isolate_aws_environment(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET_ACCESS_KEY)
    client = s3_client(s3_server.endpoint)
    name = f"captures-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return client, name


def versions(client, bucket: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for version in page.get("Versions", []):
            counts[version["Key"]] = counts.get(version["Key"], 0) + 1
    return counts


def filled_spool(root: Path, count: int, size: int = 64) -> tuple[Spool, dict[str, bytes]]:
    """A spool of count items, and what each file's key must hold."""
    spool = Spool(root, max_bytes=1 << 34, retention_days=30)
    expected = {}
    for i in range(count):
        for path in spool.add(detection(i % 3 == 0, time.time() - count + i, size=size, seed=i)).files():
            expected[f"line-7/{path.relative_to(root).as_posix()}"] = path.read_bytes()
    return spool, expected


def assert_arrived_once(client, bucket: str, expected: dict[str, bytes]) -> None:
    assert versions(client, bucket) == {key: 1 for key in expected}
    for key, data in expected.items():
        assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == data


def test_captured_images_arrive_once_each_in_the_retraining_layout(tmp_path, bucket):
    client, name = bucket
    spool, expected = filled_spool(tmp_path / "spool", 6)
    uploader = SpoolUploader(spool, client, name, "line-7/")
    assert uploader.upload_pending() == 18
    assert uploader.upload_pending() == 0  # a second pass finds nothing to send
    assert_arrived_once(client, name, expected)
    for key in expected:
        prefix, date, component, label, file_name = key.split("/")
        assert (prefix, component, label in (ANOMALY, NORMAL)) == ("line-7", "com.acme.Tiny", True)
        assert time.strptime(date, "%Y-%m-%d")
    assert list(spool.root.iterdir()) == []  # sent files leave the spool, and their empty directories too


def test_a_file_that_landed_before_a_crash_is_not_sent_again(tmp_path, bucket):
    client, name = bucket
    spool, expected = filled_spool(tmp_path / "spool", 2)
    uploader = SpoolUploader(spool, client, name, "line-7")
    first = spool.items()[0].files()[0]
    key = uploader.key_for(first)
    # The state a kill leaves between the PUT and removing the file: the record, the file, and the object in S3.
    import hashlib

    (spool.root / IN_FLIGHT).write_text(
        json.dumps(
            {
                "key": key,
                "md5": hashlib.md5(first.read_bytes()).hexdigest(),
                "path": first.relative_to(spool.root).as_posix(),
            }
        )
    )
    client.put_object(Bucket=name, Key=key, Body=first.read_bytes())
    assert uploader.upload_pending() == 5 and uploader.skipped == 1
    assert_arrived_once(client, name, expected)


@pytest.mark.slow
def test_killing_the_uploader_mid_upload_loses_and_duplicates_nothing(tmp_path, bucket, s3_server):
    client, name = bucket
    _, expected = filled_spool(tmp_path / "spool", 30, size=256)  # ~200 KB images: PUTs take a moment each
    command = [
        sys.executable,
        "-m",
        "packager.edge.uploader",
        "--spool",
        str(tmp_path / "spool"),
        "--bucket",
        name,
        "--prefix",
        "line-7",
        "--endpoint-url",
        s3_server.endpoint,
        "--once",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while len(versions(client, name)) < 10 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    arrived = len(versions(client, name))
    assert 10 <= arrived < len(expected), f"the kill came too late to test anything ({arrived} of {len(expected)})"
    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert_arrived_once(client, name, expected)


def test_a_network_loss_keeps_every_file_until_s3_is_back(tmp_path, bucket, s3_server, caplog):
    from botocore.config import Config

    client, name = bucket
    spool, expected = filled_spool(tmp_path / "spool", 3)
    import boto3

    quick = boto3.session.Session().client(
        "s3", endpoint_url=s3_server.endpoint, config=Config(retries={"max_attempts": 1}, connect_timeout=1)
    )
    uploader = SpoolUploader(spool, quick, name, "line-7")
    s3_server.stop()
    try:
        with pytest.raises((BotoCoreError, ClientError)):  # S3 is down: the connection fails
            uploader.upload_pending()
        assert len([i for i in spool.items()]) == 3
    finally:
        s3_server.start()
    assert uploader.upload_pending() == 9
    assert_arrived_once(client, name, expected)
