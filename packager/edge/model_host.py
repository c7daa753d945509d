"""The models the agent serves, and their lifecycle: STOPPED -> STARTING -> RUNNING -> STOPPING -> STOPPED (or FAILED).

Loading and unloading happen on background threads, so StartModel and StopModel answer at once. One lock guards
the table of models. Each running model loads and infers on one thread of its own: a TVM VM must not be entered by
two threads at once, and TVM keeps a worker pool per calling thread, whose workers spin for seconds after each
call, so inferring from whichever gRPC thread took the request would multiply spinning pools.
"""

from __future__ import annotations

import enum
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from . import registry
from .model_runner import AnomalyDetector
from .settings import ThresholdOverride

log = logging.getLogger(__name__)
T = TypeVar("T")


class Status(enum.IntEnum):
    """Values match the proto's ModelStatus."""

    STOPPED = 0
    STARTING = 1
    RUNNING = 2
    FAILED = 3
    STOPPING = 4


class ModelNotFound(LookupError):
    pass


class WrongModelState(RuntimeError):
    pass


@dataclass(frozen=True)
class ModelSnapshot:
    component: str
    model_arn: str
    status: Status
    status_message: str


@dataclass
class HostedModel:
    registration: registry.ModelRegistration
    status: Status = Status.STOPPED
    status_message: str = "model is stopped"
    detector: AnomalyDetector | None = None
    in_use: int = 0  # detections holding the detector; a stop waits for them
    inference: ThreadPoolExecutor | None = None  # the model's one inference thread while it is loaded

    def snapshot(self) -> ModelSnapshot:
        return ModelSnapshot(self.registration.component, self.registration.model_arn, self.status, self.status_message)

    def on_model_thread(self, work: Callable[..., T], *args) -> T:
        """work(detector, *args) on the model's own thread; concurrent callers queue there, bounded by the agent's slots.

        Preprocessing and the mask run there too: the model's input and output stay in that core's cache, which
        saved about 0.2 ms per 224x224 detection against handing only the model run over.
        """
        return self.inference.submit(work, self.detector, *args).result()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"[:500]


def load_and_warm(model_dir: Path) -> AnomalyDetector:
    """Load, then run once so the first request does not pay for lazy initialisation. Runs on the model's thread."""
    from .model_runner import num_threads

    detector = AnomalyDetector.load(model_dir)
    height, width = detector.spec["preprocessing"]["resize"]
    detector.detect(np.zeros((height, width, 3), np.uint8))
    # TVM's CPU thread pool belongs to the thread that first runs a model: this one, which serves every request.
    log.info("%s runs on %d TVM CPU threads", model_dir, num_threads())
    return detector


def with_thresholds(detector: AnomalyDetector, override: ThresholdOverride | None) -> tuple[AnomalyDetector, str]:
    """The detector with the configured thresholds in its spec, and a status message that says which are in force."""
    spec = dict(detector.spec)
    sources = {}
    for key, value in (
        ("image_threshold", override and override.image),
        ("pixel_threshold", override and override.pixel),
    ):
        if value is not None:
            spec[key], sources[key] = value, "set in the agent's configuration"
        else:
            sources[key] = "the model's"
    if "pixel_threshold" not in spec:
        spec["pixel_threshold"], sources["pixel_threshold"] = spec["image_threshold"], "the model's image threshold"
    message = (
        f"model is running; image threshold {spec['image_threshold']:g} ({sources['image_threshold']}), "
        f"pixel threshold {spec['pixel_threshold']:g} ({sources['pixel_threshold']})"
    )
    return (detector if spec == detector.spec else AnomalyDetector(detector.model, spec)), message


