"""CompilerOptions parsed once: the target's options and the build's tuning trials part at the parse; the catalog is
a table found by typed key."""

import dataclasses

import pytest

from packager.errors import ValidationException
from targets import CompilerOptions, Target, TargetRequest, catalog, get_target, resolve_target, target_names
from targets.options import ParsedCompilerOptions, check_tuning_trials, format_compiler_options, parse_compiler_options


def test_tuning_trials_is_not_a_target_option():
    assert "tuning_trials" not in {f.name for f in dataclasses.fields(CompilerOptions)}
    assert "tuning_trials" not in {f.name for f in dataclasses.fields(Target)}
    parsed = parse_compiler_options('{"mcpu": "znver3", "tuning-trials": 64}')
    assert parsed == ParsedCompilerOptions(CompilerOptions(mcpu="znver3"), tuning_trials=64)
    target = resolve_target(TargetRequest(os="LINUX", arch="X86_64", compiler_options=parsed.options))
    assert target == resolve_target(
        TargetRequest(os="LINUX", arch="X86_64", compiler_options=CompilerOptions(mcpu="znver3"))
    )


@pytest.mark.parametrize(
    "text",
    [
        '{"mcpu": "cortex-a72", "mattr": ["+neon", "+crc"], "num-cores": 4, "tuning-trials": 16}',
        "{'gpu-code': 'sm_72', 'trt-ver': '7.1.3', 'cuda-ver': '10.2'}",
        '{"tuning-trials": 8}',
    ],
)
def test_the_formatted_string_parses_back_to_the_same_options(text):
    parsed = parse_compiler_options(text)
    assert parse_compiler_options(format_compiler_options(parsed)) == parsed


def test_no_options_format_to_none():
    assert format_compiler_options(ParsedCompilerOptions()) is None


@pytest.mark.parametrize("value", [-1, 100_001, True, "8"])
def test_tuning_trials_range_names_the_key(value):
    with pytest.raises(ValidationException) as info:
        check_tuning_trials(value)
    assert info.value.field == "tuning-trials" and "0..100000" in info.value.message


def test_every_catalog_row_is_found_by_name_and_by_its_typed_key():
    nvidia = CompilerOptions(gpu_code="sm_72", cuda_ver="10.2", trt_ver="7.1.3")
    assert target_names() == [entry.name for entry in catalog.CATALOG]
    for entry in catalog.CATALOG:
        options = nvidia if entry.nvidia and entry.key.device is None else CompilerOptions()
        request = TargetRequest(
            target_device=entry.key.device,
            os=None if entry.key.device else "LINUX",
            arch=entry.key.arch,
            accelerator=entry.key.accelerator,
            compiler_options=options,
        )
        assert resolve_target(request) == get_target(entry.name, options)


def test_resolve_target_looks_rows_up_by_key_not_by_a_formatted_name(monkeypatch):
    def no_names(*args):
        raise AssertionError("resolve_target went through a target name")

    monkeypatch.setattr(catalog, "get_target", no_names)
    assert resolve_target(TargetRequest(os="LINUX", arch="ARM64")).name == "LINUX/ARM64"
    assert resolve_target(TargetRequest(target_device="jetson_xavier")).name == "jetson_xavier"
