"""build's target and device flags: the same catalog as the jobs API, one-line errors naming the flag."""

import argparse

import pytest

from compilers.tvm_compile import require_toolchain
from packager.build.remote import RemoteDevice, remote_device
from packager.cli import main
from packager.commands.arguments import target_from_args
from packager.commands.build import add_arguments
from packager.errors import CompilationError, ValidationException
from targets import TargetRequest, get_target, resolve_target
from targets.emulator import free_port
from targets.options import parse_compiler_options


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_flags_resolve_through_the_jobs_apis_catalog_path():
    assert target_from_args(_args("--target-device", "jetson_xavier")).target == resolve_target(
        TargetRequest(target_device="jetson_xavier")
    )
    assert target_from_args(_args("--target-platform", "LINUX/ARM64")).target.name == "LINUX/ARM64"
    options = '{"gpu-code": "sm_86", "cuda-ver": "11.4", "trt-ver": "8.2.1", "mcpu": "skylake"}'
    t = target_from_args(
        _args("--target-platform", "LINUX/X86_64", "--accelerator", "NVIDIA", "--compiler-options", options)
    ).target
    assert t == resolve_target(
        TargetRequest(
            os="LINUX", arch="X86_64", accelerator="NVIDIA", compiler_options=parse_compiler_options(options).options
        )
    )
    assert t.tvm_target["host"]["mcpu"] == "skylake"
    assert target_from_args(_args()).target.name == resolve_target(TargetRequest()).name


@pytest.mark.parametrize(
    "argv,flag,words",
    [
        (["--target-device", "jetson_nano"], "--target-device", ["jetson_xavier"]),
        (["--target-platform", "ARM64"], "--target-platform", ["LINUX/ARM64"]),
        (["--target-platform", "LINUX/RISCV64"], "--target-platform", ["X86_64, ARM64"]),
        (["--target-platform", "WINDOWS/X86_64"], "--target-platform", ["LINUX"]),
        (["--accelerator", "NVIDIA"], "--accelerator", ["--target-platform"]),
        (["--target-platform", "LINUX/ARM64", "--accelerator", "AMD"], "--accelerator", ["NVIDIA"]),
        (
            ["--target-platform", "LINUX/ARM64", "--accelerator", "NVIDIA"],
            "--compiler-options",
            ["gpu-code", "trt-ver", "cuda-ver"],
        ),
        (["--target-device", "jetson_xavier", "--compiler-options", "{}"], "--compiler-options", ["not allowed"]),
        (["--target-platform", "LINUX/ARM64", "--compiler-options", "{mcpu"], "--compiler-options", ["neither JSON"]),
        (
            [
                "--target-platform",
                "LINUX/X86_64",
                "--accelerator",
                "NVIDIA",
                "--compiler-options",
                '{"gpu-code": "sm_90", "cuda-ver": "10.2", "trt-ver": "7.1.3"}',
            ],
            "--compiler-options",
            ["sm_90", "10.2"],
        ),
    ],
)
def test_bad_target_flags_name_the_flag(argv, flag, words):
    with pytest.raises(ValidationException) as info:
        target_from_args(_args(*argv))
    assert info.value.field == flag and info.value.message.startswith(flag)
    for word in words:
        assert word in info.value.message


def test_bad_flags_are_one_line_errors_with_exit_code_2(capsys):
    assert main(["build", "--target-device", "jetson_nano"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == "error: ValidationException: --target-device: unknown TargetDevice 'jetson_nano'; valid: jetson_xavier"
    )


def test_device_flags():
    assert remote_device("10.0.0.5:9090", None, None) == RemoteDevice("10.0.0.5", 9090)
    assert remote_device(None, "127.0.0.1:9190", "jetson-xavier") == RemoteDevice(
        "127.0.0.1", 9190, key="jetson-xavier"
    )
    assert remote_device(None, None, None) is None
    assert RemoteDevice("127.0.0.1", 9190, key="jetson-xavier").label == "rpc tracker 127.0.0.1:9190 key jetson-xavier"


@pytest.mark.parametrize(
    "flags,field",
    [
        (("9190", None, None), "--device-rpc"),
        (("host:99999", None, None), "--device-rpc"),
        (("a:1", "b:2", "k"), "--device-rpc"),
        ((None, "127.0.0.1:9190", None), "--rpc-key"),
        ((None, None, "jetson-xavier"), "--rpc-key"),
        ((None, "127.0.0.1:9190", "a key"), "--rpc-key"),
    ],
)
def test_bad_device_flags(flags, field):
    with pytest.raises(ValidationException) as info:
        remote_device(*flags)
    assert info.value.field == field


def test_missing_cross_linker_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CompilationError, match="install it with: apt-get install -y gcc-aarch64-linux-gnu"):
        require_toolchain(get_target("LINUX/ARM64"))
    with pytest.raises(CompilationError, match="aarch64-linux-gnu-gcc"):
        require_toolchain(get_target("jetson_xavier"))


@pytest.mark.slow
def test_cross_build_without_a_device_succeeds_and_says_not_measured(tiny_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PACKAGER_HOME", str(tmp_path / "packager-home"))  # build registers and runs a job there
    code = main(
        [
            "build",
            "--model",
            str(tiny_model[0]),
            "--model-spec",
            str(tiny_model[1]),
            "--target-platform",
            "LINUX/ARM64",
            "--benchmark-runs",
            "2",
            "--output",
            str(tmp_path / "gg"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "latency:     not measured: no device (neither TVM nor ONNX Runtime was timed)" in out
    assert "TVM/ORT:     not measured: no device" in out


@pytest.mark.slow
def test_unreachable_device_is_a_clear_error(tiny_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PACKAGER_HOME", str(tmp_path / "packager-home"))  # build registers and runs a job there
    port = free_port()
    code = main(
        [
            "build",
            "--model",
            str(tiny_model[0]),
            "--model-spec",
            str(tiny_model[1]),
            "--target-platform",
            "LINUX/ARM64",
            "--device-rpc",
            f"127.0.0.1:{port}",
            "--output",
            str(tmp_path / "gg"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and err.startswith(f"error: ValidationException: cannot reach the device at rpc 127.0.0.1:{port}")
