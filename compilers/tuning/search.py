"""The MetaSchedule search strategy over template decisions, and what becomes of each measured batch.

Every batch after a task's first starts with the task's default schedule again, and each
result is scaled by how that reference fared in the batch: on a machine shared with other
work, candidates measured minutes apart are then compared as if measured side by side.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from compilers.tuning.space import ReplayDecisions, schedule_candidate


@derived_object
class TemplateSearch(ms.search_strategy.PySearchStrategy):
    """Measures a task's decision tuples in order (default first), up to its quota; later batches lead with the default."""

    def __init__(self, space, quota: int, machine, progress: ProgressCallback):
        super().__init__()
        self.space = tuple(space)
        self.quota = quota
        self.machine = machine  # compilers.schedules.templates.Machine
        self.progress = progress
        self.workload = None
        self.position = 0
        self.limit = 0
        self.batch = 8

    def _initialize_with_tune_context(self, context) -> None:
        self.workload = context.mod

    def pre_tuning(self, max_trials, num_trials_per_iter, design_spaces, database=None, cost_model=None) -> None:
        self.position = 0
        self.limit = min(self.quota, int(max_trials), len(self.space))
        self.batch = max(1, int(num_trials_per_iter))

    def post_tuning(self) -> None:
        pass

    def generate_measure_candidates(self):
        if self.position >= self.limit or self.progress.failure:
            return None
        first = self.position == 0
        chunk = self.space[self.position : min(self.position + self.batch - (0 if first else 1), self.limit)]
        self.position += len(chunk)
        if not first:
            chunk = (self.space[0],) + chunk  # the reference the batch is scaled by
        args_info = ms.arg_info.ArgInfo.from_prim_func(self.workload["main"])
        return [
            ms.MeasureCandidate(schedule_candidate(self.workload, ReplayDecisions(d), self.machine), args_info)
            for d in chunk
        ]

    def notify_runner_results(self, measure_candidates, results) -> None:
        pass

    def clone(self):
        return TemplateSearch(self.space, self.quota, self.machine, self.progress)


@dataclass
class TaskStats:
    trials: int = 0  # candidates measured, not counting the reference re-measured at the head of later batches
    default_ms: float | None = None
    best_ms: float | None = None
    reference_s: float | None = None


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes} min {seconds:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class ProgressLines:
    """One line per measured batch (at most one every ``interval`` seconds, and always the last): trials done out of
    the budget, the task being tuned, its best latency so far against its default, and the time left at the rate so far.

    Lines, not a redrawn bar, so they read the same on a terminal, in a job's progress.log and in CI's log.
    """

    def __init__(self, total: int, tasks: int, emit, interval: float = 5.0, clock=time.monotonic):
        self.total, self.tasks, self.emit, self.interval, self.clock = total, tasks, emit, interval, clock
        self.started = clock()
        self.last: float | None = None
        self.done = 0

    def batch(
        self, trials: int, task_index: int, task_name: str, best_ms: float | None, default_ms: float | None
    ) -> str | None:
        self.done += trials
        now = self.clock()
        final = self.done >= self.total
        if not final and self.last is not None and now - self.last < self.interval:
            return None
        self.last = now
        elapsed = now - self.started
        left = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        best = "no result yet" if best_ms is None else f"best {best_ms:.3f} ms"
        if best_ms is not None and default_ms is not None:
            best += f" (default {default_ms:.3f} ms)"
        when = f"done in {_duration(elapsed)}" if final else f"about {_duration(left)} left"
        line = f"tuning {self.done}/{self.total} trials, task {task_index + 1}/{self.tasks} {task_name}: {best}; {when}"
        self.emit(line)
        return line


@derived_object
class ProgressCallback(ms.measure_callback.PyMeasureCallback):
    """Commits each batch's results to the database, scaled to the task's reference, reports progress in lines
    (see ProgressLines) to ``log``, and remembers a batch that measured nothing."""

    def __init__(self, tasks, total: int, database, target, log=None):
        super().__init__()
        self.names = [t.name for t in tasks]
        self.workloads = [t.workload for t in tasks]
        self.database = database
        self.target = target
        self.stats = [TaskStats() for _ in tasks]
        self.measured = 0
        self.failure: tuple[str, str] | None = None
        self.lines = ProgressLines(total, len(tasks), log) if log is not None else None

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
        stats = self.stats[task_id]
        first_batch = stats.trials == 0
        raw, errors = [], []
        for built, ran in zip(builder_results, runner_results):
            error = built.error_msg or ran.error_msg
            if error:
                errors.append(str(error))
                raw.append(None)
            else:
                raw.append(sum(float(s) for s in ran.run_secs) / len(ran.run_secs))
        scale = 1.0
        if first_batch:
            stats.reference_s = raw[0] if raw and raw[0] is not None else None
        elif raw and raw[0] is not None and stats.reference_s:
            scale = stats.reference_s / raw[0]
        workload = self.database.commit_workload(self.workloads[task_id])
        for i, (candidate, seconds) in enumerate(zip(measure_candidates, raw)):
            if seconds is None or (i == 0 and not first_batch):
                continue
            self.database.commit_tuning_record(
                ms.database.TuningRecord(
                    candidate.sch.trace, workload, [seconds * scale], self.target, candidate.args_info
                )
            )
            ms_time = 1e3 * seconds * scale
            if i == 0:
                stats.default_ms = ms_time
            stats.best_ms = ms_time if stats.best_ms is None else min(stats.best_ms, ms_time)
            self.measured += 1
        new = len(measure_candidates) - (0 if first_batch else 1)
        stats.trials += new
        if all(r is None for r in raw) and errors and self.failure is None:
            self.failure = (self.names[task_id], errors[0])
        if self.lines is not None:
            self.lines.batch(new, task_id, self.names[task_id], stats.best_ms, stats.default_ms)

    def close(self) -> None:
        pass
