"""The service-model validator and the configuration rules, including hypothesis fuzzing of invalid requests."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packager.errors import ValidationException
from packager.service.jobs import api
from packager.service.jobs.configuration import parse_configuration
from packager.service.jobs.validation import validate_input
from tests.packager.service.jobs.support import gg_config


def _fails(operation: str, params: dict, field: str) -> ValidationException:
    with pytest.raises(ValidationException) as info:
        validate_input(operation, params)
    assert info.value.field == field, info.value.message
    return info.value


def _start(**config_extra) -> dict:
    return {"ProjectName": "p", "ModelVersion": "1", "Configuration": gg_config(**config_extra)}


def test_valid_request_passes_and_resolves():
    params = _start(
        TargetPlatform={"Os": "LINUX", "Arch": "X86_64"},
        CompilerOptions="{'mcpu': 'skylake'}",
        Tags=[{"Key": "team", "Value": "vision é"}],
        ComponentVersion="1.2.3",
        ComponentDescription="Tiny (test)",
    )
    validate_input("StartModelPackagingJob", params)
    config = parse_configuration(params["Configuration"])
    assert config.target.name == "LINUX/X86_64"
    assert config.target.tvm_target["mcpu"] == "skylake"
    assert config.tags == {"team": "vision é"}
    assert config.component_version == "1.2.3"
    assert config.s3_location.bucket == "packager-test-bucket" and config.s3_location.prefix == "models"


@pytest.mark.parametrize(
    "params, field",
    [
        ({"ModelVersion": "1", "Configuration": gg_config()}, "ProjectName"),
        ({"ProjectName": "p", "Configuration": gg_config()}, "ModelVersion"),
        ({"ProjectName": "p", "ModelVersion": "1"}, "Configuration"),
        ({"ProjectName": "-p", "ModelVersion": "1", "Configuration": gg_config()}, "ProjectName"),
        ({"ProjectName": "p" * 256, "ModelVersion": "1", "Configuration": gg_config()}, "ProjectName"),
        ({"ProjectName": "p", "ModelVersion": "0", "Configuration": gg_config()}, "ModelVersion"),
        ({"ProjectName": "p", "ModelVersion": "latest2", "Configuration": gg_config()}, "ModelVersion"),
        ({"ProjectName": "p", "ModelVersion": 1, "Configuration": gg_config()}, "ModelVersion"),
        ({**_start(), "JobName": "job_1"}, "JobName"),
        ({**_start(), "Description": "semi;colon is fine but a tab\tis not"}, "Description"),
        ({**_start(), "ClientToken": "x" * 65}, "ClientToken"),
        ({**_start(), "Extra": 1}, "Extra"),
        ({"ProjectName": "p", "ModelVersion": "1", "Configuration": {}}, "Configuration.Greengrass"),
        (_start(ComponentName="bad name"), "Configuration.Greengrass.ComponentName"),
        (_start(ComponentVersion="1.0"), "Configuration.Greengrass.ComponentVersion"),
        (_start(ComponentVersion="1234567.0.0"), "Configuration.Greengrass.ComponentVersion"),
        (_start(TargetDevice="jetson_nano"), "Configuration.Greengrass.TargetDevice"),
        (_start(TargetPlatform={"Os": "WINDOWS", "Arch": "X86_64"}), "Configuration.Greengrass.TargetPlatform.Os"),
        (_start(TargetPlatform={"Os": "LINUX"}), "Configuration.Greengrass.TargetPlatform.Arch"),
        (
            _start(TargetPlatform={"Os": "LINUX", "Arch": "X86_64", "Accelerator": "AMD"}),
            "Configuration.Greengrass.TargetPlatform.Accelerator",
        ),
        (_start(CompilerOptions="{}"[:1]), "Configuration.Greengrass.CompilerOptions"),
        (_start(Tags=[{"Key": "k"}]), "Configuration.Greengrass.Tags[0].Value"),
        (_start(Tags=[{"Key": "", "Value": "v"}]), "Configuration.Greengrass.Tags[0].Key"),
        (_start(Tags=[{"Key": "k", "Value": "#"}]), "Configuration.Greengrass.Tags[0].Value"),
        (_start(Tags=[{"Key": "k", "Value": "v"}] * 201), "Configuration.Greengrass.Tags"),
        (_start(Tags={"k": "v"}), "Configuration.Greengrass.Tags"),
    ],
)
def test_shape_violations_name_the_field(params, field):
    _fails("StartModelPackagingJob", params, field)


def test_bucket_and_prefix_rules():
    config = gg_config()
    config["Greengrass"]["S3OutputLocation"] = {"Bucket": "ab"}
    _fails(
        "StartModelPackagingJob",
        {"ProjectName": "p", "ModelVersion": "1", "Configuration": config},
        "Configuration.Greengrass.S3OutputLocation.Bucket",
    )
    config["Greengrass"]["S3OutputLocation"] = {"Bucket": "abc", "Prefix": "/leading-slash"}
    _fails(
        "StartModelPackagingJob",
        {"ProjectName": "p", "ModelVersion": "1", "Configuration": config},
        "Configuration.Greengrass.S3OutputLocation.Prefix",
    )
    config["Greengrass"]["S3OutputLocation"] = {"Prefix": "x"}
    _fails(
        "StartModelPackagingJob",
        {"ProjectName": "p", "ModelVersion": "1", "Configuration": config},
        "Configuration.Greengrass.S3OutputLocation.Bucket",
    )


def test_page_size_bounds():
    _fails("ListProjects", {"MaxResults": 0}, "MaxResults")
    _fails("ListProjects", {"MaxResults": 101}, "MaxResults")
    _fails("ListProjects", {"MaxResults": True}, "MaxResults")
    _fails("ListProjects", {"NextToken": "not-base64-alphabet!"}, "NextToken")
    validate_input("ListProjects", {"MaxResults": 100})


@pytest.mark.parametrize(
    "extra, field",
    [
        (
            {"TargetDevice": "jetson_xavier", "TargetPlatform": {"Os": "LINUX", "Arch": "ARM64"}},
            "Configuration.Greengrass.TargetDevice",
        ),
        (
            {"TargetDevice": "jetson_xavier", "CompilerOptions": "{'gpu-code': 'sm_72'}"},
            "Configuration.Greengrass.CompilerOptions",
        ),
        ({"TargetDevice": "jetson_xavier", "CompilerOptions": "{ }"}, "Configuration.Greengrass.CompilerOptions"),
        (
            {
                "TargetPlatform": {"Os": "LINUX", "Arch": "ARM64", "Accelerator": "NVIDIA"},
                "CompilerOptions": "{'gpu-code': 'sm_72'}",
            },
            "Configuration.Greengrass.CompilerOptions",
        ),
        (
            {"TargetPlatform": {"Os": "LINUX", "Arch": "ARM64", "Accelerator": "NVIDIA"}},
            "Configuration.Greengrass.CompilerOptions",
        ),
        (
            {"TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}, "CompilerOptions": "not json"},
            "Configuration.Greengrass.CompilerOptions",
        ),
        (
            {"TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}, "CompilerOptions": '{"bogus": 1}'},
            "Configuration.Greengrass.CompilerOptions",
        ),
        (
            {"TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}, "CompilerOptions": '{"mcpu": "a b"}'},
            "Configuration.Greengrass.CompilerOptions.mcpu",
        ),
        ({"Tags": [{"Key": "k", "Value": "1"}, {"Key": "k", "Value": "2"}]}, "Configuration.Greengrass.Tags[1].Key"),
    ],
)
def test_cross_field_rules(extra, field):
    params = _start(**extra)
    validate_input("StartModelPackagingJob", params)
    with pytest.raises(ValidationException) as info:
        parse_configuration(params["Configuration"])
    assert info.value.field == field, info.value.message
    assert field.rsplit(".", 1)[-1].split("[")[0] in info.value.message


def test_nvidia_accepts_json_and_single_quoted_options():
    for text in (
        '{"gpu-code": "sm_72", "trt-ver": "7.1.3", "cuda-ver": "10.2"}',
        "{'gpu-code': 'sm_72', 'trt-ver': '7.1.3', 'cuda-ver': '10.2'}",
    ):
        config = parse_configuration(
            gg_config(TargetPlatform={"Os": "LINUX", "Arch": "ARM64", "Accelerator": "NVIDIA"}, CompilerOptions=text)
        )
        assert config.target.device == "cuda" and config.target.options.gpu_code == "sm_72"
    assert parse_configuration(gg_config(TargetDevice="jetson_xavier")).target.name == "jetson_xavier"


# Fuzzing: every generated request breaks at least one rule; all must be rejected before a job exists.
_ALNUM = string.ascii_letters + string.digits


def _with_bad_char(allowed: str, min_size: int = 0):
    good = st.text(alphabet=allowed, min_size=min_size, max_size=10)
    bad = st.characters(blacklist_characters=allowed, blacklist_categories=("Cs",))
    return st.tuples(good, bad, good).map("".join)


def _too_long(allowed: str, limit: int):
    return st.text(alphabet=allowed, min_size=limit + 1, max_size=limit + 20)


# Tag keys and values allow \p{L}\p{Z}\p{N} and _.:/=+-@; punctuation, symbols and controls otherwise break them.
_TAG_BAD = st.tuples(
    st.text(alphabet=_ALNUM, max_size=5),
    st.characters(whitelist_categories=("P", "S", "Cc"), blacklist_characters="_.:/=+-@"),
    st.text(alphabet=_ALNUM, max_size=5),
).map("".join)

_MUTATIONS = {
    "ProjectName": st.one_of(
        st.just(""),
        _with_bad_char(_ALNUM + "_-", 1),
        _too_long(_ALNUM, 255),
        st.sampled_from("_-").map(lambda c: c + "p"),
        st.integers(),
    ),
    "ModelVersion": st.one_of(
        st.just(""),
        st.just("0"),
        st.from_regex(r"0[0-9]{1,5}", fullmatch=True),
        _with_bad_char(string.digits, 1),
        st.just("LATEST"),
        _too_long(string.digits[1:], 10),
    ),
    "JobName": st.one_of(st.just(""), _with_bad_char(_ALNUM + "-"), _too_long(_ALNUM, 64)),
    "Description": st.one_of(st.just(""), _with_bad_char(_ALNUM + "-_. ()':,;?"), _too_long(_ALNUM, 256)),
    "ClientToken": st.one_of(st.just(""), _with_bad_char(_ALNUM + "-"), _too_long(_ALNUM, 64)),
    "ComponentName": st.one_of(st.just(""), _with_bad_char(_ALNUM + "-_."), _too_long(_ALNUM, 128)),
    "ComponentVersion": st.one_of(
        st.from_regex(r"[0-9]{1,3}\.[0-9]{1,3}", fullmatch=True),
        st.from_regex(r"[0-9]{7}\.[0-9]\.[0-9]", fullmatch=True),
        _with_bad_char("0123456789."),
    ),
    "ComponentDescription": st.one_of(st.just(""), _with_bad_char(_ALNUM + "-_. ()':,;?"), _too_long(_ALNUM, 256)),
    "Bucket": st.one_of(st.text(alphabet=_ALNUM, max_size=2), _with_bad_char(_ALNUM + ".-_", 3), _too_long(_ALNUM, 63)),
    "Prefix": st.one_of(st.sampled_from("/ ").map(lambda c: c + "x"), _with_bad_char(_ALNUM + "/!_.*'()-", 1)),
    "TargetDevice": st.text(max_size=20).filter(lambda s: s != "jetson_xavier"),
    "Os": st.text(max_size=10).filter(lambda s: s != "LINUX"),
    "Arch": st.text(max_size=10).filter(lambda s: s not in ("ARM64", "X86_64")),
    "CompilerOptions": st.one_of(
        st.text(max_size=2),
        _too_long("a", 1024),
        st.just("{'mcpu': 'x', 'nope': 1}"),
        st.just("[1, 2]"),
        st.just("{'mattr': 'neon'}"),
        st.just("{'num-cores': 0}"),
    ),
    "Tags": st.one_of(
        st.lists(st.fixed_dictionaries({"Key": st.just("k"), "Value": st.just("v")}), min_size=201, max_size=201),
        st.fixed_dictionaries({"Key": st.one_of(st.just(""), _TAG_BAD), "Value": st.just("v")}).map(lambda t: [t]),
        st.fixed_dictionaries({"Key": st.just("k"), "Value": _TAG_BAD}).map(lambda t: [t]),
    ),
    "conflict": st.sampled_from(["device+platform", "device+options", "nvidia-missing"]),
    "unknown": st.sampled_from(["", "Greengrass", "Greengrass.S3OutputLocation", "Greengrass.TargetPlatform"]),
}
_TOP = ("ProjectName", "ModelVersion", "JobName", "Description", "ClientToken")
_GREENGRASS = ("ComponentName", "ComponentVersion", "ComponentDescription", "TargetDevice", "CompilerOptions", "Tags")


def _mutate(params: dict, which: str, value) -> dict:
    gg = params["Configuration"]["Greengrass"]
    if which in _TOP:
        params[which] = value
    elif which in _GREENGRASS:
        gg[which] = value
    elif which in ("Bucket", "Prefix"):
        gg["S3OutputLocation"][which] = value
    elif which in ("Os", "Arch"):
        gg["TargetPlatform"] = {"Os": "LINUX", "Arch": "X86_64", which: value}
    elif which == "conflict":
        if value == "device+platform":
            gg.update(TargetDevice="jetson_xavier", TargetPlatform={"Os": "LINUX", "Arch": "ARM64"})
        elif value == "device+options":
            gg.update(TargetDevice="jetson_xavier", CompilerOptions="{'mcpu': 'carmel'}")
        else:
            gg.update(
                TargetPlatform={"Os": "LINUX", "Arch": "X86_64", "Accelerator": "NVIDIA"},
                CompilerOptions="{'trt-ver': '8'}",
            )
    elif which == "unknown":
        gg.setdefault("TargetPlatform", {"Os": "LINUX", "Arch": "X86_64"})
        node = params["Configuration"]
        for part in filter(None, value.split(".")):
            node = node[part]
        node["Unexpected"] = "x"
    return params


@pytest.fixture(scope="module")
def fuzz_home(tmp_path_factory, tiny_model):
    home = tmp_path_factory.mktemp("fuzz-home")
    api.create_project(home=home, ProjectName="p")
    api.register_model("p", *tiny_model, home=home)
    return home


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_invalid_requests_are_rejected_and_start_nothing(fuzz_home, data):
    which = data.draw(st.sampled_from(sorted(_MUTATIONS)), label="field")
    value = data.draw(_MUTATIONS[which], label="value")
    params = _mutate({"ProjectName": "p", "ModelVersion": "1", "Configuration": gg_config()}, which, value)
    with pytest.raises(ValidationException) as info:
        api.start_model_packaging_job(home=fuzz_home, **params)
    assert info.value.field, info.value.message
    assert api.list_model_packaging_jobs(home=fuzz_home, ProjectName="p")["ModelPackagingJobs"] == []
    assert not (fuzz_home / "jobs").exists()


_VALID = {
    "ProjectName": st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9_\-]{0,40}", fullmatch=True),
    "ModelVersion": st.one_of(st.just("latest"), st.integers(1, 10**9).map(str)),
    "JobName": st.from_regex(r"[a-zA-Z0-9-]{1,64}", fullmatch=True),
    "ComponentVersion": st.from_regex(r"[0-9]{1,6}\.[0-9]{1,6}\.[0-9]{1,6}", fullmatch=True),
    "TagValue": st.text(alphabet=st.characters(whitelist_categories=("L", "N", "Zs")), max_size=30),
}


@settings(max_examples=200, deadline=None)
@given(
    project=_VALID["ProjectName"],
    version=_VALID["ModelVersion"],
    job=_VALID["JobName"],
    component_version=_VALID["ComponentVersion"],
    tag=_VALID["TagValue"],
)
def test_generated_valid_requests_pass(project, version, job, component_version, tag):
    params = {
        "ProjectName": project,
        "ModelVersion": version,
        "JobName": job,
        "Configuration": gg_config(ComponentVersion=component_version, Tags=[{"Key": "k", "Value": tag}]),
    }
    validate_input("StartModelPackagingJob", params)
    assert parse_configuration(params["Configuration"]).component_version == component_version


@pytest.mark.parametrize("name", [".", ".."])
def test_component_names_that_are_path_parts_are_refused(name):
    with pytest.raises(ValidationException) as caught:
        parse_configuration(
            {
                "Greengrass": {
                    "ComponentName": name,
                    "TargetDevice": "jetson_xavier",
                    "S3OutputLocation": {"Bucket": "b"},
                }
            }
        )
    assert caught.value.field == "Configuration.Greengrass.ComponentName"
