"""Turns boto3/botocore failures into the packager's error types: one line, named by step, never a secret."""

from __future__ import annotations

import re

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)

from packager.errors import (
    AccessDeniedException,
    ConflictException,
    PackagerError,
    PublishError,
    ResourceNotFoundException,
    ServiceQuotaExceededException,
    ThrottlingException,
    ValidationException,
)

NO_CREDENTIALS = (
    "no AWS credentials found; provide them through the standard chain "
    "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or an instance/container role)"
)

_ACCESS_CODES = frozenset(
    {
        "403",
        "AccessDenied",
        "AccessDeniedException",
        "AllAccessDisabled",
        "ExpiredToken",
        "ExpiredTokenException",
        "Forbidden",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "InvalidToken",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
    }
)
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket", "ResourceNotFoundException"})
_THROTTLING_CODES = frozenset({"ThrottlingException", "Throttling", "SlowDown", "TooManyRequestsException"})

# Server messages are echoed to users; these patterns catch access key ids and 40-character secret keys.
_ACCESS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA|AGPA)[A-Z0-9]{12,}\b")
_SECRET_LIKE = re.compile(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")


def one_line(text: str, limit: int = 300) -> str:
    """Collapse whitespace, redact anything that looks like a credential, and cap the length."""
    flat = " ".join(str(text).split())
    flat = _SECRET_LIKE.sub("<redacted>", _ACCESS_KEY_ID.sub("<redacted>", flat))
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "")) or str(
        exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
    )


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, ClientError) and error_code(exc) in _NOT_FOUND_CODES


def is_access_denied(exc: BaseException) -> bool:
    """A permission the caller was not granted, as opposed to a missing resource or a fault."""
    return isinstance(exc, ClientError) and error_code(exc) in _ACCESS_CODES


def aws_error(
    step: str,
    exc: BaseException,
    *,
    resource_id: str | None = None,
    resource_type: str | None = None,
) -> PackagerError:
    """The packager error for a failure of ``step``; its message starts with the step."""
    if isinstance(exc, PackagerError):
        return exc
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)):
        return AccessDeniedException(f"{step}: {NO_CREDENTIALS}")
    if isinstance(exc, ParamValidationError):
        return ValidationException(f"{step}: {one_line(exc)}")
    if isinstance(exc, EndpointConnectionError):
        return PublishError(f"{step}: cannot reach {exc.kwargs.get('endpoint_url', 'the endpoint')}")
    if isinstance(exc, ClientError):
        return _client_error(step, exc, resource_id, resource_type)
    if isinstance(exc, BotoCoreError):
        return PublishError(f"{step}: {type(exc).__name__}: {one_line(exc)}")
    if isinstance(exc, OSError):
        target = f" {exc.filename}" if exc.filename else ""
        return PublishError(f"{step}: cannot read{target}: {exc.strerror or type(exc).__name__}")
    return PublishError(f"{step}: {type(exc).__name__}: {one_line(exc)}")


def _client_error(step: str, exc: ClientError, resource_id: str | None, resource_type: str | None) -> PackagerError:
    code = error_code(exc)
    server_message = one_line(exc.response.get("Error", {}).get("Message", ""))
    detail = f"{code}: {server_message}" if server_message else code
    if code in _ACCESS_CODES:
        return AccessDeniedException(f"{step}: access denied ({code})")
    if code == "ConflictException":
        return ConflictException(f"{step}: {detail}", resource_id, resource_type)
    if code in _NOT_FOUND_CODES:
        return ResourceNotFoundException(f"{step}: {detail}", resource_id, resource_type)
    if code == "ValidationException":
        return ValidationException(f"{step}: {detail}")
    if code in _THROTTLING_CODES:
        return ThrottlingException(f"{step}: {detail}")
    if code == "ServiceQuotaExceededException":
        return ServiceQuotaExceededException(f"{step}: {detail}")
    return PublishError(f"{step}: {detail}")
