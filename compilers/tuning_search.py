"""The MetaSchedule search strategy over template decisions, and what becomes of each measured batch.

Every batch after a task's first starts with the task's default schedule again, and each
result is scaled by how that reference fared in the batch: on a machine shared with other
work, candidates measured minutes apart are then compared as if measured side by side.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms


@derived_object
class TemplateSearch(ms.search_strategy.PySearchStrategy):
    """Measures a task's decision tuples in order (default first), up to its quota; later batches lead with the default."""

    def __init__(self, space, quota: int, cores: int, progress: "ProgressCallback"):
        super().__init__()
        self.space = tuple(space)
        self.quota = quota
        self.cores = cores
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
        from compilers.tuning import ReplayDecisions, _schedule

        if self.position >= self.limit or self.progress.failure:
            return None
        first = self.position == 0
        chunk = self.space[self.position:min(self.position + self.batch - (0 if first else 1), self.limit)]
        self.position += len(chunk)
        if not first:
            chunk = (self.space[0],) + chunk  # the reference the batch is scaled by
        args_info = ms.arg_info.ArgInfo.from_prim_func(self.workload["main"])
        return [ms.MeasureCandidate(_schedule(self.workload, ReplayDecisions(d), self.cores), args_info) for d in chunk]

    def notify_runner_results(self, measure_candidates, results) -> None:
        pass

    def clone(self):
        return TemplateSearch(self.space, self.quota, self.cores, self.progress)


@dataclass
class TaskStats:
    trials: int = 0  # candidates measured, not counting the reference re-measured at the head of later batches
    default_ms: float | None = None
    best_ms: float | None = None
    reference_s: float | None = None


@derived_object
class ProgressCallback(ms.measure_callback.PyMeasureCallback):
    """Commits each batch's results to the database, scaled to the task's reference, and shows a tqdm bar
    with the best latency of the task being tuned; remembers a batch that measured nothing."""

    def __init__(self, tasks, total: int, database, target, enabled: bool = True, log=None):
        super().__init__()
        from tqdm import tqdm

        self.names = [t.name for t in tasks]
        self.workloads = [t.workload for t in tasks]
        self.database = database
        self.target = target
        self.stats = [TaskStats() for _ in tasks]
        self.measured = 0
        self.failure: tuple[str, str] | None = None
        self.log = log
        self.bar = tqdm(total=total, desc="tuning", unit="trial", file=sys.stderr, disable=not enabled, dynamic_ncols=True)

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
            self.database.commit_tuning_record(ms.database.TuningRecord(
                candidate.sch.trace, workload, [seconds * scale], self.target, candidate.args_info))
            ms_time = 1e3 * seconds * scale
            if i == 0:
                stats.default_ms = ms_time
            stats.best_ms = ms_time if stats.best_ms is None else min(stats.best_ms, ms_time)
            self.measured += 1
        stats.trials += len(measure_candidates) - (0 if first_batch else 1)
        if all(r is None for r in raw) and errors and self.failure is None:
            self.failure = (self.names[task_id], errors[0])
        self.bar.update(len(measure_candidates) - (0 if first_batch else 1))
        if stats.best_ms is not None:
            default = f" (default {stats.default_ms:.3f})" if stats.default_ms is not None else ""
            self.bar.set_postfix_str(f"{self.names[task_id]}: best {stats.best_ms:.3f} ms{default}")
            if self.log is not None:
                self.log(f"{self.names[task_id]}: {stats.trials} trials, best {stats.best_ms:.3f} ms{default}")

    def close(self) -> None:
        self.bar.close()
