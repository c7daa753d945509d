"""Run a compiled model on a device over TVM RPC: one server (--device-rpc) or one leased from a tracker by key.

The library is uploaded, loaded by the device's own TVM runtime, run on the same random input as ONNX Runtime here,
and timed on the device with TVM's time evaluator (so RPC round trips are not in the numbers).
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compilers.model import CompiledArtifact
from packager.errors import CompilationError, ValidationException
from targets.address import parse_address

# What the emulated device's Python registers (targets/emulator): the device says it is not real hardware.
EMULATOR_FUNCTION = "packager.emulator"


@dataclass(frozen=True)
class RemoteDevice:
    """A TVM RPC endpoint: the server itself, or (with ``key``) a tracker that leases a server registered under key."""

    host: str
    port: int
    key: str | None = None
    session_timeout_s: int = 900
    connect_timeout_s: int = 120

    @property
    def label(self) -> str:
        return f"rpc tracker {self.host}:{self.port} key {self.key}" if self.key else f"rpc {self.host}:{self.port}"


def remote_device(device_rpc: str | None, rpc_tracker: str | None, rpc_key: str | None) -> RemoteDevice | None:
    """The CLI's three flags -> at most one RemoteDevice."""
    if device_rpc and rpc_tracker:
        raise ValidationException("give --device-rpc or --rpc-tracker, not both", field="--device-rpc")
    if rpc_key is not None and not rpc_tracker:
        raise ValidationException("--rpc-key needs --rpc-tracker", field="--rpc-key")
    if device_rpc:
        return RemoteDevice(*parse_address(device_rpc, "--device-rpc"))
    if rpc_tracker:
        if not rpc_key or not re.fullmatch(r"[\w.:-]{1,128}", rpc_key):
            raise ValidationException(
                f"--rpc-tracker needs --rpc-key naming the device kind, like jetson-xavier; got {rpc_key!r}",
                field="--rpc-key",
            )
        return RemoteDevice(*parse_address(rpc_tracker, "--rpc-tracker"), key=rpc_key)
    return None


class RpcRunner:
    """A Runner (compilers.runners) on the device: a Relax VM loaded by the device's own TVM runtime. Inputs go in
    with set_input, so the outputs come back as plain tensors over RPC; timings come from TVM's time evaluator on the
    device, so RPC round trips are not in them."""

    native = False  # its timings are the device's, not this host's

    def __init__(self, module, device, manifest: dict, params: dict, label: str, emulated: bool):
        import tvm.runtime
        from tvm.runtime.vm import VirtualMachine

        self.device = device
        self.manifest = manifest
        self.label = label
        self.emulated = emulated
        self._vm = VirtualMachine(module, device)
        self._params = [tvm.runtime.tensor(params[name].numpy(), device) for name in manifest["params"]]
        self.output_names = list(manifest["outputs"])

    def _set_input(self, x: np.ndarray) -> None:
        import tvm.runtime

        x = tvm.runtime.tensor(np.ascontiguousarray(x, dtype=np.float32), self.device)
        self._vm.set_input(self.manifest["entry"], x, *self._params)

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        self._set_input(x)
        self._vm.invoke_stateful(self.manifest["entry"])
        result = self._vm.get_outputs(self.manifest["entry"])
        values = list(result) if isinstance(result, tuple) else [result]
        return {name: value.numpy() for name, value in zip(self.output_names, values)}

    def time(self, x: np.ndarray, warmup: int, runs: int, warmup_s: float | None = None) -> list[float]:
        import time

        self._set_input(x)
        started = time.perf_counter()
        for _ in range(warmup):
            self._vm.invoke_stateful(self.manifest["entry"])
            if warmup_s is not None and time.perf_counter() - started >= warmup_s:
                break
        timer = self._vm.time_evaluator("invoke_stateful", self.device, number=1, repeat=runs, min_repeat_ms=0)
        return list(timer(self.manifest["entry"]).results)


