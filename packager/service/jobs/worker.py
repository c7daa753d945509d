"""One packaging job, run in its own process: `python -m packager.service.jobs.worker --home H --project P JOB`,
or inside a Celery worker on a build host (`run_delivered_job`).

It moves the job CREATED -> RUNNING -> SUCCEEDED | FAILED, reports pipeline progress as the job's
StatusMessage, and beats a heartbeat so readers can tell a hung worker from a slow one.
Its writes wait out a database that is briefly down (PostgreSQL restarting) instead of failing the job.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sys
import threading
import time
import traceback
from pathlib import Path

from compilers.tuning.cache import target_key
from packager.errors import PackagerError
from packager.processes import process_start_time
from packager.service.jobs.configuration import load_configuration
from packager.service.jobs.extensions import JobExtensions
from packager.service.jobs.launcher import job_dir
from packager.service.jobs.liveness import HEARTBEAT_INTERVAL_S, takeover_after_s
from packager.service.jobs.progress import append_progress, start_progress
from packager.service.jobs.records import FINAL_STATES, JobRecord, ModelRecord
from packager.service.jobs.results import JobResult, write_result
from packager.service.jobs.shared_tuning import pull_tuning_records, push_tuning_records
from packager.service.jobs.store import open_store

_MAX_MESSAGE = 1000
_SINGLE_JOB_PROCESS = False  # set by main(): this process runs one job and exits
DATABASE_PATIENCE_S = 300.0  # how long a worker waits for an unreachable database before giving up on a write


def packaging_request(home: Path, job: JobRecord, model: ModelRecord):
    """Map a job record onto the pipeline's PackagingRequest. The record's configuration was parsed when the job was
    started; load_configuration rebuilds the typed object without checking it again."""
    from compilers.compile_cache import default_compile_cache_dir
    from packager.build.pipeline import PackagingRequest

    config = load_configuration(job.configuration)
    extensions = JobExtensions.from_dict(job.extensions)
    compile_cache = (
        extensions.compile_cache_dir or default_compile_cache_dir(home) if extensions.use_compile_cache else None
    )
    directory = job_dir(home, job.project, job.name)
    return PackagingRequest(
        model_path=home / model.model_file,
        spec_path=home / model.spec_file if model.spec_file else None,
        target=config.target,
        component_name=job.component_name,
        component_version=job.component_version,
        output_dir=extensions.output_dir or directory / "greengrass-build",
        component_description=config.component_description,
        s3_location=config.s3_location,
        tags=config.tags,
        register=job.register,
        tuning_trials=config.tuning_trials,
        benchmark_runs=extensions.benchmark_runs,
        work_dir=None
        if extensions.output_dir
        else directory / "work",  # a build's scratch is a temp dir, as it was in-process
        device=extensions.device,
        model_arn=model.arn,
        compile_cache_dir=compile_cache,
        max_ratio=extensions.max_ratio,
        single_build_process=_SINGLE_JOB_PROCESS,
    )


def _aws_clients(register: bool):
    """S3 (and Greengrass v2 and STS when registering) from the standard credential chain; AWS_ENDPOINT_URL* apply."""
    from packager.greengrass.publish.clients import make_clients, make_sts_client

    s3, greengrass = make_clients(None)
    return (s3, greengrass, make_sts_client(greengrass.meta.region_name)) if register else (s3, None, None)


class _Writer:
    """The worker's store, reopened when the database drops the connection; each write is retried until it lands."""

    def __init__(self, home: Path):
        self.home = home
        self.store = open_store(home, wait_for_database_s=DATABASE_PATIENCE_S)

    def update(self, job: JobRecord, **changes) -> bool:
        from packager.errors import InternalServerException

        deadline = time.monotonic() + DATABASE_PATIENCE_S
        while True:
            try:
                with self.store.transaction():
                    return self.store.update_job(job.project, job.name, only_if_status=("RUNNING",), **changes)
            except InternalServerException:  # the PostgreSQL store's StoreUnavailable; SQLite waits on its own lock
                if time.monotonic() >= deadline:
                    raise
                time.sleep(1.0)
                self.store.close()
                self.store = open_store(self.home, wait_for_database_s=max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        self.store.close()


def _heartbeat(home: Path, job: JobRecord, stop: threading.Event) -> None:
    writer = _Writer(home)
    try:
        while not stop.wait(HEARTBEAT_INTERVAL_S):
            writer.update(job, heartbeat=time.time())
    except Exception:  # noqa: BLE001  (a lost heartbeat must not end the job; readers judge a stale one)
        traceback.print_exc()
    finally:
        writer.close()


def _finish(
    writer: _Writer,
    job: JobRecord,
    status: str,
    message: str,
    component_arn: str | None = None,
    error_type: str | None = None,
) -> None:
    writer.update(
        job,
        status=status,
        status_message=message[:_MAX_MESSAGE],
        component_arn=component_arn,
        error_type=error_type,
        updated=time.time(),
    )


def max_workers() -> int:
    return max(1, int(os.environ.get("PACKAGER_MAX_WORKERS") or os.cpu_count() or 1))


def _acquire_slot(home: Path):
    """Wait for one of max_workers() slots, so N jobs on a small machine compile N at a time, not all at once."""
    slots = home / "worker-slots"
    slots.mkdir(parents=True, exist_ok=True)
    while True:
        for i in range(max_workers()):
            handle = open(slots / f"{i}.lock", "a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return handle
            except BlockingIOError:
                handle.close()
        time.sleep(0.5)


def run_job(home: Path, project: str, job_name: str, *, clients: tuple | None = None) -> int:
    """Run one job to its final state. ``clients`` = (s3, greengrass[, sts]) overrides the standard credential chain."""
    store = open_store(home)
    try:
        job = store.job(project, job_name)
        if job is None:
            print(f"error: no job {job_name!r} in project {project!r}", file=sys.stderr)
            return 2
        slot = _acquire_slot(home)  # the kernel frees the lock when this process ends, even on SIGKILL
        try:
            now = time.time()
            with store.transaction():
                started = store.update_job(
                    project,
                    job_name,
                    only_if_status=("CREATED",),
                    status="RUNNING",
                    status_message="Packaging started.",
                    pid=os.getpid(),
                    pid_start=process_start_time(os.getpid()),
                    heartbeat=now,
                    updated=now,
                )
            if not started:
                print(f"error: job {job_name} is not waiting to run", file=sys.stderr)
                return 2
            _run_with_heartbeat(home, job, store.model(project, int(job.model_version)), clients, where=None)
            return 0
        finally:
            slot.close()
    finally:
        store.close()


def run_delivered_job(
    home: Path, project: str, job_name: str, *, worker_name: str, max_deliveries: int, clients: tuple | None = None
) -> None:
    """One Celery delivery of a job. It runs the job if it is waiting, or if the worker running it stopped beating its
    heartbeat (that worker was lost); it waits while that worker is alive, and returns at once for a finished job."""
    store = open_store(home, wait_for_database_s=DATABASE_PATIENCE_S)
    try:
        while True:
            job = store.job(project, job_name)
            if job is None or job.status in FINAL_STATES:
                return  # deleted, or an earlier delivery finished it: nothing left to do
            claimed = store.claim_job(project, job_name, worker_name, stale_before=time.time() - takeover_after_s())
            if claimed is not None:
                break
            time.sleep(HEARTBEAT_INTERVAL_S)
        directory = job_dir(home, project, job_name)
        directory.mkdir(parents=True, exist_ok=True)
        start_progress(directory)
        writer = _Writer(home)
        try:
            if claimed.deliveries > max_deliveries:
                _finish(
                    writer,
                    claimed,
                    "FAILED",
                    f"Delivered to a worker {claimed.deliveries} times: each earlier worker "
                    f"was lost before finishing it (the last was {job.worker}), and a job is not run again after "
                    f"{max_deliveries} deliveries.",
                )
                return
            writer.update(
                claimed, status_message=f"Packaging started (on {worker_name}, delivery {claimed.deliveries})."
            )
        finally:
            writer.close()
        model = store.model(project, int(claimed.model_version))
        _run_with_heartbeat(home, claimed, model, clients, where=worker_name)
    finally:
        store.close()


def _run_with_heartbeat(
    home: Path, job: JobRecord, model: ModelRecord | None, clients: tuple | None, where: str | None
) -> None:
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(home, job, stop), daemon=True)
    beat.start()
    writer = _Writer(home)
    try:
        _run_pipeline(writer, home, job, model, clients, where)
    finally:
        stop.set()
        beat.join(timeout=HEARTBEAT_INTERVAL_S * 2)
        writer.close()


def _pull_tuning(writer: _Writer, target, progress) -> None:
    """Records other hosts tuned for this target, into this host's cache before the compile looks there."""
    if writer.store.tuning_export(target_key(target.tvm_target)) is None:
        return
    added = pull_tuning_records(writer.store, target)
    if added:
        progress(f"tuning: {added} records from other workers added to this host's cache")


_COMPLETE_MODELS: set[tuple[Path, str]] = set()  # models whose every file this process has seen on this host


def _fetch_model(home: Path, model: ModelRecord, s3_client, progress) -> None:
    """A model registered on another host comes from the team's model bucket, by its content hash."""
    from packager.service.jobs.shared_models import fetch_model_files, model_bucket

    shared = model_bucket()
    if shared is None:
        if not (home / model.model_file).exists():
            raise PackagerError(
                f"model version {model.version} of project {model.project} was registered on another "
                f"host ({model.model_file} is not here); set PACKAGER_MODEL_BUCKET to share models"
            )
        return
    if (home, model.model_file) in _COMPLETE_MODELS:
        return  # a Celery worker runs many jobs: the graph's external-data scan is paid once per model
    fetched = fetch_model_files(s3_client or _aws_clients(False)[0], shared, home, model.model_file, model.spec_file)
    _COMPLETE_MODELS.add((home, model.model_file))
    if fetched:
        progress(f"fetched {len(fetched)} model file(s) from s3://{shared.bucket}/{shared.prefix}")


def _run_pipeline(writer: _Writer, home: Path, job: JobRecord, model, clients: tuple | None, where: str | None) -> None:
    directory = job_dir(home, job.project, job.name)

    def progress(message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)
        append_progress(directory, message)
        shown = str(message) if where is None else f"{message} (on {where})"
        writer.update(job, status_message=shown[:_MAX_MESSAGE], heartbeat=time.time(), updated=time.time())

    try:
        if model is None:
            raise PackagerError(f"model version {job.model_version} of project {job.project} was deleted")
        from packager.build.pipeline import run_packaging

        request = packaging_request(home, job, model)
        if request.s3_location is None:
            s3 = greengrass = sts = None  # a local-only build needs no AWS at all
        else:
            s3, greengrass, sts = (*clients, None)[:3] if clients else _aws_clients(request.register)
        _fetch_model(home, model, s3, progress)
        _pull_tuning(writer, request.target, progress)
        result = run_packaging(request, s3_client=s3, greengrass_client=greengrass, sts_client=sts, progress=progress)
        if request.tuning_trials:
            push_tuning_records(writer.store, request.target)
        write_result(job_dir(home, job.project, job.name), JobResult.from_packaging_result(result))
    except PackagerError as exc:
        print(f"FAILED: {exc.code}: {exc.message}", flush=True)
        _finish(writer, job, "FAILED", exc.message, error_type=type(exc).__name__)
        return
    except Exception as exc:  # the job must end FAILED whatever broke; the traceback goes to worker.log
        traceback.print_exc()
        sys.stdout.flush()
        _finish(writer, job, "FAILED", f"Internal error: {type(exc).__name__}: {exc}"[:300] + " (see worker.log)")
        return
    if result.component_version_arn:
        where_to = f"registered as {result.component_version_arn}"
    else:
        where_to = (
            "uploaded; not registered" if request.s3_location else f"written to {request.output_dir}; no S3 output"
        )
    on = "" if where is None else f" on {where}"
    _finish(
        writer,
        job,
        "SUCCEEDED",
        f"Packaged {job.component_name} {job.component_version} in {result.wall_seconds:.1f} s{on}, {where_to}.",
        component_arn=result.component_version_arn,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m packager.service.jobs.worker", description="Run one packaging job."
    )
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--project", required=True)
    parser.add_argument("job_name")
    args = parser.parse_args(argv)
    # The store keeps every model as ONNX, so a job never needs torch; apache-tvm-ffi imports it eagerly whenever it is
    # installed, which costs seconds per job, most of a compile-cache hit's time.
    sys.modules.setdefault("torch", None)
    global _SINGLE_JOB_PROCESS
    _SINGLE_JOB_PROCESS = True
    return run_job(args.home, args.project, args.job_name)


if __name__ == "__main__":
    sys.exit(main())
