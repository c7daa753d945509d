"""Issue 15 item 7: the REST server's protocol edges over HTTP: other methods, aborted connections, the signing region,
and error messages that name no server path."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from packager.service.server.app import ServerConfig, make_server
from tests.conftest import tiny_spec_dict
from tests.packager.service.jobs.support import home  # noqa: F401  (fixture)
from tests.packager.service.server.test_server_rest import (  # noqa: F401
    ACCESS_KEY,
    SECRET_KEY,
    endpoint,
    lookout,
    signed_call,
)


def _signed_headers(url: str, method: str, region: str = "us-east-1", body: bytes = b"") -> dict:
    request = AWSRequest(method=method, url=url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "lookoutvision", region).add_auth(request)
    return dict(request.prepare().headers)


@pytest.mark.parametrize("method", ["PATCH", "HEAD", "OPTIONS", "TRACE", "FROBNICATE"])
@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_other_methods_get_aws_style_json_errors(endpoint, method, signed):  # noqa: F811
    parts = urlsplit(endpoint)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    headers = _signed_headers(f"{endpoint}/2020-11-20/projects", method) if signed else {}
    connection.request(method, "/2020-11-20/projects", headers=headers)
    response = connection.getresponse()
    body = response.read()
    assert response.status in (403, 404), (response.status, body[:200])
    assert response.getheader("x-amzn-ErrorType") in ("AccessDeniedException", "UnknownOperationException")
    assert response.getheader("Content-Type") == "application/json"
    if method == "HEAD":
        assert body == b""
    else:
        assert "Message" in json.loads(body) and b"<html" not in body.lower()
    connection.close()


def test_head_leaves_a_keep_alive_connection_in_step(endpoint):  # noqa: F811
    parts = urlsplit(endpoint)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    connection.request(
        "HEAD", "/2020-11-20/projects", headers=_signed_headers(f"{endpoint}/2020-11-20/projects", "HEAD")
    )
    response = connection.getresponse()
    response.read()
    connection.request("GET", "/2020-11-20/projects", headers=_signed_headers(f"{endpoint}/2020-11-20/projects", "GET"))
    answer = connection.getresponse()
    assert answer.status == 200 and json.loads(answer.read()) == {"Projects": []}
    connection.close()


@pytest.mark.parametrize("region", ["eu-west-1", "us-west-2", "us-east-1x"])
def test_a_request_signed_for_another_region_is_refused(endpoint, region):  # noqa: F811
    import boto3
    from botocore.config import Config

    client = lookout(endpoint)
    other = boto3.client(
        "lookoutvision",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(retries={"max_attempts": 1}),
    )
    with pytest.raises(other.exceptions.AccessDeniedException) as caught:
        other.list_projects()
    assert region in caught.value.response["Error"]["Message"]
    assert client.list_projects()["Projects"] == []  # the configured region still works


def test_the_region_is_the_configured_one(home):  # noqa: F811
    server = make_server("127.0.0.1", 0, ServerConfig(keys={ACCESS_KEY: SECRET_KEY}, quiet=True, region="eu-central-1"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        import boto3

        for region, allowed in (("eu-central-1", True), ("us-east-1", False)):
            client = boto3.client(
                "lookoutvision",
                endpoint_url=url,
                region_name=region,
                aws_access_key_id=ACCESS_KEY,
                aws_secret_access_key=SECRET_KEY,
            )
            if allowed:
                assert client.list_projects()["Projects"] == []
            else:
                with pytest.raises(client.exceptions.AccessDeniedException):
                    client.list_projects()
    finally:
        server.shutdown()
        server.server_close()


def test_aborted_connections_log_one_line_each(home, capfd):  # noqa: F811
    server = make_server("127.0.0.1", 0, ServerConfig(keys={ACCESS_KEY: SECRET_KEY}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    body = json.dumps({"ProjectName": "p" * 200}).encode()
    try:
        for _ in range(30):
            # a valid request whose client resets the connection before the answer is written
            headers = _signed_headers(f"http://127.0.0.1:{port}/2020-11-20/projects", "GET")
            raw = socket.create_connection(("127.0.0.1", port))
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            raw.sendall(
                (
                    "GET /2020-11-20/projects HTTP/1.1\r\n"
                    + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                    + "\r\n"
                ).encode()
                + body[:0]
            )
            raw.close()  # SO_LINGER 0: a reset, as a client that crashed
        import time

        time.sleep(1.0)
    finally:
        server.shutdown()
        server.server_close()
    err = capfd.readouterr().err
    assert "Traceback" not in err, err[-2000:]


def test_register_errors_name_no_server_path(endpoint, tiny_model):  # noqa: F811
    spec = tiny_spec_dict()
    spec["input"]["name"] = "not-the-input"
    body = json.dumps(
        {"Model": base64.b64encode(tiny_model[0].read_bytes()).decode(), "Spec": spec, "CreateProject": True}
    ).encode()
    status, _, error = signed_call(endpoint, "POST", "/x-packager/projects/p/models", body)
    assert status == 400 and "not-the-input" in error["Message"]
    assert "/tmp" not in error["Message"] and "register-" not in error["Message"], error["Message"]
    bad_spec = dict(spec, image_threshold="high")
    status, _, error = signed_call(
        endpoint,
        "POST",
        "/x-packager/projects/p/models",
        json.dumps(
            {"Model": base64.b64encode(tiny_model[0].read_bytes()).decode(), "Spec": bad_spec, "CreateProject": True}
        ).encode(),
    )
    assert status == 400 and "image_threshold" in error["Message"] and "/tmp" not in error["Message"], error["Message"]
    status, _, error = signed_call(
        endpoint,
        "POST",
        "/x-packager/projects/p/models",
        json.dumps({"Model": base64.b64encode(b"\x08\x07").decode(), "CreateProject": True}).encode(),
    )
    assert status == 400 and "/tmp" not in error["Message"] and "register-" not in error["Message"], error["Message"]
