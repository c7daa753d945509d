"""The MetaSchedule search strategy over template decisions, and what becomes of each measured batch.

A task's search measures its candidates in batches of up to eight. Every batch after the first
starts with the task's default schedule again, and each result is scaled by how that reference
fared in the batch, so candidates measured minutes apart can be ranked. Those estimates only rank:
on a machine shared with other work, one slow reading of the reference makes its whole batch look
fast. So a task is settled by a final paired round, in which the default and a few candidates
that beat it in their own batch (each batch's best first) are measured together, interleaved, each
several times over. Only candidates that beat the default in that round by MARGIN are recorded, with
the times that round measured; the default is always recorded. A task whose search found nothing
faster than the default records the default alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from compilers.tuning.space import ReplayDecisions, schedule_candidate

FINALISTS = 3  # candidates, besides the default, that a task's final round re-measures
MARGIN = 0.02  # how much faster than the default a candidate must be in the final round to be recorded


@dataclass
class TaskLedger:
    """One task's search, without TVM: which space positions each batch measures, what they measured, and, once
    the search is done, which candidates the final round settles between.

    Position 0 is the default schedule. It leads every batch, so slot 0 of a batch is always the default.
    """

    space_size: int
    quota: int
    batch: int = 8
    finalists: int = FINALISTS
    margin: float = MARGIN
    limit: int = 0
    position: int = 0
    batches: int = 0  # search batches recorded
    trials: int = 0  # candidates measured, not counting the default measured again as a reference or in the final
    reference_s: float | None = None  # the default's time in the first batch; later batches are scaled to it
    estimates: dict[int, float] = field(default_factory=dict)  # position -> scaled seconds
    ranks: dict[int, int] = field(default_factory=dict)  # position -> its rank among its batch's beaters of the default
    pending: list[int] = field(default_factory=list)  # positions of the batch being measured
    final: list[int] | None = None  # the final round's positions, once it is sent
    settled: dict[int, float] | None = None  # position -> seconds, for what is recorded

    def start(self, max_trials: int, batch: int) -> None:
        self.limit = min(self.quota, max_trials, self.space_size)
        self.batch = max(2, batch)
        self.position = 0

    @property
    def default_s(self) -> float | None:
        if self.settled is not None and 0 in self.settled:
            return self.settled[0]
        return self.estimates.get(0)

    @property
    def best_s(self) -> float | None:
        times = list((self.settled if self.settled is not None else self.estimates).values())
        return min(times) if times else None

    def next_batch(self) -> list[int] | None:
        """The positions to measure next, or None when the task is settled."""
        if self.settled is not None:
            return None
        if self.position < self.limit:
            first = self.position == 0
            end = min(self.position + self.batch - (0 if first else 1), self.limit)
            self.pending = ([] if first else [0]) + list(range(self.position, end))
            self.position = end
            return self.pending
        contenders = self._contenders()
        if not contenders:
            return None
        group = [0, *contenders]
        self.final = self.pending = [group[i % len(group)] for i in range(max(self.batch, len(group)))]
        return self.pending

    def record(self, seconds: list[float | None]) -> dict[int, float] | None:
        """Take the pending batch's times (None for a candidate that failed). Returns the positions to record with
        their seconds once the task is settled by this batch, else None."""
        positions, self.pending = self.pending, []
        if positions is self.final:
            return self._settle(positions, seconds)
        first = self.batches == 0
        self.batches += 1
        scale = 1.0
        if first:
            self.reference_s = seconds[0] if seconds and positions[0] == 0 else None
        elif seconds and seconds[0] is not None and self.reference_s:
            scale = self.reference_s / seconds[0]
        faster = []  # (seconds, position) of this batch's candidates that beat the default measured beside them
        for slot, (position, value) in enumerate(zip(positions, seconds)):
            if value is None or (slot == 0 and not first):
                continue
            self.estimates[position] = value * scale
            if position != 0 and (seconds[0] is None or value < seconds[0]):
                faster.append((value, position))
        for rank, (_, position) in enumerate(sorted(faster)):
            self.ranks[position] = rank
        self.trials += len(positions) - (0 if first else 1)
        if self.position < self.limit or self._contenders():
            return None
        # the search is done and nothing beat the default: it is the task's record
        self.settled = {0: self.estimates[0]} if 0 in self.estimates else {}
        return self.settled

    def _contenders(self) -> list[int]:
        """The candidates the final round re-measures: those that beat the default measured beside them, each batch's
        best first, then each batch's second best, and so on, ties broken by estimate.

        Within a batch the comparison is side by side; across batches it rests on the scale, which one slow reading
        of the reference can throw off, so a batch of false gains cannot crowd out another batch's real one."""
        ranked = sorted(self.ranks, key=lambda p: (self.ranks[p], self.estimates[p]))
        return ranked[: self.finalists]

    def _settle(self, positions: list[int], seconds: list[float | None]) -> dict[int, float]:
        paired: dict[int, float] = {}
        for position, value in zip(positions, seconds):
            if value is not None:
                paired[position] = min(paired.get(position, value), value)
        if 0 not in paired:  # the default failed this time: keep only the fastest candidate, if any ran
            fastest = min(paired, key=paired.get, default=None)
            self.settled = {} if fastest is None else {fastest: paired[fastest]}
            return self.settled
        bar = paired[0] * (1.0 - self.margin)
        self.settled = {p: s for p, s in paired.items() if p == 0 or s < bar}
        return self.settled


