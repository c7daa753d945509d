"""Greengrass v2 recipes: built as dicts, written as YAML, checked against GDK's schema."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import yaml

import packager.service_model as service_model
from packager.errors import ValidationException

RECIPE_FORMAT_VERSION = "2020-01-25"
MAX_RECIPE_BYTES = 16 * 1024
PUBLISHER = "edge-model-packager"


@dataclass(frozen=True)
class RecipeArtifact:
    uri: str
    digest_b64: str
    unarchive: bool = True


@dataclass(frozen=True)
class RecipeManifest:
    platform: dict  # {"os": ..., "architecture": ...}: the nucleus runs the first manifest matching its own
    lifecycle: dict
    artifacts: list[RecipeArtifact]


def recipe_key(mapping, name: str, default=None):
    """One key of a recipe mapping, matched case-insensitively as Greengrass and GDK read recipes; ``default`` when
    it is missing or ``mapping`` is not a mapping at all."""
    if not isinstance(mapping, dict):
        return default
    lowered = name.lower()
    return next((value for key, value in mapping.items() if str(key).lower() == lowered), default)


def check_service_string(shape_name: str, value: str, field: str) -> None:
    """Length and pattern of one string, exactly as the Lookout service model defines the shape."""
    shape = service_model.shape(shape_name)
    if not shape.get("min", 0) <= len(value) <= shape.get("max", 1 << 30):
        raise ValidationException(
            f"{field} must be {shape.get('min', 0)}..{shape['max']} characters, got {len(value)}", field=field
        )
    pattern = shape.get("pattern")
    if pattern and not re.fullmatch(pattern, value):
        raise ValidationException(f"{field} {value!r} does not match the pattern {pattern}", field=field)


# Greengrass's own rules: the recipe schema's ComponentName pattern, and MAJOR.MINOR.PATCH of at most 999999 each.
_COMPONENT_NAME = re.compile(r"[a-zA-Z0-9-_.]{1,128}")
_COMPONENT_VERSION = re.compile(r"[0-9]{1,6}\.[0-9]{1,6}\.[0-9]{1,6}")


def check_component_identity(name: object, version: object, where: str) -> None:
    """A ComponentName and ComponentVersion Greengrass accepts, and that name no directory but their own when they
    become path parts (artifacts/<name>/<version>/): "." and ".." match Greengrass's name pattern but are refused."""
    if not isinstance(name, str) or not _COMPONENT_NAME.fullmatch(name) or name in (".", ".."):
        raise ValidationException(
            f"{where}: ComponentName {str(name)[:80]!r} must be 1..128 of a-z A-Z 0-9 - _ . and not '.' or '..'",
            field="ComponentName",
        )
    if not isinstance(version, str) or not _COMPONENT_VERSION.fullmatch(version):
        raise ValidationException(
            f"{where}: ComponentVersion {str(version)[:80]!r} must be MAJOR.MINOR.PATCH, each 0..999999",
            field="ComponentVersion",
        )


def model_component_recipe(
    name: str,
    version: str,
    description: str | None,
    platform: dict,
    artifacts: list[RecipeArtifact],
    lifecycle: dict,
    configuration: dict | None = None,
    dependencies: dict | None = None,
) -> dict:
    return component_recipe(
        name,
        version,
        description,
        [RecipeManifest(platform, lifecycle, artifacts)],
        configuration=configuration,
        dependencies=dependencies,
    )


def component_recipe(
    name: str,
    version: str,
    description: str | None,
    manifests: list[RecipeManifest],
    configuration: dict | None = None,
    dependencies: dict | None = None,
) -> dict:
    """A recipe with one manifest per platform, in the order given."""
    recipe = {
        "RecipeFormatVersion": RECIPE_FORMAT_VERSION,
        "ComponentName": name,
        "ComponentVersion": version,
        "ComponentDescription": description or f"Anomaly detection model {name}, compiled with Apache TVM",
        "ComponentPublisher": PUBLISHER,
    }
    if configuration:
        recipe["ComponentConfiguration"] = {"DefaultConfiguration": configuration}
    if dependencies:
        recipe["ComponentDependencies"] = dependencies
    recipe["Manifests"] = [
        {
            "Platform": manifest.platform,
            "Lifecycle": manifest.lifecycle,
            "Artifacts": [
                {
                    "Uri": a.uri,
                    "Digest": a.digest_b64,
                    "Algorithm": "SHA-256",
                    **({"Unarchive": "ZIP"} if a.unarchive else {}),
                    "Permission": {"Read": "OWNER", "Execute": "NONE"},
                }
                for a in manifest.artifacts
            ],
        }
        for manifest in manifests
    ]
    return recipe


def recipe_yaml(recipe: dict) -> str:
    return yaml.safe_dump(recipe, sort_keys=False, default_flow_style=False, width=1000)


def _lower_keys(value):
    """GDK lower-cases every key before validating; values (paths, scripts) keep their case."""
    if isinstance(value, dict):
        return {str(k).lower(): _lower_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lower_keys(v) for v in value]
    return value


@lru_cache(maxsize=1)
def _recipe_schema() -> dict:
    return json.loads(resources.files("packager").joinpath("data/greengrass-recipe.schema.json").read_text())


def validate_recipe(recipe: dict) -> None:
    """Schema (as GDK checks it), the service's name/version rules, and Greengrass's 16 kB limit."""
    import jsonschema

    check_service_string("ComponentName", recipe["ComponentName"], "ComponentName")
    check_service_string("ComponentVersion", recipe["ComponentVersion"], "ComponentVersion")
    check_component_identity(recipe["ComponentName"], recipe["ComponentVersion"], "recipe")
    errors = sorted(
        jsonschema.Draft7Validator(_recipe_schema()).iter_errors(_lower_keys(recipe)), key=lambda e: list(e.path)
    )
    if errors:
        where = "/".join(str(p) for p in errors[0].path) or "(root)"
        raise ValidationException(f"recipe fails the Greengrass schema at {where}: {errors[0].message}", field="recipe")
    size = len(recipe_yaml(recipe).encode())
    if size > MAX_RECIPE_BYTES:
        raise ValidationException(
            f"recipe is {size} bytes; Greengrass accepts at most {MAX_RECIPE_BYTES}", field="recipe"
        )
