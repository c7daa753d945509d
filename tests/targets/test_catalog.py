"""The target catalog: every target it knows, and every way a request for one is refused."""

import pytest

from packager.errors import ValidationException
from targets import CompilerOptions, CudaRuntime, TargetRequest, get_target, host_target, resolve_target, target_names
from targets.catalog import CUDA_MAX_PTX_ISA, SM_MIN_CUDA, ptx_isa_allowed
from targets.options import ParsedCompilerOptions, parse_compiler_options

NVIDIA = CompilerOptions(gpu_code="sm_86", cuda_ver="11.4", trt_ver="8.2.1")


def test_jetson_xavier_is_the_documented_lookout_device():
    t = resolve_target(TargetRequest(target_device="jetson_xavier"))
    assert t.name == "jetson_xavier" and t.device == "cuda"
    assert t.tvm_target == {
        "kind": "nvptx",
        "mcpu": "sm_72",
        "mtriple": "nvptx64-nvidia-cuda",
        "host": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "carmel", "mattr": ["+neon"]},
    }
    assert (t.options.gpu_code, t.options.cuda_ver, t.options.trt_ver) == ("sm_72", "10.2", "7.1.3")
    assert t.host_triple == "aarch64-linux-gnu" and t.cross_compiler == "aarch64-linux-gnu-gcc" and t.is_cross
    assert (t.greengrass.os, t.greengrass.architecture) == ("linux", "aarch64")
    assert t.runtime_needs.cuda_ver == "10.2" and t.runtime_needs.trt_ver == "7.1.3"
    # JetPack 4's CUDA 10.2 cannot load the wheel's CUDA-13 runtime: it is built on the device.
    assert t.runtime_needs.cuda_runtime is CudaRuntime.DEVICE_BUILD
    assert t.max_ptx_isa == (6, 5)


def test_x86_64_cpu_defaults_to_core_avx2_and_takes_mcpu_mattr():
    t = resolve_target(TargetRequest(os="LINUX", arch="X86_64"))
    assert t.tvm_target == {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "core-avx2"}
    assert t.device == "cpu" and t.greengrass.architecture == "amd64" and t.cross_compiler is None
    t = resolve_target(
        TargetRequest(
            os="LINUX",
            arch="X86_64",
            compiler_options=parse_compiler_options('{"mcpu": "skylake-avx512", "mattr": ["+avx512f"]}').options,
        )
    )
    assert t.tvm_target["mcpu"] == "skylake-avx512" and t.tvm_target["mattr"] == ["+avx512f"]


def test_arm64_cpu_defaults_to_neon_and_cross_links_with_debian_gcc():
    t = resolve_target(TargetRequest(os="LINUX", arch="ARM64"))
    assert t.tvm_target == {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}
    assert t.cross_compiler == "aarch64-linux-gnu-gcc" and t.greengrass.architecture == "aarch64"
    assert t.runtime_needs.cuda_runtime is None and t.max_ptx_isa is None
    t = resolve_target(
        TargetRequest(os="LINUX", arch="ARM64", compiler_options=CompilerOptions(mcpu="cortex-a72", num_cores=4))
    )
    assert t.tvm_target == {
        "kind": "llvm",
        "mtriple": "aarch64-linux-gnu",
        "mcpu": "cortex-a72",
        "mattr": ["+neon"],
        "num-cores": 4,
    }


@pytest.mark.parametrize(
    "arch,triple,gg_arch", [("X86_64", "x86_64-linux-gnu", "amd64"), ("ARM64", "aarch64-linux-gnu", "aarch64")]
)
def test_nvidia_accelerator_on_either_architecture(arch, triple, gg_arch):
    t = resolve_target(TargetRequest(os="LINUX", arch=arch, accelerator="NVIDIA", compiler_options=NVIDIA))
    assert t.name == f"LINUX/{arch}/NVIDIA" and t.device == "cuda"
    assert t.tvm_target["kind"] == "nvptx" and t.tvm_target["mcpu"] == "sm_86"
    assert t.tvm_target["host"]["mtriple"] == triple and t.greengrass.architecture == gg_arch
    assert t.max_ptx_isa == (7, 4) and t.runtime_needs.trt_ver == "8.2.1"


