"""`python -m packager worker`: a build host's Celery worker, taking packaging jobs from the team's queues."""

from __future__ import annotations

import argparse
import os

from packager.commands.command import Command
from packager.errors import ValidationException

_QUEUES = (
    "x86_64-cpu",
    "arm64",
    "nvidia",
)  # packager.service.jobs.celery_engine.Queue.ALL, without importing celery for --help


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--queue",
        action="append",
        choices=_QUEUES,
        default=None,
        help="a queue to take jobs from; repeat for several (default: x86_64-cpu)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="jobs this host runs at once (default: 1; a compile uses every core it is given)",
    )
    parser.add_argument(
        "--hostname", default=None, help="this worker's name in job descriptions (default: celery@<host>)"
    )


def run(args: argparse.Namespace) -> int:
    from packager.service.jobs import celery_engine

    url = celery_engine.broker_url()
    if url is None:
        raise ValidationException(
            f"worker needs a broker: set {celery_engine.BROKER_URL_VARIABLE}=redis://HOST:6379/0",
            field=celery_engine.BROKER_URL_VARIABLE,
        )
    if not os.environ.get("PACKAGER_DATABASE_URL"):
        print(
            "warning: PACKAGER_DATABASE_URL is not set; this worker uses the SQLite store under $PACKAGER_HOME, "
            "which only processes on this host share"
        )
    if args.concurrency < 1:
        raise ValidationException("--concurrency must be at least 1", field="--concurrency")
    celery_engine.run_worker(
        url, tuple(args.queue or (celery_engine.Queue.X86_64_CPU,)), args.concurrency, args.hostname
    )
    return 0


COMMAND = Command(
    name="worker",
    help="Run a build host's worker for the team's job queues (Celery on PACKAGER_BROKER_URL).",
    add_arguments=add_arguments,
    run=run,
)
