"""Target records and the one place that resolves a Lookout-style configuration to one.

Raw TVM target dicts are built here and never travel past this module as strings.
"""

from __future__ import annotations

import ast
import json
import platform
import re
from dataclasses import dataclass, field, replace
from enum import Enum

from packager.errors import ValidationException, shown

# The newest PTX ISA each CUDA release's driver/ptxas accepts (PTX ISA release notes).
CUDA_MAX_PTX_ISA: dict[str, tuple[int, int]] = {
    "10.0": (6, 3), "10.1": (6, 4), "10.2": (6, 5),
    "11.0": (7, 0), "11.1": (7, 1), "11.2": (7, 2), "11.3": (7, 3), "11.4": (7, 4), "11.5": (7, 5),
    "11.6": (7, 6), "11.7": (7, 7), "11.8": (7, 8),
    "12.0": (8, 0), "12.1": (8, 1), "12.2": (8, 2), "12.3": (8, 3), "12.4": (8, 4), "12.5": (8, 5),
    "12.6": (8, 5), "12.8": (8, 7), "12.9": (8, 8), "13.0": (9, 0),
}
# The oldest CUDA release that knows each GPU architecture.
SM_MIN_CUDA: dict[int, str] = {
    53: "10.0", 60: "10.0", 61: "10.0", 62: "10.0", 70: "10.0", 72: "10.0", 75: "10.0",
    80: "11.0", 86: "11.1", 87: "11.4", 89: "11.8", 90: "11.8",
}


@dataclass(frozen=True)
class GreengrassPlatform:
    os: str  # "linux"
    architecture: str  # "amd64" | "aarch64"


@dataclass(frozen=True)
class CompilerOptions:
    """Typed form of the service's CompilerOptions string."""

    mcpu: str | None = None
    mattr: tuple[str, ...] = ()
    gpu_code: str | None = None  # "sm_72"
    trt_ver: str | None = None
    cuda_ver: str | None = None
    num_cores: int | None = None
    tuning_trials: int = 0

    @property
    def sm(self) -> int | None:
        return int(self.gpu_code[3:]) if self.gpu_code else None


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
        runtime_needs=RuntimeNeeds(pip=CPU_RUNTIME_PIP, cuda_ver=options.cuda_ver, trt_ver=options.trt_ver,
                                   cuda_runtime=CudaRuntime.WHEEL if wheel_ok else CudaRuntime.DEVICE_BUILD),
        options=options,
    )


_ARCHES = {"X86_64": ("x86_64-linux-gnu", "amd64"), "ARM64": ("aarch64-linux-gnu", "aarch64")}
_CPU_DEFAULTS = {"X86_64": CompilerOptions(mcpu="core-avx2"), "ARM64": CompilerOptions(mattr=("+neon",))}
# Lookout's documented test device: Jetson AGX Xavier on JetPack 4.4-4.5.1 (Carmel cores, Volta sm_72).
JETSON_XAVIER_DEFAULTS = CompilerOptions(mcpu="carmel", mattr=("+neon",), gpu_code="sm_72", cuda_ver="10.2", trt_ver="7.1.3")
TARGET_DEVICES = ("jetson_xavier",)
_GPU_KEYS = (("gpu-code", "gpu_code"), ("cuda-ver", "cuda_ver"), ("trt-ver", "trt_ver"))


def target_names() -> list[str]:
    """Every name get_target() accepts."""
    names = list(TARGET_DEVICES)
    for arch in _ARCHES:
        names += [f"LINUX/{arch}", f"LINUX/{arch}/NVIDIA"]
    return names


def _cross_compiler(triple: str) -> str | None:
    return None if triple == _host_triple() else f"{triple}-gcc"


def _merge(defaults: CompilerOptions, given: CompilerOptions) -> CompilerOptions:
    changes = {k: v for k, v in vars(given).items() if v not in (None, ())}
    return replace(defaults, **changes)


