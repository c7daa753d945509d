"""S3 side of publishing: bucket checks, SHA-256 uploads through s3transfer, proof that a key holds the bundle's bytes.

How a key is proven to hold the bundle's bytes (the Greengrass ``Digest``, base64 of the raw SHA-256):
- single-part objects: S3's ``ChecksumSHA256`` is the full-object SHA-256 and is compared directly;
- multipart objects: S3 keeps a COMPOSITE SHA-256 (the SHA-256 of the parts' raw SHA-256s, shown as ``<b64>-<parts>``;
  S3 offers FULL_OBJECT checksums for CRC algorithms only). The part size comes from ``HeadObject(PartNumber=1)``,
  and one pass over the local file yields both its full SHA-256 (must equal the bundle digest) and the composite
  (must equal S3's), which together prove the stored bytes are the bundle's. Within composites_kept_in(folder) that
  composite is kept by the digest, and a later publish of the same digest compares S3's with it without the pass;
- objects with no SHA-256 checksum, or with parts of uneven size: download and hash.

Reading back needs s3:GetObject, which StartModelPackagingJob's documented permissions (s3:PutObject,
s3:GetBucketLocation) leave out. It is used when granted. When refused, the proof is the checksum S3 returns for
the upload itself (PutObject's ChecksumSHA256, or CompleteMultipartUpload's composite), which S3 computed from
the bytes it stored: it must match the bundle's digest (single part) or the local file's composite, whose full
SHA-256 must be the bundle's (multipart). A key that cannot be inspected before upload is uploaded.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import BinaryIO

from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.exceptions import ClientError
from s3transfer.subscribers import BaseSubscriber
from tqdm import tqdm

from packager.errors import PublishError, ResourceNotFoundException, ValidationException
from packager.greengrass.publish.aws_errors import aws_error, is_access_denied, is_not_found

log = logging.getLogger(__name__)

MIB = 1024 * 1024
S3_MIN_PART_SIZE = 5 * MIB
_READ_SIZE = MIB

Source = Path | bytes  # a local file, or in-memory bytes such as the recipe

# A composite is a function of the bytes and the part size alone, so it is kept by the bytes' full SHA-256 (the bundle
# digest) in a folder publishing is given (the compile cache's archives): a later publish of the same ZIP (a CI rebuild)
# proves a multipart object against it without reading the local file again. A composite is kept only once one pass
# over a file has shown that file's full SHA-256 is the digest.
_composites: ContextVar[Path | None] = ContextVar("composites", default=None)


@contextmanager
def composites_kept_in(directory: Path | None) -> Iterator[None]:
    """Within this block, remember and reuse multipart SHA-256 composites in ``directory`` (None: compute each)."""
    token = _composites.set(directory)
    try:
        yield
    finally:
        _composites.reset(token)


def _composite_file(sha256_b64: str, part_size: int) -> Path | None:
    directory = _composites.get()
    if directory is None:
        return None
    return Path(directory) / f"{base64.b64decode(sha256_b64).hex()}-{part_size}.sha256-composite"


def _known_composite(sha256_b64: str, part_size: int) -> str | None:
    path = _composite_file(sha256_b64, part_size)
    if path is None:
        return None
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _remember_composite(sha256_b64: str, part_size: int, composite: str) -> None:
    path = _composite_file(sha256_b64, part_size)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=path.parent, prefix=".composite-")
        with os.fdopen(fd, "w") as f:
            f.write(composite + "\n")
        os.replace(partial, path)
    except OSError:
        pass  # a folder that cannot be written only costs the next publish one read of the file


@dataclass(frozen=True)
class TransferSettings:
    """When s3transfer switches to multipart, the part size, and how many parts travel at once."""

    multipart_threshold: int = 64 * MIB
    multipart_chunksize: int = 16 * MIB
    max_concurrency: int = 4

    def __post_init__(self) -> None:
        if self.multipart_threshold < 1:
            raise ValidationException("multipart_threshold must be at least 1 byte", field="multipart_threshold")
        if self.multipart_chunksize < S3_MIN_PART_SIZE:
            raise ValidationException(
                f"multipart_chunksize must be at least {S3_MIN_PART_SIZE} bytes (S3's minimum part size)",
                field="multipart_chunksize",
            )
        if self.max_concurrency < 1:
            raise ValidationException("max_concurrency must be at least 1", field="max_concurrency")

    def transfer_config(self) -> TransferConfig:
        return TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=self.multipart_chunksize,
            max_concurrency=self.max_concurrency,
            # The classic client is the one whose ChecksumAlgorithm handling and progress callbacks are relied on here.
            preferred_transfer_client="classic",
        )


class RemoteState(Enum):
    ABSENT = "absent"
    SAME = "same"  # the key holds exactly the expected bytes
    DIFFERENT = "different"
    UNKNOWN = "unknown"  # reading it was refused (no s3:GetObject): upload, and rely on the upload's checksums


@dataclass(frozen=True)
class RemoteObject:
    state: RemoteState
    checksum: str | None  # ChecksumSHA256 as S3 keeps it; "<b64>-<parts>" for a multipart object


def region_of_location(location_constraint: str | None) -> str:
    """GetBucketLocation's answer as a region name: us-east-1 answers null, old eu-west-1 buckets answer "EU"."""
    if not location_constraint:
        return "us-east-1"
    return "eu-west-1" if location_constraint == "EU" else location_constraint


