"""Build the two AWS clients publishing needs from the standard credential chain and endpoint settings.

Endpoints come only from the standard overrides (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_S3, the config file's
endpoint_url), which is how tests point S3 at a loopback server.
"""

from __future__ import annotations

import boto3
from botocore.config import Config

from packager.errors import AccessDeniedException, ValidationException
from packager.greengrass.publish.aws_errors import NO_CREDENTIALS


def make_clients(region: str | None, *, config: Config | None = None) -> tuple[object, object]:
    """(s3, greengrassv2) clients for ``region`` (None: the region the standard chain resolves)."""
    session = boto3.session.Session(region_name=region)
    if session.region_name is None:
        raise ValidationException("no AWS region; pass one or set AWS_REGION", field="region")
    if session.get_credentials() is None:
        raise AccessDeniedException(f"create AWS clients: {NO_CREDENTIALS}")
    config = config or Config(retries={"mode": "standard"})
    return session.client("s3", config=config), session.client("greengrassv2", config=config)


def make_sts_client(region: str | None, *, config: Config | None = None):
    """STS, for GetCallerIdentity: the account id that component version ARNs are built from."""
    session = boto3.session.Session(region_name=region)
    return session.client("sts", config=config or Config(retries={"mode": "standard"}))
