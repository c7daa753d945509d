"""Opaque, tamper-evident NextToken values and ClientToken parameter fingerprints.

A NextToken is base64(MAC || JSON) with an HMAC-SHA256 keyed by the store's secret (Store.pagination_secret),
so a token edited by hand, or one issued for another operation or project, is a ValidationException.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json

from packager.errors import ValidationException

_MAC_BYTES = 16


def encode_token(secret: bytes, operation: str, scope: str, after_seq: int) -> str:
    payload = json.dumps({"op": operation, "scope": scope, "after": after_seq}, separators=(",", ":")).encode()
    mac = hmac.new(secret, payload, hashlib.sha256).digest()[:_MAC_BYTES]
    return base64.b64encode(mac + payload).decode("ascii")


def decode_token(secret: bytes, token: str | None, operation: str, scope: str) -> int:
    """The position a NextToken resumes after (0 for no token)."""
    if token is None:
        return 0
    invalid = ValidationException(
        "NextToken is invalid or has been tampered with; use the value from the previous response", field="NextToken"
    )
    try:
        raw = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        raise invalid from None
    mac, payload = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
    expected = hmac.new(secret, payload, hashlib.sha256).digest()[:_MAC_BYTES]
    if len(mac) != _MAC_BYTES or not hmac.compare_digest(mac, expected):
        raise invalid
    doc = json.loads(payload)
    if doc.get("op") != operation or doc.get("scope") != scope:
        raise ValidationException(
            f"NextToken was issued for another request, not {operation} on {scope or 'this account'}", field="NextToken"
        )
    return int(doc["after"])


def params_fingerprint(params: dict) -> str:
    """What 'the same parameters' means for a ClientToken: every member except the token itself."""
    canonical = json.dumps(
        {k: v for k, v in params.items() if k != "ClientToken"}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
