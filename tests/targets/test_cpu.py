"""This machine's CPU as LLVM names it, and the vector ISA each target compiles for."""

import pytest

from targets import (
    CompilerOptions,
    TargetRequest,
    get_target,
    host_target,
    resolve_target,
)
from targets.cpu import host_cpu, host_mcpu, parse_cpuinfo, vector_isa

ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 clwb sha_ni vaes

processor\t: 1
vendor_id\t: AuthenticAMD
"""
SAPPHIRE_RAPIDS = """vendor_id\t: GenuineIntel
cpu family\t: 6
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: sse sse2 avx fma avx2 avx512f avx512bw avx512_vnni avx512_vbmi2 amx_bf16 amx_tile amx_int8
"""
SKYLAKE_SP = """vendor_id\t: GenuineIntel
cpu family\t: 6
model name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz
flags\t\t: sse sse2 avx fma avx2 avx512f avx512bw avx512cd
"""
HASWELL = """vendor_id\t: GenuineIntel
cpu family\t: 6
model name\t: Intel(R) Xeon(R) CPU E5-2680 v3
flags\t\t: sse sse2 avx fma avx2
"""
NEOVERSE_N1 = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd0c
"""


@pytest.mark.parametrize(
    "text,machine,mcpu,isa",
    [
        (ZEN3, "x86_64", "znver3", ("avx2", "fma")),
        (SAPPHIRE_RAPIDS, "x86_64", "sapphirerapids", ("amx", "avx512", "avx2", "fma")),
        (SKYLAKE_SP, "x86_64", "skylake-avx512", ("avx512", "avx2", "fma")),
        (HASWELL, "x86_64", "core-avx2", ("avx2", "fma")),
        (NEOVERSE_N1, "aarch64", "neoverse-n1", ("neon",)),
        ("", "x86_64", None, ()),
    ],
)
def test_host_mcpu_names_the_cpu_as_llvm_does(text, machine, mcpu, isa):
    cpu = parse_cpuinfo(text, machine)
    assert host_mcpu(cpu) == mcpu and cpu.isa == isa


def test_cpuinfo_model_comes_from_the_first_processor():
    assert parse_cpuinfo(ZEN3, "x86_64").model == "AMD EPYC 7B13"


def test_no_platform_build_targets_this_cpu_and_an_explicit_platform_stays_portable():
    expected = host_mcpu(host_cpu())
    host = resolve_target(TargetRequest())
    assert host.tvm_target.get("mcpu") == (expected or get_target(host.name).tvm_target.get("mcpu"))
    if host.name == "LINUX/X86_64":
        assert resolve_target(TargetRequest(os="LINUX", arch="X86_64")).tvm_target["mcpu"] == "core-avx2"
    # an mcpu or mattr the user gives wins over detection
    assert host_target(CompilerOptions(mcpu="haswell")).tvm_target["mcpu"] == "haswell"


@pytest.mark.parametrize(
    "name,options,isa,lanes",
    [
        ("LINUX/X86_64", CompilerOptions(), "avx2", 8),
        ("LINUX/X86_64", CompilerOptions(mcpu="znver3"), "avx2", 8),
        ("LINUX/X86_64", CompilerOptions(mcpu="sapphirerapids"), "avx512", 16),
        ("LINUX/X86_64", CompilerOptions(mcpu="znver4"), "avx512", 16),
        ("LINUX/X86_64", CompilerOptions(mcpu="skylake-avx512", mattr=("-avx512f",)), "avx2", 8),
        ("LINUX/X86_64", CompilerOptions(mcpu="x86-64"), "sse", 4),
        ("LINUX/X86_64", CompilerOptions(mcpu="x86-64", mattr=("+avx512f",)), "avx512", 16),
        ("LINUX/ARM64", CompilerOptions(), "neon", 4),
        ("jetson_xavier", None, "neon", 4),
    ],
)
def test_vector_isa_follows_the_target(name, options, isa, lanes):
    got = vector_isa(get_target(name, options).tvm_target)
    assert (got.name, got.lanes) == (isa, lanes)
    assert got.accumulators >= 12


def test_float32_fma_throughput_per_cycle_follows_the_core():
    """Zen 4 splits a 512-bit FMA over its two 256-bit pipes, so AVX-512 doubles Intel's float32 peak, not Zen 4's."""

    def flops_per_cycle(mcpu):
        isa = vector_isa(get_target("LINUX/X86_64", CompilerOptions(mcpu=mcpu)).tvm_target)
        return 2 * isa.lanes * isa.fma_units

    assert flops_per_cycle("znver4") == flops_per_cycle("znver3") == 32
    assert flops_per_cycle("sapphirerapids") == 64
