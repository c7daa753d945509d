"""The emulated ARM64 device: TVM's own RPC server, in Debian's arm64 Python, under qemu-aarch64-static, on loopback.

prepare_arm64.sh (beside this file) unpacks the sysroot once; start_server() runs
``python3.11 -m tvm.exec.rpc_server`` in it, optionally registered with a tracker under a key. Its timings are
emulator timings, and the device says so: it registers ``packager.emulator`` (packager/build/remote.py reads it).

    python -m targets.emulator --port 9190                                    # a server for --device-rpc
    python -m targets.emulator --tracker 127.0.0.1:9190 --key arm64-emulated  # one registered with a tracker
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from packager.errors import ValidationException

REPO = Path(__file__).resolve().parents[2]
PREPARE_SCRIPT = Path(__file__).with_name("prepare_arm64.sh")
QEMU = "qemu-aarch64-static"
EMULATOR_NAME = "qemu-aarch64-static"
_GUEST_PYTHON = "usr/bin/python3.11"


def sysroot_dir() -> Path:
    return Path(os.environ.get("PACKAGER_ARM64_SYSROOT") or REPO / ".cache" / "arm64-sysroot")


def check_prepared(sysroot: Path) -> None:
    if shutil.which(QEMU) is None:
        raise ValidationException(
            f"{QEMU} is not installed; install it with: apt-get install -y qemu-user-static", field="emulator"
        )
    if not (sysroot / ".prepared").is_file() or not (sysroot / _GUEST_PYTHON).is_file():
        raise ValidationException(
            f"the ARM64 sysroot {sysroot} is not prepared; run: {PREPARE_SCRIPT.relative_to(REPO)}", field="emulator"
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class LocalProcess:
    """A server this module started: its own process group, so stopping it ends its workers too."""

    process: subprocess.Popen
    port: int
    log_path: Path

    def log_tail(self, lines: int = 20) -> str:
        return (
            "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:]) if self.log_path.exists() else ""
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _spawn(command: list[str], env: dict, log_path: Path) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )


def _die_with_parent() -> None:
    """A killed test run or CLI leaves no server behind (Linux PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)


def _guest_env(sysroot: Path) -> dict:
    # A clean environment: nothing of the host's Python (pyenv, virtualenvs) may leak into the guest's.
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONPATH": str(sysroot / "opt" / "python"),
        "PYTHONNOUSERSITE": "1",
        "TVM_USE_RUNTIME_LIB": "1",  # a device loads only the runtime, not the 240 MB compiler library
        "PACKAGER_EMULATOR": EMULATOR_NAME,
    }


def start_server(
    port: int | None = None,
    tracker: tuple[str, int] | None = None,
    key: str | None = None,
    sysroot: Path | None = None,
    log_path: Path | None = None,
    ready_timeout_s: float = 600,
) -> LocalProcess:
    """Start the emulated device's RPC server and wait until it listens (and, with a tracker, is registered)."""
    sysroot = Path(sysroot or sysroot_dir()).resolve()
    check_prepared(sysroot)
    port = port or free_port()
    command = [
        QEMU,
        "-L",
        str(sysroot),
        str(sysroot / _GUEST_PYTHON),
        "-m",
        "tvm.exec.rpc_server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--port-end",
        str(port + 1),
    ]
    if tracker:
        command += ["--tracker", f"{tracker[0]}:{tracker[1]}", "--key", key or "arm64-emulated"]
    log_path = log_path or sysroot.parent / f"rpc-server-{port}.log"
    server = LocalProcess(_spawn(command, _guest_env(sysroot), log_path), port, log_path)
    try:
        _wait(
            server, lambda: f"bind to 127.0.0.1:{port}" in server.log_path.read_text(errors="replace"), ready_timeout_s
        )
        if tracker:
            _wait(server, lambda: _registered(tracker, key or "arm64-emulated"), 120)
    except BaseException:
        server.stop()
        raise
    return server


def start_tracker(port: int | None = None, log_path: Path | None = None) -> LocalProcess:
    """TVM's RPC tracker, on this host's loopback."""
    port = port or free_port()
    log_path = log_path or sysroot_dir().parent / f"rpc-tracker-{port}.log"
    command = [
        sys.executable,
        "-m",
        "tvm.exec.rpc_tracker",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--port-end",
        str(port + 1),
    ]
    tracker = LocalProcess(_spawn(command, {**os.environ, "TVM_USE_RUNTIME_LIB": "1"}, log_path), port, log_path)
    try:
        _wait(tracker, lambda: _tracker_summary(("127.0.0.1", port)) is not None, 120)
    except BaseException:
        tracker.stop()
        raise
    return tracker


def _listening(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=2):
            return True
    except OSError:
        return False


def _tracker_summary(address: tuple[str, int]) -> dict | None:
    from tvm import rpc

    # TVM's client retries a refused connection for a minute; probe first so polling stays polling.
    if not _listening(address):
        return None
    try:
        return rpc.connect_tracker(*address).summary()
    except (OSError, RuntimeError):
        return None


def _registered(tracker: tuple[str, int], key: str) -> bool:
    summary = _tracker_summary(tracker) or {}
    return any(
        info.get("key", "").split()[0:1] == ["server:" + key] or info.get("key") == "server:" + key
        for info in summary.get("server_info", [])
    )


def _wait(server: LocalProcess, ready, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if server.process.poll() is not None:
            raise ValidationException(
                f"{server.log_path.stem} exited ({server.process.returncode}):\n{server.log_tail()}", field="emulator"
            )
        if time.monotonic() > deadline:
            raise ValidationException(
                f"{server.log_path.stem} was not ready after {timeout_s:.0f} s:\n{server.log_tail()}", field="emulator"
            )
        time.sleep(0.5)
