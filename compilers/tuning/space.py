"""A tuning task's search space: every decision tuple the schedule templates allow, nearest the default first."""

from __future__ import annotations

from tvm import s_tir

from compilers.schedules.fused import schedule_function
from compilers.schedules.pipeline import private_copy
from compilers.schedules.templates import Decisions, Machine

MAX_SPACE = 64  # candidates enumerated per task, nearest the default first


class ReplayDecisions(Decisions):
    """Answers from a fixed tuple (the rest by default) and records every choice point it meets."""

    def __init__(self, prefix: tuple[int, ...] = ()):
        self.prefix = prefix
        self.points: list[list[int]] = []
        self.chosen: list[int] = []

    def choose(self, sch, candidates, default):
        i = len(self.points)
        self.points.append(list(candidates))
        value = self.prefix[i] if i < len(self.prefix) and self.prefix[i] in candidates else default
        self.chosen.append(value)
        if len(candidates) > 1:  # recorded in the trace, so a record says which choice it measured
            sch.sample_categorical(
                list(candidates), [1.0 / len(candidates)] * len(candidates), decision=candidates.index(value)
            )
        return value


def schedule_candidate(workload, decisions: Decisions, machine: Machine) -> s_tir.Schedule:
    """``workload`` (an IRModule with one PrimFunc "main") scheduled by the templates with ``decisions``; the
    schedule works on a copy, so every candidate starts from ``workload`` as it was."""
    sch = s_tir.Schedule(private_copy(workload))
    schedule_function(sch, decisions, machine)
    return sch


def design_space(workload, machine: Machine, limit: int = MAX_SPACE) -> tuple[tuple[int, ...], ...]:
    """Every decision tuple the templates allow for this workload, breadth-first from the default."""
    first = ReplayDecisions()
    schedule_candidate(workload, first, machine)
    seen, queue, order = {tuple(first.chosen)}, [(tuple(first.chosen), first.points)], [tuple(first.chosen)]
    while queue and len(order) < limit:
        chosen, points = queue.pop(0)
        for i, candidates in enumerate(points):
            for value in candidates:
                if value == chosen[i] or len(order) >= limit:
                    continue
                probe = ReplayDecisions(chosen[:i] + (value,))
                schedule_candidate(workload, probe, machine)
                key = tuple(probe.chosen)
                if key not in seen:
                    seen.add(key)
                    order.append(key)
                    queue.append((key, probe.points))
    return tuple(order)
