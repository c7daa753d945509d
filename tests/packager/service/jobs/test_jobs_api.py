"""Projects, model versions and packaging jobs through packager.service.jobs.api: shapes, idempotency, conflicts, pagination."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import sqlite3
import time

import pytest

from packager.errors import ConflictException, ModelImportError, ResourceNotFoundException, ValidationException
from packager.service.jobs import api
from tests.packager.service.jobs.support import gg_config, hold_worker_slot, home, wait_until  # noqa: F401  (fixture)


def _project(home, name="p", tiny_model=None, versions=1):
    api.create_project(ProjectName=name)
    for _ in range(versions):
        api.register_model(name, *tiny_model)


def test_project_round_trip(home):
    created = api.create_project(ProjectName="proj-1")["ProjectMetadata"]
    assert created["ProjectName"] == "proj-1"
    assert re.fullmatch(r"arn:aws:lookoutvision:[\w-]+:\d{12}:project/proj-1", created["ProjectArn"])
    assert created["CreationTimestamp"].tzinfo is not None
    described = api.describe_project(ProjectName="proj-1")["ProjectDescription"]
    assert described == {**created, "Datasets": []}
    assert api.list_projects()["Projects"] == [created]
    assert api.delete_project(ProjectName="proj-1") == {"ProjectArn": created["ProjectArn"]}
    with pytest.raises(ResourceNotFoundException) as info:
        api.describe_project(ProjectName="proj-1")
    assert (info.value.resource_id, info.value.resource_type) == ("proj-1", "PROJECT")
    assert api.list_projects() == {"Projects": []}


def test_project_conflicts_and_tokens(home):
    first = api.create_project(ProjectName="a", ClientToken="tok-1")
    assert api.create_project(ProjectName="a", ClientToken="tok-1") == first  # a retry, not a new project
    with pytest.raises(ConflictException) as info:
        api.create_project(ProjectName="a")
    assert (info.value.resource_id, info.value.resource_type) == ("a", "PROJECT")
    with pytest.raises(ConflictException) as info:
        api.create_project(ProjectName="b", ClientToken="tok-1")
    assert info.value.resource_id == "tok-1"
    deleted = api.delete_project(ProjectName="a", ClientToken="del-1")
    assert api.delete_project(ProjectName="a", ClientToken="del-1") == deleted
    with pytest.raises(ResourceNotFoundException):
        api.delete_project(ProjectName="a", ClientToken="del-2")


def test_model_versions_and_latest(home, tiny_model):
    api.create_project(ProjectName="p")
    registered = [api.register_model("p", *tiny_model, description=f"v{i}")["ModelMetadata"] for i in (1, 2, 3)]
    assert [m["ModelVersion"] for m in registered] == ["1", "2", "3"]
    assert registered[0]["Status"] == "TRAINED" and registered[0]["ModelArn"].endswith(":model/p/1")
    latest = api.describe_model(ProjectName="p", ModelVersion="latest")["ModelDescription"]
    assert latest["ModelVersion"] == "3" and latest["Description"] == "v3"
    assert api.describe_model(ProjectName="p", ModelVersion="2")["ModelDescription"]["Description"] == "v2"
    assert [m["ModelVersion"] for m in api.list_models(ProjectName="p")["Models"]] == ["1", "2", "3"]
    assert api.delete_model(ProjectName="p", ModelVersion="3") == {"ModelArn": latest["ModelArn"]}
    assert api.describe_model(ProjectName="p", ModelVersion="latest")["ModelDescription"]["ModelVersion"] == "2"
    with pytest.raises(ResourceNotFoundException) as info:
        api.describe_model(ProjectName="p", ModelVersion="9")
    assert (info.value.resource_id, info.value.resource_type) == ("p/9", "MODEL")
    with pytest.raises(ValidationException):
        api.delete_model(ProjectName="p", ModelVersion="latest")  # DeleteModel's version shape has no 'latest'


def test_model_files_are_content_addressed(home, tiny_model):
    model, spec = tiny_model
    api.create_project(ProjectName="p")
    first = api.register_model("p", model, spec)
    second = api.register_model("p", model, spec)
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    assert first["ModelSha256"] == second["ModelSha256"] == digest
    stored = home / "models" / "sha256" / f"{digest}.onnx"
    assert stored.read_bytes() == model.read_bytes()
    assert sorted(p.name for p in (home / "models" / "sha256").iterdir()) == sorted(
        [f"{digest}.onnx", hashlib.sha256(spec.read_bytes()).hexdigest() + ".json"]
    )


def test_register_rejects_bad_input(home, tiny_model, tmp_path):
    model, spec = tiny_model
    with pytest.raises(ResourceNotFoundException):
        api.register_model("missing", model, spec)
    assert api.register_model("made", model, spec, create_project=True)["ModelMetadata"]["ModelVersion"] == "1"
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a protobuf\xff" * 10)
    with pytest.raises(ModelImportError, match="junk.onnx"):
        api.register_model("made", junk, spec)
    bad_spec = tmp_path / "spec.json"
    bad_spec.write_text('{"input": {"name": "image", "shape": [1, 3]}, "outputs": [], "image_threshold": 1}')
    with pytest.raises(ModelImportError, match="input.shape"):
        api.register_model("made", model, bad_spec)
    with pytest.raises(ValidationException):
        api.register_model("bad name", model, spec)
    with pytest.raises(ValidationException):
        api.register_model("made", model, spec, description="has spaces")
    assert [m["ModelVersion"] for m in api.list_models(ProjectName="made")["Models"]] == ["1"]


def test_start_returns_at_once_and_describes(home, tiny_model, monkeypatch):
    _project(home, tiny_model=tiny_model, versions=2)
    with hold_worker_slot(home, monkeypatch):
        started = time.monotonic()
        job = api.start_model_packaging_job(
            ProjectName="p",
            ModelVersion="latest",
            Description="first try",
            Configuration=gg_config(TargetPlatform={"Os": "LINUX", "Arch": "X86_64"}),
        )
        assert time.monotonic() - started < 2.0
        assert re.fullmatch(r"[a-zA-Z0-9-]{1,64}", job["JobName"])
        described = api.describe_model_packaging_job(ProjectName="p", JobName=job["JobName"])[
            "ModelPackagingDescription"
        ]
    assert described["Status"] == "CREATED"
    assert described["ModelVersion"] == "2"
    assert described["ModelPackagingMethod"] == "Greengrass"
    assert described["ModelPackagingJobDescription"] == "first try"
    assert described["ModelPackagingOutputDetails"] == {
        "Greengrass": {"ComponentName": "com.example.Tiny", "ComponentVersion": "2.0.0"}
    }
    assert described["ModelPackagingConfiguration"]["Greengrass"]["ComponentVersion"] == "2.0.0"
    assert described["CreationTimestamp"] <= described["LastUpdatedTimestamp"]
    # Without a region the worker fails fast, and says why.
    final = api.wait_for_model_packaging_job("p", job["JobName"], poll_seconds=0.1, timeout_seconds=60)
    assert final["ModelPackagingDescription"]["Status"] == "FAILED"
    assert "region" in final["ModelPackagingDescription"]["StatusMessage"]
    # The record keeps the error's class (not shown by Describe), so `build` can exit with its code.
    from packager.service.jobs.results import job_failure

    assert type(job_failure(home, "p", job["JobName"])) is ValidationException


def test_client_token_idempotency(home, tiny_model, monkeypatch):
    _project(home, tiny_model=tiny_model)
    params = dict(ProjectName="p", ModelVersion="1", Configuration=gg_config(), ClientToken="retry-1")
    with hold_worker_slot(home, monkeypatch):
        first = api.start_model_packaging_job(**params)
        assert api.start_model_packaging_job(**params) == first
        assert len(api.list_model_packaging_jobs(ProjectName="p")["ModelPackagingJobs"]) == 1
        with pytest.raises(ConflictException) as info:
            api.start_model_packaging_job(**{**params, "Description": "changed"})
        assert (info.value.resource_id, info.value.resource_type) == ("retry-1", "MODEL_PACKAGE_JOB")
        # Tokens live 8 hours; an older one starts a new job.
        with sqlite3.connect(home / "store.sqlite3") as db:
            db.execute("UPDATE client_tokens SET created = ?", (time.time() - 8 * 3600 - 1,))
        again = api.start_model_packaging_job(**{**params, "Configuration": gg_config(ComponentVersion="9.0.0")})
        assert again != first
    assert len(api.list_model_packaging_jobs(ProjectName="p")["ModelPackagingJobs"]) == 2


def test_component_and_job_name_conflicts(home, tiny_model, monkeypatch):
    _project(home, tiny_model=tiny_model)
    with hold_worker_slot(home, monkeypatch):
        first = api.start_model_packaging_job(
            ProjectName="p", ModelVersion="1", JobName="job-a", Configuration=gg_config()
        )
        with pytest.raises(ConflictException) as info:
            api.start_model_packaging_job(
                ProjectName="p", ModelVersion="1", Configuration=gg_config(ComponentVersion="1.0.0")
            )
        assert (info.value.resource_id, info.value.resource_type) == ("job-a", "MODEL_PACKAGE_JOB")
        with pytest.raises(ConflictException, match="job-a"):
            api.start_model_packaging_job(
                ProjectName="p", ModelVersion="1", JobName="job-a", Configuration=gg_config(ComponentVersion="2.0.0")
            )
        with pytest.raises(ConflictException):
            api.delete_project(ProjectName="p")
        with pytest.raises(ConflictException):
            api.delete_model(ProjectName="p", ModelVersion="1")
    api.wait_for_model_packaging_job("p", first["JobName"], poll_seconds=0.1, timeout_seconds=60)
    # A failed job never produced its component version, so it may be packaged again.
    with hold_worker_slot(home, monkeypatch):
        assert api.start_model_packaging_job(ProjectName="p", ModelVersion="1", Configuration=gg_config())["JobName"]


def test_unknown_resources(home, tiny_model):
    with pytest.raises(ResourceNotFoundException) as info:
        api.start_model_packaging_job(ProjectName="nope", ModelVersion="1", Configuration=gg_config())
    assert (info.value.resource_id, info.value.resource_type) == ("nope", "PROJECT")
    api.create_project(ProjectName="p")
    with pytest.raises(ResourceNotFoundException) as info:
        api.start_model_packaging_job(ProjectName="p", ModelVersion="latest", Configuration=gg_config())
    assert (info.value.resource_id, info.value.resource_type) == ("p/latest", "MODEL")
    with pytest.raises(ResourceNotFoundException) as info:
        api.describe_model_packaging_job(ProjectName="p", JobName="ghost")
    assert (info.value.resource_id, info.value.resource_type) == ("ghost", "MODEL_PACKAGE_JOB")
    for call in (api.list_models, api.list_model_packaging_jobs):
        with pytest.raises(ResourceNotFoundException):
            call(ProjectName="ghost")


def _pages(call, **params):
    pages, token = [], None
    while True:
        page = call(**params, **({"NextToken": token} if token else {}))
        pages.append(page)
        token = page.get("NextToken")
        if token is None:
            return pages


def test_pagination_and_tampered_tokens(home, tiny_model, monkeypatch):
    for i in range(5):
        api.create_project(ProjectName=f"p{i}")
    pages = _pages(api.list_projects, MaxResults=2)
    assert [[p["ProjectName"] for p in page["Projects"]] for page in pages] == [["p0", "p1"], ["p2", "p3"], ["p4"]]
    assert len(api.list_projects()["Projects"]) == 5 and "NextToken" not in api.list_projects()
    token = pages[0]["NextToken"]
    assert re.fullmatch(r"[a-zA-Z0-9/+=]{1,2048}", token)
    raw = bytearray(base64.b64decode(token))
    raw[-3] ^= 0x01  # flip a bit in the payload, keep the MAC
    for bad in (base64.b64encode(bytes(raw)).decode(), token[:-4], "AAAA", base64.b64encode(b"{}" * 20).decode()):
        with pytest.raises(ValidationException) as info:
            api.list_projects(NextToken=bad)
        assert info.value.field == "NextToken"
    api.register_model("p0", *tiny_model)
    api.register_model("p0", *tiny_model)
    api.register_model("p1", *tiny_model)
    model_token = api.list_models(ProjectName="p0", MaxResults=1)["NextToken"]
    with pytest.raises(ValidationException, match="another request"):
        api.list_models(ProjectName="p1", NextToken=model_token)
    with pytest.raises(ValidationException, match="another request"):
        api.list_projects(NextToken=model_token)
    with hold_worker_slot(home, monkeypatch):
        names = [
            api.start_model_packaging_job(
                ProjectName="p0", ModelVersion="1", Configuration=gg_config(ComponentVersion=f"1.0.{i}")
            )["JobName"]
            for i in range(5)
        ]
        pages = _pages(api.list_model_packaging_jobs, ProjectName="p0", MaxResults=2)
    assert [len(p["ModelPackagingJobs"]) for p in pages] == [2, 2, 1]
    listed = [j for p in pages for j in p["ModelPackagingJobs"]]
    assert [j["JobName"] for j in listed] == names
    assert set(listed[0]) >= {
        "JobName",
        "ProjectName",
        "ModelVersion",
        "ModelPackagingMethod",
        "Status",
        "CreationTimestamp",
        "LastUpdatedTimestamp",
    }
    assert isinstance(listed[0]["CreationTimestamp"], dt.datetime)
