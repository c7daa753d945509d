"""Fixtures for the team's service: every part real, every part on 127.0.0.1 on a free port."""

from __future__ import annotations

import urllib.request

import boto3
import pytest

from tests.packager.greengrass.publish.loopback import LoopbackS3
from tests.packager.service.team.greengrass_loopback import GreengrassLoopback
from tests.packager.service.team.harness import REGION, Team, team_env

OUTPUT_BUCKET = "team-components"
MODEL_BUCKET = "team-models"


@pytest.fixture
def s3_loopback():
    server = LoopbackS3()
    server.start()
    # moto keeps buckets in this process across servers; start from an empty account.
    urllib.request.urlopen(urllib.request.Request(f"{server.endpoint}/moto-api/reset", method="POST")).close()
    s3 = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket=OUTPUT_BUCKET)
    s3.create_bucket(Bucket=MODEL_BUCKET)
    yield server, s3
    server.stop()


@pytest.fixture
def greengrass_loopback():
    server = GreengrassLoopback(REGION)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def team(tmp_path, postgres, redis, s3_loopback, greengrass_loopback):
    import redis as redis_client

    redis_client.Redis.from_url(redis.url).flushdb()
    env = team_env(
        postgres.create_database(), redis.url, s3_loopback[0].endpoint, greengrass_loopback.endpoint, MODEL_BUCKET
    )
    harness = Team(tmp_path / "team", env)
    yield harness
    harness.stop_all()
