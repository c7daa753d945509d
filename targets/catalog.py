"""The target catalog: a table of rows (``CATALOG``), and the one place that resolves a Lookout-style choice to a
``Target`` record.

A request finds its row by a typed ``TargetKey`` (device, or arch + accelerator); ``get_target`` finds it by name.
Raw TVM target dicts are built here and never travel past this module as strings. The CompilerOptions string is
parsed in targets/options.py.
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass, field, replace
from enum import Enum

from packager.errors import ValidationException
from targets.cpu import host_cpu, host_mcpu
from targets.options import CompilerOptions

# The newest PTX ISA each CUDA release's driver/ptxas accepts (PTX ISA release notes).
CUDA_MAX_PTX_ISA: dict[str, tuple[int, int]] = {
    "10.0": (6, 3),
    "10.1": (6, 4),
    "10.2": (6, 5),
    "11.0": (7, 0),
    "11.1": (7, 1),
    "11.2": (7, 2),
    "11.3": (7, 3),
    "11.4": (7, 4),
    "11.5": (7, 5),
    "11.6": (7, 6),
    "11.7": (7, 7),
    "11.8": (7, 8),
    "12.0": (8, 0),
    "12.1": (8, 1),
    "12.2": (8, 2),
    "12.3": (8, 3),
    "12.4": (8, 4),
    "12.5": (8, 5),
    "12.6": (8, 5),
    "12.8": (8, 7),
    "12.9": (8, 8),
    "13.0": (9, 0),
}
# The oldest CUDA release that knows each GPU architecture.
SM_MIN_CUDA: dict[int, str] = {
    53: "10.0",
    60: "10.0",
    61: "10.0",
    62: "10.0",
    70: "10.0",
    72: "10.0",
    75: "10.0",
    80: "11.0",
    86: "11.1",
    87: "11.4",
    89: "11.8",
    90: "11.8",
}


@dataclass(frozen=True)
class GreengrassPlatform:
    os: str  # "linux"
    architecture: str  # "amd64" | "aarch64"


@dataclass(frozen=True)
class TargetRequest:
    """What the user asked for: exactly the service's TargetDevice / TargetPlatform choice."""

    target_device: str | None = None
    os: str | None = None
    arch: str | None = None
    accelerator: str | None = None
    compiler_options: CompilerOptions = field(default_factory=CompilerOptions)


class CudaRuntime(Enum):
    """Where the device's TVM CUDA runtime (libtvm_runtime_cuda.so) comes from."""

    WHEEL = "wheel"  # the PyPI wheel's own, linked against CUDA 13's libcudart.so.13
    DEVICE_BUILD = "device-build"  # rebuilt at install against the device's CUDA (targets/runtime.py)


# The CUDA major version the PyPI apache-tvm wheel's libtvm_runtime_cuda.so links against (libcudart.so.13).
WHEEL_CUDA_MAJOR = 13


@dataclass(frozen=True)
class RuntimeNeeds:
    """What the device must have to run the compiled model."""

    pip: tuple[str, ...]  # requirements.txt lines, installed from PyPI as they are
    cuda_ver: str | None = None  # the device's CUDA must be at least this (it bounds the shipped PTX)
    trt_ver: str | None = None  # recorded in the bundle; the Install step checks the device's TensorRT
    cuda_runtime: CudaRuntime | None = None  # None for CPU targets


@dataclass(frozen=True)
class Target:
    name: str
    tvm_target: dict  # what tvm.target.Target() takes, host included
    host_triple: str
    cross_compiler: str | None  # gcc driver that links the library, None for the host's own
    greengrass: GreengrassPlatform
    device: str  # "cpu" | "cuda": which TVM device the runtime opens
    runtime_needs: RuntimeNeeds
    options: CompilerOptions = field(default_factory=CompilerOptions)

    @property
    def is_cross(self) -> bool:
        return self.host_triple != _host_triple()

    @property
    def max_ptx_isa(self) -> tuple[int, int] | None:
        """The newest PTX ISA the device's CUDA accepts; None for CPU targets."""
        return CUDA_MAX_PTX_ISA[self.options.cuda_ver] if self.device == "cuda" else None


def _host_triple() -> str:
    return {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}.get(platform.machine(), platform.machine())


# Keep in step with pyproject.toml: tvm-ffi 0.1.15 segfaults.
CPU_RUNTIME_PIP = ("apache-tvm==0.27.0.post1", "apache-tvm-ffi==0.1.14.post0", "numpy", "Pillow")


def _llvm(triple: str, mcpu: str | None, mattr: tuple[str, ...], num_cores: int | None) -> dict:
    target = {"kind": "llvm", "mtriple": triple}
    if mcpu:
        target["mcpu"] = mcpu
    if mattr:
        target["mattr"] = list(mattr)
    if num_cores:
        target["num-cores"] = num_cores
    return target