@derived_object
class TemplateSearch(ms.search_strategy.PySearchStrategy):
    """Measures a task's decision tuples as its TaskLedger says: the search in order (default first, later batches
    led by the default), then the final paired round."""

    def __init__(self, space, ledger: TaskLedger, machine, progress: ProgressCallback):
        super().__init__()
        self.space = tuple(space)
        self.ledger = ledger
        self.machine = machine  # compilers.schedules.templates.Machine
        self.progress = progress
        self.workload = None

    def _initialize_with_tune_context(self, context) -> None:
        self.workload = context.mod

    def pre_tuning(self, max_trials, num_trials_per_iter, design_spaces, database=None, cost_model=None) -> None:
        self.ledger.start(int(max_trials), int(num_trials_per_iter))

    def post_tuning(self) -> None:
        pass

    def generate_measure_candidates(self):
        if self.progress.failure:
            return None
        positions = self.ledger.next_batch()
        if positions is None:
            return None
        args_info = ms.arg_info.ArgInfo.from_prim_func(self.workload["main"])
        scheduled = {}
        for p in positions:  # the final round repeats candidates; schedule each once
            if p not in scheduled:
                scheduled[p] = schedule_candidate(self.workload, ReplayDecisions(self.space[p]), self.machine)
        return [ms.MeasureCandidate(scheduled[p], args_info) for p in positions]

    def notify_runner_results(self, measure_candidates, results) -> None:
        pass

    def clone(self):
        return TemplateSearch(self.space, self.ledger, self.machine, self.progress)


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
        self,
        trials: int,
        task_index: int,
        task_name: str,
        best_ms: float | None,
        default_ms: float | None,
        finished: bool | None = None,
    ) -> str | None:
        """``finished``: whether every task is settled (by default, whether the trials are all done)."""
        self.done += trials
        now = self.clock()
        final = self.done >= self.total if finished is None else finished
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
    """Feeds each batch's results to its task's TaskLedger, commits a task's records to the database once the ledger
    settles it, reports progress in lines (see ProgressLines) to ``log``, and remembers a batch that measured nothing."""

    def __init__(self, tasks, ledgers: list[TaskLedger], total: int, database, target, log=None):
        super().__init__()
        self.names = [t.name for t in tasks]
        self.workloads = [t.workload for t in tasks]
        self.ledgers = ledgers
        self.database = database
        self.target = target
        self.measured = 0  # new candidates measured, over all tasks
        self.failure: tuple[str, str] | None = None
        self.lines = ProgressLines(total, len(tasks), log) if log is not None else None

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
        ledger = self.ledgers[task_id]
        seconds, errors = [], []
        for built, ran in zip(builder_results, runner_results):
            error = built.error_msg or ran.error_msg
            if error:
                errors.append(str(error))
                seconds.append(None)
            else:
                seconds.append(sum(float(s) for s in ran.run_secs) / len(ran.run_secs))
        trials_before = ledger.trials
        positions = list(ledger.pending)
        settled = ledger.record(seconds)
        if settled:
            workload = self.database.commit_workload(self.workloads[task_id])
            for position, value in settled.items():
                candidate = measure_candidates[positions.index(position)]
                self.database.commit_tuning_record(
                    ms.database.TuningRecord(candidate.sch.trace, workload, [value], self.target, candidate.args_info)
                )
        new = ledger.trials - trials_before
        self.measured += new
        if all(s is None for s in seconds) and errors and self.failure is None:
            self.failure = (self.names[task_id], errors[0])
        if self.lines is not None:
            self.lines.batch(
                new,
                task_id,
                self.names[task_id],
                _ms(ledger.best_s),
                _ms(ledger.default_s),
                finished=all(t.settled is not None for t in self.ledgers),
            )

    def close(self) -> None:
        pass


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1e3 * seconds