def check_bucket(s3_client, bucket: str, region: str) -> None:
    """The bucket exists, the credentials reach it, and it is in the Greengrass region: GetBucketLocation alone,
    one of the two S3 actions the service documents (HeadBucket would need s3:ListBucket)."""
    step = "check bucket"
    try:
        location = s3_client.get_bucket_location(Bucket=bucket).get("LocationConstraint")
    except ClientError as exc:
        if is_not_found(exc):
            raise ResourceNotFoundException(
                f"{step}: bucket {bucket} does not exist (NoSuchBucket)", bucket, "S3Bucket"
            ) from None
        raise aws_error(step, exc, resource_id=bucket, resource_type="S3Bucket") from None
    except Exception as exc:
        raise aws_error(step, exc) from None
    bucket_region = region_of_location(location)
    if bucket_region != region:
        raise ValidationException(
            f"{step}: bucket {bucket} is in {bucket_region}, but the component is registered in {region}; "
            "Greengrass needs the artifacts in the same region",
            field="Bucket",
        )


def inspect_object(s3_client, bucket: str, key: str, source: Source, sha256_b64: str, size: int) -> RemoteObject:
    """Whether ``key`` is absent, holds exactly the bytes whose SHA-256 is ``sha256_b64``, or holds other bytes."""
    try:
        return _inspect(s3_client, bucket, key, source, sha256_b64, size)
    except ClientError as exc:
        if is_access_denied(exc):
            return RemoteObject(RemoteState.UNKNOWN, None)
        raise