def _cpu_target(name: str, triple: str, arch: str, options: CompilerOptions, cross: str | None) -> Target:
    return Target(
        name=name,
        tvm_target=_llvm(triple, options.mcpu, options.mattr, options.num_cores),
        host_triple=triple,
        cross_compiler=cross,
        greengrass=GreengrassPlatform("linux", arch),
        device="cpu",
        runtime_needs=RuntimeNeeds(pip=CPU_RUNTIME_PIP),
        options=options,
    )


def _nvidia_target(name: str, triple: str, arch: str, options: CompilerOptions, cross: str | None) -> Target:
    host = _llvm(triple, options.mcpu, options.mattr, options.num_cores)
    wheel_ok = _version_tuple(options.cuda_ver)[0] >= WHEEL_CUDA_MAJOR
    return Target(
        name=name,
        tvm_target={"kind": "nvptx", "mcpu": options.gpu_code, "mtriple": "nvptx64-nvidia-cuda", "host": host},
        host_triple=triple,
        cross_compiler=cross,
        greengrass=GreengrassPlatform("linux", arch),
        device="cuda",
        runtime_needs=RuntimeNeeds(
            pip=CPU_RUNTIME_PIP,
            cuda_ver=options.cuda_ver,
            trt_ver=options.trt_ver,
            cuda_runtime=CudaRuntime.WHEEL if wheel_ok else CudaRuntime.DEVICE_BUILD,
        ),
        options=options,
    )


@dataclass(frozen=True)
class TargetKey:
    """How a request names one row of the catalog: a device, or a platform (arch, with or without an accelerator)."""

    device: str | None = None  # "jetson_xavier"
    arch: str | None = None  # "X86_64" | "ARM64"
    accelerator: str | None = None  # None | "NVIDIA"


@dataclass(frozen=True)
class CatalogEntry:
    """One row of the catalog: everything fixed about a place a model runs, before the request's options apply."""

    name: str  # what target_names() and get_target() call it
    key: TargetKey
    triple: str
    greengrass_arch: str  # "amd64" | "aarch64"
    defaults: CompilerOptions
    nvidia: bool


_X86_64 = ("x86_64-linux-gnu", "amd64", CompilerOptions(mcpu="core-avx2"))
_ARM64 = ("aarch64-linux-gnu", "aarch64", CompilerOptions(mattr=("+neon",)))
# Lookout's documented test device: Jetson AGX Xavier on JetPack 4.4-4.5.1 (Carmel cores, Volta sm_72).
JETSON_XAVIER_DEFAULTS = CompilerOptions(
    mcpu="carmel", mattr=("+neon",), gpu_code="sm_72", cuda_ver="10.2", trt_ver="7.1.3"
)
CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        "jetson_xavier", TargetKey(device="jetson_xavier"), "aarch64-linux-gnu", "aarch64", JETSON_XAVIER_DEFAULTS, True
    ),
    CatalogEntry("LINUX/X86_64", TargetKey(arch="X86_64"), *_X86_64, False),
    CatalogEntry("LINUX/X86_64/NVIDIA", TargetKey(arch="X86_64", accelerator="NVIDIA"), *_X86_64, True),
    CatalogEntry("LINUX/ARM64", TargetKey(arch="ARM64"), *_ARM64, False),
    CatalogEntry("LINUX/ARM64/NVIDIA", TargetKey(arch="ARM64", accelerator="NVIDIA"), *_ARM64, True),
)
_BY_NAME = {entry.name: entry for entry in CATALOG}
_BY_KEY = {entry.key: entry for entry in CATALOG}
TARGET_DEVICES = tuple(entry.key.device for entry in CATALOG if entry.key.device)
ARCHES = tuple(dict.fromkeys(entry.key.arch for entry in CATALOG if entry.key.arch))
_HOST_ARCH = {"x86_64": "X86_64", "aarch64": "ARM64"}
_GPU_KEYS = (("gpu-code", "gpu_code"), ("cuda-ver", "cuda_ver"), ("trt-ver", "trt_ver"))


def target_names() -> list[str]:
    """Every name get_target() accepts."""
    return list(_BY_NAME)


def _cross_compiler(triple: str) -> str | None:
    return None if triple == _host_triple() else f"{triple}-gcc"


def _merge(defaults: CompilerOptions, given: CompilerOptions) -> CompilerOptions:
    changes = {k: v for k, v in vars(given).items() if v not in (None, ())}
    return replace(defaults, **changes)


