"""Results over MQTT: a real mosquitto broker, a real paho subscriber, and the agent serving a compiled model."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from packager.edge import edge_agent_pb2 as pb
from packager.edge.publisher import ResultPublisher
from packager.edge.settings import parse_mqtt
from tests.packager.edge.conftest import MODEL, Subscriber, bitmap, defective_image, normal_image, wait_for_status

pytestmark = pytest.mark.slow  # the session's first test compiles the model
ARN = "arn:aws:lookoutvision:us-east-1:123456789012:model/circuits/3"


def publisher_for(broker, **settings) -> ResultPublisher:
    return ResultPublisher(
        parse_mqtt({"Enabled": True, "BrokerUrl": broker.url, **settings}), thing_name="line-7"
    ).start()


def started(make_agent, publisher):
    agent = make_agent(sinks=(publisher,), model_arn=ARN)
    assert agent.stub.StartModel(pb.StartModelRequest(model_component=MODEL)).status == pb.STARTING
    assert wait_for_status(agent.stub, MODEL, pb.RUNNING).status == pb.RUNNING
    assert publisher.wait_connected(20)
    return agent


def detect(stub, image) -> pb.DetectAnomalyResult:
    return stub.DetectAnomalies(
        pb.DetectAnomaliesRequest(model_component=MODEL, bitmap=bitmap(image))
    ).detect_anomaly_result


def test_one_message_per_detection_with_the_documented_fields(mosquitto, make_agent):
    subscriber = Subscriber(mosquitto.port, "lookoutvision/#")
    try:
        subscriber.wait_subscribed()
        publisher = publisher_for(mosquitto, Topic="lookoutvision/{thing}/{component}/result", Qos=1)
        agent = started(make_agent, publisher)
        images = [normal_image(), defective_image(), normal_image(64, 80), defective_image()]
        answers = [detect(agent.stub, image) for image in images]
        messages = subscriber.wait_for(len(images))
        time.sleep(0.3)  # nothing more may arrive
        assert len(subscriber.messages) == len(images)
    finally:
        subscriber.close()
    assert {topic for topic, _ in messages} == {f"lookoutvision/line-7/{MODEL}/result"}
    assert len({m["image_id"] for _, m in messages}) == len(images)
    for (_, message), answer, image in zip(messages, answers, images):
        assert set(message) == {
            "format",
            "model_component",
            "lookout_vision_model_arn",
            "timestamp",
            "image_id",
            "is_anomalous",
            "anomaly_score",
            "anomaly_threshold",
            "confidence",
            "anomalies",
            "inference_latency_ms",
            "image",
        }
        assert (message["model_component"], message["lookout_vision_model_arn"]) == (MODEL, ARN)
        assert message["timestamp"].endswith("Z") and time.strptime(message["timestamp"][:19], "%Y-%m-%dT%H:%M:%S")
        assert message["is_anomalous"] is answer.is_anomalous
        assert message["anomaly_score"] == pytest.approx(answer.anomaly_score, rel=1e-6)
        assert message["anomaly_threshold"] == pytest.approx(answer.anomaly_threshold)
        assert message["confidence"] == pytest.approx(answer.confidence, rel=1e-6)
        assert [(a["name"], a["hex_color"]) for a in message["anomalies"]] == [
            (a.name, a.pixel_anomaly.hex_color) for a in answer.anomalies
        ]
        assert [a["total_percentage_area"] for a in message["anomalies"]] == pytest.approx(
            [a.pixel_anomaly.total_percentage_area for a in answer.anomalies], abs=1e-6
        )
        assert 0 < message["inference_latency_ms"] < 10_000
        assert message["image"] == {"width": image.shape[1], "height": image.shape[0]}
    assert [m["is_anomalous"] for _, m in messages] == [False, True, False, True]
    assert (publisher.published, publisher.dropped) == (len(images), 0)


def test_a_broker_outage_drops_and_counts_and_publishing_resumes(mosquitto, make_agent, caplog):
    caplog.set_level(logging.WARNING, logger="lookout_edge.publisher")
    subscriber = Subscriber(mosquitto.port, "lookoutvision/anomalydetection/result")
    publisher = publisher_for(mosquitto)
    agent = started(make_agent, publisher)
    answered, errors, stop = [], [], threading.Event()

    def detections():
        while not stop.is_set():
            try:
                answered.append(detect(agent.stub, defective_image()).is_anomalous)
            except Exception as exc:  # any failed detection fails the test below
                errors.append(exc)

    runner = threading.Thread(target=detections)
    try:
        subscriber.wait_subscribed()
        runner.start()
        while len(answered) < 5:
            time.sleep(0.01)
        mosquitto.stop()  # in the middle of the run
        deadline = time.monotonic() + 20
        while publisher.wait_connected(0) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not publisher.wait_connected(0), "paho never noticed the broker had gone"
        during = len(answered)
        while len(answered) < during + 20:
            time.sleep(0.01)
        mosquitto.start()  # the same port
        assert publisher.wait_connected(20), "the publisher did not reconnect"
        subscriber.wait_subscribed()
        after = len(subscriber.messages)
        resumed = len(answered)
        while len(answered) < resumed + 5:
            time.sleep(0.01)
        stop.set()
        runner.join(30)
        assert len(subscriber.wait_for(after + 3)) >= after + 3, "publishing did not resume"
    finally:
        stop.set()
        subscriber.close()
    assert errors == [] and all(answered)
    assert publisher.dropped >= 20  # everything detected while the broker was away
    time.sleep(0.5)  # let the queue drain
    assert publisher.published + publisher.dropped == len(answered)
    assert any("dropped" in r.getMessage() and "not connected" in r.getMessage() for r in caplog.records)


def test_a_stalled_broker_never_slows_detections(mosquitto, make_agent):
    """SIGSTOP the broker: QoS 1 messages pile up unacknowledged in paho (20 in flight, QueueSize queued), then drop."""
    import signal

    publisher = publisher_for(mosquitto, Qos=1, QueueSize=2)
    agent = started(make_agent, publisher)
    mosquitto.process.send_signal(signal.SIGSTOP)
    try:
        answers = [detect(agent.stub, normal_image()) for _ in range(60)]
        deadline = time.monotonic() + 10
        while publisher.published + publisher.dropped < 60 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        mosquitto.process.send_signal(signal.SIGCONT)
    assert len(answers) == 60 and not any(a.is_anomalous for a in answers)
    assert publisher.published + publisher.dropped == 60
    assert publisher.dropped >= 60 - 20 - 2 - 2  # paho's in-flight window, its queue, ours


def _tls_files(work) -> tuple[str, str, str]:
    """A throw-away CA and a server certificate for 127.0.0.1, made with the openssl command."""
    import subprocess

    ca_key, ca, key, request, cert = (
        str(work / n) for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    (work / "san.cnf").write_text("subjectAltName = IP:127.0.0.1\n")
    for command in (
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=test-ca",
            "-keyout",
            ca_key,
            "-out",
            ca,
        ],
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", request],
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            request,
            "-CA",
            ca,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            str(work / "san.cnf"),
            "-out",
            cert,
        ],
    ):
        subprocess.run(command, check=True, capture_output=True, timeout=60)
    return ca, cert, key


def test_tls_with_a_username_and_password(tmp_path, make_agent):
    """mqtts:// to a broker that wants TLS and a password; the subscriber reads on a plain loopback listener."""
    import subprocess

    from tests.packager.edge.conftest import Mosquitto, free_port

    ca, cert, key = _tls_files(tmp_path)
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(tmp_path / "passwords"), "line@7", "s3cret:pw"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    broker = Mosquitto(tmp_path)
    tls_port = free_port()
    broker.config.write_text(
        f"per_listener_settings true\n{broker.run_as}"
        f"listener {broker.port} 127.0.0.1\nallow_anonymous true\n"
        f"listener {tls_port} 127.0.0.1\nallow_anonymous false\npassword_file {tmp_path / 'passwords'}\n"
        f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
    )
    broker.start()
    subscriber = Subscriber(broker.port, "lookoutvision/#")
    try:
        subscriber.wait_subscribed()
        wrong = ResultPublisher(
            parse_mqtt({"Enabled": True, "BrokerUrl": f"mqtts://line%407:wrong@127.0.0.1:{tls_port}", "CaFile": ca})
        ).start()
        assert not wrong.wait_connected(2)  # refused: the publisher keeps dropping, the agent is unaffected
        wrong.close()
        publisher = ResultPublisher(
            parse_mqtt(
                {"Enabled": True, "BrokerUrl": f"mqtts://line%407:s3cret%3Apw@127.0.0.1:{tls_port}", "CaFile": ca}
            )
        ).start()
        agent = started(make_agent, publisher)
        answer = detect(agent.stub, defective_image())
        ((_, message),) = subscriber.wait_for(1)
        assert message["is_anomalous"] is answer.is_anomalous is True
    finally:
        subscriber.close()
        broker.stop()


def test_drops_are_logged_at_most_every_interval_and_at_once_when_their_reason_changes(caplog, monkeypatch):
    """A full queue and then a broker that went away are two warnings, not one that hides the second for 10 s."""
    from packager.edge import publisher as module
    from packager.edge.settings import MqttSettings

    caplog.set_level(logging.WARNING, logger="lookout_edge.publisher")
    clock = [1000.0]
    monkeypatch.setattr(module.time, "monotonic", lambda: clock[0])
    publisher = ResultPublisher(MqttSettings("broker.invalid", 1883, False, "t", 0))

    def drop(reason: str, after_s: float = 1.0) -> None:
        clock[0] += after_s
        publisher._drop(reason)

    drop("the queue is full")
    drop("the queue is full")
    drop("not connected")
    drop("not connected")
    drop("not connected", after_s=module.LOG_EVERY_S)
    logged = [r.getMessage() for r in caplog.records]
    reasons = [m.split(" (")[1].split(");")[0] for m in logged]  # "... for HOST:PORT (REASON); N dropped since start"
    assert reasons == ["the queue is full", "not connected", "not connected"]
    assert logged[1].startswith("dropped 2 result message(s)") and logged[2].startswith("dropped 2 result message(s)")
    assert publisher.dropped == 5
