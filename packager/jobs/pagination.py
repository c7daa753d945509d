"""Opaque, tamper-evident NextToken values and ClientToken parameter fingerprints.

A NextToken is base64(MAC || JSON) with an HMAC-SHA256 keyed by a secret kept in $PACKAGER_HOME,
so a token edited by hand, or one issued for another operation or project, is a ValidationException.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

from packager.errors import ValidationException

_MAC_BYTES = 16


def _secret(home: Path) -> bytes:
    path = home / "token-secret"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()  # another process won the race and wrote it in one write
    with os.fdopen(fd, "wb") as out:
        out.write(secrets.token_bytes(32))
    return path.read_bytes()


def encode_token(home: Path, operation: str, scope: str, after_seq: int) -> str:
    payload = json.dumps({"op": operation, "scope": scope, "after": after_seq}, separators=(",", ":")).encode()
    mac = hmac.new(_secret(home), payload, hashlib.sha256).digest()[:_MAC_BYTES]
    return base64.b64encode(mac + payload).decode("ascii")


def decode_token(home: Path, token: str | None, operation: str, scope: str) -> int:
    """The position a NextToken resumes after (0 for no token)."""
    if token is None:
        return 0
    invalid = ValidationException("NextToken is invalid or has been tampered with; use the value from the previous response",
                                  field="NextToken")
    try:
        raw = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        raise invalid from None
    mac, payload = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
    expected = hmac.new(_secret(home), payload, hashlib.sha256).digest()[:_MAC_BYTES]
    if len(mac) != _MAC_BYTES or not hmac.compare_digest(mac, expected):
        raise invalid
    doc = json.loads(payload)
    if doc.get("op") != operation or doc.get("scope") != scope:
        raise ValidationException(f"NextToken was issued for another request, not {operation} on {scope or 'this account'}",
                                  field="NextToken")
    return int(doc["after"])


def params_fingerprint(params: dict) -> str:
    """What 'the same parameters' means for a ClientToken: every member except the token itself."""
    canonical = json.dumps({k: v for k, v in params.items() if k != "ClientToken"}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
