"""The CPU a build runs on and the vector ISA a target compiles for.

The no-platform build targets this machine's own CPU: ``host_mcpu`` names it the way LLVM does, from
/proc/cpuinfo (reading it costs nothing, where asking TVM's LLVM would import TVM first). ``vector_isa``
says what a TVM target dict compiles for: its float32 lanes per vector register and how many registers
there are, which the default schedules size their vectors and register tiles by.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class HostCpu:
    model: str  # "AMD EPYC 7B13", as /proc/cpuinfo names it
    vendor: str  # "AuthenticAMD" | "GenuineIntel" | "" (ARM)
    family: int | None
    machine: str  # "x86_64" | "aarch64"
    flags: frozenset[str]
    arm_part: int | None = None  # the MIDR part number of an ARM core

    @property
    def isa(self) -> tuple[str, ...]:
        """The vector extensions that matter for float32 work, widest first."""
        names = (
            ("amx_tile", "amx"),
            ("avx512f", "avx512"),
            ("avx2", "avx2"),
            ("fma", "fma"),
            ("sve", "sve"),
            ("asimd", "neon"),
        )
        return tuple(label for flag, label in names if flag in self.flags)


def parse_cpuinfo(text: str, machine: str) -> HostCpu:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if fields:  # the first processor's block is enough
                break
            continue
        fields.setdefault(key.strip(), value.strip())
    flags = frozenset((fields.get("flags") or fields.get("Features") or "").split())
    family = fields.get("cpu family")
    part = fields.get("CPU part")
    model = fields.get("model name") or fields.get("Model") or fields.get("Hardware") or platform.processor() or machine
    return HostCpu(
        model=model,
        vendor=fields.get("vendor_id", ""),
        family=int(family) if family and family.isdigit() else None,
        machine=machine,
        flags=flags,
        arm_part=int(part, 16) if part and part.startswith("0x") else None,
    )


@lru_cache(maxsize=1)
def host_cpu() -> HostCpu:
    try:
        text = CPUINFO.read_text()
    except OSError:
        text = ""
    return parse_cpuinfo(text, platform.machine())


# ARM cores by MIDR part number (Arm Ltd. and NVIDIA designs), as LLVM names them.
_ARM_PARTS = {
    0xD08: "cortex-a72",
    0xD0B: "cortex-a76",
    0xD0C: "neoverse-n1",
    0xD40: "neoverse-v1",
    0xD49: "neoverse-n2",
    0xD4F: "neoverse-v2",
    0x004: "carmel",
}


def host_mcpu(cpu: HostCpu) -> str | None:
    """LLVM's name for ``cpu``, chosen from its flags: None when no name fits better than the portable default."""
    f = cpu.flags
    if cpu.machine == "aarch64":
        return _ARM_PARTS.get(cpu.arm_part) if cpu.arm_part is not None else None
    if cpu.machine != "x86_64":
        return None
    amd = cpu.vendor == "AuthenticAMD"
    if "amx_tile" in f:
        return "sapphirerapids"
    if "avx512f" in f:
        if amd:
            return "znver5" if cpu.family == 26 else "znver4"
        return "icelake-server" if {"avx512_vbmi2", "avx512_vnni"} <= f else "skylake-avx512"
    if "avx2" in f and "fma" in f:
        if amd and cpu.family == 25:
            return "znver3"
        if amd and cpu.family == 23:
            return "znver2" if "clwb" in f else "znver1"
        return "core-avx2"
    return None


@dataclass(frozen=True)
class VectorIsa:
    """What one core's vector unit offers a schedule."""

    name: str  # "avx512" | "avx2" | "sse" | "neon"
    lanes: int  # float32 lanes of one vector register
    registers: int  # architectural vector registers
    fma_units: int  # vector FMA pipes per core (for the peak-FLOP/s figure benchmarks report)

    @property
    def accumulators(self) -> int:
        """Register-tile accumulators a micro-kernel may keep: the rest hold weights and one broadcast."""
        return self.registers - 4


_X86 = {
    "avx512": VectorIsa("avx512", 16, 32, 2),
    "avx2": VectorIsa("avx2", 8, 16, 2),
    "sse": VectorIsa("sse", 4, 16, 2),
}
NEON = VectorIsa("neon", 4, 32, 2)
# Zen 4 runs a 512-bit FMA on its two 256-bit pipes together: one a cycle, the float32 peak of AVX2.
ZEN4_AVX512 = VectorIsa("avx512", 16, 32, 1)

# LLVM CPU names with AVX-512, and those with AVX2, for targets that name an mcpu (mattr can add or remove features).
_AVX512_CPUS = (
    "skylake-avx512",
    "cascadelake",
    "cooperlake",
    "cannonlake",
    "icelake-client",
    "icelake-server",
    "tigerlake",
    "rocketlake",
    "sapphirerapids",
    "emeraldrapids",
    "graniterapids",
    "graniterapids-d",
    "diamondrapids",
    "knl",
    "knm",
    "znver4",
    "znver5",
    "x86-64-v4",
)
_AVX2_CPUS = (
    "haswell",
    "core-avx2",
    "broadwell",
    "skylake",
    "alderlake",
    "raptorlake",
    "meteorlake",
    "arrowlake",
    "arrowlake-s",
    "lunarlake",
    "gracemont",
    "pantherlake",
    "znver1",
    "znver2",
    "znver3",
    "x86-64-v3",
    "bdver4",
)


def vector_isa(tvm_target: dict) -> VectorIsa:
    """The vector ISA a TVM target dict (host part for a GPU target) compiles CPU code for."""
    llvm = tvm_target.get("host", tvm_target)
    triple = str(llvm.get("mtriple", ""))
    mcpu = str(llvm.get("mcpu", ""))
    mattr = [str(a) for a in llvm.get("mattr", [])]
    if triple.startswith(("aarch64", "arm")):
        return NEON
    level = "avx512" if mcpu in _AVX512_CPUS else "avx2" if mcpu in _AVX2_CPUS else "sse"
    if "-avx512f" in mattr and level == "avx512":
        level = "avx2"
    if "+avx512f" in mattr:
        level = "avx512"
    elif "+avx2" in mattr and level == "sse":
        level = "avx2"
    if "-avx2" in mattr or "-avx" in mattr:
        level = "sse"
    return ZEN4_AVX512 if level == "avx512" and mcpu == "znver4" else _X86[level]
