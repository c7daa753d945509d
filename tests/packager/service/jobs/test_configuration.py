"""The packaging configuration is parsed once, at the API: the worker rebuilds the typed object from the job record
without running the validator, and a typed target choice turns back into the same service members."""

import time

import pytest

from packager.service.jobs import configuration, validation, worker
from packager.service.jobs.configuration import PackagingConfiguration, load_configuration, parse_configuration
from packager.service.jobs.members import target_members
from packager.service.jobs.records import JobRecord, ModelRecord
from targets import CompilerOptions, TargetRequest
from tests.packager.service.jobs.support import gg_config

CONFIGURATIONS = [
    gg_config(
        TargetPlatform={"Os": "LINUX", "Arch": "X86_64"},
        CompilerOptions="{'mcpu': 'znver3', 'tuning-trials': 12}",
        Tags=[{"Key": "team", "Value": "vision"}],
        ComponentVersion="1.2.3",
        ComponentDescription="tiny",
    ),
    gg_config(TargetDevice="jetson_xavier"),
    gg_config(
        TargetPlatform={"Os": "LINUX", "Arch": "ARM64", "Accelerator": "NVIDIA"},
        CompilerOptions='{"gpu-code": "sm_87", "cuda-ver": "11.4", "trt-ver": "8.5.2"}',
    ),
    {"Greengrass": {"ComponentName": "com.example.Local", "CompilerOptions": '{"tuning-trials": 4}'}},
]


@pytest.mark.parametrize("doc", CONFIGURATIONS)
def test_the_loader_rebuilds_what_the_parser_made(doc):
    parsed = parse_configuration(doc)
    assert isinstance(parsed, PackagingConfiguration)
    assert load_configuration(doc) == parsed


def test_tuning_trials_sit_beside_the_target():
    config = parse_configuration(CONFIGURATIONS[0])
    assert config.tuning_trials == 12 and config.target.options == CompilerOptions(mcpu="znver3")


@pytest.mark.parametrize(
    "request_,trials",
    [
        (TargetRequest(target_device="jetson_xavier"), 0),
        (
            TargetRequest(
                os="LINUX", arch="ARM64", compiler_options=CompilerOptions(mcpu="cortex-a72", mattr=("+neon",))
            ),
            32,
        ),
        (
            TargetRequest(
                os="LINUX",
                arch="X86_64",
                accelerator="NVIDIA",
                compiler_options=CompilerOptions(gpu_code="sm_86", cuda_ver="11.8", trt_ver="8.5.2"),
            ),
            0,
        ),
        (TargetRequest(), 5),
    ],
)
def test_a_typed_target_choice_turns_back_into_the_same_members(request_, trials):
    config = parse_configuration({"Greengrass": {"ComponentName": "c", **target_members(request_, trials)}})
    assert (config.target_request, config.tuning_trials) == (request_, trials)


def test_the_worker_never_runs_the_validator(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError("the worker validated a configuration the API had already parsed")

    for module, name in (
        (configuration, "parse_configuration"),
        (validation, "validate_input"),
        (validation, "validate_shape"),
    ):
        monkeypatch.setattr(module, name, refuse)
    stored = CONFIGURATIONS[0]
    job = JobRecord(
        seq=1,
        project="p",
        name="job-1",
        model_version="1",
        configuration=stored,
        description=None,
        status="RUNNING",
        status_message=None,
        created=time.time(),
        updated=time.time(),
        component_name="com.example.Tiny",
        component_version="1.2.3",
        component_arn=None,
        register=False,
        pid=None,
        pid_start=None,
        heartbeat=None,
    )
    model = ModelRecord(
        seq=1,
        project="p",
        version=1,
        created=time.time(),
        description=None,
        arn="arn:model",
        model_file="models/m.onnx",
        spec_file=None,
    )
    request = worker.packaging_request(tmp_path, job, model)
    assert request.target.name == "LINUX/X86_64" and request.tuning_trials == 12
    assert request.tags == {"team": "vision"} and request.s3_location.prefix == "models"
