"""Component configuration for deploy-local, with a Greengrass deployment's semantics.

A deployment's ``configurationUpdate`` per component is ``{"merge": {...}, "reset": ["/json/pointer", ...]}``: reset
puts the named keys back to the recipe's default (or removes them when the default has none), then merge applies
on top, objects key by key. What a deployment leaves is kept in the root's ``configuration.json`` and is where the
next deployment starts, as the nucleus keeps it. The Edge Agent's configuration is also checked with the agent's
own parser, so a bad value is refused here, before anything changes.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from packager.edge.settings import SettingsError, parse_line_settings
from packager.errors import ValidationException
from packager.greengrass.bundle import AGENT_COMPONENT

CONFIGURATION_FILE = "configuration.json"
EDGE_AGENT = "<edge agent>"  # the key of an update given without a component name; never a valid component name
_FIELD = "--update-config"
_USAGE = (
    '--update-config takes {"merge": {...}, "reset": ["/key", ...]} for the Edge Agent, or '
    '{"ComponentName": {"MERGE": {...}, "RESET": [...]}, ...}'
)


@dataclass(frozen=True)
class ConfigurationUpdate:
    merge: dict = field(default_factory=dict)
    reset: tuple[str, ...] = ()


def merge_configuration(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        merged[key] = (
            merge_configuration(merged[key], value)
            if isinstance(value, dict) and isinstance(merged.get(key), dict)
            else copy.deepcopy(value)
        )
    return merged


def _update(value, where: str) -> ConfigurationUpdate:
    if not isinstance(value, dict):
        raise ValidationException(f"{_FIELD}: {where} must be an object with merge and/or reset", field=_FIELD)
    keys = {str(k).lower(): v for k, v in value.items()}
    unknown = sorted(set(keys) - {"merge", "reset"})
    if unknown:
        raise ValidationException(
            f"{_FIELD}: {where} has {unknown[0]!r}; a configuration update has only merge and reset", field=_FIELD
        )
    merge = keys.get("merge", {})
    if isinstance(merge, str):  # the Greengrass API carries merge as a JSON document in a string
        try:
            merge = json.loads(merge)
        except json.JSONDecodeError as exc:
            raise ValidationException(
                f"{_FIELD}: {where} merge is a string but not JSON: {exc}", field=_FIELD
            ) from None
    if not isinstance(merge, dict):
        raise ValidationException(f"{_FIELD}: {where} merge must be an object", field=_FIELD)
    reset = keys.get("reset", [])
    if not isinstance(reset, list) or not all(isinstance(p, str) and (p == "" or p.startswith("/")) for p in reset):
        raise ValidationException(
            f'{_FIELD}: {where} reset must be a list of JSON pointers such as "/Mqtt/Qos" ("" resets everything)',
            field=_FIELD,
        )
    return ConfigurationUpdate(merge=merge, reset=tuple(reset))


def parse_configuration_updates(doc) -> dict[str, ConfigurationUpdate]:
    """The --update-config document -> component (or EDGE_AGENT) -> ConfigurationUpdate."""
    if not isinstance(doc, dict):
        raise ValidationException(_USAGE, field=_FIELD)
    if doc and {str(k).lower() for k in doc} <= {"merge", "reset"}:
        return {EDGE_AGENT: _update(doc, "the update")}
    return {str(name): _update(value, str(name)) for name, value in doc.items()}


def resolve_updates(updates: dict, components: list[str], build_dir: Path) -> dict[str, ConfigurationUpdate]:
    """Name the Edge Agent, accept greengrass-cli's {"MERGE": ...} dicts, and refuse components the build lacks."""
    resolved = {}
    for name, update in updates.items():
        if not isinstance(update, ConfigurationUpdate):
            update = _update(update, name)
        if name == EDGE_AGENT:
            agents = [c for c in components if c.startswith(AGENT_COMPONENT)]
            if len(agents) != 1:
                raise ValidationException(
                    f"{_FIELD}: an update without a component name goes to the Edge Agent, but "
                    f"{build_dir} has {len(agents)} Edge Agent components; name the component",
                    field=_FIELD,
                )
            name = agents[0]
        resolved[name] = update
    unknown = set(resolved) - set(components)
    if unknown:
        raise ValidationException(
            f"configuration update names components not in {build_dir}: {', '.join(sorted(unknown))}", field=_FIELD
        )
    return resolved


def _tokens(pointer: str) -> list[str]:
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer.lstrip("/").split("/")] if pointer else []


def _reset(configuration: dict, defaults: dict, pointer: str) -> dict:
    tokens = _tokens(pointer)
    if not tokens:
        return copy.deepcopy(defaults)
    configuration = copy.deepcopy(configuration)
    parent, default = configuration, defaults
    for token in tokens[:-1]:
        if not isinstance(parent.get(token), dict):
            return configuration  # nothing there to reset
        parent, default = parent[token], default.get(token, {}) if isinstance(default, dict) else {}
    last = tokens[-1]
    if isinstance(default, dict) and last in default:
        parent[last] = copy.deepcopy(default[last])
    else:
        parent.pop(last, None)
    return configuration


def effective_configuration(name: str, defaults: dict, kept: dict | None, update: ConfigurationUpdate | None) -> dict:
    """Defaults, then what earlier deployments left, then this update's resets and merge; checked if it is the agent's."""
    configuration = merge_configuration(defaults, kept or {})
    if update is not None:
        for pointer in update.reset:
            configuration = _reset(configuration, defaults, pointer)
        configuration = merge_configuration(configuration, update.merge)
    if name.startswith(AGENT_COMPONENT):
        check_agent_configuration(name, defaults, configuration)
    return configuration


def check_agent_configuration(name: str, defaults: dict, configuration: dict) -> None:
    unknown = sorted(set(configuration) - set(defaults))
    if unknown:
        raise ValidationException(
            f"{name}: {unknown[0]!r} is not a setting of this component; it has {', '.join(sorted(defaults))}",
            field=_FIELD,
        )
    try:
        parse_line_settings(configuration)
    except SettingsError as exc:
        raise ValidationException(f"{name}: {exc}", field=_FIELD) from None


def read_configuration(root: Path) -> tuple[int, dict[str, dict]]:
    """(generation, component -> configuration) that the last deployment in root left; (0, {}) for a new root."""
    try:
        doc = json.loads((Path(root) / CONFIGURATION_FILE).read_text())
        return int(doc["generation"]), dict(doc["components"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0, {}


def write_configuration(root: Path, generation: int, configurations: dict[str, dict]) -> None:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".configuration.")
    with os.fdopen(fd, "w") as handle:
        json.dump({"generation": generation, "components": configurations}, handle, indent=2, sort_keys=True)
    os.replace(tmp, root / CONFIGURATION_FILE)
