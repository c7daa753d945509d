"""Argument groups the commands share, the typed result of the target flags, and the one map from a request member
(or the catalog's field) back to the flag that set it.

Layers: argparse flags -> ``target_from_args`` (a ``TargetSelection``) -> the library. Errors from the catalog and
the CompilerOptions parser name a field ("TargetPlatform.Arch", "mcpu"); packager/service/jobs/members.member_path
turns it into the request member, and ``FLAG_FOR_MEMBER`` turns that into the flag.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from packager.errors import ValidationException
from packager.service.jobs.members import member_path
from packager.service.jobs.validation import validate_shape
from targets import Target, TargetRequest, parse_compiler_options, resolve_target


def add_target_arguments(group) -> None:
    """The service's TargetDevice / TargetPlatform / CompilerOptions choice, as flags (build, tune)."""
    group.add_argument("--target-device", help="a device: jetson_xavier")
    group.add_argument("--target-platform", metavar="OS/ARCH", help="a platform: LINUX/X86_64 or LINUX/ARM64")
    group.add_argument("--accelerator", help="with --target-platform: NVIDIA (needs gpu-code, cuda-ver, trt-ver)")
    group.add_argument(
        "--compiler-options",
        metavar="JSON",
        help='CompilerOptions, e.g. \'{"mcpu": "cortex-a72"}\' or '
        '\'{"gpu-code": "sm_86", "cuda-ver": "11.4", "trt-ver": "8.2.1"}\'',
    )


def add_tracker_arguments(group) -> None:
    """A TVM RPC tracker to lease a device from (build, tune)."""
    group.add_argument(
        "--rpc-tracker", metavar="HOST:PORT", help="a TVM RPC tracker; lease a device registered under --rpc-key"
    )
    group.add_argument("--rpc-key", metavar="KEY", help="with --rpc-tracker: the device kind, e.g. jetson-xavier")


@dataclass(frozen=True)
class TargetSelection:
    """The target flags, parsed: what was asked (as the service's members take it), the catalog record it resolves
    to, and the tuning trials the CompilerOptions string named (a compile setting, not part of the target)."""

    request: TargetRequest
    target: Target
    tuning_trials: int = 0


def target_from_args(args: argparse.Namespace) -> TargetSelection:
    """The target flags -> one catalog record, through the same resolve_target the jobs API uses."""
    os_name = arch = None
    if args.target_platform is not None:
        os_name, _, arch = args.target_platform.partition("/")
        if not arch:
            raise ValidationException(
                f"--target-platform must be OS/ARCH like LINUX/ARM64, got {args.target_platform!r}",
                field="--target-platform",
            )
    elif args.accelerator is not None:
        raise ValidationException("--accelerator needs --target-platform", field="--accelerator")
    if args.target_device is not None and args.compiler_options is not None:
        raise ValidationException("--compiler-options is not allowed with --target-device", field="--compiler-options")
    try:
        parsed = parse_compiler_options(args.compiler_options)
        request = TargetRequest(
            target_device=args.target_device,
            os=os_name,
            arch=arch,
            accelerator=args.accelerator,
            compiler_options=parsed.options,
        )
        return TargetSelection(request, resolve_target(request), parsed.tuning_trials)
    except ValidationException as exc:  # a field no flag sets (this machine's own architecture) keeps its message
        raise flag_error(exc, member_path(exc.field)) from None


# The one map from a request member (and what lies under it) to the flag that sets it; the first match wins.
FLAG_FOR_MEMBER = (
    ("Configuration.Greengrass.TargetDevice", "--target-device"),
    ("Configuration.Greengrass.TargetPlatform.Accelerator", "--accelerator"),
    ("Configuration.Greengrass.TargetPlatform", "--target-platform"),
    ("Configuration.Greengrass.CompilerOptions", "--compiler-options"),
    ("Configuration.Greengrass.S3OutputLocation", "--s3-output"),
    ("Configuration.Greengrass.Tags", "--tag"),
    ("Configuration.Greengrass.ComponentName", "--component-name"),
    ("Configuration.Greengrass.ComponentVersion", "--component-version"),
    ("Configuration.Greengrass.ComponentDescription", "--component-description"),
    ("ClientToken", "--client-token"),
    ("ProjectName", "--project-name"),
)


def flag_for_member(member: str | None) -> str | None:
    """The flag that set a request member (``Configuration.Greengrass.Tags[0].Key`` -> --tag); None for none."""
    member = member or ""
    return next(
        (
            flag
            for prefix, flag in FLAG_FOR_MEMBER
            if member == prefix or member.startswith((f"{prefix}.", f"{prefix}["))
        ),
        None,
    )


def flag_error(exc: ValidationException, member: str | None = None) -> ValidationException:
    """The same error, naming the flag behind ``member`` (default: the error's own field); unchanged without one."""
    flag = flag_for_member(member if member is not None else exc.field)
    if flag is None:
        return exc
    return ValidationException(f"{flag}: {exc.message}", field=flag)


def check_member(shape: str, member: str, value, flag: str) -> None:
    """The service model's rules for one member, with the error naming the flag it came from."""
    try:
        validate_shape(shape, value, member)
    except ValidationException as exc:
        raise ValidationException(f"{flag}: {exc.message}", field=flag) from None
