"""Starting job workers as detached processes, and telling whether one is still alive."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from packager.processes import process_start_time
from packager.service.jobs.progress import start_progress

_REPO_ROOT = str(Path(__file__).resolve().parents[3])


def job_dir(home: Path, project: str, job_name: str) -> Path:
    """Where a job keeps its log, scratch space and greengrass-build output (job names are unique per project)."""
    return home / "jobs" / project / job_name


def spawn_worker(home: Path, project: str, job_name: str) -> tuple[int, str | None]:
    """Start `python -m packager.service.jobs.worker` for one job in its own session; returns (pid, start time)."""
    directory = job_dir(home, project, job_name)
    directory.mkdir(parents=True, exist_ok=True)
    start_progress(directory)  # a retried job's earlier run must not show as this one's steps
    env = dict(os.environ)
    # The worker must import this same packager, installed or not.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_REPO_ROOT, env.get("PYTHONPATH")) if p)
    with open(directory / "worker.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "packager.service.jobs.worker", "--home", str(home), "--project", project, job_name],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(home),
            start_new_session=True,
            close_fds=True,
        )
    # Reap it when it ends, so a long-lived parent (the REST server) keeps no zombies that look alive.
    threading.Thread(target=proc.wait, name=f"reap-{job_name}", daemon=True).start()
    return proc.pid, process_start_time(proc.pid)
