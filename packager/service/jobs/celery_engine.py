"""The team's job engine: Celery on Redis (PACKAGER_BROKER_URL=redis://...), one queue per kind of build host.

A server sends each job to the queue of its target's kind; a worker (`python -m packager worker --queue ...`) on a
build host takes jobs from the queues it serves. Messages are acknowledged only after the job ran (acks_late), and
a worker that dies mid-job counts as a failed delivery: its prefork parent puts the message back at once, and when
the whole host dies Redis hands the unacknowledged message out again after the visibility timeout. The job's
database row then decides what the new delivery does (see worker.run_delivered_job): it runs the job once,
waits while another worker still beats its heartbeat, or fails the job after too many deliveries.
"""

from __future__ import annotations

import functools
import os
import socket

from celery import Celery

from packager.home import packager_home
from packager.service.jobs.liveness import redelivery_after_s
from targets import Target

BROKER_URL_VARIABLE = "PACKAGER_BROKER_URL"
TASK_NAME = "packager.package_job"


class Queue:
    """The queues, one per kind of build host."""

    X86_64_CPU = "x86_64-cpu"
    ARM64 = "arm64"
    NVIDIA = "nvidia"
    ALL = (X86_64_CPU, ARM64, NVIDIA)


def broker_url() -> str | None:
    return os.environ.get(BROKER_URL_VARIABLE) or None


def queue_for(target: Target) -> str:
    """GPU builds go to hosts with CUDA, ARM64 CPU builds to ARM64 hosts (which can tune natively), the rest to x86-64."""
    if target.device == "cuda":
        return Queue.NVIDIA
    if target.host_triple.startswith("aarch64"):
        return Queue.ARM64
    return Queue.X86_64_CPU


def max_deliveries() -> int:
    return max(1, int(os.environ.get("PACKAGER_MAX_DELIVERIES", "3")))


@functools.lru_cache(maxsize=4)
def make_app(url: str) -> Celery:
    app = Celery("packager", broker=url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,  # acknowledge after the job ran, so a lost worker's job is delivered again
        task_reject_on_worker_lost=True,  # a pool process killed mid-job puts the message back instead of acking it
        worker_prefetch_multiplier=1,  # a busy worker holds no second job that an idle one could run
        task_default_queue=Queue.X86_64_CPU,
        task_create_missing_queues=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": redelivery_after_s()},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_ignore_result=True,
    )

    @app.task(name=TASK_NAME, bind=True)
    def package_job(self, project: str, job_name: str) -> None:
        from packager.service.jobs.worker import run_delivered_job

        run_delivered_job(
            packager_home(),
            project,
            job_name,
            worker_name=self.request.hostname or socket.gethostname(),
            max_deliveries=max_deliveries(),
        )

    return app


def enqueue(url: str, project: str, job_name: str, queue: str) -> None:
    """Send one job to its queue; raises the broker's connection error when Redis cannot take it."""
    make_app(url).send_task(
        TASK_NAME,
        args=[project, job_name],
        queue=queue,
        retry=True,
        retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
    )


def run_worker(url: str, queues: tuple[str, ...], concurrency: int, hostname: str | None) -> None:
    """Run a Celery worker in this process until it is stopped (SIGTERM finishes the running job first)."""
    argv = [
        "worker",
        "--queues",
        ",".join(queues),
        "--concurrency",
        str(concurrency),
        "--pool",
        "prefork",
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    if hostname:
        argv += ["--hostname", hostname]
    make_app(url).worker_main(argv)
