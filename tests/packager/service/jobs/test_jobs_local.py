"""`build`'s way into the jobs API: start_local_packaging_job, reuse of identical model versions, the job's own columns
(extensions, error_type), results written by the worker, and a version 1 store upgraded in place."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from packager import errors
from packager.build.remote import RemoteDevice
from packager.errors import ConflictException, ValidationException
from packager.service.jobs import api
from packager.service.jobs.extensions import JobExtensions
from packager.service.jobs.results import JobResult, job_failure, read_result, write_result
from packager.service.jobs.store import open_store
from packager.service.jobs.worker import packaging_request
from tests.packager.service.jobs.support import gg_config, hold_worker_slot, home  # noqa: F401  (fixture)


def _local_config(component: str = "com.example.Tiny", **extra) -> dict:
    return {"Greengrass": {"ComponentName": component, **extra}}


@pytest.fixture
def project(home, tiny_model):
    api.register_model("p", *tiny_model, create_project=True)
    return "p"


def _start_local(tmp_path: Path, config: dict | None = None, **params) -> str:
    extensions = JobExtensions(output_dir=tmp_path / "gg", benchmark_runs=3)
    return api.start_local_packaging_job(
        extensions, ProjectName="p", ModelVersion="1", Configuration=config or _local_config(), **params
    )["JobName"]


def test_service_api_still_requires_an_s3_output(project):
    with pytest.raises(ValidationException) as info:
        api.start_model_packaging_job(ProjectName="p", ModelVersion="1", Configuration=_local_config())
    assert info.value.field == "Configuration.Greengrass.S3OutputLocation"


def test_local_job_is_recorded_with_its_extensions_outside_the_configuration(home, project, tmp_path, monkeypatch):
    with hold_worker_slot(home, monkeypatch):
        name = _start_local(tmp_path)
        described = api.describe_model_packaging_job(ProjectName="p", JobName=name)["ModelPackagingDescription"]
    assert described["ModelPackagingConfiguration"] == {
        "Greengrass": {"ComponentName": "com.example.Tiny", "ComponentVersion": "1.0.0"}
    }
    assert "gg" not in json.dumps(described, default=str) and "BenchmarkRuns" not in json.dumps(described, default=str)
    store = open_store(home)
    try:
        job = store.job("p", name)
    finally:
        store.close()
    assert job.extensions == {"BenchmarkRuns": 3, "OutputDir": str(tmp_path / "gg"), "Register": True}
    assert job.register is False, "nothing to register without an S3 output"
    with pytest.raises(ValidationException, match="absolute"):
        api.start_local_packaging_job(
            JobExtensions(output_dir=Path("relative")), ProjectName="p", ModelVersion="1", Configuration=_local_config()
        )


def test_component_version_conflicts_apply_only_to_jobs_with_an_s3_output(home, project, tmp_path, monkeypatch):
    with hold_worker_slot(home, monkeypatch):
        _start_local(tmp_path)
        _start_local(tmp_path)  # a local-only build may be repeated: it publishes nothing immutable
        published = api.start_model_packaging_job(ProjectName="p", ModelVersion="1", Configuration=gg_config())[
            "JobName"
        ]
        with pytest.raises(ConflictException) as info:
            api.start_model_packaging_job(ProjectName="p", ModelVersion="1", Configuration=gg_config())
        assert info.value.resource_id == published
        with pytest.raises(ConflictException):  # build with an S3 output is held to the same rule
            _start_local(tmp_path, gg_config())
        _start_local(tmp_path)  # while a local-only one still is not
    assert len(api.list_model_packaging_jobs(ProjectName="p")["ModelPackagingJobs"]) == 4


def test_client_token_covers_the_build_options(home, project, tmp_path, monkeypatch):
    with hold_worker_slot(home, monkeypatch):
        first = _start_local(tmp_path, ClientToken="build-1")
        assert _start_local(tmp_path, ClientToken="build-1") == first
        with pytest.raises(ConflictException, match="build-1"):
            api.start_local_packaging_job(
                JobExtensions(output_dir=tmp_path / "elsewhere", benchmark_runs=3),
                ProjectName="p",
                ModelVersion="1",
                Configuration=_local_config(),
                ClientToken="build-1",
            )
        with pytest.raises(ConflictException, match="build-1"):  # the service API shares the token space
            api.start_model_packaging_job(
                ProjectName="p", ModelVersion="1", Configuration=gg_config(), ClientToken="build-1"
            )
    assert len(api.list_model_packaging_jobs(ProjectName="p")["ModelPackagingJobs"]) == 1


def test_register_reuses_only_an_identical_model_and_spec(home, tiny_model, tmp_path):
    model, spec = tiny_model
    first = api.register_model("p", model, spec, create_project=True, reuse_identical=True)["ModelMetadata"]
    again = api.register_model("p", model, spec, reuse_identical=True)["ModelMetadata"]
    assert again == first and first["ModelVersion"] == "1"
    other_spec = tmp_path / "spec.json"
    other_spec.write_text(json.dumps({**json.loads(spec.read_text()), "image_threshold": 0.7}))
    assert api.register_model("p", model, other_spec, reuse_identical=True)["ModelMetadata"]["ModelVersion"] == "2"
    assert api.register_model("p", model, spec)["ModelMetadata"]["ModelVersion"] == "3", (
        "reuse is asked for, not implied"
    )
    assert (
        api.register_model("p", model, spec, reuse_identical=True)["ModelMetadata"]["ModelVersion"] == "3"
    )  # the newest
    api.create_project(ProjectName="q")
    assert api.register_model("q", model, spec, reuse_identical=True)["ModelMetadata"]["ModelVersion"] == "1"


def test_worker_maps_extensions_onto_the_packaging_request(home, project, tmp_path, monkeypatch):
    device = RemoteDevice("127.0.0.1", 9190, key="jetson-xavier")
    with hold_worker_slot(home, monkeypatch):
        local = api.start_local_packaging_job(
            JobExtensions(output_dir=tmp_path / "gg", benchmark_runs=7, device=device),
            ProjectName="p",
            ModelVersion="1",
            Configuration=_local_config(),
        )["JobName"]
        service = api.start_model_packaging_job(ProjectName="p", ModelVersion="1", Configuration=gg_config())["JobName"]
    store = open_store(home)
    try:
        model = store.model("p", 1)
        local_request = packaging_request(home, store.job("p", local), model)
        service_request = packaging_request(home, store.job("p", service), model)
    finally:
        store.close()
    assert (local_request.output_dir, local_request.benchmark_runs, local_request.device) == (
        tmp_path / "gg",
        7,
        device,
    )
    assert local_request.s3_location is None and local_request.register is False and local_request.work_dir is None
    assert service_request.output_dir == api.job_dir(home, "p", service) / "greengrass-build"
    assert service_request.benchmark_runs == 50 and service_request.device is None
    assert service_request.s3_location.bucket == "packager-test-bucket" and service_request.register is True
    assert (
        local_request.model_arn
        == service_request.model_arn
        == api.describe_model(ProjectName="p", ModelVersion="1")["ModelDescription"]["ModelArn"]
    )


def test_failed_job_gives_back_its_error_class(home, project, tmp_path, monkeypatch):
    with hold_worker_slot(home, monkeypatch):
        names = [_start_local(tmp_path) for _ in range(3)]
    with sqlite3.connect(home / "store.sqlite3") as db:
        for name, error_type in zip(names, ("AccuracyMismatchError", None, "NotAnErrorClass")):
            db.execute(
                "UPDATE jobs SET status = 'FAILED', status_message = ?, error_type = ? WHERE name = ?",
                (f"{name} broke", error_type, name),
            )
    mismatch, dead, unknown = (job_failure(home, "p", n) for n in names)
    assert (
        type(mismatch) is errors.AccuracyMismatchError
        and mismatch.exit_code == 11
        and mismatch.message == f"{names[0]} broke"
    )
    assert type(dead) is errors.PackagerError and dead.exit_code == 1
    assert type(unknown) is errors.PackagerError and unknown.message == f"{names[2]} broke"


def test_job_result_round_trips(tmp_path):
    from packager.build.benchmark import BenchmarkReport, LatencyStats

    stats = LatencyStats(runs=5, p50_ms=1.5, p90_ms=2.0, p99_ms=2.5, mean_ms=1.6, throughput_per_s=625.0)
    for tvm, not_measured in ((stats, None), (None, "not measured: no device")):
        report = BenchmarkReport(
            target="LINUX/ARM64",
            device="host x86_64",
            emulated=False,
            threads=2,
            warmup=5,
            tvm=tvm,
            onnxruntime=stats,
            ratio_tvm_to_ort=1.0 if tvm else None,
            input_shape=(1, 3, 64, 64),
            not_measured=not_measured,
        )
        result = JobResult(
            component_name="c",
            component_version="1.0.0",
            recipe_path=tmp_path / "r.yaml",
            artifact_path=tmp_path / "model.zip",
            artifact_size=10,
            artifact_sha256_b64="abc=",
            benchmark=report,
            component_version_arn=None,
            wall_seconds=3.5,
        )
        write_result(tmp_path, result)
        assert read_result(tmp_path) == result
    assert read_result(tmp_path / "missing") is None


def test_a_version_1_store_gains_the_new_columns(home, tiny_model):
    """Stores made before build ran through jobs keep their records and gain extensions and error_type."""
    home.mkdir(parents=True)
    with sqlite3.connect(home / "store.sqlite3") as db:
        db.executescript("""
            CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, project TEXT NOT NULL, name TEXT NOT NULL,
                model_version TEXT NOT NULL, configuration TEXT NOT NULL, description TEXT, status TEXT NOT NULL,
                status_message TEXT, created REAL NOT NULL, updated REAL NOT NULL, component_name TEXT NOT NULL,
                component_version TEXT NOT NULL, component_arn TEXT, register INTEGER NOT NULL, pid INTEGER, pid_start TEXT,
                heartbeat REAL, UNIQUE (project, name));
            INSERT INTO jobs VALUES (1, 'p', 'old-job', '1', '{"Greengrass": {"ComponentName": "c"}}', NULL, 'SUCCEEDED', 'done',
                                     1.0, 2.0, 'c', '1.0.0', NULL, 1, NULL, NULL, NULL);
            PRAGMA user_version = 1;
        """)
    store = open_store(home)
    try:
        old = store.job("p", "old-job")
    finally:
        store.close()
    assert old.status == "SUCCEEDED" and old.extensions is None and old.error_type is None
    with sqlite3.connect(home / "store.sqlite3") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3