def test_cuda_13_uses_the_wheels_own_cuda_runtime():
    t = get_target("LINUX/X86_64/NVIDIA", CompilerOptions(gpu_code="sm_90", cuda_ver="13.0", trt_ver="10.13"))
    assert t.runtime_needs.cuda_runtime is CudaRuntime.WHEEL


def test_every_listed_name_resolves():
    for name in target_names():
        t = get_target(name, NVIDIA if name.endswith("NVIDIA") else None)
        assert t.name == name


def test_no_platform_is_this_machine():
    assert resolve_target(TargetRequest()).name == host_target().name
    assert not host_target().is_cross


def test_ptx_table_is_monotonic_and_bounds_isa():
    isas = [CUDA_MAX_PTX_ISA[v] for v in sorted(CUDA_MAX_PTX_ISA, key=lambda v: tuple(map(int, v.split("."))))]
    assert isas == sorted(isas)
    assert ptx_isa_allowed((6, 5), "10.2") and not ptx_isa_allowed((7, 0), "10.2") and ptx_isa_allowed((7, 8), "12.0")
    # Every GPU the catalog accepts has at least one CUDA release that can load code for it.
    assert all(min_cuda in CUDA_MAX_PTX_ISA for min_cuda in SM_MIN_CUDA.values())


@pytest.mark.parametrize(
    "request_, field, words",
    [
        (TargetRequest(target_device="jetson_nano"), "TargetDevice", ["jetson_xavier"]),
        (
            TargetRequest(target_device="jetson_xavier", os="LINUX", arch="ARM64"),
            "TargetDevice",
            ["mutually exclusive"],
        ),
        (
            TargetRequest(target_device="jetson_xavier", compiler_options=CompilerOptions(gpu_code="sm_72")),
            "CompilerOptions",
            ["not allowed"],
        ),
        (TargetRequest(os="WINDOWS", arch="X86_64"), "TargetPlatform.Os", ["LINUX"]),
        (TargetRequest(os="LINUX", arch="RISCV64"), "TargetPlatform.Arch", ["X86_64", "ARM64"]),
        (TargetRequest(os="LINUX", arch="X86_64", accelerator="AMD"), "TargetPlatform.Accelerator", ["NVIDIA"]),
        (
            TargetRequest(
                os="LINUX", arch="ARM64", accelerator="NVIDIA", compiler_options=CompilerOptions(gpu_code="sm_72")
            ),
            "CompilerOptions",
            ["trt-ver", "cuda-ver"],
        ),
        (
            TargetRequest(
                os="LINUX",
                arch="X86_64",
                accelerator="NVIDIA",
                compiler_options=CompilerOptions(gpu_code="sm72", cuda_ver="11.4", trt_ver="8"),
            ),
            "gpu-code",
            ["sm_72"],
        ),
        (
            TargetRequest(
                os="LINUX",
                arch="X86_64",
                accelerator="NVIDIA",
                compiler_options=CompilerOptions(gpu_code="sm_99", cuda_ver="12.2", trt_ver="8"),
            ),
            "gpu-code",
            ["sm_99", "sm_72"],
        ),
        (
            TargetRequest(
                os="LINUX",
                arch="X86_64",
                accelerator="NVIDIA",
                compiler_options=CompilerOptions(gpu_code="sm_86", cuda_ver="9.2", trt_ver="8"),
            ),
            "cuda-ver",
            ["9.2", "10.2"],
        ),
        (
            TargetRequest(
                os="LINUX",
                arch="X86_64",
                accelerator="NVIDIA",
                compiler_options=CompilerOptions(gpu_code="sm_90", cuda_ver="11.4", trt_ver="8"),
            ),
            "gpu-code",
            ["sm_90", "cuda-ver >= 11.8", "11.4"],
        ),
        (
            TargetRequest(
                os="LINUX",
                arch="ARM64",
                accelerator="NVIDIA",
                compiler_options=CompilerOptions(gpu_code="sm_87", cuda_ver="10.2", trt_ver="7.1.3"),
            ),
            "gpu-code",
            ["sm_87", "cuda-ver"],
        ),
        (
            TargetRequest(
                os="LINUX",
                arch="X86_64",
                accelerator="NVIDIA",
                compiler_options=CompilerOptions(gpu_code="sm_86", cuda_ver="11.4", trt_ver="eight"),
            ),
            "trt-ver",
            ["7.1.3"],
        ),
        (
            TargetRequest(os="LINUX", arch="ARM64", compiler_options=CompilerOptions(gpu_code="sm_72")),
            "gpu-code",
            ["Accelerator NVIDIA"],
        ),
        (
            TargetRequest(os="LINUX", arch="X86_64", compiler_options=CompilerOptions(trt_ver="8.2")),
            "trt-ver",
            ["Accelerator NVIDIA"],
        ),
    ],
)
def test_rejections_name_the_field_and_the_valid_choices(request_, field, words):
    with pytest.raises(ValidationException) as info:
        resolve_target(request_)
    assert info.value.field == field
    for word in words:
        assert word in info.value.message


