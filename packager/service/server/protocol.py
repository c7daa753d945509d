"""The REST-JSON protocol of the service model: routes from each operation's `http` block, request
members from the URI, query string, headers and JSON body, responses and errors as botocore parses them."""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from email.message import Message
from urllib.parse import parse_qsl, unquote, urlsplit

import packager.service_model as service_model
from packager.errors import PackagerError, ValidationException

EXTENSION_PREFIX = "/x-packager"  # our own routes (register-model) live outside the service's URI space


@dataclass(frozen=True)
class Route:
    operation: str
    method: str
    pattern: re.Pattern


def _route(operation: str, method: str, uri: str) -> Route:
    regex = re.sub(r"\\\{(\w+)\\\}", lambda m: f"(?P<{m.group(1)}>[^/]+)", re.escape(uri))
    return Route(operation, method, re.compile(f"^{regex}$"))


def routes() -> tuple[Route, ...]:
    table = [
        _route(name, op.http_method, op.request_uri)
        for name in service_model.SUPPORTED_OPERATIONS
        for op in [service_model.operation(name)]
    ]
    table.append(_route("RegisterModel", "POST", EXTENSION_PREFIX + "/projects/{projectName}/models"))
    return tuple(table)


def match(table: tuple[Route, ...], method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    for route in table:
        if route.method == method:
            found = route.pattern.match(path)
            if found:
                return route, {k: unquote(v) for k, v in found.groupdict().items()}
    return None


def _coerce(shape_name: str, text: str, member: str):
    kind = service_model.shape(shape_name)["type"]
    if kind in ("integer", "long"):
        try:
            return int(text)
        except ValueError:
            raise ValidationException(f"{member} must be an integer, got {text!r}", field=member) from None
    return text


def request_params(operation: str, uri_params: dict[str, str], target: str, headers: Message, body: bytes) -> dict:
    """Rebuild the operation's input members from where the model's `location` says each one travels."""
    query = dict(parse_qsl(urlsplit(target).query, keep_blank_values=True))
    params: dict = {}
    body_members = []
    for member in service_model.members(service_model.operation(operation).input_shape):
        if member.location == "uri":
            params[member.name] = uri_params[member.location_name]
        elif member.location == "querystring":
            if member.location_name in query:
                params[member.name] = _coerce(member.shape, query[member.location_name], member.name)
        elif member.location == "header":
            if headers.get(member.location_name) is not None:
                params[member.name] = _coerce(member.shape, headers[member.location_name], member.name)
        else:
            body_members.append(member.name)
    if body_members and body.strip():
        doc = parse_json_body(body)
        params.update({k: v for k, v in doc.items() if k not in params})
    return params


MAX_MESSAGE = 2000  # characters of an error message sent back
MAX_JSON_DEPTH = 32  # the service's deepest input is 4 levels; a model spec adds a few


def parse_json_body(body: bytes) -> dict:
    depth = _nesting_depth(body)
    if depth > MAX_JSON_DEPTH:
        raise ValidationException(f"request body nests {depth} levels deep; at most {MAX_JSON_DEPTH} are accepted")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # ValueError: also an integer past 4300 digits
        raise ValidationException(f"request body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(doc, dict):
        raise ValidationException("request body must be a JSON object")
    return doc


def _nesting_depth(body: bytes) -> int:
    """How deep [ and { nest, outside strings; counted before parsing so no recursion can run out of stack."""
    text = re.sub(rb'"(?:[^"\\]|\\.)*"', b"", body)
    depth = deepest = 0
    for byte in text.translate(None, delete=bytes(b for b in range(256) if b not in b"[]{}")):
        depth += 1 if byte in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _wire(value):
    """Timestamps travel as epoch seconds, the REST-JSON default botocore parses."""
    if isinstance(value, dt.datetime):
        return value.timestamp()
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_wire(v) for v in value]
    return value


def response_body(response: dict) -> bytes:
    return json.dumps(_wire(response), separators=(",", ":")).encode()


def error_body(exc: PackagerError) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of an error, in the shape botocore's RestJSONParser reads back."""
    error = exc.to_error_dict()
    if len(error["Message"]) > MAX_MESSAGE:  # whatever a message echoes, the answer stays small
        error["Message"] = error["Message"][:MAX_MESSAGE] + "..."
    doc = {
        "Message": error["Message"],
        **{k: v for k, v in error.items() if k not in ("Code", "Message") and v is not None},
    }
    return exc.http_status, {"x-amzn-ErrorType": exc.code}, json.dumps(doc).encode()
