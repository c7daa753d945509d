"""Tuning records shared through PostgreSQL: a build on a second host (its own PACKAGER_HOME) reuses the first's."""

from __future__ import annotations

import pytest

from packager.service.jobs import api
from packager.service.jobs.extensions import JobExtensions
from packager.service.jobs.progress import PROGRESS_FILE
from tests.packager.service.jobs.support import fresh_home


@pytest.fixture
def home(tmp_path, monkeypatch, postgres):
    monkeypatch.setenv("PACKAGER_DATABASE_URL", postgres.create_database())
    yield from fresh_home(tmp_path, monkeypatch)


def _build(host_home, tmp_path, name: str, compiler_options: str | None) -> list[str]:
    configuration = {
        "Greengrass": {
            "TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"},
            "ComponentName": "com.example.Tuned",
            "ComponentVersion": "1.0.0",
            **({"CompilerOptions": compiler_options} if compiler_options else {}),
        }
    }
    extensions = JobExtensions(output_dir=tmp_path / f"out-{name}", benchmark_runs=2, register=False)
    job = api.start_local_packaging_job(
        extensions, home=host_home, ProjectName="p", ModelVersion="1", JobName=name, Configuration=configuration
    )["JobName"]
    final = api.wait_for_model_packaging_job("p", job, home=host_home, poll_seconds=0.2, timeout_seconds=600)
    assert final["ModelPackagingDescription"]["Status"] == "SUCCEEDED", final
    return (host_home / "jobs" / "p" / job / PROGRESS_FILE).read_text().splitlines()


@pytest.mark.slow
def test_a_second_host_applies_records_the_first_one_tuned(home, tiny_model, tmp_path, monkeypatch):
    api.create_project(ProjectName="p")
    api.register_model("p", *tiny_model)
    first = _build(home, tmp_path, "tune-on-a", "{'tuning-trials': 4}")
    assert any("tuning: 4 new trials" in line for line in first), first

    second_host = tmp_path / "host-b"
    monkeypatch.setenv("PACKAGER_HOME", str(second_host))  # the worker it starts has this host's own tuning cache
    from packager.service.jobs.model_files import store_file

    store_file(second_host, tiny_model[0], ".onnx")  # host B has the model file; only the tuning is in question
    store_file(second_host, tiny_model[1], ".json")
    second = _build(second_host, tmp_path, "build-on-b", None)
    assert any(line.startswith("tuning: ") and "records from other workers" in line for line in second), second
    applied = [line for line in second if "tuned records applied to" in line]
    assert applied and "0 new trials" in applied[0] and " 0 kernels" not in applied[0], second
    assert (second_host / "tuning").is_dir()