def check_cuda_combination(options: CompilerOptions) -> None:
    """gpu-code and cuda-ver must name a pair that the CUDA driver can load."""
    if options.gpu_code is None or not re.fullmatch(r"sm_\d{2,3}", options.gpu_code):
        raise ValidationException(f"CompilerOptions gpu-code must look like 'sm_72', got {options.gpu_code!r}", field="gpu-code")
    if options.cuda_ver not in CUDA_MAX_PTX_ISA:
        raise ValidationException(
            f"CompilerOptions cuda-ver {options.cuda_ver!r} is not supported; valid: {', '.join(CUDA_MAX_PTX_ISA)}", field="cuda-ver")
    if options.sm not in SM_MIN_CUDA:
        raise ValidationException(
            f"CompilerOptions gpu-code {options.gpu_code!r} is not supported; valid: {', '.join(f'sm_{s}' for s in SM_MIN_CUDA)}",
            field="gpu-code")
    need = SM_MIN_CUDA[options.sm]
    if _version_tuple(options.cuda_ver) < _version_tuple(need):
        raise ValidationException(
            f"CompilerOptions gpu-code {options.gpu_code} needs cuda-ver >= {need}, but cuda-ver is {options.cuda_ver}", field="gpu-code")
    if not options.trt_ver or not re.fullmatch(r"\d+(\.\d+){0,3}", options.trt_ver):
        raise ValidationException(f"CompilerOptions trt-ver must be a version like '7.1.3', got {options.trt_ver!r}", field="trt-ver")


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def ptx_isa_allowed(ptx_version: tuple[int, int], cuda_ver: str) -> bool:
    """Whether a driver from CUDA ``cuda_ver`` loads PTX of ISA ``ptx_version``."""
    return ptx_version <= CUDA_MAX_PTX_ISA[cuda_ver]


def get_target(name: str, options: CompilerOptions | None = None) -> Target:
    """The catalog's one reader: a name from target_names() plus compiler options."""
    options = options or CompilerOptions()
    if name == "jetson_xavier":
        opts = _merge(JETSON_XAVIER_DEFAULTS, options)
        check_cuda_combination(opts)
        return _nvidia_target(name, "aarch64-linux-gnu", "aarch64", opts, _cross_compiler("aarch64-linux-gnu"))
    parts = name.split("/")
    if len(parts) in (2, 3) and parts[0] == "LINUX" and parts[1] in _ARCHES and (len(parts) == 2 or parts[2] == "NVIDIA"):
        triple, arch = _ARCHES[parts[1]]
        opts = _merge(_CPU_DEFAULTS[parts[1]], options)
        if len(parts) == 3:
            check_cuda_combination(opts)
            return _nvidia_target(name, triple, arch, opts, _cross_compiler(triple))
        gpu_only = [key for key, attr in _GPU_KEYS if getattr(opts, attr) is not None]
        if gpu_only:
            raise ValidationException(
                f"CompilerOptions {', '.join(gpu_only)} only apply with Accelerator NVIDIA, and target {name} has none",
                field=gpu_only[0])
        return _cpu_target(name, triple, arch, opts, _cross_compiler(triple))
    raise ValidationException(f"unknown target {name!r}; valid targets: {', '.join(target_names())}", field="Target")


def resolve_target(request: TargetRequest) -> Target:
    """Resolve a TargetDevice or TargetPlatform choice (as the service took it) to one catalog record."""
    if request.target_device and (request.os or request.arch or request.accelerator):
        raise ValidationException("TargetDevice and TargetPlatform are mutually exclusive", field="TargetDevice")
    if request.target_device:
        if request.target_device not in TARGET_DEVICES:
            raise ValidationException(
                f"unknown TargetDevice {request.target_device!r}; valid: {', '.join(TARGET_DEVICES)}", field="TargetDevice")
        if request.compiler_options != CompilerOptions():
            raise ValidationException("CompilerOptions is not allowed with TargetDevice", field="CompilerOptions")
        return get_target(request.target_device)
    if request.os is None and request.arch is None:
        return host_target(request.compiler_options)
    if request.os != "LINUX":
        raise ValidationException(f"TargetPlatform.Os must be LINUX, got {request.os!r}", field="TargetPlatform.Os")
    if request.arch not in _ARCHES:
        raise ValidationException(f"TargetPlatform.Arch must be one of {', '.join(_ARCHES)}, got {request.arch!r}",
                                  field="TargetPlatform.Arch")
    if request.accelerator not in (None, "NVIDIA"):
        raise ValidationException(f"TargetPlatform.Accelerator must be NVIDIA, got {request.accelerator!r}",
                                  field="TargetPlatform.Accelerator")
    if request.accelerator == "NVIDIA":
        missing = [k for k, v in (("gpu-code", request.compiler_options.gpu_code), ("trt-ver", request.compiler_options.trt_ver),
                                  ("cuda-ver", request.compiler_options.cuda_ver)) if not v]
        if missing:
            raise ValidationException(f"Accelerator NVIDIA requires CompilerOptions {', '.join(missing)}", field="CompilerOptions")
        return get_target(f"LINUX/{request.arch}/NVIDIA", request.compiler_options)
    return get_target(f"LINUX/{request.arch}", request.compiler_options)


