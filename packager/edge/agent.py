"""The Edge Agent: Lookout for Vision's EdgeAgent gRPC API over a Unix socket, for every model deployed here.

    python -m lookout_edge.agent --registry DIR [--socket unix:///tmp/aws.iot.lookoutvision.EdgeAgent.sock]

Requests are checked before any model time is spent; each error maps to one gRPC status. DetectAnomalies calls
beyond --max-in-flight get RESOURCE_EXHAUSTED at once, and gRPC refuses RPCs past its worker count, so no
queue grows without bound.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import logging
import os
import signal
import socket
import stat
import sys
import threading
import time
import uuid
from concurrent import futures
from pathlib import Path

import grpc

from . import DEFAULT_SOCKET, bitmaps
from . import edge_agent_pb2 as pb
from . import edge_agent_pb2_grpc as pb_grpc
from .client import FLOW_CONTROL_OPTIONS
from .line import Detection, ResultSink
from .mask import AnomalyMask, MaskPalette, render
from .model_host import ModelHost, ModelNotFound, WrongModelState
from .model_runner import AnomalyResult, postprocess, preprocess
from .settings import LineSettings, SettingsError, line_settings_from_environment, load_last_good, save_last_good
from .socket_access import DEFAULT_SOCKET_MODE, SocketAccess, SocketAccessError

DEFAULT_MAX_IN_FLIGHT = 32
LAST_GOOD_SETTINGS, RUNNING_MODELS = ".line-settings.last-good", ".running-models"
CAPTURE_SPOOL = "capture"  # under the component's work path
CONTROL_WORKERS = 4  # threads kept free for Start/Stop/List/Describe while detections saturate the rest
log = logging.getLogger("lookout_edge.agent")


class AgentStartError(RuntimeError):
    pass


class Overloaded(RuntimeError):
    pass


class InvalidRequest(ValueError):
    pass


_STATUS_FOR = (
    (bitmaps.InvalidBitmap, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (ModelNotFound, grpc.StatusCode.NOT_FOUND),
    (WrongModelState, grpc.StatusCode.FAILED_PRECONDITION),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
)


def _rpc(handler):
    """Turn our exceptions into one gRPC status each; anything unexpected is INTERNAL and logged, never fatal."""

    @functools.wraps(handler)
    def wrapper(self, request, context):
        try:
            return handler(self, request, context)
        except Exception as exc:
            code = next((c for kind, c in _STATUS_FOR if isinstance(exc, kind)), None)
            if code is None:
                log.exception("%s failed", handler.__name__)
                code, message = grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"[:1000]
            else:
                message = str(exc)
        context.abort(code, message)

    return wrapper


def _region(handle: pb.SharedMemoryHandle) -> bitmaps.SharedRegion:
    return bitmaps.SharedRegion(name=handle.name, size=handle.size, offset=handle.offset)


def _require_component(name: str) -> str:
    if not name:
        raise InvalidRequest("model_component is required")
    return name


def _analyse(detector, rgb) -> tuple[AnomalyResult, AnomalyMask | None]:
    """The model's verdict on one RGB image, and its mask at the image's size (None for a classification model)."""
    spec = detector.spec
    result = postprocess(detector.model.run(preprocess(rgb, spec)), spec)
    if result.anomaly_map is None:
        return result, None
    height, width = rgb.shape[:2]
    return result, render(result.anomaly_map, result.pixel_threshold, MaskPalette.from_spec(spec), height, width)


class EdgeAgentServicer(pb_grpc.EdgeAgentServicer):
    def __init__(self, host: ModelHost, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT, sinks: tuple[ResultSink, ...] = ()):
        self.host = host
        self.max_in_flight = max_in_flight
        self.sinks = tuple(sinks)  # where each result goes besides the reply: MQTT, image capture
        self._slots = threading.BoundedSemaphore(max_in_flight)

    @_rpc
    def DetectAnomalies(self, request, context):
        if not self._slots.acquire(blocking=False):
            raise Overloaded(f"the agent is already running {self.max_in_flight} detections; retry later")
        try:
            response, detection = self._detect(request)
        finally:
            self._slots.release()
        # The line gets the result once the reply is sent: the publisher's and capture's threads then take the GIL
        # while the client reads the reply, not while this thread serialises it.
        if detection is not None and not context.add_callback(functools.partial(self._offer, detection)):
            self._offer(detection)
        return response

    def _offer(self, detection: Detection) -> None:
        for sink in self.sinks:
            sink.offer(detection)

    def _detect(self, request: pb.DetectAnomaliesRequest) -> tuple[pb.DetectAnomaliesResponse, Detection | None]:
        arrived = time.perf_counter()
        component = _require_component(request.model_component)
        if not request.HasField("bitmap"):
            raise InvalidRequest("bitmap is required")
        width, height = request.bitmap.width, request.bitmap.height
        bitmaps.check_size(width, height)
        source = request.bitmap.WhichOneof("data")
        if source is None:
            raise bitmaps.InvalidBitmap("bitmap needs byte_data or shared_memory_handle")
        mask_region = None
        if request.HasField("anomaly_mask_params") and request.anomaly_mask_params.HasField("shared_memory_handle"):
            mask_region = _region(request.anomaly_mask_params.shared_memory_handle)
            bitmaps.check_mask_region(mask_region, width, height)
        with self.host.running(component) as hosted:
            if source == "byte_data":
                rgb = bitmaps.from_bytes(request.bitmap.byte_data, width, height)
            else:
                rgb = bitmaps.from_shared_memory(_region(request.bitmap.shared_memory_handle), width, height)
            result, mask = hosted.on_model_thread(_analyse, rgb)
        detection = (
            Detection(
                component,
                hosted.registration.model_arn,
                uuid.uuid4().hex,
                time.time(),
                time.perf_counter() - arrived,
                result,
                mask,
                rgb,
            )
            if self.sinks
            else None
        )
        # Filled in place: building submessages and passing them in would copy the mask once more.
        response = pb.DetectAnomaliesResponse()
        found = response.detect_anomaly_result
        found.is_anomalous, found.confidence = result.is_anomalous, result.confidence
        found.anomaly_score, found.anomaly_threshold = result.score, result.threshold
        if mask is None:  # a classification model, as Lookout's: no mask and no anomalies
            return response, detection
        found.anomaly_mask.width, found.anomaly_mask.height = width, height
        if mask_region is not None:
            written = bitmaps.to_shared_memory(mask_region, mask.pixels)
            handle = found.anomaly_mask.shared_memory_handle
            handle.name, handle.size, handle.offset = mask_region.name, written, mask_region.offset
        else:
            found.anomaly_mask.byte_data = mask.pixels.tobytes()
        for mask_class, area in zip(mask.palette.classes, mask.area_fractions):
            anomaly = found.anomalies.add(name=mask_class.name)
            anomaly.pixel_anomaly.total_percentage_area, anomaly.pixel_anomaly.hex_color = (
                area,
                mask_class.hex_color.upper(),
            )
        return response, detection

    @_rpc
    def StartModel(self, request, context):
        return pb.StartModelResponse(status=int(self.host.start(_require_component(request.model_component))))

    @_rpc
    def StopModel(self, request, context):
        return pb.StopModelResponse(status=int(self.host.stop(_require_component(request.model_component))))

    @_rpc
    def ListModels(self, request, context):
        return pb.ListModelsResponse(
            models=[
                pb.ModelMetadata(
                    model_component=m.component,
                    lookout_vision_model_arn=m.model_arn,
                    status=int(m.status),
                    status_message=m.status_message,
                )
                for m in self.host.list()
            ]
        )

    @_rpc
    def DescribeModel(self, request, context):
        m = self.host.describe(_require_component(request.model_component))
        return pb.DescribeModelResponse(
            model_description=pb.ModelDescription(
                model_component=m.component,
                lookout_vision_model_arn=m.model_arn,
                status=int(m.status),
                status_message=m.status_message,
            )
        )


def socket_path(address: str) -> Path | None:
    return Path(address[len("unix://") :]) if address.startswith("unix://") else None


def _claim_socket(path: Path) -> None:
    """Remove a socket left by an agent that died; refuse if a live one still answers there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() and not path.is_symlink():
        return
    if not stat.S_ISSOCK(path.lstat().st_mode):
        raise AgentStartError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()
        return
    finally:
        probe.close()
    raise AgentStartError(f"another agent is already listening on {path}")


