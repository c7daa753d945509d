"""Configuration updates with a Greengrass deployment's semantics: parsing, reset then merge, the agent's checks,
and a live update of a running deployment (the Edge Agent's threshold changes on the same image, with no rebuild)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from packager.edge.settings import DEFAULT_CAPTURE, DEFAULT_MQTT
from packager.errors import ValidationException
from packager.greengrass.bundle import AGENT_COMPONENT
from packager.greengrass.local.configuration import (
    EDGE_AGENT,
    ConfigurationUpdate,
    effective_configuration,
    parse_configuration_updates,
    read_configuration,
)
from packager.greengrass.local.deploy import DeployOptions, plan_deployment
from packager.greengrass.local.nucleus import read_state
from tests.packager.edge.conftest import mosquitto  # noqa: F401 - the broker fixture
from tests.packager.greengrass.local.test_deploy import REPO, deploy_local, states, wait_for, write_component

AGENT_DEFAULTS = {
    "Socket": "unix:///tmp/a.sock",
    "MaxInFlight": 32,
    "InferenceThreads": 0,
    "Mqtt": DEFAULT_MQTT,
    "Capture": DEFAULT_CAPTURE,
    "Thresholds": {},
}


def test_the_update_forms():
    bare = parse_configuration_updates({"merge": {"Thresholds": {"m": {"Image": 1}}}, "reset": ["/Mqtt/Qos"]})
    assert bare == {EDGE_AGENT: ConfigurationUpdate({"Thresholds": {"m": {"Image": 1}}}, ("/Mqtt/Qos",))}
    api = parse_configuration_updates({"Merge": '{"a": 1}', "RESET": [""]})  # the API's merge is a JSON string
    assert api == {EDGE_AGENT: ConfigurationUpdate({"a": 1}, ("",))}
    named = parse_configuration_updates({"com.acme.App": {"MERGE": {"a": 1}}})
    assert named == {"com.acme.App": ConfigurationUpdate({"a": 1})}
    for bad, says in (
        ([], "--update-config takes"),
        ({"merge": "{nope"}, "not JSON"),
        ({"merge": [1]}, "must be an object"),
        ({"reset": "/a"}, "JSON pointers"),
        ({"reset": ["a"]}, "JSON pointers"),
        ({"c": {"MERGE": {}, "DROP": 1}}, "'drop'"),
    ):
        with pytest.raises(ValidationException, match=says):
            parse_configuration_updates(bad)


def test_reset_then_merge_over_what_the_last_deployment_left():
    defaults = {"a": {"b": 1, "c": 2}, "d": 3}
    kept = {"a": {"b": 10, "x": 5}, "d": 30}
    assert effective_configuration("app", defaults, kept, None) == {"a": {"b": 10, "c": 2, "x": 5}, "d": 30}
    update = ConfigurationUpdate(merge={"a": {"c": 20}}, reset=("/a/b", "/a/x", "/missing/key"))
    assert effective_configuration("app", defaults, kept, update) == {"a": {"b": 1, "c": 20}, "d": 30}
    assert effective_configuration("app", defaults, kept, ConfigurationUpdate(reset=("",))) == defaults


@pytest.mark.parametrize(
    "merge, says",
    [
        ({"Capture": {"NormalShare": -0.5}}, "Capture/NormalShare must be between 0 and 1, got -0.5"),
        ({"Mqtt": {"Brokr": "mqtt://a"}}, "Mqtt/Brokr is not a setting"),
        ({"Colour": "red"}, "'Colour' is not a setting of this component"),
        (
            {"Mqtt": {"Enabled": True, "BrokerUrl": "mqtt://broker:port"}},
            "Mqtt/BrokerUrl 'mqtt://broker:port' does not parse",
        ),
    ],
)
def test_the_agents_configuration_is_checked_at_deploy_time(tmp_path, merge, says):
    build = tmp_path / "build"
    write_component(build, AGENT_COMPONENT, {"Run": "true"}, configuration=AGENT_DEFAULTS)
    with pytest.raises(ValidationException) as caught:
        plan_deployment(
            build,
            DeployOptions(root=tmp_path / "root", configuration_updates=parse_configuration_updates({"merge": merge})),
        )
    assert says in str(caught.value) and caught.value.field == "--update-config"


def test_an_update_without_a_component_needs_exactly_one_agent(tmp_path):
    build = tmp_path / "build"
    write_component(build, "com.acme.App", {"Run": "true"})
    with pytest.raises(ValidationException, match="0 Edge Agent components"):
        plan_deployment(
            build, DeployOptions(root=tmp_path / "root", configuration_updates={EDGE_AGENT: ConfigurationUpdate()})
        )


def test_a_live_update_restarts_only_components_whose_lifecycle_changed_and_a_bad_one_changes_nothing(tmp_path):
    build, root = tmp_path / "build", tmp_path / "root"
    write_component(
        build,
        "echo",
        {
            "Setenv": {"GREETING": "{configuration:/Greeting}"},
            "Run": 'echo "$GREETING" >> {work:path}/greetings.txt; exec sleep 300',
        },
        configuration={"Greeting": "hello", "Unused": 1},
    )
    write_component(build, "other", {"Run": "exec sleep 300"}, configuration={"X": 1})
    process = subprocess.Popen(
        deploy_local(str(build), "--root", str(root)),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: states(root) == {"echo": "RUNNING", "other": "RUNNING"})
        pids = {n: c["pid"] for n, c in read_state(root)["components"].items()}
        update = subprocess.run(
            deploy_local(
                "--root",
                str(root),
                "--update-config",
                json.dumps({"echo": {"MERGE": {"Greeting": "bonjour", "Unused": 2}}}),
            ),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert update.returncode == 0, update.stderr
        assert "restarted echo" in update.stdout
        greetings = root / "work" / "echo" / "greetings.txt"
        wait_for(lambda: greetings.read_text() == "hello\nbonjour\n")
        after = {n: c["pid"] for n, c in read_state(root)["components"].items()}
        assert after["other"] == pids["other"] and after["echo"] != pids["echo"]
        unchanged = subprocess.run(
            deploy_local("--root", str(root), "--update-config", '{"echo": {"MERGE": {"Unused": 3}}}'),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert unchanged.returncode == 0 and "no component's lifecycle uses a changed value" in unchanged.stdout
        bad = subprocess.run(
            deploy_local("--root", str(root), "--update-config", '{"nosuch": {"MERGE": {}}}'),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
            f"error: ValidationException: configuration update names components not in {build}: nosuch"
        ]
        assert read_configuration(root)[1]["echo"] == {"Greeting": "bonjour", "Unused": 3}
        assert {n: c["pid"] for n, c in read_state(root)["components"].items()} == after
    finally:
        process.terminate()
        process.wait(timeout=60)


@pytest.fixture
def capture_bucket(monkeypatch, tmp_path):
    """moto's S3 over HTTP, a bucket, and fake credentials in the environment deploy-local's components inherit."""
    from packager.edge.uploader import s3_client
    from tests.packager.greengrass.publish.conftest import (
        FAKE_ACCESS_KEY_ID,
        FAKE_SECRET_ACCESS_KEY,
        isolate_aws_environment,
    )
    from tests.packager.greengrass.publish.loopback import LoopbackS3

    server = LoopbackS3()
    server.start()
    isolate_aws_environment(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET_ACCESS_KEY)
    client = s3_client(server.endpoint)
    client.create_bucket(Bucket="line-captures")
    yield server.endpoint, client
    server.stop()


@pytest.mark.slow
def test_a_configuration_update_changes_the_threshold_the_running_agent_uses(tmp_path, mosquitto, capture_bucket):
    """Build once; then thresholds and MQTT change through deploy-local --update-config while the agent serves,
    and captured images reach S3."""
    import grpc

    from compilers.frontends.spec import spec_from_dict
    from packager.edge import edge_agent_pb2 as pb
    from packager.edge import edge_agent_pb2_grpc as pb_grpc
    from packager.edge.model_runner import normalized
    from tests.packager.edge.conftest import Subscriber, bitmap, defective_image, edge_spec_dict
    from tests.packager.greengrass.local.test_deploy import tiny_model_case

    # The configuration's thresholds are on the model's own scale (as the spec's); the agent answers on [0, 1].
    scale = spec_from_dict(edge_spec_dict()).normalization
    unit = lambda raw: normalized(raw, {"min": scale.min, "max": scale.max})  # noqa: E731

    model_args, _, _ = tiny_model_case(tmp_path)
    build, root, component = tmp_path / "gg", tmp_path / "root", "com.acme.LineDemo"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "packager",
            "build",
            *model_args,
            "--output",
            str(build),
            "--component-name",
            component,
            "--benchmark-runs",
            "2",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PACKAGER_HOME": str(tmp_path / "packager-home")},
    )
    assert built.returncode == 0, built.stderr
    address = f"unix://{tmp_path}/agent.sock"
    endpoint, s3 = capture_bucket
    first = {
        "merge": {
            "Socket": address,
            "Mqtt": {"Enabled": True, "BrokerUrl": mosquitto.url, "Topic": "line/{component}"},
            "Capture": {
                "Enabled": True,
                "NormalShare": 0,
                "Bucket": "line-captures",
                "Prefix": "line-7",
                "EndpointUrl": endpoint,
                "UploadIntervalSeconds": 0.2,
            },
        }
    }
    process = subprocess.Popen(
        deploy_local(str(build), "--root", str(root), "--update-config", json.dumps(first)),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    subscriber = Subscriber(mosquitto.port, "line/#")
    image = defective_image()

    def update(doc: dict) -> subprocess.CompletedProcess:
        return subprocess.run(
            deploy_local("--root", str(root), "--update-config", json.dumps(doc)),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=180,
        )

    def agent_pid() -> int:
        return read_state(root)["components"][AGENT_COMPONENT]["pid"]

    def running_with(stub, words: str) -> str:
        def described():
            try:
                description = stub.DescribeModel(pb.DescribeModelRequest(model_component=component)).model_description
            except grpc.RpcError:  # the agent is restarting
                return None
            return (
                description.status_message
                if description.status == pb.RUNNING and words in description.status_message
                else None
            )

        return wait_for(described, timeout=120)

    try:
        wait_for(
            lambda: states(root) == {AGENT_COMPONENT: "RUNNING", component: "FINISHED"} or process.poll() is not None,
            timeout=300,
        )
        assert process.poll() is None, process.stdout.read()
        subscriber.wait_subscribed()
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.EdgeAgentStub(channel)
            grpc.channel_ready_future(channel).result(timeout=60)
            wait_for(lambda: stub.ListModels(pb.ListModelsRequest()).models)
            stub.StartModel(pb.StartModelRequest(model_component=component))
            assert "image threshold 1.5 (the model's), pixel threshold 1.2 (the model's)" in running_with(stub, "1.5")

            def detect():
                request = pb.DetectAnomaliesRequest(model_component=component, bitmap=bitmap(image))
                return stub.DetectAnomalies(request).detect_anomaly_result

            before = detect()
            assert before.is_anomalous and before.anomaly_threshold == pytest.approx(unit(1.5))
            ((topic, message),) = subscriber.wait_for(1)  # the recipe's Setenv carried Mqtt to the agent
            assert topic == f"line/{component}" and message["image_id"] and message["is_anomalous"] is True
            keys = wait_for(
                lambda: [
                    o["Key"]
                    for o in s3.list_objects_v2(Bucket="line-captures").get("Contents", [])
                    if o["Key"].endswith(".json")
                ]
            )  # captured, then uploaded by the agent
            assert len(keys) == 1 and keys[0].split("/")[2:4] == [component, "anomaly"]
            assert keys[0].startswith("line-7/") and message["image_id"] in keys[0]

            raised = round(scale.min + before.anomaly_score * (scale.max - scale.min) + 0.25, 3)  # above its raw score
            pid = agent_pid()
            changed = update({"merge": {"Thresholds": {component: {"Image": raised}}}})
            assert changed.returncode == 0, changed.stderr
            assert f"restarted {AGENT_COMPONENT}" in changed.stdout and agent_pid() != pid
            message = running_with(stub, f"image threshold {raised:g} (set in the agent's configuration)")
            assert "pixel threshold 1.2 (the model's)" in message  # the agent started the model again by itself
            after = detect()
            assert not after.is_anomalous and after.anomaly_threshold == pytest.approx(unit(raised))
            assert after.anomaly_score == pytest.approx(before.anomaly_score, rel=1e-6)  # the same image, no rebuild

            pid = agent_pid()
            for bad, says in (
                ({"Capture": {"NormalShare": -0.5}}, "Capture/NormalShare"),
                ({"Mqtt": {"Brokr": "mqtt://a"}}, "Mqtt/Brokr is not a setting"),
                ({"Mqtt": {"BrokerUrl": "mqtt://broker:port"}}, "Mqtt/BrokerUrl"),
            ):
                refused = update({"merge": bad})
                assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
                assert refused.stderr.startswith("error: ValidationException: ") and says in refused.stderr
            assert agent_pid() == pid  # the agent keeps its last good configuration
            assert detect().anomaly_threshold == pytest.approx(unit(raised))

            reset = update({"reset": ["/Thresholds"]})
            assert reset.returncode == 0, reset.stderr
            running_with(stub, "image threshold 1.5 (the model's)")
            assert detect().is_anomalous
        stop = subprocess.run(
            deploy_local("--stop", "--root", str(root)), cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert stop.returncode == 0, stop.stderr
    finally:
        subscriber.close()
        if process.poll() is None:
            process.kill()
