"""A team's service on this machine, from real parts: PostgreSQL, Redis, moto's S3 and a Greengrass v2 loopback, with
`serve` and `worker` processes that each have their own PACKAGER_HOME, as if each ran on its own host."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from tests.servers import free_port

REPO_ROOT = Path(__file__).resolve().parents[4]
ACCESS_KEY, SECRET_KEY = "AKIDTEAMTEST", "team-test-secret"
REGION = "us-east-1"


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    home: Path
    log: Path
    port: int | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill_host(self) -> None:
        """SIGKILL the process and everything it started, as when its machine dies."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(timeout=30)

    def stop(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                self.kill_host()


@dataclass
class Team:
    root: Path
    env: dict[str, str]
    processes: list[Process] = field(default_factory=list)

    def _start(
        self, name: str, argv: list[str], extra_env: dict[str, str] | None = None, port: int | None = None
    ) -> Process:
        home = self.root / name
        home.mkdir(parents=True, exist_ok=True)
        log = self.root / f"{name}.log"
        env = {**self.env, "PACKAGER_HOME": str(home), **(extra_env or {})}
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "packager", *argv],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=home,
                start_new_session=True,
            )
        process = Process(name, popen, home, log, port)
        self.processes.append(process)
        return process

    def start_server(self, name: str) -> Process:
        port = free_port()
        process = self._start(name, ["serve", "--port", str(port), "--quiet"], port=port)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return process
            except OSError:
                if time.monotonic() > deadline or popen_done(process):
                    raise AssertionError(f"server {name} did not start:\n{process.log.read_text()[-3000:]}") from None
                time.sleep(0.1)

    def start_worker(self, name: str, queues: tuple[str, ...] = ("x86_64-cpu",)) -> Process:
        argv = ["worker", "--hostname", f"{name}@team-test"]
        for queue in queues:
            argv += ["--queue", queue]
        return self._start(name, argv)

    def stop_all(self) -> None:
        for process in self.processes:
            process.stop()


def popen_done(process: Process) -> bool:
    return process.popen.poll() is not None


def lookout(endpoint: str, attempts: int = 1):
    return boto3.client(
        "lookoutvision",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(retries={"mode": "standard", "max_attempts": attempts}, connect_timeout=5, read_timeout=60),
    )


def register_model(endpoint: str, project: str, model: Path, spec: Path) -> dict:
    """Our RegisterModel extension over HTTP (boto3 has no method for it), signed like boto3's calls."""
    body = json.dumps(
        {
            "Model": base64.b64encode(model.read_bytes()).decode(),
            "Spec": json.loads(spec.read_text()),
            "CreateProject": True,
        }
    ).encode()
    request = AWSRequest(
        method="POST",
        url=f"{endpoint}/x-packager/projects/{project}/models",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "lookoutvision", REGION).add_auth(request)
    prepared = request.prepare()
    http = urllib.request.Request(prepared.url, data=body, method="POST", headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(http) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise AssertionError(f"RegisterModel failed: {error.code} {error.read()[:500]!r}") from None


def team_env(database_url: str, broker_url: str, s3_endpoint: str, greengrass_endpoint: str, model_bucket: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PACKAGER_"))}
    env.update(
        {
            "PYTHONPATH": str(REPO_ROOT),
            "PACKAGER_DATABASE_URL": database_url,
            "PACKAGER_BROKER_URL": broker_url,
            "PACKAGER_MODEL_BUCKET": model_bucket,
            "PACKAGER_ACCESS_KEY_ID": ACCESS_KEY,
            "PACKAGER_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL_S3": s3_endpoint,
            "AWS_ENDPOINT_URL_GREENGRASSV2": greengrass_endpoint,
            "AWS_ENDPOINT_URL_STS": s3_endpoint,  # moto's server answers GetCallerIdentity (account 123456789012)
            # Every job compiles: the test kills a worker mid-compile, and a compile-cache hit has no compile to catch.
            # A cache path that cannot be a directory is read as a miss and never written (compilers/compile_cache.py).
            "PACKAGER_COMPILE_CACHE": "/dev/null/no-compile-cache",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": "/nonexistent-aws-config",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent-aws-credentials",
            "PACKAGER_MAX_WORKERS": "1",
        }
    )
    return env
