"""Publishing: S3 upload with SHA-256 verification, then Greengrass v2 registration, in an order safe to retry."""

from packager.greengrass.publish.clients import make_clients
from packager.greengrass.publish.publish import RECIPE_FILE_NAME, PublishedComponent, PublishedObject, publish, publish_shared
from packager.greengrass.publish.s3 import TransferSettings

__all__ = [
    "RECIPE_FILE_NAME",
    "PublishedComponent",
    "PublishedObject",
    "TransferSettings",
    "make_clients",
    "publish",
    "publish_shared",
]
