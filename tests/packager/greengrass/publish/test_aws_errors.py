"""How botocore failures become packager errors: the step first, one line, credentials redacted."""

from __future__ import annotations

from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from packager.errors import AccessDeniedException, ConflictException, PublishError, ThrottlingException
from packager.greengrass.publish.aws_errors import aws_error, one_line


def _client_error(code: str, message: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject"
    )


def test_server_messages_are_flattened_and_credentials_redacted():
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    text = one_line(f"bad request\n  from AKIAIOSFODNN7EXAMPLE signed with {secret}\n")
    assert text == "bad request from <redacted> signed with <redacted>"


def test_mapping_keeps_the_step_and_the_service_error_type():
    denied = aws_error("upload recipe", _client_error("SignatureDoesNotMatch", "StringToSign ...", 403))
    assert isinstance(denied, AccessDeniedException)
    assert denied.message == "upload recipe: access denied (SignatureDoesNotMatch)"
    conflict = aws_error("register component", _client_error("ConflictException", "exists", 409), resource_id="arn")
    assert isinstance(conflict, ConflictException) and conflict.resource_id == "arn"
    assert isinstance(
        aws_error("verify artifact a", _client_error("SlowDown", "reduce rate", 503)), ThrottlingException
    )
    other = aws_error("upload artifact a", _client_error("InternalError", "We encountered\nan internal error", 500))
    assert isinstance(other, PublishError)
    assert other.message == "upload artifact a: InternalError: We encountered an internal error"


def test_transport_and_credential_failures():
    unreachable = aws_error("check bucket", EndpointConnectionError(endpoint_url="http://127.0.0.1:9/b"))
    assert (
        isinstance(unreachable, PublishError)
        and unreachable.message == "check bucket: cannot reach http://127.0.0.1:9/b"
    )
    missing = aws_error("check bucket", NoCredentialsError())
    assert isinstance(missing, AccessDeniedException) and missing.message.startswith("check bucket: no AWS credentials")
    unreadable = aws_error("upload artifact a", FileNotFoundError(2, "No such file or directory", "/x/a"))
    assert unreadable.message == "upload artifact a: cannot read /x/a: No such file or directory"
