"""Where a value sits in the service's GreengrassConfiguration: the catalog's field names as member paths, and a
typed target choice as members. Light on purpose: the CLI's flags use it before anything heavy is imported."""

from __future__ import annotations

from targets import TargetRequest
from targets.options import ParsedCompilerOptions, format_compiler_options

CONFIGURATION_PATH = "Configuration.Greengrass"


def target_members(request: TargetRequest, tuning_trials: int = 0) -> dict:
    """The inverse of the target part of load_configuration: a typed choice as GreengrassConfiguration members."""
    members: dict = {}
    if request.target_device is not None:
        members["TargetDevice"] = request.target_device
    if request.os is not None or request.arch is not None:
        members["TargetPlatform"] = {"Os": request.os, "Arch": request.arch}
        if request.accelerator is not None:
            members["TargetPlatform"]["Accelerator"] = request.accelerator
    options = format_compiler_options(ParsedCompilerOptions(request.compiler_options, tuning_trials))
    if options is not None:
        members["CompilerOptions"] = options
    return members


def member_path(field_name: str | None) -> str:
    """The one map from the catalog's and the CompilerOptions parser's field names onto the request's member paths:
    "TargetPlatform.Arch" -> Configuration.Greengrass.TargetPlatform.Arch, "mcpu" -> ...CompilerOptions.mcpu."""
    if field_name in (None, "Target"):
        return CONFIGURATION_PATH
    if field_name.startswith("TargetPlatform") or field_name in ("TargetDevice", "CompilerOptions"):
        return f"{CONFIGURATION_PATH}.{field_name}"
    return f"{CONFIGURATION_PATH}.CompilerOptions.{field_name}"