class DeviceSession:
    """An open RPC session. The device serves one session at a time, so it must end with the block that opened it."""

    def __init__(self, device: RemoteDevice, session, emulator: str | None):
        self.device = device
        self.session = session  # tvm.rpc.RPCSession; None once closed
        self.emulator = emulator  # e.g. "qemu-aarch64-static" when the device says it is emulated
        self._uploaded: set[str] = set()

    def close(self) -> None:
        """TVM closes a session when its last reference goes: models loaded through it must be dropped too."""
        self.session = None

    @property
    def label(self) -> str:
        return self.device.label + (f" ({self.emulator})" if self.emulator else "")

    def load(self, artifact: CompiledArtifact) -> RpcRunner:
        import tvm.runtime

        manifest = json.loads(Path(artifact.manifest_path).read_text())
        data = Path(artifact.library_path).read_bytes()
        # A name per content, written once: rewriting a library the session has loaded crashes the device's server.
        remote_name = f"model-{hashlib.sha256(data).hexdigest()[:16]}.so"
        try:
            if remote_name not in self._uploaded:
                self.session.upload(bytearray(data), remote_name)
                self._uploaded.add(remote_name)
            module = self.session.load_module(remote_name)
        except Exception as exc:
            raise CompilationError(
                f"{self.label} could not load {artifact.library_path.name} built for {artifact.target_name}: "
                f"{_last_line(exc)}{_cuda_server_hint(exc)}"
            ) from None
        params = tvm.runtime.load_param_dict_from_file(str(artifact.params_path)) if manifest["params"] else {}
        try:
            device = self.session.cuda(0) if artifact.device == "cuda" else self.session.cpu(0)
            if not device.exist:
                raise CompilationError(f"{self.label} has no {artifact.device} device for {artifact.target_name}")
            return RpcRunner(module, device, manifest, params, self.label, emulated=self.emulator is not None)
        except CompilationError:
            raise
        except Exception as exc:
            raise CompilationError(
                f"{self.label} could not run {artifact.library_path.name} on its {artifact.device} device: "
                f"{_last_line(exc)}{_cuda_server_hint(exc)}"
            ) from None


# How a device's RPC server fails CUDA libraries when it was not started by targets/jetson/start_rpc_server.sh.
_CUDA_SERVER_FAILURES = {
    "loader of that name is not registered": "its RPC server has not loaded TVM's CUDA runtime (a runtime-only TVM never does)",
    "cudaErrorInitializationError": "its RPC server forks each session, and a forked process cannot initialise CUDA",
}


def _cuda_server_hint(exc: Exception) -> str:
    for symptom, cause in _CUDA_SERVER_FAILURES.items():
        if symptom in str(exc):
            return (
                f"; {cause}: start it with targets/jetson/start_rpc_server.sh, which adds --no-fork and "
                "--load-library .../tvm/lib/libtvm_runtime_cuda.so (docs/targets.md)"
            )
    return ""


def _last_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:400]


@contextmanager
def open_device(device: RemoteDevice) -> Iterator[DeviceSession]:
    """Connect (or lease through the tracker); the session closes when the block ends."""
    field = "--rpc-tracker" if device.key else "--device-rpc"
    outcome: dict = {}
    # TVM's connect has no timeout: a server that accepts but never answers would hang the build.
    worker = threading.Thread(target=_connect, args=(device, outcome), name="tvm-rpc-connect", daemon=True)
    worker.start()
    worker.join(device.connect_timeout_s)
    if worker.is_alive():
        _shut_down_sockets_to(device.host, device.port)  # unblocks TVM's recv, so no thread is left inside C++ at exit
        worker.join(10)
        outcome.pop("error", None)
    if "error" in outcome:
        raise ValidationException(
            f"cannot reach the device at {device.label}: {_last_line(outcome['error'])}", field=field
        )
    if "session" not in outcome:
        raise ValidationException(
            f"no answer from the device at {device.label} within {device.connect_timeout_s} s", field=field
        )
    session = outcome.pop("session")
    emulator = session.get_function(EMULATOR_FUNCTION)() if _has_function(session, EMULATOR_FUNCTION) else None
    opened = DeviceSession(device, session, emulator)
    del session
    try:
        yield opened
    finally:
        opened.close()
        gc.collect()  # remote modules and tensors in reference cycles would keep the device's one session busy


def _connect(device: RemoteDevice, outcome: dict) -> None:
    from tvm import rpc

    try:
        if device.key:
            tracker = rpc.connect_tracker(device.host, device.port)
            outcome["session"] = tracker.request(device.key, priority=1, session_timeout=device.session_timeout_s)
        else:
            outcome["session"] = rpc.connect(device.host, device.port, session_timeout=device.session_timeout_s)
    except Exception as exc:  # RPC errors arrive as bare TVMError/RuntimeError/OSError
        outcome["error"] = exc


def _shut_down_sockets_to(host: str, port: int) -> None:
    """Shut down this process's TCP connections to host:port (Linux: found through /proc/self/fd)."""
    peers = {(info[4][0], port) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
    for name in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            with socket.socket(fileno=os.dup(int(name))) as sock:
                if sock.type == socket.SOCK_STREAM and sock.getpeername()[:2] in peers:
                    sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            continue


def _has_function(session, name: str) -> bool:
    try:
        session.get_function(name)
    except Exception:  # the RPC layer raises a bare error for an unknown global function
        return False
    return True
