"""A Greengrass v2 control plane on 127.0.0.1 for tests whose workers run in other processes, where botocore's
Stubber cannot reach: the four REST-JSON calls publishing makes, with the service's rule that a component version is
created once (a second CreateComponentVersion is a 409 ConflictException). It keeps every create it was asked for."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

ACCOUNT = "123456789012"


class GreengrassLoopback:
    def __init__(self, region: str = "us-east-1"):
        self.region = region
        self.versions: dict[tuple[str, str], str] = {}  # (name, version) -> recipe text
        self.create_calls: list[tuple[str, str]] = []  # every CreateComponentVersion, refused ones too
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def component_arn(self, name: str) -> str:
        return f"arn:aws:greengrass:{self.region}:{ACCOUNT}:components:{name}"

    def _handler(self):
        loopback = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, doc: dict, error: str | None = None) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if error:
                    self.send_header("x-amzn-ErrorType", error)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                path = unquote(url.path)
                with loopback._lock:
                    if path == "/greengrass/v2/components":
                        names = sorted({n for n, _ in loopback.versions})
                        self._send(
                            200, {"components": [{"arn": loopback.component_arn(n), "componentName": n} for n in names]}
                        )
                        return
                    arn = path.removeprefix("/greengrass/v2/components/").removesuffix("/metadata")
                    name, _, version = arn.rpartition(":versions:")
                    name = name.rpartition(":components:")[2]
                    recipe = loopback.versions.get((name, version))
                    if recipe is None:
                        self._send(404, {"message": f"{arn} not found"}, "ResourceNotFoundException")
                    elif path.endswith("/metadata"):
                        self._send(
                            200,
                            {
                                "arn": arn,
                                "componentName": name,
                                "componentVersion": version,
                                "status": {"componentState": "DEPLOYABLE", "message": "ok"},
                            },
                        )
                    else:
                        assert parse_qs(url.query).get("recipeOutputFormat") == ["YAML"]
                        self._send(
                            200, {"recipeOutputFormat": "YAML", "recipe": base64.b64encode(recipe.encode()).decode()}
                        )

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                recipe = base64.b64decode(body["inlineRecipe"]).decode()
                doc = yaml.safe_load(recipe)
                key = (doc["ComponentName"], doc["ComponentVersion"])
                arn = f"{loopback.component_arn(key[0])}:versions:{key[1]}"
                with loopback._lock:
                    loopback.create_calls.append(key)
                    if key in loopback.versions:
                        self._send(409, {"message": f"{arn} already exists"}, "ConflictException")
                        return
                    loopback.versions[key] = recipe
                self._send(
                    201,
                    {
                        "arn": arn,
                        "componentName": key[0],
                        "componentVersion": key[1],
                        "creationTimestamp": time.time(),
                        "status": {"componentState": "REQUESTED"},
                    },
                )

        return Handler
