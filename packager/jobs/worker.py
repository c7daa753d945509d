"""One packaging job, run in its own process: `python -m packager.jobs.worker --home H --project P JOB`.

It moves the job CREATED -> RUNNING -> SUCCEEDED | FAILED, reports pipeline progress as the job's
StatusMessage, and beats a heartbeat so readers can tell a hung worker from a slow one.
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

from packager.errors import PackagerError
from packager.jobs.extensions import JobExtensions
from packager.jobs.launcher import job_dir, process_start_time
from packager.jobs.liveness import HEARTBEAT_INTERVAL_S
from packager.jobs.progress import append_progress
from packager.jobs.results import JobResult, write_result
from packager.jobs.store import JobRecord, ModelRecord, Store, open_store
from packager.jobs.validation import parse_configuration

_MAX_MESSAGE = 1000


def packaging_request(home: Path, job: JobRecord, model: ModelRecord):
    """Map a job record onto the pipeline's PackagingRequest."""
    from compilers.compile_cache import default_compile_cache_dir
    from packager.pipeline import PackagingRequest

    config = parse_configuration(job.configuration)
    extensions = JobExtensions.from_dict(job.extensions)
    compile_cache = extensions.compile_cache_dir or default_compile_cache_dir(home) if extensions.use_compile_cache else None
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
        work_dir=None if extensions.output_dir else directory / "work",  # a build's scratch is a temp dir, as it was in-process
        device=extensions.device,
        model_arn=model.arn,
        compile_cache_dir=compile_cache,
        max_ratio=extensions.max_ratio,
    )


def _aws_clients(register: bool):
    """S3 (and Greengrass v2 when registering) from the standard credential chain; AWS_ENDPOINT_URL* apply."""
    from packager.publish import make_clients

    s3, greengrass = make_clients(None)
    return s3, greengrass if register else None


def _heartbeat(home: Path, job: JobRecord, stop: threading.Event) -> None:
    store = open_store(home)
    try:
        while not stop.wait(HEARTBEAT_INTERVAL_S):
            with store.transaction():
                store.update_job(job.project, job.name, only_if_status=("RUNNING",), heartbeat=time.time())
    finally:
        store.close()


def _finish(store: Store, job: JobRecord, status: str, message: str, component_arn: str | None = None,
            error_type: str | None = None) -> None:
    with store.transaction():
        store.update_job(job.project, job.name, only_if_status=("RUNNING",), status=status, status_message=message[:_MAX_MESSAGE],
                         component_arn=component_arn, error_type=error_type, updated=time.time())


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
    """Run one job to its final state. ``clients`` = (s3, greengrass) overrides the standard credential chain."""
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
                started = store.update_job(project, job_name, only_if_status=("CREATED",), status="RUNNING",
                                           status_message="Packaging started.", pid=os.getpid(),
                                           pid_start=process_start_time(os.getpid()), heartbeat=now, updated=now)
            if not started:
                print(f"error: job {job_name} is not waiting to run", file=sys.stderr)
                return 2
            model = store.model(project, int(job.model_version))
            stop = threading.Event()
            beat = threading.Thread(target=_heartbeat, args=(home, job, stop), daemon=True)
            beat.start()
            try:
                _run_pipeline(store, home, job, model, clients)
            finally:
                stop.set()
                beat.join(timeout=HEARTBEAT_INTERVAL_S * 2)
            return 0
        finally:
            slot.close()
    finally:
        store.close()


def _run_pipeline(store: Store, home: Path, job: JobRecord, model, clients: tuple | None) -> None:
    directory = job_dir(home, job.project, job.name)

    def progress(message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)
        append_progress(directory, message)
        with store.transaction():
            store.update_job(job.project, job.name, only_if_status=("RUNNING",), status_message=str(message)[:_MAX_MESSAGE],
                             heartbeat=time.time(), updated=time.time())

    try:
        if model is None:
            raise PackagerError(f"model version {job.model_version} of project {job.project} was deleted")
        from packager.pipeline import run_packaging

        request = packaging_request(home, job, model)
        if request.s3_location is None:
            s3 = greengrass = None  # a local-only build needs no AWS at all
        else:
            s3, greengrass = clients or _aws_clients(request.register)
        result = run_packaging(request, s3_client=s3, greengrass_client=greengrass, progress=progress)
        write_result(job_dir(home, job.project, job.name), JobResult.from_packaging_result(result))
    except PackagerError as exc:
        print(f"FAILED: {exc.code}: {exc.message}", flush=True)
        _finish(store, job, "FAILED", exc.message, error_type=type(exc).__name__)
        return
    except Exception as exc:  # the job must end FAILED whatever broke; the traceback goes to worker.log
        traceback.print_exc()
        sys.stdout.flush()
        _finish(store, job, "FAILED", f"Internal error: {type(exc).__name__}: {exc}"[:300] + " (see worker.log)")
        return
    if result.component_version_arn:
        where = f"registered as {result.component_version_arn}"
    else:
        where = "uploaded; not registered" if request.s3_location else f"written to {request.output_dir}; no S3 output"
    _finish(store, job, "SUCCEEDED", f"Packaged {job.component_name} {job.component_version} in {result.wall_seconds:.1f} s, "
            f"{where}.", component_arn=result.component_version_arn)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m packager.jobs.worker", description="Run one packaging job.")
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--project", required=True)
    parser.add_argument("job_name")
    args = parser.parse_args(argv)
    # The store keeps every model as ONNX, so a job never needs torch; apache-tvm-ffi imports it eagerly whenever it is
    # installed, which costs seconds per job, most of a compile-cache hit's time.
    sys.modules.setdefault("torch", None)
    return run_job(args.home, args.project, args.job_name)


if __name__ == "__main__":
    sys.exit(main())