def serve(
    address: str, host: ModelHost, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT, sinks: tuple[ResultSink, ...] = ()
) -> grpc.Server:
    """Start serving; the caller stops the returned server (and closes the sinks)."""
    if max_in_flight < 1:
        raise AgentStartError(f"max in-flight detections must be at least 1, got {max_in_flight}")
    return listen(address, EdgeAgentServicer(host, max_in_flight, sinks), max_in_flight + CONTROL_WORKERS)


def listen(address: str, servicer: pb_grpc.EdgeAgentServicer, workers: int) -> grpc.Server:
    """Serve the EdgeAgent API from servicer, with the agent's socket handling, server options and worker bound."""
    path = socket_path(address)
    if path is not None:
        _claim_socket(path)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edge-agent"),
        maximum_concurrent_rpcs=workers,
        options=[
            *FLOW_CONTROL_OPTIONS,  # the same fixed window for the bitmaps clients send
            ("grpc.max_receive_message_length", bitmaps.MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", bitmaps.MAX_MESSAGE_BYTES),
        ],
    )
    pb_grpc.add_EdgeAgentServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise AgentStartError(f"cannot listen on {address}: {exc}") from None
    if not bound:
        raise AgentStartError(f"cannot listen on {address}")
    server.start()
    return server


# glibc mallopt parameters, and the values the agent sets.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
KEEP_FREED_BYTES, MMAP_ABOVE_BYTES, MALLOC_ARENAS = 32 << 20, 16 << 20, 4


