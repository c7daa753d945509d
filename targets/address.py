"""Network addresses given on the command line: 'host:port', parsed once at the edge."""

from __future__ import annotations

import re

from packager.errors import ValidationException


def parse_address(text: str, field: str) -> tuple[str, int]:
    """'host:port' (or '[v6]:port') -> (host, port); a bad one is a ValidationException naming ``field``."""
    match = re.fullmatch(r"\[?([A-Za-z0-9_.:-]+?)\]?:(\d{1,5})", text or "")
    if not match or not 0 < int(match[2]) < 65536:
        raise ValidationException(f"{field} must be HOST:PORT, like 127.0.0.1:9190; got {text!r}", field=field)
    return match[1], int(match[2])