class ModelHost:
    """resume_file, when given, records which models are RUNNING, so that an agent restarted with new settings
    starts them again by itself."""

    def __init__(
        self,
        registry_dir: Path,
        loader: Callable[[Path], AnomalyDetector] = load_and_warm,
        thresholds: Mapping[str, ThresholdOverride] | None = None,
        resume_file: Path | None = None,
    ):
        self.registry_dir = Path(registry_dir)
        self._loader = loader
        self._thresholds = dict(thresholds or {})
        self._resume_file = resume_file
        self._lock = threading.Condition()
        self._models: dict[str, HostedModel] = {}

    def resume(self) -> list[str]:
        """Start the models that were RUNNING when the previous agent stopped; the names started."""
        try:
            names = json.loads(self._resume_file.read_text()) if self._resume_file else []
        except (OSError, ValueError):
            return []
        started = []
        for name in names:
            try:
                self.start(name)
                started.append(name)
            except (ModelNotFound, WrongModelState) as exc:
                log.info("not resuming %s: %s", name, exc)
        return started

    def _record_running(self) -> None:
        """Called with the lock held."""
        if self._resume_file is None:
            return
        names = sorted(n for n, m in self._models.items() if m.status in (Status.STARTING, Status.RUNNING))
        try:
            tmp = self._resume_file.with_name(self._resume_file.name + ".tmp")
            tmp.write_text(json.dumps(names))
            tmp.replace(self._resume_file)
        except OSError as exc:
            log.warning("cannot record the running models in %s: %s", self._resume_file, exc)

    def refresh(self) -> None:
        """Pick up registrations that appeared, changed, or went away since the last look."""
        found = registry.scan(self.registry_dir)
        with self._lock:
            for name in set(self._models) - set(found):
                log.info("model component %s was unregistered", name)
                gone = self._models.pop(name)
                if gone.inference is not None:
                    gone.inference.shutdown(wait=False)  # queued inferences finish; its thread then ends
            for name, registration in found.items():
                hosted = self._models.get(name)
                if hosted is None:
                    log.info(
                        "model component %s %s registered (%s)", name, registration.version, registration.model_dir
                    )
                    self._models[name] = HostedModel(registration)
                elif hosted.registration != registration and hosted.status in (Status.STOPPED, Status.FAILED):
                    hosted.registration = registration

    def _get(self, component: str) -> HostedModel:
        hosted = self._models.get(component)
        if hosted is None:
            raise ModelNotFound(f"model component {component!r} is not deployed on this device")
        return hosted

    def hosted(self, component: str) -> HostedModel:
        with self._lock:
            return self._get(component)

    def list(self) -> list[ModelSnapshot]:
        self.refresh()
        with self._lock:
            return [self._models[name].snapshot() for name in sorted(self._models)]

    def describe(self, component: str) -> ModelSnapshot:
        self.refresh()
        with self._lock:
            return self._get(component).snapshot()

    def start(self, component: str) -> Status:
        self.refresh()
        with self._lock:
            hosted = self._get(component)
            if hosted.status not in (Status.STOPPED, Status.FAILED):
                raise WrongModelState(
                    f"model component {component!r} is {hosted.status.name}; StartModel needs it STOPPED or FAILED"
                )
            hosted.status, hosted.status_message = Status.STARTING, "loading the model"
            self._record_running()
        threading.Thread(target=self._load, args=(hosted,), name=f"start-{component}", daemon=True).start()
        return Status.STARTING

    def _load(self, hosted: HostedModel) -> None:
        name = hosted.registration.component
        inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infer-{name}")
        try:
            detector = inference.submit(self._loader, hosted.registration.model_dir).result()
            detector, running_message = with_thresholds(detector, self._thresholds.get(name))
        except Exception as exc:  # any load failure is the model's state, never the agent's death
            log.exception("model component %s failed to start", name)
            inference.shutdown(wait=False)
            with self._lock:
                hosted.status, hosted.status_message = Status.FAILED, f"model failed to load: {_first_line(exc)}"
                self._record_running()
            return
        with self._lock:
            hosted.detector, hosted.inference = detector, inference
            hosted.status, hosted.status_message = Status.RUNNING, running_message
        log.info("model component %s is running", hosted.registration.component)

    def stop(self, component: str) -> Status:
        self.refresh()
        with self._lock:
            hosted = self._get(component)
            if hosted.status is not Status.RUNNING:
                raise WrongModelState(
                    f"model component {component!r} is {hosted.status.name}; StopModel needs it RUNNING"
                )
            hosted.status, hosted.status_message = Status.STOPPING, "waiting for running detections to finish"
            self._record_running()
        threading.Thread(target=self._unload, args=(hosted,), name=f"stop-{component}", daemon=True).start()
        return Status.STOPPING

    def _unload(self, hosted: HostedModel) -> None:
        with self._lock:
            self._lock.wait_for(lambda: hosted.in_use == 0)
            inference, hosted.inference, hosted.detector = hosted.inference, None, None
            hosted.status, hosted.status_message = Status.STOPPED, "model is stopped"
        inference.shutdown(wait=True)
        log.info("model component %s stopped", hosted.registration.component)

    @contextmanager
    def running(self, component: str) -> Iterator[HostedModel]:
        """The model, held RUNNING for the duration: a StopModel issued meanwhile waits for it."""
        with self._lock:
            hosted = self._models.get(component)
        if hosted is None:
            self.refresh()
        with self._lock:
            hosted = self._get(component)
            if hosted.status is not Status.RUNNING:
                raise WrongModelState(
                    f"model component {component!r} is {hosted.status.name}; "
                    "DetectAnomalies needs it RUNNING (call StartModel)"
                )
            hosted.in_use += 1
        try:
            yield hosted
        finally:
            with self._lock:
                hosted.in_use -= 1
                self._lock.notify_all()
