"""What the agent hands to the line after each detection: one Detection record, and its JSON document.

The MQTT publisher and the image capture both take Detection records through ``offer``, which never blocks and
never raises: the line's systems being slow or down must not slow or fail a detection.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .mask import AnomalyMask
from .model_runner import AnomalyResult

MESSAGE_FORMAT = "lookout-edge-result/1"


@dataclass(frozen=True)
class Detection:
    component: str
    model_arn: str
    image_id: str
    timestamp: float  # seconds since the epoch, when the result was ready
    latency_s: float  # from the request's arrival to its result and mask
    result: AnomalyResult
    mask: AnomalyMask | None  # None for a classification model: no mask and no anomalies
    image: np.ndarray  # the RGB image the client sent (HxWx3 uint8); never written to


class ResultSink(Protocol):
    def offer(self, detection: Detection) -> None:
        """Take the detection or drop it (and count it); never block, never raise."""

    def close(self) -> None: ...


def utc_timestamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1000):03d}Z"


def result_document(detection: Detection) -> dict:
    """The JSON published per detection, and kept beside a captured image."""
    result = detection.result
    return {
        "format": MESSAGE_FORMAT,
        "model_component": detection.component,
        "lookout_vision_model_arn": detection.model_arn,
        "timestamp": utc_timestamp(detection.timestamp),
        "image_id": detection.image_id,
        "is_anomalous": result.is_anomalous,
        "anomaly_score": result.score,
        "anomaly_threshold": result.threshold,
        "confidence": result.confidence,
        "anomalies": []
        if detection.mask is None
        else [
            {"name": c.name, "total_percentage_area": area, "hex_color": c.hex_color.upper()}
            for c, area in zip(detection.mask.palette.classes, detection.mask.area_fractions)
        ],
        "inference_latency_ms": round(detection.latency_s * 1000.0, 3),
        "image": {"width": int(detection.image.shape[1]), "height": int(detection.image.shape[0])},
    }
