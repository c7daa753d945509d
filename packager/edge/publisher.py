"""Every DetectAnomalies result as one JSON message to an MQTT broker, from a thread of its own (paho-mqtt).

The detection thread only puts the record on a bounded queue. When the queue is full, or the broker is down, the
message is dropped, counted, and logged at most every LOG_EVERY_S seconds, and at once when the reason changes (a full
queue, then the broker gone); paho reconnects in the background and publishing resumes by itself.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid

from .line import Detection, result_document
from .settings import MqttSettings

LOG_EVERY_S = 10.0
RECONNECT_DELAY_S = (0.2, 5.0)  # paho's back-off between reconnect attempts: first, most
log = logging.getLogger("lookout_edge.publisher")


class ResultPublisher:
    def __init__(self, settings: MqttSettings, thing_name: str = ""):
        self.settings = settings
        self.thing_name = thing_name
        self.published = 0  # handed to paho while connected
        self.dropped = 0
        self._queue: queue.Queue[Detection | None] = queue.Queue(maxsize=settings.queue_size)
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self._drops_unlogged, self._last_drop_log, self._last_reason, self._logged_reason = 0, 0.0, "", ""
        self._client = None
        self._thread: threading.Thread | None = None

    # -- the detection side: never blocks ---------------------------------------------------------------------
    def offer(self, detection: Detection) -> None:
        try:
            self._queue.put_nowait(detection)
        except queue.Full:
            self._drop(f"the queue of {self.settings.queue_size} messages is full")

    def _drop(self, reason: str) -> None:
        with self._lock:
            self.dropped += 1
            self._drops_unlogged += 1
            self._last_reason = reason
            now = time.monotonic()
            if now - self._last_drop_log < LOG_EVERY_S and reason == self._logged_reason:
                return
            count, self._drops_unlogged, self._last_drop_log = self._drops_unlogged, 0, now
            self._logged_reason = reason
        log.warning(
            "dropped %d result message(s) for %s:%d (%s); %d dropped since start",
            count,
            self.settings.host,
            self.settings.port,
            reason,
            self.dropped,
        )

    # -- the publishing side ------------------------------------------------------------------------------------
    def start(self) -> ResultPublisher:
        import paho.mqtt.client as mqtt

        s = self.settings
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=s.client_id or f"lookout-edge-{uuid.uuid4().hex[:12]}",
            protocol=mqtt.MQTTv311,
        )
        if s.username:
            client.username_pw_set(s.username, s.password or None)
        if s.tls:
            client.tls_set(ca_certs=s.ca_file or None, certfile=s.cert_file or None, keyfile=s.key_file or None)
        client.reconnect_delay_set(*RECONNECT_DELAY_S)
        client.max_queued_messages_set(s.queue_size)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.connect_async(s.host, s.port, keepalive=30)
        client.loop_start()  # paho's network thread: connects, and reconnects after any loss
        self._client = client
        self._thread = threading.Thread(target=self._publish_loop, name="mqtt-publisher", daemon=True)
        self._thread.start()
        log.info(
            "publishing results to %s://%s:%d topic %s (QoS %d)",
            "mqtts" if s.tls else "mqtt",
            s.host,
            s.port,
            s.topic,
            s.qos,
        )
        return self

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning(
                "the MQTT broker %s:%d refused the connection: %s", self.settings.host, self.settings.port, reason_code
            )
            return
        self._connected.set()
        log.info("connected to the MQTT broker %s:%d", self.settings.host, self.settings.port)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._connected.is_set():
            log.warning(
                "lost the MQTT broker %s:%d (%s); reconnecting", self.settings.host, self.settings.port, reason_code
            )
        self._connected.clear()

    def topic_for(self, detection: Detection) -> str:
        return self.settings.topic.replace("{component}", detection.component).replace("{thing}", self.thing_name)

    def _publish_loop(self) -> None:
        import paho.mqtt.client as mqtt

        while (detection := self._queue.get()) is not None:
            try:
                if not self._connected.is_set():
                    self._drop("the broker is not connected")
                    continue
                payload = json.dumps(result_document(detection), separators=(",", ":"))
                info = self._client.publish(self.topic_for(detection), payload, qos=self.settings.qos)
                if info.rc == mqtt.MQTT_ERR_SUCCESS:
                    self.published += 1
                else:
                    self._drop(mqtt.error_string(info.rc))
            except Exception:  # one bad message must not end publishing
                log.exception("publishing a result failed")
                self._drop("an error while publishing")

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Publish what is queued (while connected), then disconnect."""
        if self._thread is not None:
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                pass  # the broker is too slow to drain it; the daemon thread ends with the process
            self._thread.join(timeout)
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
