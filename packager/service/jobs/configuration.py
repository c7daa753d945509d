"""A packaging job's configuration, parsed once at the API boundary into a ``PackagingConfiguration``.

``parse_configuration`` applies the rules the service model cannot express and names the member a value came from.
The job record keeps the request's own ModelPackagingConfiguration (DescribeModelPackagingJob shows it as given);
a worker rebuilds the typed object from it with ``load_configuration``, which runs no validation: the record holds
only a configuration that parse_configuration accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from packager.errors import ValidationException
from packager.greengrass.bundle import S3Location
from packager.service.jobs.members import CONFIGURATION_PATH, member_path
from targets import Target, TargetRequest, resolve_target
from targets.options import parse_compiler_options


@dataclass(frozen=True)
class PackagingConfiguration:
    """A packaging job's GreengrassConfiguration, validated and resolved."""

    target: Target
    target_request: (
        TargetRequest  # what was asked for, as the service's TargetDevice / TargetPlatform / CompilerOptions
    )
    component_name: str
    component_version: str | None  # None: the API defaults it to <ModelVersion>.0.0
    component_description: str | None
    s3_location: S3Location | None  # None only for build's local-only jobs: the service requires it
    tags: dict[str, str] = field(default_factory=dict)
    tuning_trials: int = 0  # CompilerOptions 'tuning-trials': a compile setting, not part of the target


def parse_configuration(configuration: dict) -> PackagingConfiguration:
    """Turn a shape-valid ModelPackagingConfiguration into a PackagingConfiguration; applies the cross-field rules.
    Every error names the member it came from (``Configuration.Greengrass.CompilerOptions.mcpu``, ...)."""
    gg = configuration["Greengrass"]
    path = CONFIGURATION_PATH
    if "TargetDevice" in gg and "TargetPlatform" in gg:
        raise ValidationException(
            f"{path}.TargetDevice and {path}.TargetPlatform are mutually exclusive; give one",
            field=f"{path}.TargetDevice",
        )
    if "TargetDevice" in gg and "CompilerOptions" in gg:
        raise ValidationException(
            f"{path}.CompilerOptions is not allowed with {path}.TargetDevice", field=f"{path}.CompilerOptions"
        )
    if gg["ComponentName"] in (".", ".."):  # the service's pattern allows them; as a path part they leave the directory
        raise ValidationException(
            f"{path}.ComponentName {gg['ComponentName']!r} names no component", field=f"{path}.ComponentName"
        )
    keys: set[str] = set()
    for i, tag in enumerate(gg.get("Tags", ())):
        if tag["Key"] in keys:
            raise ValidationException(
                f"{path}.Tags[{i}].Key: duplicate tag key {tag['Key']!r}", field=f"{path}.Tags[{i}].Key"
            )
        keys.add(tag["Key"])
    try:
        return load_configuration(configuration)
    except ValidationException as exc:
        where = member_path(exc.field)
        raise ValidationException(f"{where}: {exc.message}", field=where) from None


def load_configuration(configuration: dict) -> PackagingConfiguration:
    """The typed object for a configuration parse_configuration accepted (a job record's): no rules are checked here.
    The CompilerOptions string goes through its one parser, and the target through the catalog."""
    gg = configuration["Greengrass"]
    parsed = parse_compiler_options(gg.get("CompilerOptions"))
    platform = gg.get("TargetPlatform", {})
    request = TargetRequest(
        target_device=gg.get("TargetDevice"),
        os=platform.get("Os"),
        arch=platform.get("Arch"),
        accelerator=platform.get("Accelerator"),
        compiler_options=parsed.options,
    )
    s3 = gg.get("S3OutputLocation")
    return PackagingConfiguration(
        target=resolve_target(request),
        target_request=request,
        component_name=gg["ComponentName"],
        component_version=gg.get("ComponentVersion"),
        component_description=gg.get("ComponentDescription"),
        s3_location=S3Location(bucket=s3["Bucket"], prefix=s3.get("Prefix", "")) if s3 is not None else None,
        tags={tag["Key"]: tag["Value"] for tag in gg.get("Tags", ())},
        tuning_trials=parsed.tuning_trials,
    )
