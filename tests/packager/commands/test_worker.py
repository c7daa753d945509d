"""`python -m packager worker`: refuses to start without a broker, and says which variable to set."""

from __future__ import annotations

from packager import cli


def test_worker_without_a_broker_names_the_variable(monkeypatch, capsys):
    monkeypatch.delenv("PACKAGER_BROKER_URL", raising=False)
    assert cli.main(["worker", "--queue", "arm64"]) == 2
    assert "PACKAGER_BROKER_URL=redis://" in capsys.readouterr().err


def test_worker_queues_are_the_engine_s(monkeypatch):
    from packager.commands import worker
    from packager.service.jobs.celery_engine import Queue

    assert worker._QUEUES == Queue.ALL
