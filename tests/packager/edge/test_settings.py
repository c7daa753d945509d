"""The agent's line settings: every key checked once, each bad value named in one message."""

from __future__ import annotations

import json

import pytest

from packager.edge.settings import (
    DEFAULT_TOPIC,
    ENVIRONMENT,
    SettingsError,
    line_settings_from_environment,
    load_last_good,
    parse_line_settings,
    save_last_good,
)


def test_every_feature_is_off_by_default():
    settings = parse_line_settings({})
    assert (settings.mqtt, settings.capture, dict(settings.thresholds)) == (None, None, {})


def test_mqtt_urls_topics_and_credentials():
    mqtt = parse_line_settings(
        {"Mqtt": {"Enabled": True, "BrokerUrl": "mqtts://line%40a:p%3Ass@broker.local", "CaFile": "/ca.pem", "Qos": 1}}
    ).mqtt
    assert (mqtt.host, mqtt.port, mqtt.tls, mqtt.username, mqtt.password, mqtt.qos) == (
        "broker.local",
        8883,
        True,
        "line@a",
        "p:ss",
        1,
    )
    assert mqtt.topic == DEFAULT_TOPIC and "p:ss" not in repr(mqtt)
    plain = parse_line_settings(
        {
            "Mqtt": {
                "Enabled": "true",
                "BrokerUrl": "tcp://10.0.0.2",
                "Username": "u",
                "Password": "p",
                "Topic": "factory/{thing}/{component}",
            }
        }
    ).mqtt
    assert (plain.port, plain.tls, plain.username, plain.password) == (1883, False, "u", "p")


@pytest.mark.parametrize(
    "configuration, named",
    [
        ({"Mqtt": {"BrokerUrl": "http://broker"}}, "Mqtt/BrokerUrl"),
        ({"Mqtt": {"BrokerUrl": "mqtt://broker:99999"}}, "Mqtt/BrokerUrl"),
        ({"Mqtt": {"BrokerUrl": "mqtt://:1883"}}, "Mqtt/BrokerUrl"),
        ({"Mqtt": {"BrokerUrl": "not a url"}}, "Mqtt/BrokerUrl"),
        ({"Mqtt": {"Qos": 2}}, "Mqtt/Qos"),
        ({"Mqtt": {"Topic": "line/#"}}, "Mqtt/Topic"),
        ({"Mqtt": {"Topic": "line/{camera}"}}, "Mqtt/Topic"),
        ({"Mqtt": {"QueueSize": 0}}, "Mqtt/QueueSize"),
        ({"Mqtt": {"Brokerurl": "mqtt://a"}}, "Mqtt/Brokerurl"),
        ({"Mqtt": {"CaFile": "/ca.pem"}}, "Mqtt/CaFile"),
        ({"Mqtt": "mqtt://a"}, "Mqtt"),
        ({"Capture": {"NormalShare": -0.1}}, "Capture/NormalShare"),
        ({"Capture": {"NormalShare": 1.5}}, "Capture/NormalShare"),
        ({"Capture": {"MaxMegabytes": "lots"}}, "Capture/MaxMegabytes"),
        ({"Capture": {"Bucket": "Not_A_Bucket"}}, "Capture/Bucket"),
        ({"Capture": {"Enabled": "yes"}}, "Capture/Enabled"),
        ({"Capture": {"PngLevel": 10}}, "Capture/PngLevel"),
        ({"Thresholds": {"com.acme.Model": {"Image": "high"}}}, "Thresholds/com.acme.Model/Image"),
        ({"Thresholds": {"com.acme.Model": {"Imge": 1.0}}}, "Thresholds/com.acme.Model/Imge"),
    ],
)
def test_a_bad_value_is_named(configuration, named):
    with pytest.raises(SettingsError) as caught:
        parse_line_settings(configuration)
    assert named in str(caught.value)


def test_thresholds_and_capture():
    settings = parse_line_settings(
        {
            "Thresholds": {"a": {"Image": 0.25}, "b": {"Pixel": "3"}},
            "Capture": {
                "Enabled": True,
                "NormalShare": 0.5,
                "MaxMegabytes": 2,
                "Bucket": "my-bucket",
                "Prefix": "/lines/7/",
            },
        }
    )
    assert (settings.thresholds["a"].image, settings.thresholds["a"].pixel) == (0.25, None)
    assert settings.thresholds["b"].pixel == 3.0
    assert (settings.capture.normal_share, settings.capture.max_bytes, settings.capture.prefix) == (
        0.5,
        2 << 20,
        "lines/7",
    )


def test_environment_and_the_last_good_settings(tmp_path):
    environ = {
        ENVIRONMENT["Mqtt"]: json.dumps({"Enabled": True, "BrokerUrl": "mqtt://h:1"}),
        ENVIRONMENT["Thresholds"]: json.dumps({"m": {"Image": 2}}),
    }
    settings = line_settings_from_environment(environ)
    assert settings.mqtt.port == 1 and settings.thresholds["m"].image == 2
    save_last_good(tmp_path / "good", environ)
    assert load_last_good(tmp_path / "good")[0] == settings
    with pytest.raises(SettingsError, match="Capture"):
        line_settings_from_environment({ENVIRONMENT["Capture"]: "{not json"})


def test_an_agent_started_with_bad_settings_keeps_its_last_good_ones(tmp_path, caplog):
    from packager.edge.agent import line_settings

    last_good = tmp_path / ".line-settings.last-good"
    good = {ENVIRONMENT["Thresholds"]: json.dumps({"m": {"Image": 0.7}})}
    assert line_settings(good, last_good).thresholds["m"].image == 0.7
    bad = {ENVIRONMENT["Thresholds"]: json.dumps({"m": {"Image": "high"}})}
    assert line_settings(bad, last_good).thresholds["m"].image == 0.7
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        'bad agent configuration: Thresholds/m/Image must be a number, got "high"; keeping the last good configuration'
    ]
    assert line_settings(bad, tmp_path / "none").thresholds == {}  # nothing good yet: every feature off