def check_cuda_combination(options: CompilerOptions) -> None:
    """gpu-code and cuda-ver must name a pair that the CUDA driver can load."""
    if options.gpu_code is None or not re.fullmatch(r"sm_\d{2,3}", options.gpu_code):
        raise ValidationException(
            f"CompilerOptions gpu-code must look like 'sm_72', got {options.gpu_code!r}", field="gpu-code"
        )
    if options.cuda_ver not in CUDA_MAX_PTX_ISA:
        raise ValidationException(
            f"CompilerOptions cuda-ver {options.cuda_ver!r} is not supported; valid: {', '.join(CUDA_MAX_PTX_ISA)}",
            field="cuda-ver",
        )
    if options.sm not in SM_MIN_CUDA:
        raise ValidationException(
            f"CompilerOptions gpu-code {options.gpu_code!r} is not supported; valid: {', '.join(f'sm_{s}' for s in SM_MIN_CUDA)}",
            field="gpu-code",
        )
    need = SM_MIN_CUDA[options.sm]
    if _version_tuple(options.cuda_ver) < _version_tuple(need):
        raise ValidationException(
            f"CompilerOptions gpu-code {options.gpu_code} needs cuda-ver >= {need}, but cuda-ver is {options.cuda_ver}",
            field="gpu-code",
        )
    if not options.trt_ver or not re.fullmatch(r"\d+(\.\d+){0,3}", options.trt_ver):
        raise ValidationException(
            f"CompilerOptions trt-ver must be a version like '7.1.3', got {options.trt_ver!r}", field="trt-ver"
        )


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def ptx_isa_allowed(ptx_version: tuple[int, int], cuda_ver: str) -> bool:
    """Whether a driver from CUDA ``cuda_ver`` loads PTX of ISA ``ptx_version``."""
    return ptx_version <= CUDA_MAX_PTX_ISA[cuda_ver]


def get_target(name: str, options: CompilerOptions | None = None) -> Target:
    """The catalog's reader by name: a name from target_names() plus compiler options."""
    entry = _BY_NAME.get(name)
    if entry is None:
        raise ValidationException(
            f"unknown target {name!r}; valid targets: {', '.join(target_names())}", field="Target"
        )
    return _target(entry, options or CompilerOptions())


def _target(entry: CatalogEntry, options: CompilerOptions) -> Target:
    """One row of the catalog with the request's options over its defaults, checked."""
    opts = _merge(entry.defaults, options)
    cross = _cross_compiler(entry.triple)
    if entry.nvidia:
        check_cuda_combination(opts)
        return _nvidia_target(entry.name, entry.triple, entry.greengrass_arch, opts, cross)
    gpu_only = [key for key, attr in _GPU_KEYS if getattr(opts, attr) is not None]
    if gpu_only:
        raise ValidationException(
            f"CompilerOptions {', '.join(gpu_only)} only apply with Accelerator NVIDIA, and target {entry.name} has none",
            field=gpu_only[0],
        )
    return _cpu_target(entry.name, entry.triple, entry.greengrass_arch, opts, cross)


def resolve_target(request: TargetRequest) -> Target:
    """Resolve a TargetDevice or TargetPlatform choice (as the service took it) to one catalog record."""
    if request.target_device and (request.os or request.arch or request.accelerator):
        raise ValidationException("TargetDevice and TargetPlatform are mutually exclusive", field="TargetDevice")
    if request.target_device:
        if request.target_device not in TARGET_DEVICES:
            raise ValidationException(
                f"unknown TargetDevice {request.target_device!r}; valid: {', '.join(TARGET_DEVICES)}",
                field="TargetDevice",
            )
        if request.compiler_options != CompilerOptions():
            raise ValidationException("CompilerOptions is not allowed with TargetDevice", field="CompilerOptions")
        return _target(_BY_KEY[TargetKey(device=request.target_device)], CompilerOptions())
    if request.os is None and request.arch is None:
        return host_target(request.compiler_options)
    if request.os != "LINUX":
        raise ValidationException(f"TargetPlatform.Os must be LINUX, got {request.os!r}", field="TargetPlatform.Os")
    if request.arch not in ARCHES:
        raise ValidationException(
            f"TargetPlatform.Arch must be one of {', '.join(ARCHES)}, got {request.arch!r}", field="TargetPlatform.Arch"
        )
    if request.accelerator not in (None, "NVIDIA"):
        raise ValidationException(
            f"TargetPlatform.Accelerator must be NVIDIA, got {request.accelerator!r}",
            field="TargetPlatform.Accelerator",
        )
    if request.accelerator == "NVIDIA":
        missing = [
            k
            for k, v in (
                ("gpu-code", request.compiler_options.gpu_code),
                ("trt-ver", request.compiler_options.trt_ver),
                ("cuda-ver", request.compiler_options.cuda_ver),
            )
            if not v
        ]
        if missing:
            raise ValidationException(
                f"Accelerator NVIDIA requires CompilerOptions {', '.join(missing)}", field="CompilerOptions"
            )
    return _target(_BY_KEY[TargetKey(arch=request.arch, accelerator=request.accelerator)], request.compiler_options)


def host_target(options: CompilerOptions | None = None) -> Target:
    """The machine we run on, as a CPU target (the embedded default): for this CPU's own vector ISA and scheduling
    model, unless the options name an mcpu or mattr. An explicit LINUX/X86_64 keeps the portable default instead."""
    arch = _HOST_ARCH.get(platform.machine())
    if arch is None:
        raise ValidationException(f"this machine's architecture {platform.machine()!r} is not a supported target")
    options = options or CompilerOptions()
    mcpu = host_mcpu(host_cpu())
    if mcpu and options.mcpu is None and not options.mattr:
        options = replace(options, mcpu=mcpu)
    return _target(_BY_KEY[TargetKey(arch=arch)], options)
