"""Checking AWS Signature Version 4 on a received request, by re-signing it with botocore's own signer."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass
from email.message import Message

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from packager.errors import AccessDeniedException, shown

SERVICE = "lookoutvision"
MAX_CLOCK_SKEW = dt.timedelta(minutes=15)  # what AWS allows before "Signature expired"
_ALGORITHM = "AWS4-HMAC-SHA256"
_AMZ_DATE = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class SignedRequest:
    method: str
    target: str  # path and query exactly as received
    headers: Message
    body: bytes


def _parse_authorization(value: str) -> dict[str, str]:
    algorithm, _, rest = value.partition(" ")
    if algorithm != _ALGORITHM:
        raise AccessDeniedException(f"Authorization must use {_ALGORITHM}")
    parts = {}
    for item in rest.split(","):
        key, sep, val = item.strip().partition("=")
        if sep:
            parts[key] = val
    if not {"Credential", "SignedHeaders", "Signature"} <= set(parts):
        raise AccessDeniedException("Authorization header is missing Credential, SignedHeaders or Signature")
    return parts


def verify(
    request: SignedRequest, keys: dict[str, str], now: dt.datetime | None = None, region: str | None = None
) -> str:
    """Return the access key id that signed ``request``; raise AccessDeniedException for anything else.
    ``region``: the only region a request may be signed for (None: any)."""
    access_key, region, amz_date, signed_headers, signature = _check_headers(request.headers, keys, now, region)
    claimed_hash = request.headers.get("X-Amz-Content-SHA256")
    if claimed_hash is not None and claimed_hash != hashlib.sha256(request.body).hexdigest():
        raise AccessDeniedException("X-Amz-Content-SHA256 does not match the request body")
    expected = _signature(request, signed_headers, access_key, keys[access_key], region, amz_date)
    if not hmac.compare_digest(expected, signature):
        raise AccessDeniedException("The request signature we calculated does not match the signature you provided")
    return access_key


def verify_headers(
    headers: Message, keys: dict[str, str], now: dt.datetime | None = None, region: str | None = None
) -> str:
    """Everything verify() checks that needs no body: a known key, scope and clock. Run before a body is read,
    so a request that cannot be authentic costs the server no body; verify() still checks the signature."""
    return _check_headers(headers, keys, now, region)[0]


def _check_headers(headers: Message, keys: dict[str, str], now: dt.datetime | None, expected_region: str | None):
    authorization = headers.get("Authorization")
    if not authorization:
        raise AccessDeniedException(
            "Missing Authentication Token: requests must be signed with AWS Signature Version 4"
        )
    parts = _parse_authorization(authorization)
    scope = parts["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise AccessDeniedException("Credential must be <access key>/<date>/<region>/<service>/aws4_request")
    access_key, date, region, service, _ = scope
    secret = keys.get(access_key)
    if secret is None:
        raise AccessDeniedException("The security token included in the request is invalid (unknown access key)")
    if service != SERVICE:
        raise AccessDeniedException(f"Credential should be scoped to the service '{SERVICE}', not '{service}'")
    if expected_region is not None and region != expected_region:
        raise AccessDeniedException(
            f"Credential should be scoped to a valid region, not '{shown(region)[1:-1]}'; "
            f"this endpoint serves '{expected_region}'"
        )
    amz_date = headers.get("X-Amz-Date", "")
    try:
        signed_at = dt.datetime.strptime(amz_date, _AMZ_DATE).replace(tzinfo=dt.UTC)
    except ValueError:
        raise AccessDeniedException("X-Amz-Date header is missing or not in the form 20201120T000000Z") from None
    now = now or dt.datetime.now(dt.UTC)
    if abs(now - signed_at) > MAX_CLOCK_SKEW:
        raise AccessDeniedException(f"Signature expired: {amz_date} is more than 15 minutes from the server's time")
    if date != amz_date[:8]:
        raise AccessDeniedException("Credential date does not match X-Amz-Date")
    signed_headers = parts["SignedHeaders"].split(";")
    if "host" not in signed_headers or "x-amz-date" not in signed_headers:
        raise AccessDeniedException("SignedHeaders must include host and x-amz-date")
    return access_key, region, amz_date, signed_headers, parts["Signature"]


def _signature(
    request: SignedRequest, signed_headers: list[str], access_key: str, secret: str, region: str, amz_date: str
) -> str:
    rebuilt = AWSRequest(
        method=request.method, url=f"http://{request.headers.get('Host', '')}{request.target}", data=request.body
    )
    for name in signed_headers:
        values = request.headers.get_all(name)
        if not values:
            raise AccessDeniedException(f"signed header {name!r} is missing from the request")
        for value in values:
            rebuilt.headers[name] = value  # Message.__setitem__ appends, keeping repeated headers
    rebuilt.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(access_key, secret), SERVICE, region)
    if signer.signed_headers(signer.headers_to_sign(rebuilt)) != ";".join(signed_headers):
        raise AccessDeniedException("SignedHeaders lists headers this server does not sign")
    canonical = signer.canonical_request(rebuilt)
    return signer.signature(signer.string_to_sign(rebuilt, canonical), rebuilt)
