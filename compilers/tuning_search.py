"""The MetaSchedule search strategy over template decisions, and the progress report of a tuning run."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms


@derived_object
class TemplateSearch(ms.search_strategy.PySearchStrategy):
    """Measures a task's decision tuples in order (default first), up to its quota of trials."""

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
        chunk = self.space[self.position:min(self.position + self.batch, self.limit)]
        self.position += len(chunk)
        args_info = ms.arg_info.ArgInfo.from_prim_func(self.workload["main"])
        return [ms.MeasureCandidate(_schedule(self.workload, ReplayDecisions(d), self.cores), args_info) for d in chunk]

    def notify_runner_results(self, measure_candidates, results) -> None:
        pass

    def clone(self):
        return TemplateSearch(self.space, self.quota, self.cores, self.progress)


@dataclass
class TaskStats:
    trials: int = 0
    default_ms: float | None = None
    best_ms: float | None = None


@derived_object
class ProgressCallback(ms.measure_callback.PyMeasureCallback):
    """A tqdm bar over all trials, with the best latency of the task being tuned; remembers total failure."""

    def __init__(self, tasks, total: int, enabled: bool = True, log=None):
        super().__init__()
        from tqdm import tqdm

        self.names = [t.name for t in tasks]
        self.stats = [TaskStats() for _ in tasks]
        self.measured = 0
        self.failure: tuple[str, str] | None = None
        self.log = log
        self.bar = tqdm(total=total, desc="tuning", unit="trial", file=sys.stderr, disable=not enabled, dynamic_ncols=True)

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
        stats = self.stats[task_id]
        errors, times = [], []
        for built, ran in zip(builder_results, runner_results):
            if built.error_msg:
                errors.append(str(built.error_msg))
            elif ran.error_msg:
                errors.append(str(ran.error_msg))
            else:
                times.append(1e3 * sum(float(s) for s in ran.run_secs) / len(ran.run_secs))
        if stats.trials == 0 and builder_results and not builder_results[0].error_msg and not runner_results[0].error_msg:
            stats.default_ms = times[0] if times else None
        stats.trials += len(measure_candidates)
        if times:
            stats.best_ms = min(times + ([stats.best_ms] if stats.best_ms is not None else []))
        elif errors and self.failure is None:
            self.failure = (self.names[task_id], errors[0])
        self.measured += len(times)
        self.bar.update(len(measure_candidates))
        if stats.best_ms is not None:
            default = f" (default {stats.default_ms:.3f})" if stats.default_ms is not None else ""
            self.bar.set_postfix_str(f"{self.names[task_id]}: best {stats.best_ms:.3f} ms{default}")
        if self.log is not None and stats.best_ms is not None:
            self.log(f"{self.names[task_id]}: {stats.trials} trials, best {stats.best_ms:.3f} ms")

    def close(self) -> None:
        self.bar.close()
