"""The commands' shared flags: one map from request member to flag covers every member build sets, and no command
module reaches into another's privates or into the CLI that lists it."""

import ast
from pathlib import Path

import pytest

import packager.service_model as service_model
from packager.commands.arguments import FLAG_FOR_MEMBER, flag_for_member
from packager.errors import ValidationException
from packager.service.jobs.members import member_path

COMMANDS = Path(__file__).resolve().parents[3] / "packager" / "commands"


def test_one_flag_map_covers_every_member_build_can_set():
    members = [f"Configuration.Greengrass.{m.name}" for m in service_model.members("GreengrassConfiguration")]
    members += [f"Configuration.Greengrass.TargetPlatform.{m.name}" for m in service_model.members("TargetPlatform")]
    members += [
        "ProjectName",
        "ClientToken",
        "Configuration.Greengrass.Tags[3].Key",
        "Configuration.Greengrass.S3OutputLocation.Bucket",
    ]
    missing = [member for member in members if flag_for_member(member) is None]
    assert missing == []
    assert flag_for_member("Configuration.Greengrass.TargetPlatform.Accelerator") == "--accelerator"
    assert flag_for_member("Configuration.Greengrass.TargetPlatform.Arch") == "--target-platform"
    assert flag_for_member("Configuration.Greengrass.ComponentNameX") is None  # a member, not a prefix of a name
    assert flag_for_member("ModelVersion") is None  # build picks it; no flag sets it


@pytest.mark.parametrize(
    "field,flag",
    [
        ("TargetDevice", "--target-device"),
        ("TargetPlatform.Os", "--target-platform"),
        ("TargetPlatform.Arch", "--target-platform"),
        ("TargetPlatform.Accelerator", "--accelerator"),
        ("CompilerOptions", "--compiler-options"),
        ("gpu-code", "--compiler-options"),
        ("mcpu", "--compiler-options"),
        ("Target", None),
        (None, None),  # the target as a whole: no one flag set it
    ],
)
def test_the_catalogs_fields_reach_a_flag_through_the_same_member_paths(field, flag):
    """The jobs API names the same members (Configuration.Greengrass.TargetPlatform.Arch) for the same catalog errors."""
    assert flag_for_member(member_path(field)) == flag


def test_the_table_has_no_member_twice():
    prefixes = [prefix for prefix, _ in FLAG_FOR_MEMBER]
    assert len(prefixes) == len(set(prefixes))


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []


@pytest.mark.parametrize("path", sorted(COMMANDS.glob("*.py")), ids=lambda p: p.name)
def test_commands_import_neither_the_cli_nor_each_others_privates(path):
    for module, names in _imports(path):
        assert module != "packager.cli", f"{path.name} imports the CLI that lists it"
        if module.startswith("packager.commands"):
            private = [name for name in names if name.startswith("_")]
            assert private == [], f"{path.name} imports {private} from {module}"


def test_tune_and_build_share_the_target_flags(capsys):
    from packager.cli import main

    assert main(["tune", "--target-platform", "LINUX/RISCV64", "--tuning-cache", "/nonexistent/cache"]) == 2
    assert capsys.readouterr().err.startswith("error: ValidationException: --target-platform: TargetPlatform.Arch")


def test_flag_errors_keep_unmapped_fields():
    from packager.commands.arguments import flag_error

    error = ValidationException("ModelVersion: bad", field="ModelVersion")
    assert flag_error(error) is error
