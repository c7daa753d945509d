"""The Lookout commands as `python -m packager ...` runs them: AWS-CLI-shaped flags, input documents, skeletons, output."""

from __future__ import annotations

import datetime as dt
import json
import subprocess

import pytest
import yaml

import packager.cli as cli
import packager.service_model as service_model
from packager.commands import lookout, serve
from packager.service.jobs import api
from tests.packager.service.jobs.support import (  # noqa: F401  (fixtures)
    REPO_ROOT,
    S3_BUCKET,
    cli_argv,
    cli_env,
    gg_config,
    hold_worker_slot,
    home,
    s3_server,
)


@pytest.fixture
def run(home, monkeypatch, capsys):
    """Run the CLI in-process with the Lookout commands in its table; returns (exit code, stdout, stderr)."""
    listed = cli._command_table()
    names = {c.name for c in listed}
    monkeypatch.setattr(
        cli,
        "_command_table",
        lambda: listed + tuple(c for c in (*lookout.COMMANDS, serve.COMMAND) if c.name not in names),
    )

    def invoke(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def ok(run, *argv: str) -> dict:
    code, out, err = run(*argv)
    assert code == 0, err
    return json.loads(out)


def test_commands_cover_the_operations():
    assert {c.name for c in lookout.COMMANDS} == {
        lookout.command_name(op) for op in service_model.SUPPORTED_OPERATIONS
    } | {"register-model"}
    assert lookout.flag_name("ModelVersion") == "--model-version" and lookout.command_name(
        "ListModelPackagingJobs"
    ) == ("list-model-packaging-jobs")


def test_every_operation(run, home, tiny_model, monkeypatch):
    model, spec = tiny_model
    created = ok(run, "create-project", "--project-name", "cli-proj")["ProjectMetadata"]
    assert dt.datetime.fromisoformat(created["CreationTimestamp"]).tzinfo is not None
    ok(run, "create-project", "--project-name", "cli-proj-2")
    assert (
        ok(run, "describe-project", "--project-name", "cli-proj")["ProjectDescription"]["ProjectArn"]
        == created["ProjectArn"]
    )
    first = ok(run, "list-projects", "--max-results", "1")
    second = ok(run, "list-projects", "--max-results", "1", "--next-token", first["NextToken"])
    assert [p["ProjectName"] for p in first["Projects"] + second["Projects"]] == ["cli-proj", "cli-proj-2"]
    assert "NextToken" not in second
    registered = ok(
        run,
        "register-model",
        "--project-name",
        "cli-proj",
        "--model",
        str(model),
        "--spec",
        str(spec),
        "--description",
        "v1",
    )
    assert registered["ModelMetadata"]["ModelVersion"] == "1"
    ok(run, "register-model", "--project-name", "new-proj", "--model", str(model), "--create-project")
    assert (
        ok(run, "describe-model", "--project-name", "cli-proj", "--model-version", "latest")["ModelDescription"][
            "Description"
        ]
        == "v1"
    )
    assert [m["ModelVersion"] for m in ok(run, "list-models", "--project-name", "cli-proj")["Models"]] == ["1"]
    with hold_worker_slot(home, monkeypatch):
        job = ok(
            run,
            "start-model-packaging-job",
            "--project-name",
            "cli-proj",
            "--model-version",
            "1",
            "--job-name",
            "cli-job",
            "--description",
            "from the CLI",
            "--client-token",
            "cli-token-1",
            "--configuration",
            json.dumps(gg_config(TargetPlatform={"Os": "LINUX", "Arch": "X86_64"})),
        )
        assert job == {"JobName": "cli-job"}
        described = ok(run, "describe-model-packaging-job", "--project-name", "cli-proj", "--job-name", "cli-job")
        assert described["ModelPackagingDescription"]["ModelPackagingJobDescription"] == "from the CLI"
        listed = ok(run, "list-model-packaging-jobs", "--project-name", "cli-proj", "--max-results", "5")
        assert [j["JobName"] for j in listed["ModelPackagingJobs"]] == ["cli-job"]
        code, _, err = run("delete-project", "--project-name", "cli-proj")
        assert code == 3 and "ConflictException" in err
    ok(run, "register-model", "--project-name", "cli-proj", "--model", str(model))
    assert ok(run, "delete-model", "--project-name", "cli-proj", "--model-version", "2")["ModelArn"].endswith("/2")
    api.wait_for_model_packaging_job("cli-proj", "cli-job", poll_seconds=0.1, timeout_seconds=60)
    assert ok(run, "delete-project", "--project-name", "cli-proj") == {"ProjectArn": created["ProjectArn"]}


def test_input_documents_and_flag_precedence(run, home, tiny_model, tmp_path, monkeypatch):
    ok(run, "create-project", "--project-name", "p")
    for _ in range(2):
        ok(run, "register-model", "--project-name", "p", "--model", str(tiny_model[0]))
    config_file = tmp_path / "cfg.json"
    config_file.write_text(json.dumps(gg_config(ComponentVersion="3.0.0")))
    document = {"ProjectName": "p", "ModelVersion": "2", "JobName": "from-doc", "Configuration": gg_config()}
    doc_file = tmp_path / "input.json"
    doc_file.write_text(json.dumps(document))
    with hold_worker_slot(home, monkeypatch):
        ok(
            run,
            "start-model-packaging-job",
            "--project-name",
            "p",
            "--model-version",
            "1",
            "--configuration",
            f"file://{config_file}",
        )
        ok(
            run,
            "start-model-packaging-job",
            "--cli-input-json",
            f"file://{doc_file}",
            "--model-version",
            "1",
            "--configuration",
            json.dumps(gg_config(ComponentVersion="4.0.0")),
        )
        ok(
            run,
            "start-model-packaging-job",
            "--cli-input-yaml",
            yaml.safe_dump({**document, "JobName": "from-yaml"}),
            "--configuration",
            json.dumps(gg_config(ComponentVersion="5.0.0")),
        )
        jobs = {
            j["JobName"]: j for j in ok(run, "list-model-packaging-jobs", "--project-name", "p")["ModelPackagingJobs"]
        }
    assert jobs["from-doc"]["ModelVersion"] == "1"  # the flag beat the document's "2"
    assert jobs["from-yaml"]["ModelVersion"] == "2"
    versions = {
        ok(run, "describe-model-packaging-job", "--project-name", "p", "--job-name", n)["ModelPackagingDescription"][
            "ModelPackagingOutputDetails"
        ]["Greengrass"]["ComponentVersion"]
        for n in jobs
    }
    assert versions == {"3.0.0", "4.0.0", "5.0.0"}


@pytest.mark.parametrize("operation", service_model.SUPPORTED_OPERATIONS)
def test_skeletons(run, operation):
    op = service_model.operation(operation)
    command = lookout.command_name(operation)
    skeleton = ok(run, command, "--generate-cli-skeleton")
    assert set(skeleton) == {m.name for m in service_model.members(op.input_shape)}
    code, out, _ = run(command, "--generate-cli-skeleton", "yaml-input")
    assert code == 0 and set(yaml.safe_load(out) or {}) == set(skeleton)
    for name in service_model.required_members(op.input_shape):
        assert any(line.startswith(f"{name}:") and "[REQUIRED]" in line for line in out.splitlines())
    output = ok(run, command, "--generate-cli-skeleton", "output")
    assert set(output) == {m.name for m in service_model.members(op.output_shape)}


def test_skeleton_round_trips_as_input(run, home, tiny_model, monkeypatch, tmp_path):
    ok(run, "create-project", "--project-name", "p")
    ok(run, "register-model", "--project-name", "p", "--model", str(tiny_model[0]))
    code, out, _ = run("start-model-packaging-job", "--generate-cli-skeleton", "yaml-input")
    doc = yaml.safe_load(out)
    doc.update(ProjectName="p", ModelVersion="latest", JobName="skel", Description="filled in", ClientToken="skel-1")
    gg = doc["Configuration"]["Greengrass"]
    for unused in ("CompilerOptions", "TargetDevice", "ComponentDescription"):
        del gg[unused]
    gg.update(
        TargetPlatform={"Os": "LINUX", "Arch": "X86_64"},
        ComponentName="com.example.Skel",
        ComponentVersion="1.0.0",
        S3OutputLocation={"Bucket": S3_BUCKET, "Prefix": "skel"},
        Tags=[{"Key": "from", "Value": "skeleton"}],
    )
    (tmp_path / "in.yaml").write_text(yaml.safe_dump(doc))
    with hold_worker_slot(home, monkeypatch):
        assert ok(run, "start-model-packaging-job", "--cli-input-yaml", f"file://{tmp_path / 'in.yaml'}") == {
            "JobName": "skel"
        }


def test_errors_are_one_line_with_exit_codes(run, home, tmp_path):
    code, out, err = run("start-model-packaging-job", "--model-version", "1")
    assert code == 2 and err.strip() == (
        "error: ValidationException: the following arguments are required: --project-name, --configuration"
    )
    code, _, err = run("describe-project", "--project-name", "ghost")
    assert code == 4 and err.startswith("error: ResourceNotFoundException: ") and err.count("\n") == 1
    code, _, err = run(
        "start-model-packaging-job", "--project-name", "p", "--model-version", "1", "--configuration", "{nope"
    )
    assert code == 2 and "--configuration: not valid JSON" in err
    code, _, err = run(
        "start-model-packaging-job",
        "--project-name",
        "p",
        "--model-version",
        "1",
        "--configuration",
        f"file://{tmp_path / 'missing.json'}",
    )
    assert code == 2 and "missing.json" in err
    code, _, err = run("list-projects", "--max-results", "0")
    assert code == 2 and "MaxResults" in err
    code, _, err = run("list-projects", "--max-results", "many")
    assert code == 2 and "--max-results" in err
    code, _, err = run("list-projects", "--cli-input-json", '{"Nope": 1}')
    assert code == 2 and "Nope" in err
    ok(run, "create-project", "--project-name", "dup")
    code, _, err = run("create-project", "--project-name", "dup")
    assert code == 3 and "ConflictException" in err


def test_output_formats(run, home):
    ok(run, "create-project", "--project-name", "shown")
    code, out, _ = run("describe-project", "--project-name", "shown", "--output", "table")
    assert code == 0 and "ProjectDescription" in out and "| ProjectName " in out and "shown" in out
    code, out, _ = run("list-projects", "--output", "yaml")
    assert code == 0 and yaml.safe_load(out)["Projects"][0]["ProjectName"] == "shown"
    wire = ok(run, "describe-project", "--project-name", "shown", "--cli-timestamp-format", "wire")
    assert isinstance(wire["ProjectDescription"]["CreationTimestamp"], float)


def test_wait_shows_progress_and_exits_nonzero_on_failure(home, tiny_model):
    env = cli_env(PACKAGER_HOME=str(home))
    for argv in (
        ("create-project", "--project-name", "w"),
        ("register-model", "--project-name", "w", "--model", str(tiny_model[0])),
    ):
        assert subprocess.run(cli_argv(*argv), cwd=REPO_ROOT, env=env, capture_output=True, timeout=60).returncode == 0
    done = subprocess.run(
        cli_argv(
            "start-model-packaging-job",
            "--project-name",
            "w",
            "--model-version",
            "1",
            "--configuration",
            json.dumps(gg_config()),
            "--wait",
        ),
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    final = json.loads(done.stdout)["ModelPackagingDescription"]
    assert final["Status"] == "FAILED" and "region" in final["StatusMessage"]
    assert (
        "Waiting for job" in done.stderr
        and "FAILED" in done.stderr
        and done.stderr.rstrip().endswith(final["StatusMessage"])
    )


@pytest.mark.slow
def test_wait_until_succeeded(home, tiny_model, s3_server):
    env = cli_env(PACKAGER_HOME=str(home))
    subprocess.run(
        cli_argv(
            "register-model",
            "--project-name",
            "demo",
            "--model",
            str(tiny_model[0]),
            "--spec",
            str(tiny_model[1]),
            "--create-project",
        ),
        cwd=REPO_ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    config = gg_config(
        component="com.example.Demo",
        TargetPlatform={"Os": "LINUX", "Arch": "X86_64"},
        CompilerOptions="{'mcpu': 'core-avx2'}",
    )
    done = subprocess.run(
        cli_argv(
            "start-model-packaging-job",
            "--project-name",
            "demo",
            "--model-version",
            "1",
            "--job-name",
            "demo-job",
            "--configuration",
            json.dumps(config),
            "--wait",
        ),
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    final = json.loads(done.stdout)["ModelPackagingDescription"]
    assert final["Status"] == "SUCCEEDED" and "RUNNING" in done.stderr and "SUCCEEDED" in done.stderr
