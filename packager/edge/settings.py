"""The agent's line settings: MQTT results, image capture, and threshold overrides, parsed once into frozen dataclasses.

They come from the agent component's configuration keys ``Mqtt``, ``Capture`` and ``Thresholds``; the recipe hands
each one to the agent as JSON in an environment variable (see ``ENVIRONMENT``). ``parse_line_settings`` is also what
``deploy-local`` runs on a configuration update, so a bad value is refused at deploy time with the same message.
Standard library only.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from urllib.parse import unquote, urlsplit

DEFAULT_TOPIC = "lookoutvision/anomalydetection/result"
TOPIC_FIELDS = ("component", "thing")  # what a topic template may name: {component}, {thing}
# Configuration key -> the environment variable the recipe's Setenv fills with its JSON.
ENVIRONMENT = {"Mqtt": "LOOKOUT_EDGE_MQTT", "Capture": "LOOKOUT_EDGE_CAPTURE", "Thresholds": "LOOKOUT_EDGE_THRESHOLDS"}
_SCHEMES = {"mqtt": False, "tcp": False, "mqtts": True, "ssl": True, "tls": True}  # scheme -> TLS
_DEFAULT_PORTS = {False: 1883, True: 8883}

# The DefaultConfiguration the recipe ships: every feature off.
DEFAULT_MQTT = {
    "Enabled": False,
    "BrokerUrl": "mqtt://127.0.0.1:1883",
    "Topic": DEFAULT_TOPIC,
    "Qos": 0,
    "Username": "",
    "Password": "",
    "CaFile": "",
    "CertFile": "",
    "KeyFile": "",
    "ClientId": "",
    "QueueSize": 1000,
}
DEFAULT_CAPTURE = {
    "Enabled": False,
    "NormalShare": 0.01,
    "MaxMegabytes": 1024,
    "RetentionDays": 30,
    "Bucket": "",
    "Prefix": "lookout-captures",
    "EndpointUrl": "",
    "Region": "",
    "UploadIntervalSeconds": 30,
    "PngLevel": 1,
}
DEFAULT_THRESHOLDS: dict = {}  # model component -> {"Image": raw score threshold, "Pixel": raw anomaly-map threshold}


class SettingsError(ValueError):
    """A bad setting; the message names the key, as Mqtt/Qos."""


@dataclass(frozen=True)
class MqttSettings:
    host: str
    port: int
    tls: bool
    topic: str  # a template: {component} and {thing} are filled in per message
    qos: int
    username: str = ""
    password: str = field(default="", repr=False)
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    client_id: str = ""  # empty: lookout-edge-<random>; a broker's authorization policy may need a fixed one
    queue_size: int = 1000


@dataclass(frozen=True)
class CaptureSettings:
    normal_share: float  # share of normal images kept; every anomalous one is kept
    max_bytes: int
    retention_days: float
    bucket: str = ""  # empty: images stay in the spool, nothing is uploaded
    prefix: str = ""
    endpoint_url: str = ""
    region: str = ""
    upload_interval_s: float = 30.0
    png_level: int = 1  # zlib level: 0 stores raw pixels (least CPU), 9 the smallest files


@dataclass(frozen=True)
class ThresholdOverride:
    image: float | None = None
    pixel: float | None = None


@dataclass(frozen=True)
class LineSettings:
    mqtt: MqttSettings | None = None
    capture: CaptureSettings | None = None
    thresholds: Mapping[str, ThresholdOverride] = field(default_factory=lambda: MappingProxyType({}))


def _object(value, where: str, known: dict) -> dict:
    if not isinstance(value, dict):
        raise SettingsError(f"{where} must be a JSON object, got {json.dumps(value)}")
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise SettingsError(f"{where}/{unknown[0]} is not a setting; known: {', '.join(sorted(known))}")
    return {**known, **value}


def _bool(value, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):  # Greengrass configuration may carry strings
        return value.lower() == "true"
    raise SettingsError(f"{where} must be true or false, got {json.dumps(value)}")


def _number(value, where: str, low: float, high: float = math.inf, integer: bool = False) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SettingsError(f"{where} must be a number, got {json.dumps(value)}")
    if integer and value != int(value):
        raise SettingsError(f"{where} must be a whole number, got {value}")
    if not low <= value <= high:
        bound = f"between {low:g} and {high:g}" if math.isfinite(high) else f"at least {low:g}"
        raise SettingsError(f"{where} must be {bound}, got {value:g}")
    return int(value) if integer else float(value)


def _text(value, where: str) -> str:
    if not isinstance(value, str):
        raise SettingsError(f"{where} must be a string, got {json.dumps(value)}")
    return value


def parse_broker_url(url: str, where: str = "Mqtt/BrokerUrl") -> tuple[str, int, bool, str, str]:
    """mqtt://, tcp:// (plain) or mqtts://, ssl://, tls:// -> (host, port, tls, username, password)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise SettingsError(f"{where} {url!r} does not parse: {exc}") from None
    if parts.scheme not in _SCHEMES:
        raise SettingsError(f"{where} {url!r} must start with one of {', '.join(s + '://' for s in _SCHEMES)}")
    if not parts.hostname:
        raise SettingsError(f"{where} {url!r} names no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise SettingsError(f"{where} {url!r} must be scheme://[user[:password]@]host[:port] and nothing more")
    tls = _SCHEMES[parts.scheme]
    return (
        parts.hostname,
        port or _DEFAULT_PORTS[tls],
        tls,
        unquote(parts.username or ""),
        unquote(parts.password or ""),
    )


def check_topic_template(topic: str, where: str = "Mqtt/Topic") -> str:
    if not topic or len(topic.encode()) > 65535 or "+" in topic or "#" in topic or "\0" in topic:
        raise SettingsError(f"{where} {topic!r} must be a non-empty MQTT topic without the wildcards + and #")
    for name in re.findall(r"\{([^{}]*)\}", topic):
        if name not in TOPIC_FIELDS:
            raise SettingsError(
                f"{where} {topic!r} names {{{name}}}; a topic may name only "
                f"{', '.join('{' + f + '}' for f in TOPIC_FIELDS)}"
            )
    if re.sub(r"\{[^{}]*\}", "", topic).count("{") or re.sub(r"\{[^{}]*\}", "", topic).count("}"):
        raise SettingsError(f"{where} {topic!r} has an unmatched brace")
    return topic


def parse_mqtt(doc) -> MqttSettings | None:
    doc = _object(doc, "Mqtt", DEFAULT_MQTT)
    host, port, tls, user, password = parse_broker_url(_text(doc["BrokerUrl"], "Mqtt/BrokerUrl"))
    settings = MqttSettings(
        host=host,
        port=port,
        tls=tls,
        topic=check_topic_template(_text(doc["Topic"], "Mqtt/Topic")),
        qos=_number(doc["Qos"], "Mqtt/Qos", 0, 1, integer=True),
        username=_text(doc["Username"], "Mqtt/Username") or user,
        password=_text(doc["Password"], "Mqtt/Password") or password,
        ca_file=_text(doc["CaFile"], "Mqtt/CaFile"),
        cert_file=_text(doc["CertFile"], "Mqtt/CertFile"),
        key_file=_text(doc["KeyFile"], "Mqtt/KeyFile"),
        client_id=_text(doc["ClientId"], "Mqtt/ClientId"),
        queue_size=_number(doc["QueueSize"], "Mqtt/QueueSize", 1, 1_000_000, integer=True),
    )
    if settings.cert_file and not settings.key_file or settings.key_file and not settings.cert_file:
        raise SettingsError(
            "Mqtt/CertFile and Mqtt/KeyFile go together: give both for a client certificate, or neither"
        )
    if (settings.ca_file or settings.cert_file) and not settings.tls:
        raise SettingsError("Mqtt/CaFile and Mqtt/CertFile need a TLS broker URL (mqtts://)")
    if len(settings.client_id.encode()) > 65535 or "\0" in settings.client_id:
        raise SettingsError("Mqtt/ClientId is not a valid MQTT client identifier")
    return settings if _bool(doc["Enabled"], "Mqtt/Enabled") else None


def parse_capture(doc) -> CaptureSettings | None:
    doc = _object(doc, "Capture", DEFAULT_CAPTURE)
    settings = CaptureSettings(
        normal_share=_number(doc["NormalShare"], "Capture/NormalShare", 0, 1),
        max_bytes=int(_number(doc["MaxMegabytes"], "Capture/MaxMegabytes", 1) * (1 << 20)),
        retention_days=_number(doc["RetentionDays"], "Capture/RetentionDays", 0.001),
        bucket=_text(doc["Bucket"], "Capture/Bucket"),
        prefix=_text(doc["Prefix"], "Capture/Prefix").strip("/"),
        endpoint_url=_text(doc["EndpointUrl"], "Capture/EndpointUrl"),
        region=_text(doc["Region"], "Capture/Region"),
        upload_interval_s=_number(doc["UploadIntervalSeconds"], "Capture/UploadIntervalSeconds", 0.05),
        png_level=_number(doc["PngLevel"], "Capture/PngLevel", 0, 9, integer=True),
    )
    if settings.bucket and not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", settings.bucket):
        raise SettingsError(f"Capture/Bucket {settings.bucket!r} is not an S3 bucket name")
    if settings.endpoint_url and urlsplit(settings.endpoint_url).scheme not in ("http", "https"):
        raise SettingsError(f"Capture/EndpointUrl {settings.endpoint_url!r} must be an http:// or https:// URL")
    return settings if _bool(doc["Enabled"], "Capture/Enabled") else None


def parse_thresholds(doc) -> Mapping[str, ThresholdOverride]:
    if not isinstance(doc, dict):
        raise SettingsError(
            f'Thresholds must map model component names to {{"Image": ..., "Pixel": ...}}, got {json.dumps(doc)}'
        )
    parsed = {}
    for component, override in doc.items():
        where = f"Thresholds/{component}"
        override = _object(override, where, {"Image": None, "Pixel": None})
        parsed[component] = ThresholdOverride(
            *(
                None if override[key] is None else _number(override[key], f"{where}/{key}", -math.inf)
                for key in ("Image", "Pixel")
            )
        )
    return MappingProxyType(parsed)


def parse_line_settings(configuration: dict) -> LineSettings:
    """The agent component's configuration (Mqtt, Capture, Thresholds; other keys are not ours) -> LineSettings."""
    return LineSettings(
        mqtt=parse_mqtt(configuration.get("Mqtt", {})),
        capture=parse_capture(configuration.get("Capture", {})),
        thresholds=parse_thresholds(configuration.get("Thresholds", {})),
    )


def line_settings_from_environment(environ: Mapping[str, str]) -> LineSettings:
    """What the recipe's Setenv passes: each key's JSON in its variable (see ENVIRONMENT); a missing one is the default."""
    configuration = {}
    for key, variable in ENVIRONMENT.items():
        text = environ.get(variable, "").strip()
        if not text:
            continue
        try:
            configuration[key] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SettingsError(f"{key} ({variable}) is not JSON: {exc}") from None
    return parse_line_settings(configuration)


def save_last_good(path: Path, environ: Mapping[str, str]) -> None:
    path.write_text(json.dumps({v: environ.get(v, "") for v in ENVIRONMENT.values()}, indent=1, sort_keys=True))


def load_last_good(path: Path) -> tuple[LineSettings, dict] | None:
    try:
        saved = json.loads(path.read_text())
        return line_settings_from_environment(saved), saved
    except (OSError, ValueError):
        return None
