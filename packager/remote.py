"""Run a compiled model on a device over TVM RPC: one server (--device-rpc) or one leased from a tracker by key.

The library is uploaded, loaded by the device's own TVM runtime, run on the same random input as ONNX Runtime here,
and timed on the device with TVM's time evaluator (so RPC round trips are not in the numbers).
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from compilers.model import CompiledArtifact, CompileOptions, ImportedModel
from packager.errors import CompilationError, ValidationException

# What the emulated device's Python registers (targets/emulator): the device says it is not real hardware.
EMULATOR_FUNCTION = "packager.emulator"


@dataclass(frozen=True)
class RemoteDevice:
    """A TVM RPC endpoint: the server itself, or (with ``key``) a tracker that leases a server registered under key."""

    host: str
    port: int
    key: str | None = None
    session_timeout_s: int = 900

    @property
    def label(self) -> str:
        return f"rpc tracker {self.host}:{self.port} key {self.key}" if self.key else f"rpc {self.host}:{self.port}"


def parse_address(text: str, field: str) -> tuple[str, int]:
    """'host:port' -> (host, port), validated at the edge."""
    match = re.fullmatch(r"\[?([A-Za-z0-9_.:-]+?)\]?:(\d{1,5})", text or "")
    if not match or not 0 < int(match[2]) < 65536:
        raise ValidationException(f"{field} must be HOST:PORT, like 127.0.0.1:9190; got {text!r}", field=field)
    return match[1], int(match[2])


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
            raise ValidationException(f"--rpc-tracker needs --rpc-key naming the device kind, like jetson-xavier; got {rpc_key!r}",
                                      field="--rpc-key")
        return RemoteDevice(*parse_address(rpc_tracker, "--rpc-tracker"), key=rpc_key)
    return None


class RemoteModel:
    """A Relax VM on the device. Inputs go in with set_input, so the outputs come back as plain tensors over RPC."""

    def __init__(self, module, device, manifest: dict, params: dict):
        import tvm.runtime
        from tvm.runtime.vm import VirtualMachine

        self.device = device
        self.manifest = manifest
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

    def time(self, x: np.ndarray, warmup: int, runs: int) -> list[float]:
        """Seconds per run, measured on the device."""
        self._set_input(x)
        for _ in range(warmup):
            self._vm.invoke_stateful(self.manifest["entry"])
        timer = self._vm.time_evaluator("invoke_stateful", self.device, number=1, repeat=runs, min_repeat_ms=0)
        return list(timer(self.manifest["entry"]).results)


@dataclass(frozen=True)
class DeviceSession:
    device: RemoteDevice
    session: object  # tvm.rpc.RPCSession
    emulator: str | None  # e.g. "qemu-aarch64-static" when the device says it is emulated

    @property
    def label(self) -> str:
        return self.device.label + (f" ({self.emulator})" if self.emulator else "")

    def load(self, artifact: CompiledArtifact) -> RemoteModel:
        import json

        import tvm.runtime

        manifest = json.loads(Path(artifact.manifest_path).read_text())
        try:
            self.session.upload(str(artifact.library_path))
            module = self.session.load_module(artifact.library_path.name)
        except Exception as exc:
            raise CompilationError(f"{self.label} could not load {artifact.library_path.name} built for {artifact.target_name}: "
                                   f"{_last_line(exc)}") from None
        params = tvm.runtime.load_param_dict_from_file(str(artifact.params_path)) if manifest["params"] else {}
        device = self.session.cuda(0) if artifact.device == "cuda" else self.session.cpu(0)
        if not device.exist:
            raise CompilationError(f"{self.label} has no {artifact.device} device for {artifact.target_name}")
        return RemoteModel(module, device, manifest, params)


def _last_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:400]


@contextmanager
def open_device(device: RemoteDevice) -> Iterator[DeviceSession]:
    """Connect (or lease through the tracker); the session closes when the block ends."""
    from tvm import rpc

    try:
        if device.key:
            tracker = rpc.connect_tracker(device.host, device.port)
            session = tracker.request(device.key, priority=1, session_timeout=device.session_timeout_s)
        else:
            session = rpc.connect(device.host, device.port, session_timeout=device.session_timeout_s)
    except Exception as exc:
        field = "--rpc-tracker" if device.key else "--device-rpc"
        raise ValidationException(f"cannot reach the device at {device.label}: {_last_line(exc)}", field=field) from None
    try:
        emulator = session.get_function(EMULATOR_FUNCTION)() if _has_function(session, EMULATOR_FUNCTION) else None
        yield DeviceSession(device=device, session=session, emulator=emulator)
    finally:
        del session


def _has_function(session, name: str) -> bool:
    try:
        session.get_function(name)
    except Exception:  # the RPC layer raises a bare error for an unknown global function
        return False
    return True


def verify_on_device(model: RemoteModel, imported: ImportedModel, options: CompileOptions, where: str) -> dict[str, float]:
    """The build-time ORT check, with the compiled model running on the device."""
    from compilers.verify import assert_matches_onnxruntime, onnxruntime_outputs, random_input

    x = random_input(imported)
    results = assert_matches_onnxruntime(model.run(x), onnxruntime_outputs(imported, x), options.rtol, options.atol,
                                         where=f"compiled model on {where}")
    return {r.name: r.max_abs_error for r in results}