def _inspect(s3_client, bucket: str, key: str, source: Source, sha256_b64: str, size: int) -> RemoteObject:
    try:
        head = s3_client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as exc:
        if is_not_found(exc):
            return RemoteObject(RemoteState.ABSENT, None)
        raise
    reported = head.get("ChecksumSHA256")
    if head["ContentLength"] != size:
        return RemoteObject(RemoteState.DIFFERENT, reported)
    if reported is None:
        return _by_download(s3_client, bucket, key, sha256_b64, None)
    value, _, suffix = reported.partition("-")
    if not suffix and value == sha256_b64:
        return RemoteObject(RemoteState.SAME, reported)
    first_part = s3_client.head_object(Bucket=bucket, Key=key, PartNumber=1)
    parts = first_part.get("PartsCount")
    if parts is None:
        return RemoteObject(RemoteState.DIFFERENT, reported)
    composite = f"{value}-{parts}"
    part_size = first_part["ContentLength"]
    if part_size <= 0 or -(-size // part_size) != parts:
        return _by_download(s3_client, bucket, key, sha256_b64, composite)
    known = _known_composite(sha256_b64, part_size)
    if known is not None:
        return RemoteObject(RemoteState.SAME if known == value else RemoteState.DIFFERENT, composite)
    full, local_composite = _full_and_composite_sha256(source, part_size)
    if full == sha256_b64:
        _remember_composite(sha256_b64, part_size, local_composite)
    same = full == sha256_b64 and local_composite == value
    return RemoteObject(RemoteState.SAME if same else RemoteState.DIFFERENT, composite)


def verify_object(
    s3_client,
    bucket: str,
    key: str,
    source: Source,
    sha256_b64: str,
    size: int,
    step: str,
    uploaded: UploadedChecksum | None = None,
) -> str:
    """Raise PublishError unless ``key`` now holds the expected bytes; return S3's checksum for the record.
    ``uploaded``: what S3 answered to the upload, the proof used when reading the object back is refused."""
    try:
        remote = inspect_object(s3_client, bucket, key, source, sha256_b64, size)
    except Exception as exc:
        raise aws_error(step, exc) from None
    if remote.state is RemoteState.UNKNOWN:
        if uploaded is None or uploaded.checksum is None:
            raise PublishError(
                f"{step}: reading s3://{bucket}/{key} back was refused (s3:GetObject) and S3 returned no "
                "SHA-256 for its upload, so its bytes cannot be proven"
            )
        try:
            same = _matches_upload(source, sha256_b64, uploaded)
        except OSError as exc:
            raise aws_error(step, exc) from None
        if not same:
            raise PublishError(
                f"{step}: s3://{bucket}/{key} does not hold the bundle's bytes (S3 checksum "
                f"{uploaded.checksum}, bundle SHA-256 {sha256_b64}); was the file changed after bundling?"
            )
        log.info("verify s3://%s/%s: read-back refused; the checksum S3 returned for the upload matches", bucket, key)
        return uploaded.checksum
    if remote.state is RemoteState.ABSENT:
        raise PublishError(f"{step}: s3://{bucket}/{key} is missing after upload")
    if remote.state is RemoteState.DIFFERENT:
        raise PublishError(
            f"{step}: s3://{bucket}/{key} does not hold the bundle's bytes "
            f"(S3 checksum {remote.checksum}, bundle SHA-256 {sha256_b64}); was the file changed after bundling?"
        )
    return remote.checksum or sha256_b64


@dataclass(frozen=True)
class UploadedChecksum:
    checksum: str | None  # ChecksumSHA256 as S3 answered the upload: "<b64>" or, multipart, "<b64>-<parts>"
    part_size: int  # the upload's part size (its whole size when single-part)


def upload_file(
    s3_client,
    bucket: str,
    key: str,
    path: Path,
    size: int,
    settings: TransferSettings,
    *,
    progress: bool,
    step: str,
) -> UploadedChecksum:
    """Upload through s3transfer (multipart at or above the threshold), asking S3 to keep a SHA-256 checksum;
    returns the checksum S3 answered the upload with."""
    extra_args = {"ChecksumAlgorithm": "SHA256"}
    answered: list[str | None] = []

    def record(parsed, **_):
        answered.append(parsed.get("ChecksumSHA256"))

    def record_parts(params, **_):  # each part's SHA-256 as S3 answered its UploadPart
        parts = sorted(params.get("MultipartUpload", {}).get("Parts", []), key=lambda part: part["PartNumber"])
        if parts and all(part.get("ChecksumSHA256") for part in parts):
            digests = b"".join(base64.b64decode(part["ChecksumSHA256"]) for part in parts)
            answered.append(f"{base64.b64encode(hashlib.sha256(digests).digest()).decode('ascii')}-{len(parts)}")

    events = {
        "after-call.s3.PutObject": record,
        "after-call.s3.CompleteMultipartUpload": record,
        "before-parameter-build.s3.CompleteMultipartUpload": record_parts,
    }
    for event, handler in events.items():
        s3_client.meta.events.register(event, handler, unique_id=f"packager-upload-{event}")
    bar = tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=path.name, disable=not progress)
    try:
        with create_transfer_manager(s3_client, settings.transfer_config()) as manager:
            future = manager.upload(str(path), bucket, key, extra_args=extra_args, subscribers=[_ProgressBar(bar)])
            future.result()
    except Exception as exc:
        raise aws_error(step, exc, resource_id=key, resource_type="S3Object") from None
    finally:
        bar.close()
        for event in events:
            s3_client.meta.events.unregister(event, unique_id=f"packager-upload-{event}")
    multipart = size >= settings.multipart_threshold
    checksum = next((c for c in reversed(answered) if c), None)  # S3's own composite if it gave one, else the parts'
    return UploadedChecksum(checksum, settings.multipart_chunksize if multipart else max(size, 1))


