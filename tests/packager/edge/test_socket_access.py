"""Issue 15 item 9: the agent's socket mode and group come from its component configuration, checked over the socket
by a client running as another user."""

from __future__ import annotations

import grp
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import pytest
import yaml

from packager.edge import edge_agent_pb2 as pb
from packager.edge import edge_agent_pb2_grpc as pb_grpc
from packager.greengrass.bundle import agent_bundle
from targets import host_target

REPO = Path(__file__).resolve().parents[3]
NOBODY, NOGROUP = 65534, 65534


@pytest.fixture
def socket_dir():
    """A directory other users may enter (pytest's own tmp dirs are 0700), so only the socket's mode decides."""
    path = Path(tempfile.mkdtemp(prefix="agent-sock-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _start_agent(socket_dir: Path, *flags: str) -> tuple[subprocess.Popen, Path]:
    path = socket_dir / "agent.sock"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "packager.edge.agent",
            "--socket",
            f"unix://{path}",
            "--registry",
            str(socket_dir / "models"),
            *flags,
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if path.exists():
            break
        time.sleep(0.05)
    time.sleep(0.3)  # the mode is set right after the socket appears
    return process, path


def _stop(process: subprocess.Popen) -> str:
    process.terminate()
    try:
        return process.communicate(timeout=30)[0]
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()[0]


def _connect_as(path: Path, uid: int, gid: int) -> bool:
    """connect() from a forked child that became uid:gid (no other groups): 0 connected, 13 refused (EACCES)."""
    if os.geteuid() != 0:
        pytest.skip("connecting as another user needs root")
    pid = os.fork()
    if pid == 0:  # the child only drops privileges, connects and exits
        code = 99
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(str(path))
            code = 0
        except PermissionError:
            code = 13
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) in (0, 13), os.WEXITSTATUS(status)
    return os.WEXITSTATUS(status) == 0


def _list_models(path: Path) -> list:
    with grpc.insecure_channel(f"unix://{path}") as channel:
        return list(pb_grpc.EdgeAgentStub(channel).ListModels(pb.ListModelsRequest(), timeout=30).models)


def test_default_is_owner_and_group_only(socket_dir):
    process, path = _start_agent(socket_dir)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o660 and path.stat().st_gid == os.getegid()
        assert _list_models(path) == []
        assert not _connect_as(path, NOBODY, NOGROUP)
    finally:
        _stop(process)


def test_configured_mode_lets_every_user_connect(socket_dir):
    process, path = _start_agent(socket_dir, "--socket-mode", "0666")
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666
        assert _connect_as(path, NOBODY, NOGROUP)
    finally:
        _stop(process)


def test_configured_group_lets_its_members_connect(socket_dir):
    group = grp.getgrgid(NOGROUP).gr_name
    process, path = _start_agent(socket_dir, "--socket-group", group)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o660 and path.stat().st_gid == NOGROUP
        assert _connect_as(path, NOBODY, NOGROUP)  # nobody's group is the socket's
        assert not _connect_as(path, NOBODY, 1)  # the same user in another group is refused
    finally:
        _stop(process)


@pytest.mark.parametrize(
    "flags, message",
    [
        (("--socket-mode", "999"), "octal permission bits"),
        (("--socket-mode", "0066"), "own user"),
        (("--socket-mode", "0660; rm -rf /"), "octal permission bits"),
        (("--socket-group", "no-such-group-here"), "does not exist"),
    ],
)
def test_bad_socket_settings_stop_the_agent_with_one_line(socket_dir, flags, message):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "packager.edge.agent",
            "--socket",
            f"unix://{socket_dir}/a.sock",
            "--registry",
            str(socket_dir / "models"),
            *flags,
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (socket_dir / "a.sock").exists()


def test_the_agent_component_configures_mode_and_group(tmp_path):
    recipe = yaml.safe_load(agent_bundle(host_target(), tmp_path).recipe_text)
    defaults = recipe["ComponentConfiguration"]["DefaultConfiguration"]
    assert (defaults["SocketMode"], defaults["SocketGroup"]) == ("0660", "")
    run = recipe["Manifests"][0]["Lifecycle"]["Run"]["Script"]
    assert '--socket-mode "{configuration:/SocketMode}" --socket-group "{configuration:/SocketGroup}"' in run
