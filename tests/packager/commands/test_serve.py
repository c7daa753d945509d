"""serve --no-register reaches the jobs API as a setting of the server, not through the process environment."""

import os

import pytest

from packager.cli import main
from packager.service.jobs import packaging
from packager.service.jobs.store import open_store
from packager.service.server import app
from tests.packager.service.jobs.support import gg_config, home  # noqa: F401  (fixture)


@pytest.mark.parametrize(
    "argv,environment,register",
    [
        ([], None, True),
        (["--no-register"], None, False),
        ([], "1", False),
    ],
)
def test_serve_hands_its_register_setting_to_the_server(monkeypatch, argv, environment, register):
    seen = []

    def no_socket(host, port, config):
        seen.append(config)
        raise OSError(98, "Address already in use")

    monkeypatch.setattr(app, "make_server", no_socket)
    monkeypatch.setenv("PACKAGER_ACCESS_KEY_ID", "AKIDTEST")
    monkeypatch.setenv("PACKAGER_SECRET_ACCESS_KEY", "secret")
    if environment is None:
        monkeypatch.delenv("PACKAGER_NO_REGISTER", raising=False)
    else:
        monkeypatch.setenv("PACKAGER_NO_REGISTER", environment)
    assert main(["serve", "--port", "1", *argv]) == 2
    assert seen[0].register is register
    assert os.environ.get("PACKAGER_NO_REGISTER") == environment  # serve leaves the environment as it found it


def test_the_servers_start_operation_records_its_register_setting(home, tiny_model, monkeypatch):  # noqa: F811
    from packager.service.jobs import api

    monkeypatch.setattr(packaging, "spawn_worker", lambda *args: (_ for _ in ()).throw(OSError(11, "no processes")))
    api.register_model("p", *tiny_model, create_project=True)
    server = app.make_server("127.0.0.1", 0, app.ServerConfig(keys={"AKIDTEST": "secret"}, register=False))
    try:
        start = server.RequestHandlerClass.operations["StartModelPackagingJob"]
        name = start(home=None, ProjectName="p", ModelVersion="1", Configuration=gg_config())["JobName"]
    finally:
        server.server_close()
    store = open_store(None)
    try:
        assert store.job("p", name).register is False
    finally:
        store.close()
