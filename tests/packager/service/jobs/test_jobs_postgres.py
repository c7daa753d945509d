"""The jobs API on PostgreSQL (PACKAGER_DATABASE_URL): the SQLite store's tests again, then what only a shared
database must do: upgrade its schema on start, and hold its rules when two servers race."""

from __future__ import annotations

import threading

import psycopg
import pytest

from packager.errors import ConflictException, InternalServerException
from packager.service.jobs import api, pg_store
from packager.service.jobs.store import open_store
from tests.packager.service.jobs.support import (  # noqa: F401
    fresh_home,
    gg_config,
    hold_worker_slot,
    wait_until,
)

# The SQLite store's API tests, collected again here with `home` on PostgreSQL.
from tests.packager.service.jobs.test_jobs_api import (  # noqa: F401
    test_component_and_job_name_conflicts,
    test_model_files_are_content_addressed,
    test_model_versions_and_latest,
    test_pagination_and_tampered_tokens,
    test_project_conflicts_and_tokens,
    test_project_round_trip,
    test_register_rejects_bad_input,
    test_start_returns_at_once_and_describes,
    test_unknown_resources,
)


@pytest.fixture
def database_url(postgres, monkeypatch) -> str:
    url = postgres.create_database()
    monkeypatch.setenv("PACKAGER_DATABASE_URL", url)
    return url


@pytest.fixture
def home(tmp_path, monkeypatch, database_url):
    yield from fresh_home(tmp_path, monkeypatch)


def test_the_store_is_postgres(home, database_url):
    store = open_store(home)
    try:
        assert isinstance(store, pg_store.PostgresStore)
    finally:
        store.close()
    with psycopg.connect(database_url) as db:
        assert db.execute("SELECT version FROM schema_version").fetchone() == (pg_store.SCHEMA_VERSION,)
    assert not (home / "store.sqlite3").exists()


def test_an_older_schema_is_upgraded_on_start(home, database_url, tiny_model):
    with psycopg.connect(database_url, autocommit=True) as db:
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        db.execute(pg_store.MIGRATIONS[0])
        db.execute("INSERT INTO schema_version VALUES (1)")
        db.execute("INSERT INTO projects (name, arn, created) VALUES ('old', 'arn:old', 0)")
    pg_store._upgraded.discard(database_url)
    api.register_model("old", *tiny_model)
    assert [p["ProjectName"] for p in api.list_projects()["Projects"]] == ["old"]
    with psycopg.connect(database_url) as db:
        assert db.execute("SELECT version FROM schema_version").fetchone() == (pg_store.SCHEMA_VERSION,)
        columns = {
            r[0] for r in db.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'jobs'")
        }
    assert {"queue", "worker", "deliveries"} <= columns


def test_a_newer_schema_is_refused(home, database_url):
    with psycopg.connect(database_url, autocommit=True) as db:
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        db.execute("INSERT INTO schema_version VALUES (%s)", (pg_store.SCHEMA_VERSION + 1,))
    pg_store._upgraded.discard(database_url)
    with pytest.raises(InternalServerException, match="newer than this packager"):
        api.list_projects()


def _race(calls: list) -> list:
    """Run the calls at once on their own threads (each opens its own connection, like two servers)."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i, call):
        barrier.wait()
        try:
            results[i] = call()
        except Exception as exc:  # noqa: BLE001  (the test looks at which error each racer got)
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_racing_servers_hold_tokens_names_and_component_versions(home, tiny_model, monkeypatch):
    api.create_project(ProjectName="p")
    api.register_model("p", *tiny_model)
    with hold_worker_slot(home, monkeypatch):
        for round_ in range(3):
            same_token = {
                "ProjectName": "p",
                "ModelVersion": "1",
                "ClientToken": f"t{round_}",
                "Configuration": gg_config(ComponentVersion=f"1.0.{round_}"),
            }
            answers = _race([lambda params=same_token: api.start_model_packaging_job(**params)] * 4)
            assert all(isinstance(a, dict) for a in answers), answers
            assert len({a["JobName"] for a in answers}) == 1
        same_version = [
            lambda i=i: api.start_model_packaging_job(
                ProjectName="p", ModelVersion="1", Configuration=gg_config(ComponentVersion="7.0.0")
            )
            for i in range(4)
        ]
        answers = _race(same_version)
        assert sum(isinstance(a, dict) for a in answers) == 1, answers
        assert all(isinstance(a, ConflictException) for a in answers if not isinstance(a, dict))
        same_name = [
            lambda i=i: api.start_model_packaging_job(
                ProjectName="p", ModelVersion="1", JobName="same", Configuration=gg_config(ComponentVersion=f"8.0.{i}")
            )
            for i in range(4)
        ]
        answers = _race(same_name)
        assert sum(isinstance(a, dict) for a in answers) == 1, answers
        assert all(isinstance(a, ConflictException) and "same" in str(a) for a in answers if not isinstance(a, dict))
        jobs = api.list_model_packaging_jobs(ProjectName="p")["ModelPackagingJobs"]
    assert len(jobs) == 5


def test_racing_create_project_with_one_token_creates_it_once(home):
    answers = _race([lambda: api.create_project(ProjectName="raced", ClientToken="same")] * 4)
    assert all(isinstance(a, dict) for a in answers), answers
    assert len({a["ProjectMetadata"]["ProjectArn"] for a in answers}) == 1
    others = _race([lambda i=i: api.create_project(ProjectName="raced-2", ClientToken=f"t{i}") for i in range(4)])
    assert sum(isinstance(a, dict) for a in others) == 1
    assert all(isinstance(a, ConflictException) for a in others if not isinstance(a, dict))


def test_an_unreachable_database_is_a_retryable_error(home, monkeypatch):
    from tests.servers import free_port

    with (
        monkeypatch.context() as patched,
        pytest.raises(pg_store.StoreUnavailable, match="database is unavailable") as info,
    ):
        patched.setenv("PACKAGER_DATABASE_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/none")
        api.list_projects()
    assert info.value.code == "InternalServerException" and info.value.http_status == 500
