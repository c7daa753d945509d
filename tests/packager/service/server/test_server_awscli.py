"""The AWS CLI (v1.41.17, which pairs with botocore 1.39.17) against the server with only --endpoint-url changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from packager.service.jobs import api
from packager.service.server.app import ServerConfig, make_server
from tests.packager.service.jobs.support import gg_config, hold_worker_slot, home  # noqa: F401  (fixture)

pytest.importorskip(
    "awscli", reason="the AWS CLI test needs `pip install awscli==1.41.17` (pairs with botocore 1.39.17)"
)


@pytest.fixture
def aws(home):
    server = make_server("127.0.0.1", 0, ServerConfig(keys={"AKIDCLI": "cli-secret"}, quiet=True))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"

    def run(*args: str, secret: str = "cli-secret") -> subprocess.CompletedProcess:
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": "AKIDCLI",
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        return subprocess.run(
            [sys.executable, "-m", "awscli", "lookoutvision", *args, "--endpoint-url", endpoint],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    yield run
    server.shutdown()
    server.server_close()


def test_aws_cli_round_trip(aws, home, tiny_model, monkeypatch):
    created = aws("create-project", "--project-name", "from-aws-cli")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["ProjectMetadata"]["ProjectName"] == "from-aws-cli"
    api.register_model("from-aws-cli", *tiny_model)
    with hold_worker_slot(home, monkeypatch):
        started = aws(
            "start-model-packaging-job",
            "--project-name",
            "from-aws-cli",
            "--model-version",
            "latest",
            "--job-name",
            "aws-cli-job",
            "--client-token",
            "aws-cli-token",
            "--configuration",
            json.dumps(gg_config(TargetPlatform={"Os": "LINUX", "Arch": "X86_64"})),
        )
        assert started.returncode == 0, started.stderr
        assert json.loads(started.stdout) == {"JobName": "aws-cli-job"}
        described = aws("describe-model-packaging-job", "--project-name", "from-aws-cli", "--job-name", "aws-cli-job")
        assert json.loads(described.stdout)["ModelPackagingDescription"]["ModelVersion"] == "1"
        listed = aws("list-model-packaging-jobs", "--project-name", "from-aws-cli")
        assert [j["JobName"] for j in json.loads(listed.stdout)["ModelPackagingJobs"]] == ["aws-cli-job"]
    missing = aws("describe-model", "--project-name", "from-aws-cli", "--model-version", "7")
    assert missing.returncode == 255 and "ResourceNotFoundException" in missing.stderr
    invalid = aws(
        "start-model-packaging-job",
        "--project-name",
        "from-aws-cli",
        "--model-version",
        "1",
        "--configuration",
        json.dumps(gg_config(TargetDevice="jetson_xavier", CompilerOptions="{'mcpu': 'carmel'}")),
    )
    assert invalid.returncode == 255 and "ValidationException" in invalid.stderr and "CompilerOptions" in invalid.stderr
    denied = aws("list-projects", secret="wrong")
    assert denied.returncode == 255 and "AccessDeniedException" in denied.stderr
