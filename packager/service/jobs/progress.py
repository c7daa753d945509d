"""A job's progress, one line per step, in progress.log beside its worker.log.

StatusMessage holds only the latest step, so a client polling it misses steps that pass between two polls;
`python -m packager build` reads this file instead and shows every step. The launcher empties it before each run.
"""

from __future__ import annotations

from pathlib import Path

PROGRESS_FILE = "progress.log"


def start_progress(directory: Path) -> None:
    (directory / PROGRESS_FILE).write_text("")


def append_progress(directory: Path, message: str) -> None:
    with open(directory / PROGRESS_FILE, "a") as log:
        log.write(" ".join(message.splitlines()) + "\n")


class ProgressReader:
    """The lines a job's progress.log gained since the last call."""

    def __init__(self, directory: Path):
        self.path = directory / PROGRESS_FILE
        self._offset = 0

    def new_lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as log:
                log.seek(self._offset)
                data = log.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits for the next call
        self._offset += len(complete)
        return complete.decode(errors="replace").splitlines()
