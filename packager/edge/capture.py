"""Images kept for retraining: every anomalous one and a share of normal ones, in a capped local spool.

Each captured image is one item of three files, written under the spool in the layout they get in S3:

    <YYYY-MM-DD>/<model component>/<anomaly|normal>/<stamp>-<image id>.png        the image the client sent
    <YYYY-MM-DD>/<model component>/<anomaly|normal>/<stamp>-<image id>.mask.png   its mask, in the classes' colours
    <YYYY-MM-DD>/<model component>/<anomaly|normal>/<stamp>-<image id>.json       its result, as published over MQTT

Each file is written under a hidden name and then renamed, and the JSON comes last: an item is complete once its
JSON exists. The spool never holds more than its cap. Items older than the retention go first, then the oldest
normal items, and anomalous ones only when no normal item is left. Encoding and writing run on a thread of their own.
"""

from __future__ import annotations

import calendar
import json
import logging
import os
import queue
import random
import re
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .line import Detection, result_document
from .settings import CaptureSettings

ANOMALY, NORMAL = "anomaly", "normal"
SUFFIXES = (".png", ".mask.png", ".json")  # the JSON last: it marks the item complete
# Camera images barely compress: on a 224x224 part, level 6 took 2.5x the CPU of level 1 for a 1% smaller file.
PNG_LEVEL = 1
WRITE_QUEUE = 16  # images waiting to be encoded; more are dropped and counted
_STEM = re.compile(r"(\d{8}T\d{9})Z-[0-9a-f]+")
log = logging.getLogger("lookout_edge.capture")


def png_bytes(rgb: np.ndarray, level: int = PNG_LEVEL) -> bytes:
    """An 8-bit RGB PNG, with zlib from the standard library (no imaging library on the device)."""
    height, width = rgb.shape[:2]
    rows = np.empty((height, width * 3 + 1), np.uint8)
    rows[:, 0] = 0  # filter type None on every row
    rows[:, 1:] = np.ascontiguousarray(rgb, np.uint8).reshape(height, width * 3)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), level))
        + chunk(b"IEND", b"")
    )


@dataclass(frozen=True)
class SpoolItem:
    directory: Path
    stem: str
    label: str
    captured: float  # seconds since the epoch

    def files(self) -> list[Path]:
        return [self.directory / (self.stem + suffix) for suffix in SUFFIXES]

    def size(self) -> int:
        total = 0
        for path in self.files():
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                pass
        return total

    def remove(self) -> None:
        for path in self.files():
            path.unlink(missing_ok=True)


def _stamp(seconds: float) -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(seconds)) + f"{int(seconds % 1 * 1000):03d}Z"


class Spool:
    """The capture directory: adds items, lists the complete ones oldest first, and keeps the cap and retention."""

    def __init__(self, root: Path, max_bytes: int, retention_days: float, png_level: int = PNG_LEVEL):
        self.root = Path(root)
        self.png_level = png_level
        self.max_bytes = max_bytes
        self.retention_s = retention_days * 86400
        self._lock = threading.Lock()
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob("*/*/*/.*.tmp"):  # a write cut short by a crash
            stale.unlink(missing_ok=True)
        self._bytes = self.enforce()

    def items(self) -> list[SpoolItem]:
        found = []
        for path in self.root.glob("*/*/*/*.json"):
            match = _STEM.fullmatch(path.name[: -len(".json")])
            if match and path.parent.name in (ANOMALY, NORMAL):
                captured = calendar.timegm(time.strptime(match.group(1)[:15], "%Y%m%dT%H%M%S"))
                found.append(
                    SpoolItem(
                        path.parent,
                        path.name[: -len(".json")],
                        path.parent.name,
                        captured + int(match.group(1)[15:]) / 1000,
                    )
                )
        return sorted(found, key=lambda item: (item.captured, item.stem))

    def add(self, detection: Detection) -> SpoolItem:
        label = ANOMALY if detection.result.is_anomalous else NORMAL
        date = time.strftime("%Y-%m-%d", time.gmtime(detection.timestamp))
        item = SpoolItem(
            self.root / date / detection.component / label,
            f"{_stamp(detection.timestamp)}-{detection.image_id}",
            label,
            detection.timestamp,
        )
        item.directory.mkdir(parents=True, exist_ok=True)
        mask = (
            None if detection.mask is None else png_bytes(detection.mask.pixels, self.png_level)
        )  # None: classification
        contents = (
            png_bytes(detection.image, self.png_level),
            mask,
            json.dumps(result_document(detection), indent=1).encode(),
        )
        written = 0
        for path, data in zip(item.files(), contents):
            if data is None:
                continue
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            written += len(data)
        with self._lock:
            self._bytes += written
            over = self._bytes > self.max_bytes
        if over:
            self.enforce()
        return item

    def enforce(self, now: float | None = None) -> int:
        """Drop expired items, then the oldest normal ones, then the oldest anomalous ones, until under the cap.
        Counts what is really on disk, so files the uploader removed are not counted. Returns the bytes kept."""
        now = time.time() if now is None else now
        with self._lock:
            items = [(item, item.size()) for item in self.items()]
            total = sum(size for _, size in items)
            kept = []
            for item, size in items:
                if now - item.captured > self.retention_s:
                    item.remove()
                    total -= size
                else:
                    kept.append((item, size))
            for label in (NORMAL, ANOMALY):
                for item, size in [entry for entry in kept if entry[0].label == label]:
                    if total <= self.max_bytes:
                        break
                    item.remove()
                    total -= size
            self._bytes = total
            return total

    @property
    def bytes(self) -> int:
        return self._bytes


class ImageCapture:
    """The sink: decides on the detection thread (a random draw), encodes and writes on its own thread."""

    def __init__(self, settings: CaptureSettings, spool: Spool, rng: random.Random | None = None):
        self.settings = settings
        self.spool = spool
        self.captured = 0
        self.dropped = 0
        self._rng = rng or random.Random()
        self._queue: queue.Queue[Detection | None] = queue.Queue(maxsize=WRITE_QUEUE)
        self._last_retention = time.monotonic()
        self._thread = threading.Thread(target=self._write_loop, name="image-capture", daemon=True)
        self._thread.start()

    def offer(self, detection: Detection) -> None:
        if not detection.result.is_anomalous and self._rng.random() >= self.settings.normal_share:
            return
        try:
            self._queue.put_nowait(detection)
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.warning("image capture is behind: %d images not kept so far", self.dropped)

    def _write_loop(self) -> None:
        while (detection := self._queue.get()) is not None:
            try:
                self.spool.add(detection)
                self.captured += 1
                if time.monotonic() - self._last_retention > 60:
                    self._last_retention = time.monotonic()
                    self.spool.enforce()
            except Exception:  # a full disk or a bad image must not end capturing
                log.exception("capturing image %s failed", detection.image_id)
                self.dropped += 1
            finally:
                self._queue.task_done()

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every image offered so far is written (tests, and a clean stop)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self, timeout: float = 10.0) -> None:
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)