def test_unknown_target_name_lists_the_valid_ones():
    with pytest.raises(
        ValidationException, match="valid targets: jetson_xavier, LINUX/X86_64, LINUX/X86_64/NVIDIA, LINUX/ARM64"
    ):
        get_target("LINUX/MIPS")


def test_impossible_gpu_code_for_cuda_ver_names_both():
    with pytest.raises(ValidationException) as info:
        get_target("LINUX/X86_64/NVIDIA", CompilerOptions(gpu_code="sm_86", cuda_ver="10.2", trt_ver="7.1.3"))
    assert "sm_86" in info.value.message and "10.2" in info.value.message and "11.1" in info.value.message


@pytest.mark.parametrize(
    "text,expected",
    [
        (None, ParsedCompilerOptions(CompilerOptions())),
        ("", ParsedCompilerOptions(CompilerOptions())),
        (
            '{"mcpu": "cortex-a72", "mattr": "+neon,+crc"}',
            ParsedCompilerOptions(CompilerOptions(mcpu="cortex-a72", mattr=("+neon", "+crc"))),
        ),
        (
            "{'gpu-code': 'sm_72', 'trt-ver': '7.1.3', 'cuda-ver': 10.2}",
            ParsedCompilerOptions(CompilerOptions(gpu_code="sm_72", trt_ver="7.1.3", cuda_ver="10.2")),
        ),
        (
            '{"num-cores": 4, "tuning-trials": 16}',
            ParsedCompilerOptions(CompilerOptions(num_cores=4), tuning_trials=16),
        ),
    ],
)
def test_compiler_options_parse_json_and_the_docs_quoted_form(text, expected):
    assert parse_compiler_options(text) == expected


@pytest.mark.parametrize(
    "text,field",
    [
        ("{mcpu", "CompilerOptions"),
        ("[1]", "CompilerOptions"),
        ('{"opt-level": 3}', "CompilerOptions"),
        ('{"mattr": ["neon"]}', "mattr"),
        ('{"num-cores": 0}', "num-cores"),
        ('{"tuning-trials": -1}', "tuning-trials"),
        ('{"mcpu": "a b"}', "mcpu"),
        ('{"gpu-code": true}', "gpu-code"),
    ],
)
def test_bad_compiler_options_name_the_key(text, field):
    with pytest.raises(ValidationException) as info:
        parse_compiler_options(text)
    assert info.value.field == field
