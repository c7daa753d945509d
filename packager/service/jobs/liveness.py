"""Checked on every read: a job whose worker has died is FAILED, never RUNNING forever."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from packager.processes import process_alive
from packager.service.jobs.records import ACTIVE_STATES, JobRecord
from packager.service.jobs.store import Store

LAUNCH_GRACE_S = 120.0  # a CREATED job may wait this long for its worker to record its pid
HEARTBEAT_INTERVAL_S = 5.0


def heartbeat_timeout_s() -> float:
    return float(os.environ.get("PACKAGER_HEARTBEAT_TIMEOUT_S", "900"))


def redelivery_after_s() -> float:
    """Celery on Redis: how long an unacknowledged job waits before Redis hands it out again (its visibility timeout).
    A host that dies mid-job has its job delivered again after this; keep it above the longest job."""
    return float(os.environ.get("PACKAGER_REDELIVERY_AFTER_S", "3600"))


def takeover_after_s() -> float:
    """Celery: a job delivered again is taken over once its running worker has missed heartbeats for this long."""
    return float(os.environ.get("PACKAGER_TAKEOVER_AFTER_S", str(HEARTBEAT_INTERVAL_S * 6)))


def _why_queued_job_dead(job: JobRecord, now: float) -> str | None:
    """A Celery job runs on another host, so only its heartbeat tells; a queued one waits as long as the queue does.
    A running job's lost worker is the broker's to redeliver; only when that never comes is it failed here."""
    if job.status != "RUNNING" or job.heartbeat is None:
        return None
    silent = now - job.heartbeat
    if silent > redelivery_after_s() + heartbeat_timeout_s():
        return (
            f"The job's worker ({job.worker}) stopped reporting progress {silent:.0f} s ago and the job was not "
            "delivered to another worker."
        )
    return None


def _why_dead(job: JobRecord, now: float) -> str | None:
    if job.queue is not None:
        return _why_queued_job_dead(job, now)
    if job.pid is None:
        if now - job.created > LAUNCH_GRACE_S:
            return f"The job's worker process did not start within {LAUNCH_GRACE_S:g} s."
        return None
    if not process_alive(job.pid, job.pid_start):
        return f"The job's worker process (pid {job.pid}) exited before finishing the job; see its worker.log."
    if job.heartbeat is not None and now - job.heartbeat > heartbeat_timeout_s():
        _stop(job.pid)
        return (
            f"The job's worker process (pid {job.pid}) stopped reporting progress for over {heartbeat_timeout_s():g} s."
        )
    return None


def _stop(pid: int) -> None:
    """Stop a hung worker, but only if the pid is still one of ours."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if b"packager.service.jobs.worker" in cmdline:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass


def settle(store: Store, job: JobRecord) -> JobRecord:
    """The job as it really is: an active job whose worker is gone is marked FAILED (once, atomically)."""
    if job.status not in ACTIVE_STATES:
        return job
    now = time.time()
    reason = _why_dead(job, now)
    if reason is None:
        return job
    with store.transaction():
        # The worker may have finished between our read and now; only an still-active job is failed.
        store.update_job(
            job.project, job.name, only_if_status=ACTIVE_STATES, status="FAILED", status_message=reason, updated=now
        )
    return store.job(job.project, job.name) or job
