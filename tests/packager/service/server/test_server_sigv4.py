"""SigV4 on the REST server: anything not signed by a configured key is 403 AccessDeniedException."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
import urllib.error
import urllib.request
from email.message import Message

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from packager.errors import AccessDeniedException
from packager.service.server.app import ServerConfig, make_server
from packager.service.server.sigv4 import SignedRequest, verify
from tests.packager.service.jobs.support import home  # noqa: F401  (fixture)

KEYS = {"AKIDGOOD": "good-secret"}


@pytest.fixture
def endpoint(home):
    server = make_server("127.0.0.1", 0, ServerConfig(keys=KEYS, quiet=True))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _signed(
    url: str,
    method: str = "GET",
    body: bytes = b"",
    key: str = "AKIDGOOD",
    secret: str = "good-secret",
    service: str = "lookoutvision",
    when: dt.datetime | None = None,
) -> AWSRequest:
    request = AWSRequest(method=method, url=url, data=body)
    signer = SigV4Auth(Credentials(key, secret), service, "us-east-1")
    if when is None:
        signer.add_auth(request)
    else:  # sign as of another time: what add_auth does, with our clock
        request.context["timestamp"] = when.strftime("%Y%m%dT%H%M%SZ")
        request.headers["X-Amz-Date"] = request.context["timestamp"]
        signer._inject_signature_to_request(
            request, signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
        )
    return request


def _send(request: AWSRequest, body: bytes | None = None) -> tuple[int, str, dict]:
    prepared = request.prepare()
    data = prepared.body if body is None else body
    http = urllib.request.Request(
        prepared.url, data=data or None, method=prepared.method, headers=dict(prepared.headers)
    )
    try:
        with urllib.request.urlopen(http) as response:
            return response.status, "", json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("x-amzn-ErrorType", ""), json.loads(error.read())


def test_signed_request_is_served(endpoint):
    status, _, body = _send(_signed(endpoint + "/2020-11-20/projects?maxResults=5"))
    assert status == 200 and body == {"Projects": []}


@pytest.mark.parametrize("case", ["unsigned", "wrong-secret", "unknown-key", "other-service", "expired", "future"])
def test_bad_signatures_are_403(endpoint, case):
    url = endpoint + "/2020-11-20/projects"
    now = dt.datetime.now(dt.UTC)
    request = {
        "unsigned": lambda: AWSRequest(method="GET", url=url),
        "wrong-secret": lambda: _signed(url, secret="bad-secret"),
        "unknown-key": lambda: _signed(url, key="AKIDOTHER"),
        "other-service": lambda: _signed(url, service="s3"),
        "expired": lambda: _signed(url, when=now - dt.timedelta(minutes=20)),
        "future": lambda: _signed(url, when=now + dt.timedelta(minutes=20)),
    }[case]()
    status, code, body = _send(request)
    assert (status, code) == (403, "AccessDeniedException"), body
    assert body["Message"]


def test_tampering_after_signing_is_403(endpoint):
    url = endpoint + "/2020-11-20/projects"
    body = json.dumps({"ProjectName": "signed-name"}).encode()
    # Same length, different bytes: the signature covers the payload hash.
    status, code, _ = _send(_signed(url, "POST", body), body.replace(b"signed-name", b"forged-name"))
    assert (status, code) == (403, "AccessDeniedException")
    request = _signed(url, "POST", body)
    request.headers["Authorization"] = request.headers["Authorization"][:-1] + (
        "0" if request.headers["Authorization"][-1] != "0" else "1"
    )
    assert _send(request)[:2] == (403, "AccessDeniedException")
    signed = _signed(endpoint + "/2020-11-20/projects?maxResults=1")
    moved = AWSRequest(method="GET", url=endpoint + "/2020-11-20/projects?maxResults=2", headers=dict(signed.headers))
    assert _send(moved)[:2] == (403, "AccessDeniedException")
    # And nothing was created by any of it.
    assert _send(_signed(url))[2] == {"Projects": []}


def _message(headers: dict) -> Message:
    message = Message()
    for name, value in headers.items():
        message[name] = value
    return message


def test_verify_directly():
    request = _signed(
        "http://127.0.0.1:8080/2020-11-20/projects/p/modelpackagingjobs", "POST", b'{"ModelVersion": "1"}'
    )
    prepared = request.prepare()
    headers = _message({**dict(prepared.headers), "Host": "127.0.0.1:8080"})
    received = SignedRequest("POST", "/2020-11-20/projects/p/modelpackagingjobs", headers, prepared.body)
    assert verify(received, KEYS) == "AKIDGOOD"
    with pytest.raises(AccessDeniedException, match="expired"):
        verify(received, KEYS, now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    wrong_hash = _message(
        {
            **dict(prepared.headers),
            "Host": "127.0.0.1:8080",
            "X-Amz-Content-SHA256": hashlib.sha256(b"other").hexdigest(),
        }
    )
    with pytest.raises(AccessDeniedException, match="X-Amz-Content-SHA256"):
        verify(SignedRequest("POST", received.target, wrong_hash, prepared.body), KEYS)
    with pytest.raises(AccessDeniedException, match="Host|host|signature"):
        verify(
            SignedRequest(
                "POST", received.target, _message({**dict(prepared.headers), "Host": "evil:1"}), prepared.body
            ),
            KEYS,
        )
