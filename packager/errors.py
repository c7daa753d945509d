"""One exception hierarchy for the whole packager.

The top-level classes mirror the Lookout for Vision service's error shapes
(``ValidationException``, ``ConflictException``, ...), so the Python client,
the REST server and the CLI can all report an error by the service's own code.
Compile and publish failures belong to the same tree.
"""

from __future__ import annotations

MAX_SHOWN = 100  # characters of a rejected value that an error message echoes


def shown(value: object) -> str:
    """A rejected value as an error message shows it: cut to MAX_SHOWN characters, a huge integer by its size."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"<a {value.bit_length()}-bit integer>"
    text = str(value) if isinstance(value, (int, float)) else repr(value)
    return text if len(text) <= MAX_SHOWN else f"{text[:MAX_SHOWN]}... ({len(text)} characters)"


class PackagerError(Exception):
    """Base of every error the packager raises on purpose.

    ``code`` is the service error code (``response["Error"]["Code"]``),
    ``http_status`` what the REST server answers, ``exit_code`` what the CLI exits with.
    """

    code = "InternalServerException"
    http_status = 500
    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def to_error_dict(self) -> dict:
        return {"Code": self.code, "Message": self.message}


class ValidationException(PackagerError):
    """Input that breaks the service model's rules, or a model we cannot accept."""

    code = "ValidationException"
    http_status = 400
    exit_code = 2

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class RequestTooLargeException(ValidationException):
    """A request body over the server's limit, refused before it is read."""

    code = "RequestTooLargeException"
    http_status = 413


class _ResourceError(PackagerError):
    """An error about one resource; the service's shape carries ResourceId and ResourceType."""

    def __init__(self, message: str, resource_id: str | None = None, resource_type: str | None = None):
        super().__init__(message)
        self.resource_id = resource_id
        self.resource_type = resource_type

    def to_error_dict(self) -> dict:
        return {**super().to_error_dict(), "ResourceId": self.resource_id, "ResourceType": self.resource_type}


class ConflictException(_ResourceError):
    code = "ConflictException"
    http_status = 409
    exit_code = 3


class ResourceNotFoundException(_ResourceError):
    code = "ResourceNotFoundException"
    http_status = 404
    exit_code = 4


class AccessDeniedException(PackagerError):
    code = "AccessDeniedException"
    http_status = 403
    exit_code = 5


class ThrottlingException(PackagerError):
    code = "ThrottlingException"
    http_status = 429
    exit_code = 6


class ServiceQuotaExceededException(PackagerError):
    code = "ServiceQuotaExceededException"
    http_status = 402
    exit_code = 6


class InternalServerException(PackagerError):
    code = "InternalServerException"
    http_status = 500
    exit_code = 1


class ModelImportError(ValidationException):
    """The model file or its spec cannot be read or is not supported. Names the file, node or op."""


class CompilationError(InternalServerException):
    """TVM failed to compile, or a toolchain the target needs is missing."""

    exit_code = 10


class AccuracyMismatchError(CompilationError):
    """The compiled model disagrees with ONNX Runtime beyond tolerance."""

    exit_code = 11


class PublishError(InternalServerException):
    """Upload or registration failed; the message names the step."""

    exit_code = 12


class SpeedGateError(PackagerError):
    """TVM/ORT p50 is above the ratio the build allowed (build --max-ratio): nothing was bundled."""

    code = "SpeedGateFailed"
    http_status = 422
    exit_code = 13