def host_target(options: CompilerOptions | None = None) -> Target:
    """The machine we run on, as a CPU target (the embedded default): for this CPU's own vector ISA and scheduling
    model, unless the options name an mcpu or mattr. An explicit LINUX/X86_64 keeps the portable default instead."""
    from targets.cpu import host_cpu, host_mcpu

    arch = {"x86_64": "X86_64", "aarch64": "ARM64"}.get(platform.machine())
    if arch is None:
        raise ValidationException(f"this machine's architecture {platform.machine()!r} is not a supported target")
    options = options or CompilerOptions()
    mcpu = host_mcpu(host_cpu())
    if mcpu and options.mcpu is None and not options.mattr:
        options = replace(options, mcpu=mcpu)
    return get_target(f"LINUX/{arch}", options)


MAX_OPTION_CHARS = 64  # mcpu, gpu-code, trt-ver, cuda-ver: names like 'cortex-a72' or 'sm_72'
MAX_MATTR = 64
_INTEGER_RANGES = {"num_cores": (1, 1024), "tuning_trials": (0, 100_000)}  # MetaSchedule trials per build, not per kernel
_OPTION_KEYS = {"mcpu": "mcpu", "mattr": "mattr", "gpu-code": "gpu_code", "trt-ver": "trt_ver", "cuda-ver": "cuda_ver",
                "num-cores": "num_cores", "tuning-trials": "tuning_trials"}


def parse_compiler_options(text: str | None) -> CompilerOptions:
    """Parse the service's CompilerOptions string: real JSON or the docs' single-quoted dict form."""
    if text is None or text == "":
        return CompilerOptions()
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or JSON past the int-digit or nesting limits
        try:
            doc = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):  # TypeError: {[]: 1}
            raise ValidationException(f"CompilerOptions is neither JSON nor a quoted dict: {shown(text)}",
                                      field="CompilerOptions") from None
    if not isinstance(doc, dict):
        raise ValidationException("CompilerOptions must be an object such as {\"mcpu\": \"core-avx2\"}", field="CompilerOptions")
    unknown = sorted((repr(k)[:50] for k in doc if not isinstance(k, str) or k not in _OPTION_KEYS))
    if unknown:
        raise ValidationException(f"CompilerOptions has unknown keys [{', '.join(unknown[:10])}]; valid: {sorted(_OPTION_KEYS)}",
                                  field="CompilerOptions")
    values = {}
    for key, value in doc.items():
        attr = _OPTION_KEYS[key]
        if attr == "mattr":
            if isinstance(value, str):
                value = [v for v in value.split(",") if v]
            if not isinstance(value, list) or len(value) > MAX_MATTR or \
                    not all(isinstance(v, str) and len(v) <= MAX_OPTION_CHARS and re.fullmatch(r"[+-][\w.-]+", v) for v in value):
                raise ValidationException(f"CompilerOptions mattr must be a list of at most {MAX_MATTR} like ['+neon'], "
                                          f"got {shown(value)}", field="mattr")
            value = tuple(value)
        elif attr in _INTEGER_RANGES:
            low, high = _INTEGER_RANGES[attr]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ValidationException(f"CompilerOptions {key} must be an integer in {low}..{high}, got {shown(value)}",
                                          field=key)
        else:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool) or \
                    (isinstance(value, int) and value.bit_length() > 64):
                raise ValidationException(f"CompilerOptions {key} must be a string, got {shown(value)}", field=key)
            value = str(value)
            if len(value) > MAX_OPTION_CHARS:
                raise ValidationException(f"CompilerOptions {key} must be at most {MAX_OPTION_CHARS} characters, "
                                          f"got {shown(value)}", field=key)
            if attr == "mcpu" and not re.fullmatch(r"[\w.-]+", value):
                raise ValidationException(f"CompilerOptions mcpu must be a CPU name like 'core-avx2', got {shown(value)}",
                                          field="mcpu")
        values[attr] = value
    return CompilerOptions(**values)