def _keep_freed_memory() -> None:
    """Reuse freed buffers instead of handing them back to the kernel after every detection.

    By default glibc returns a thread heap's free top once it exceeds twice the largest recent block, so each
    detection's megabyte-sized arrays arrived as fresh zeroed pages: preprocessing a 224x224 image took 1.7 ms
    in the agent against 0.8 ms in a one-thread process. Up to 32 MiB per arena, in 4 arenas, is kept instead.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return  # no C library that exposes mallopt (not Linux): nothing to tune
    for parameter, value in (
        (M_TRIM_THRESHOLD, KEEP_FREED_BYTES),
        (M_MMAP_THRESHOLD, MMAP_ABOVE_BYTES),
        (M_ARENA_MAX, MALLOC_ARENAS),
    ):
        if mallopt(parameter, value) != 1:
            log.warning("mallopt(%d, %d) was refused; freed memory goes back to the kernel", parameter, value)


def _preload_runtime() -> None:
    """Load the TVM runtime while the agent waits, so the first StartModel does not pay for it (a CUDA model's first
    StartModel still imports the tvm package, which a CPU device never needs)."""
    try:
        from .model_runner import load_runtime

        load_runtime()
    except Exception:  # StartModel will report the same failure as the model's state
        log.exception("cannot import the TVM runtime")


def line_settings(environ: dict, last_good: Path) -> LineSettings:
    """The settings the recipe passed; if they are bad, the last good ones (or every feature off), with one error logged."""
    try:
        settings = line_settings_from_environment(environ)
    except SettingsError as exc:
        previous = load_last_good(last_good)
        log.error(
            "bad agent configuration: %s; keeping the %s",
            exc,
            "last good configuration" if previous else "defaults (MQTT and capture off, the models' thresholds)",
        )
        return previous[0] if previous else LineSettings()
    save_last_good(last_good, environ)
    return settings


def start_line(settings: LineSettings, work_dir: Path) -> tuple[tuple[ResultSink, ...], list]:
    """The result sinks the settings turn on, and the background workers to close at the end (the uploader)."""
    sinks: list[ResultSink] = []
    workers: list = []
    if settings.mqtt is not None:
        from .publisher import ResultPublisher  # paho is imported only when MQTT is on

        sinks.append(ResultPublisher(settings.mqtt, thing_name=os.environ.get("AWS_IOT_THING_NAME", "")).start())
    if settings.capture is not None:
        from .capture import ImageCapture, Spool

        capture = settings.capture
        spool = Spool(work_dir / CAPTURE_SPOOL, capture.max_bytes, capture.retention_days, capture.png_level)
        sinks.append(ImageCapture(capture, spool))
        log.info(
            "capturing every anomalous image and %.3g of normal ones in %s (at most %d MiB)",
            capture.normal_share,
            spool.root,
            capture.max_bytes >> 20,
        )
        if capture.bucket:
            from .uploader import SpoolUploader, s3_client  # boto3 is imported only when uploads are on

            workers.append(
                SpoolUploader(
                    spool, s3_client(capture.endpoint_url, capture.region), capture.bucket, capture.prefix
                ).start(capture.upload_interval_s)
            )
            log.info("uploading captured images to s3://%s/%s", capture.bucket, capture.prefix)
    return tuple(sinks), workers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lookout_edge.agent", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--socket", default=DEFAULT_SOCKET, help=f"gRPC address to listen on (default {DEFAULT_SOCKET})"
    )
    parser.add_argument("--registry", type=Path, required=True, help="directory where model components register")
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=DEFAULT_MAX_IN_FLIGHT,
        help=f"DetectAnomalies calls served at once before RESOURCE_EXHAUSTED (default {DEFAULT_MAX_IN_FLIGHT})",
    )
    parser.add_argument(
        "--socket-mode",
        default=DEFAULT_SOCKET_MODE,
        help=f"permission bits of the Unix socket (default {DEFAULT_SOCKET_MODE}: the agent's user and group)",
    )
    parser.add_argument("--socket-group", default="", help="group that owns the Unix socket (default: the agent's own)")
    parser.add_argument(
        "--inference-threads",
        type=int,
        default=0,
        help="CPU threads per model run (TVM_NUM_THREADS); 0 leaves TVM's choice: every core on ARM, the "
        "physical cores on x86",
    )
    args = parser.parse_args(argv)
    if args.inference_threads < 0:
        parser.error(f"--inference-threads must be 0 or more, got {args.inference_threads}")
    if args.inference_threads:
        os.environ["TVM_NUM_THREADS"] = str(args.inference_threads)  # read once, when TVM first starts its pool
    # TVM's runtime only: the agent never compiles, and the 250 MB compiler library cost 110 MB of resident memory and
    # 0.5 s of start-up on the build machine. CUDA models load TVM's CUDA runtime themselves (model_runner).
    os.environ.setdefault("TVM_USE_RUNTIME_LIB", "1")
    # tvm_ffi imports torch whenever it is installed, for tensor interop the agent never uses: on a build machine that
    # cost 200 MB of resident memory and 10 s of start-up. The agent does without it, as a device without torch does.
    sys.modules.setdefault("torch", None)
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.registry.mkdir(parents=True, exist_ok=True)
    _keep_freed_memory()
    # The agent's own state sits beside the registrations, under names registry.scan never reads (not *.json).
    settings = line_settings(os.environ, args.registry / LAST_GOOD_SETTINGS)
    host = ModelHost(args.registry, thresholds=settings.thresholds, resume_file=args.registry / RUNNING_MODELS)
    sinks, workers = start_line(
        settings, args.registry.parent
    )  # the component's work path: the registry is its models/
    try:
        access = SocketAccess.parse(args.socket_mode, args.socket_group)
        server = serve(args.socket, host, args.max_in_flight, sinks)
    except (AgentStartError, SocketAccessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        for closable in (*sinks, *workers):
            closable.close()
        return 2
    if socket_path(args.socket) is not None:
        try:
            access.apply(socket_path(args.socket))
        except SocketAccessError as exc:
            server.stop(grace=0).wait()
            print(f"error: {exc}", file=sys.stderr)
            for closable in (*sinks, *workers):
                closable.close()
            return 2
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    threading.Thread(target=_preload_runtime, name="preload-tvm", daemon=True).start()
    log.info("listening on %s; models register in %s (%d found)", args.socket, args.registry, len(host.list()))
    resumed = host.resume()
    if resumed:
        log.info("starting again the models that were running: %s", ", ".join(resumed))
    stopping.wait()
    log.info("stopping")
    server.stop(grace=3).wait()
    for closable in (*sinks, *workers):
        closable.close()
    path = socket_path(args.socket)
    if path is not None and path.exists():
        path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