def put_bytes(s3_client, bucket: str, key: str, data: bytes, content_type: str, step: str) -> UploadedChecksum:
    try:
        response = s3_client.put_object(
            Bucket=bucket, Key=key, Body=data, ContentType=content_type, ChecksumAlgorithm="SHA256"
        )
    except Exception as exc:
        raise aws_error(step, exc, resource_id=key, resource_type="S3Object") from None
    return UploadedChecksum(response.get("ChecksumSHA256"), max(len(data), 1))


def _matches_upload(source: Source, sha256_b64: str, uploaded: UploadedChecksum) -> bool:
    """Whether the checksum S3 answered an upload with proves it stored the bytes whose SHA-256 is ``sha256_b64``."""
    value, _, parts = uploaded.checksum.partition("-")
    if not parts:
        return value == sha256_b64
    full, composite = _full_and_composite_sha256(source, uploaded.part_size)
    return full == sha256_b64 and composite == value


def sha256_b64_of(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


class _ProgressBar(BaseSubscriber):
    def __init__(self, bar: tqdm):
        self._bar = bar

    def on_progress(self, future, bytes_transferred, **kwargs):
        self._bar.update(bytes_transferred)


def _open(source: Source) -> BinaryIO:
    return io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")


def _full_and_composite_sha256(source: Source, part_size: int) -> tuple[str, str]:
    """One pass: the SHA-256 of the whole source and S3's composite SHA-256 over parts of ``part_size`` bytes."""
    full = hashlib.sha256()
    part_digests = []
    with _open(source) as stream:
        while True:
            part = hashlib.sha256()
            remaining = part_size
            while remaining:
                chunk = stream.read(min(_READ_SIZE, remaining))
                if not chunk:
                    break
                full.update(chunk)
                part.update(chunk)
                remaining -= len(chunk)
            if remaining == part_size:
                break
            part_digests.append(part.digest())
            if remaining:
                break
    composite = hashlib.sha256(b"".join(part_digests)).digest()
    return base64.b64encode(full.digest()).decode("ascii"), base64.b64encode(composite).decode("ascii")


def _by_download(s3_client, bucket: str, key: str, sha256_b64: str, checksum: str | None) -> RemoteObject:
    log.info("s3://%s/%s has no usable SHA-256 checksum; downloading it to compare", bucket, key)
    digest = hashlib.sha256()
    body = s3_client.get_object(Bucket=bucket, Key=key)["Body"]
    try:
        for chunk in iter(lambda: body.read(_READ_SIZE), b""):
            digest.update(chunk)
    finally:
        body.close()
    same = base64.b64encode(digest.digest()).decode("ascii") == sha256_b64
    return RemoteObject(RemoteState.SAME if same else RemoteState.DIFFERENT, checksum)
