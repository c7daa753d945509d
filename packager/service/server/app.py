"""`python -m packager serve`: a ThreadingHTTPServer that answers the service's REST-JSON routes.

Every request must carry a SigV4 signature from a configured access key; the body is read in full
before anything else, so an error never leaves a keep-alive connection out of step.
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
import tempfile
import traceback
import uuid
from dataclasses import dataclass, field, replace
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from packager.errors import InternalServerException, PackagerError, RequestTooLargeException, ValidationException
from packager.service.jobs import api
from packager.service.server import protocol
from packager.service.server.sigv4 import SignedRequest, verify, verify_headers

MAX_REQUEST_BYTES = 1 << 20  # the service's largest input (a job with 200 tags) is far smaller
MAX_DISCARDED_BYTES = 16 << 20  # an authenticated body over the limit up to this size is read and dropped
MAX_MODEL_REQUEST_BYTES = 512 << 20  # RegisterModel: a model of up to ~380 MB travels base64-encoded in one body


@dataclass(frozen=True)
class ServerConfig:
    keys: dict[str, str]  # access key id -> secret access key
    home: Path | None = None  # the store; None: $PACKAGER_HOME
    quiet: bool = False
    routes: tuple = field(default_factory=protocol.routes)
    region: str | None = None  # the only region requests may be signed for; None: the store's (api.service_region())
    register: bool = (
        True  # jobs create their Greengrass component versions after the upload (serve --no-register: False)
    )


class LookoutVisionHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "packager-lookoutvision"
    config: ServerConfig  # set on the subclass make_server() builds
    operations: dict  # operation name -> implementation, with the config's settings applied (make_server)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_OPTIONS(self) -> None:
        self._handle()

    def do_TRACE(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own refusals (unknown method, bad request line, huge headers) as AWS-style JSON."""
        error_type = {501: "UnknownOperationException"}.get(code, "ValidationException")
        self.close_connection = True
        body = json.dumps({"Message": (message or explain or "bad request")[:200]}).encode()
        self._send(
            404 if code == 501 else code,
            {"x-amzn-ErrorType": error_type, "Content-Type": "application/json"},
            body,
            str(uuid.uuid4()),
        )

    def log_message(self, format: str, *args) -> None:
        if not self.config.quiet:
            super().log_message(format, *args)

    def _content_length(self) -> int:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raise ValidationException("chunked request bodies are not supported; send Content-Length")
        text = self.headers.get("Content-Length") or "0"
        if not text.isdigit() or len(text) > 15:
            raise ValidationException(f"Content-Length {text[:20]!r} is not a byte count")
        return int(text)

    def _read_body(self) -> bytes:
        """The body, once the headers show a known key and a size within the route's limit; nothing is read before."""
        length = self._content_length()
        verify_headers(self.headers, self.config.keys, region=self.config.region)
        found = protocol.match(self.config.routes, self.command, urlsplit(self.path).path)
        limit = (
            MAX_MODEL_REQUEST_BYTES
            if found is not None and found[0].operation == "RegisterModel"
            else MAX_REQUEST_BYTES
        )
        if length > limit:
            if length <= MAX_DISCARDED_BYTES:  # a client still sending would miss the answer; larger ones lose the link
                left = length
                while left > 0 and (chunk := self.rfile.read(min(1 << 16, left))):
                    left -= len(chunk)
            raise RequestTooLargeException(
                f"request body of {length} bytes is over this operation's limit of {limit} bytes"
            )
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        request_id = str(uuid.uuid4())
        try:
            body = self._read_body()
        except PackagerError as exc:  # the body was not read: this connection cannot carry another request
            self.close_connection = True
            self._send_error(exc, request_id)
            return
        try:
            verify(
                SignedRequest(self.command, self.path, self.headers, body), self.config.keys, region=self.config.region
            )
            found = protocol.match(self.config.routes, self.command, urlsplit(self.path).path)
            if found is None:
                self._send(
                    404,
                    {"x-amzn-ErrorType": "UnknownOperationException", "Content-Type": "application/json"},
                    json.dumps({"Message": f"no operation at {self.command} {urlsplit(self.path).path}"}).encode(),
                    request_id,
                )
                return
            route, uri_params = found
            if route.operation == "RegisterModel":
                response = self._register_model(uri_params["projectName"], body)
            else:
                params = protocol.request_params(route.operation, uri_params, self.path, self.headers, body)
                response = self.operations[route.operation](home=self.config.home, **params)
        except PackagerError as exc:
            self._send_error(exc, request_id)
            return
        except Exception:  # a bug must not take the server down; the client gets a 500 and the log the traceback
            traceback.print_exc(file=sys.stderr)
            self._send_error(InternalServerException("internal error; see the server log"), request_id)
            return
        self._send(200, {"Content-Type": "application/json"}, protocol.response_body(response), request_id)

    def _register_model(self, project: str, body: bytes) -> dict:
        """Our extension: {"Model": base64 ONNX bytes, "ExternalData": {location: base64 bytes} (optional, the files the
        model keeps its weights in, e.g. anomalib's "model.onnx.data"), "ModelFileName" (optional, default "model.onnx"),
        "Spec": {...} (optional), "Description", "CreateProject"}."""
        doc = protocol.parse_json_body(body)
        unknown = set(doc) - {"Model", "ModelFileName", "ExternalData", "Spec", "Description", "CreateProject"}
        if unknown:
            raise ValidationException(f"Unknown parameter in input: {sorted(unknown)}", field=sorted(unknown)[0])
        model_bytes = _base64_field(doc.get("Model", ""), "Model", "the base64-encoded ONNX file")
        if not model_bytes:
            raise ValidationException("Model is required: the base64-encoded ONNX file", field="Model")
        name = _relative_name(doc.get("ModelFileName", "model.onnx"), "ModelFileName")
        external = doc.get("ExternalData") or {}
        if not isinstance(external, dict):
            raise ValidationException(
                "ExternalData must map each data file's location to its base64 bytes", field="ExternalData"
            )
        with tempfile.TemporaryDirectory(prefix="register-") as scratch:
            model_path = Path(scratch) / "model" / name
            model_path.parent.mkdir(parents=True)
            model_path.write_bytes(model_bytes)
            for location, encoded in external.items():
                data_path = model_path.parent / _relative_name(location, f"ExternalData.{location}")
                data_path.parent.mkdir(parents=True, exist_ok=True)
                data_path.write_bytes(
                    _base64_field(encoded, f"ExternalData.{location}", "the data file's base64 bytes")
                )
            spec_path = None
            if doc.get("Spec") is not None:
                spec_path = Path(scratch) / "spec.json"
                spec_path.write_text(json.dumps(doc["Spec"]))
            try:
                return api.register_model(
                    project,
                    model_path,
                    spec_path,
                    description=doc.get("Description"),
                    create_project=doc.get("CreateProject", False),
                    home=self.config.home,
                )
            except PackagerError as exc:  # name the request's own parts (Model, Spec), not the server's scratch files
                exc.message = (
                    exc.message.replace(str(model_path), "Model")
                    .replace(str(spec_path), "Spec")
                    .replace(f"{scratch}/", "")
                )
                raise

    def _send_error(self, exc: PackagerError, request_id: str) -> None:
        status, headers, body = protocol.error_body(exc)
        self._send(status, {**headers, "Content-Type": "application/json"}, body, request_id)

    def _send(self, status: int, headers: dict[str, str], body: bytes, request_id: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("x-amzn-RequestId", request_id)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":  # a HEAD answer has headers only, or the next response would be out of step
            self.wfile.write(body)


class LookoutVisionServer(ThreadingHTTPServer):
    daemon_threads = True
    quiet = False

    def handle_error(self, request, client_address) -> None:
        """A client that hung up is one line in the log, not a traceback; anything else keeps the traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            if not self.quiet:
                print(
                    f"{client_address[0]}:{client_address[1]} closed the connection: {type(error).__name__}",
                    file=sys.stderr,
                )
            return
        super().handle_error(request, client_address)


def make_server(host: str, port: int, config: ServerConfig) -> LookoutVisionServer:
    if not config.keys:
        raise ValidationException(
            "no access key configured: set PACKAGER_ACCESS_KEY_ID and PACKAGER_SECRET_ACCESS_KEY",
            field="PACKAGER_ACCESS_KEY_ID",
        )
    if config.region is None:
        config = replace(config, region=api.service_region())
    operations = {
        **api.OPERATIONS,
        "StartModelPackagingJob": partial(api.start_model_packaging_job, register=config.register),
    }
    handler = type("ConfiguredHandler", (LookoutVisionHandler,), {"config": config, "operations": operations})
    server = LookoutVisionServer((host, port), handler)
    server.quiet = config.quiet
    return server


def _base64_field(value, field: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ValidationException(f"{field} must be {what}", field=field) from None


def _relative_name(value, field: str) -> str:
    """A file name for the scratch folder: relative, inside it, no '..'."""
    parts = PurePosixPath(str(value)).parts if isinstance(value, str) else ()
    if not parts or value.startswith("/") or "\\" in value or any(p in ("..", ".") for p in parts):
        raise ValidationException(f"{field}: {value!r} must be a relative file name without '..'", field=field)
    return str(PurePosixPath(*parts))
