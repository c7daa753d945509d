"""Greengrass v2 side of publishing: find an existing component version, compare its digests, create a new one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from packager.errors import ValidationException
from packager.greengrass.publish.aws_errors import aws_error, is_access_denied, is_not_found
from packager.greengrass.recipe import recipe_key

CHECK_STEP = "check component version"
REGISTER_STEP = "register component"


@dataclass(frozen=True)
class RegisteredVersion:
    arn: str
    state: str  # CloudComponentState: REQUESTED, INITIATED, DEPLOYABLE, FAILED, DEPRECATED
    status_message: str
    artifact_digests: Mapping[str, str | None] | None  # artifact URI -> Digest, from the registered recipe;
    # None when reading the recipe was refused (greengrass:GetComponent is not among the documented permissions)


def recipe_artifact_digests(recipe: str | bytes) -> dict[str, str | None]:
    """Every artifact URI a recipe names, with its Digest (None when the recipe leaves it to Greengrass).

    Greengrass reads recipe keys without regard to case, so they are matched that way here too.
    """
    try:
        document = yaml.safe_load(recipe)
    except yaml.YAMLError as exc:
        raise ValidationException(f"recipe is not valid YAML/JSON: {exc.__class__.__name__}", field="recipe") from None
    if not isinstance(document, dict):
        raise ValidationException("recipe must be a mapping", field="recipe")
    digests: dict[str, str | None] = {}
    for manifest in recipe_key(document, "Manifests") or []:
        for artifact in (recipe_key(manifest, "Artifacts") or []) if isinstance(manifest, dict) else []:
            uri = recipe_key(artifact, "Uri") if isinstance(artifact, dict) else None
            if not uri:
                raise ValidationException("recipe artifact without a Uri", field="Manifests.Artifacts.Uri")
            digest = recipe_key(artifact, "Digest")
            if uri in digests and digests[uri] != digest:
                raise ValidationException(
                    f"recipe gives {uri} two different digests", field="Manifests.Artifacts.Digest"
                )
            digests[str(uri)] = digest
    return digests


def caller_account_id(sts_client) -> str:
    """The account the credentials belong to: sts:GetCallerIdentity, which needs no permission."""
    try:
        return sts_client.get_caller_identity()["Account"]
    except Exception as exc:
        raise aws_error(CHECK_STEP, exc) from None


def find_registered_version(
    greengrass_client, component_name: str, component_version: str, account_id: str | None = None
) -> RegisteredVersion | None:
    """The account's own (PRIVATE) component version with this name and version, or None.

    With ``account_id`` the version ARN is built from it and only DescribeComponent (documented) is needed, plus
    GetComponent to compare digests when it is granted. Without it, ListComponents yields the component ARN.
    """
    if account_id is not None:
        return _described_version(greengrass_client, component_name, component_version, account_id)
    try:
        component_arn = None
        for page in greengrass_client.get_paginator("list_components").paginate(scope="PRIVATE"):
            for component in page.get("components", []):
                if component.get("componentName") == component_name:
                    component_arn = component["arn"]
        if component_arn is None:
            return None
        arn = f"{component_arn}:versions:{component_version}"
        try:
            described = greengrass_client.describe_component(arn=arn)
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise
        recipe = greengrass_client.get_component(arn=arn, recipeOutputFormat="YAML")["recipe"]
    except Exception as exc:
        raise aws_error(CHECK_STEP, exc, resource_id=component_name, resource_type="Component") from None
    status = described.get("status", {})
    return RegisteredVersion(
        arn=described.get("arn", arn),
        state=status.get("componentState", ""),
        status_message=status.get("message", ""),
        artifact_digests=recipe_artifact_digests(recipe),
    )


def _described_version(
    greengrass_client, component_name: str, component_version: str, account_id: str
) -> RegisteredVersion | None:
    partition = greengrass_client.meta.partition
    region = greengrass_client.meta.region_name
    arn = f"arn:{partition}:greengrass:{region}:{account_id}:components:{component_name}:versions:{component_version}"
    try:
        described = greengrass_client.describe_component(arn=arn)
    except Exception as exc:
        if is_not_found(exc):
            return None
        raise aws_error(CHECK_STEP, exc, resource_id=arn, resource_type="ComponentVersion") from None
    try:
        digests = recipe_artifact_digests(greengrass_client.get_component(arn=arn, recipeOutputFormat="YAML")["recipe"])
    except Exception as exc:
        if not is_access_denied(exc):
            raise aws_error(CHECK_STEP, exc, resource_id=arn, resource_type="ComponentVersion") from None
        digests = None  # not granted: the version's existence and state are known, its digests are not
    status = described.get("status", {})
    return RegisteredVersion(
        arn=described.get("arn", arn),
        state=status.get("componentState", ""),
        status_message=status.get("message", ""),
        artifact_digests=digests,
    )


def create_component_version(greengrass_client, recipe_text: str, tags: Mapping[str, str] | None) -> str:
    """Create the component version from the inline recipe and return its ARN."""
    request: dict[str, Any] = {"inlineRecipe": recipe_text.encode("utf-8")}
    if tags:
        request["tags"] = dict(tags)
    try:
        response = greengrass_client.create_component_version(**request)
    except Exception as exc:
        raise aws_error(REGISTER_STEP, exc, resource_type="ComponentVersion") from None
    return response["arn"]
