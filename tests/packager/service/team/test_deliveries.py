"""What one Celery delivery does with a job, decided by the job's row in PostgreSQL (worker.run_delivered_job)."""

from __future__ import annotations

import threading
import time

import pytest

from packager.service.jobs import api
from packager.service.jobs.records import JobRecord
from packager.service.jobs.store import open_store
from packager.service.jobs.worker import run_delivered_job
from tests.packager.service.jobs.support import fresh_home, gg_config


@pytest.fixture
def home(tmp_path, monkeypatch, postgres):
    monkeypatch.setenv("PACKAGER_DATABASE_URL", postgres.create_database())
    yield from fresh_home(tmp_path, monkeypatch)


def _job(home, tiny_model, **state) -> JobRecord:
    api.create_project(ProjectName="p")
    api.register_model("p", *tiny_model)
    now = time.time()
    record = JobRecord(
        seq=0,
        project="p",
        name="j",
        model_version="1",
        configuration=gg_config(ComponentVersion="1.0.0"),
        description=None,
        status="CREATED",
        status_message="Queued on x86_64-cpu; waiting for a worker.",
        created=now,
        updated=now,
        component_name="com.example.Tiny",
        component_version="1.0.0",
        component_arn=None,
        register=False,
        pid=None,
        pid_start=None,
        heartbeat=None,
        queue="x86_64-cpu",
    )
    store = open_store(home)
    try:
        store.insert_job(record)
        with store.transaction():
            store.update_job("p", "j", **state)
        return store.job("p", "j")
    finally:
        store.close()


def _read(home) -> JobRecord:
    store = open_store(home)
    try:
        return store.job("p", "j")
    finally:
        store.close()


def test_a_job_delivered_too_many_times_ends_failed_saying_so(home, tiny_model):
    _job(home, tiny_model, status="RUNNING", worker="lost@host-3", deliveries=3, heartbeat=time.time() - 3600)
    run_delivered_job(home, "p", "j", worker_name="w@host-4", max_deliveries=3)
    job = _read(home)
    assert job.status == "FAILED" and job.deliveries == 4
    assert job.status_message.startswith("Delivered to a worker 4 times")
    assert "lost@host-3" in job.status_message and "after 3 deliveries" in job.status_message
    described = api.describe_model_packaging_job(ProjectName="p", JobName="j")["ModelPackagingDescription"]
    assert described["Status"] == "FAILED" and described["StatusMessage"] == job.status_message


def test_a_finished_job_delivered_again_is_left_alone(home, tiny_model):
    _job(home, tiny_model, status="SUCCEEDED", worker="w@host-1", deliveries=1, status_message="done")
    run_delivered_job(home, "p", "j", worker_name="w@host-2", max_deliveries=3)
    job = _read(home)
    assert (job.status, job.worker, job.deliveries, job.status_message) == ("SUCCEEDED", "w@host-1", 1, "done")


def test_a_delivery_waits_while_the_running_worker_beats_and_takes_over_when_it_stops(home, tiny_model, monkeypatch):
    monkeypatch.setenv("PACKAGER_TAKEOVER_AFTER_S", "3")
    _job(home, tiny_model, status="RUNNING", worker="alive@host-1", deliveries=1, heartbeat=time.time())
    stop = threading.Event()

    def beat():  # the first worker is alive for 4 s, then its host dies
        store = open_store(home)
        try:
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline and not stop.is_set():
                store.update_job("p", "j", heartbeat=time.time())
                time.sleep(0.5)
        finally:
            store.close()

    beater = threading.Thread(target=beat)
    beater.start()
    started = time.monotonic()
    try:
        run_delivered_job(home, "p", "j", worker_name="w@host-2", max_deliveries=3)
    finally:
        stop.set()
        beater.join()
    job = _read(home)
    assert time.monotonic() - started >= 4 + 3 - 1  # it waited for the beats to stop, then for the takeover limit
    assert job.worker == "w@host-2" and job.deliveries == 2
    # The tiny model runs to the end on the new worker; no AWS here, so publishing fails and says why.
    assert job.status == "FAILED" and "region" in job.status_message, job.status_message
