"""MetaSchedule tuning over our schedule templates, with a progress bar and records kept in the tuning cache.

Each fused PrimFunc with a choice to make (vector width, register tile, ...) is one task.
Its search space (space.py) is every combination of the template's decisions, tried nearest to the
default first. The default itself is always measured, and a candidate is recorded only when it beat
the default side by side in the task's final round (search.py), so a tuned build is never slower than
an untuned one by more than measurement noise. MetaSchedule's task scheduler runs the tasks, our
builder and runner measure them (see measure.py), and each task's records land in the cache's
database for the target, where a later build finds them without tuning again.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
import types
from dataclasses import dataclass, field

from compilers.schedules.pipeline import fuse_operators, is_gpu, machine, workload
from compilers.tuning.cache import TuningCache
from compilers.tuning.measure import RpcConfig, configure_threads, measurement
from compilers.tuning.search import ProgressCallback, TaskLedger, TemplateSearch
from compilers.tuning.space import design_space
from packager.errors import CompilationError, ValidationException
from targets.catalog import Target
from targets.cpu import vector_isa

BATCH = 8  # candidates measured together, interleaved


@dataclass(frozen=True)
class TuningTask:
    name: str
    workload: object  # tvm.IRModule with one PrimFunc "main"
    weight: int  # how many times the model calls it
    flops: float
    space: tuple[tuple[int, ...], ...] = ()  # decision tuples, default first; filled only for tasks to tune


@dataclass(frozen=True)
class TaskReport:
    name: str
    trials: int
    default_ms: float | None
    best_ms: float | None
    cached: bool


@dataclass(frozen=True)
class TuningResult:
    target_name: str
    trials: int  # measured in this run; 0 when every task was already in the cache
    seconds: float
    tasks: tuple[TaskReport, ...] = field(default_factory=tuple)

    @property
    def cached_tasks(self) -> int:
        return sum(1 for t in self.tasks if t.cached)


def extract_tasks(mod, target: Target) -> list[TuningTask]:
    """The distinct fused PrimFuncs of a Relax module, biggest share of the model's FLOPs first."""
    import tvm
    import tvm_ffi
    from tvm import relax
    from tvm.s_tir.analysis import estimate_tir_flops

    fused = fuse_operators(mod, tvm.target.Target(target.tvm_target))
    calls: dict[str, int] = {}

    def count(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == "relax.call_tir":
            calls[expr.args[0].name_hint] = calls.get(expr.args[0].name_hint, 0) + 1

    for _, func in fused.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, count)
    tasks: dict[int, TuningTask] = {}
    for gvar, func in fused.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        wl = workload(func)
        key = tvm_ffi.structural_hash(wl)
        if key in tasks:
            old = tasks[key]
            tasks[key] = TuningTask(old.name, old.workload, old.weight + calls.get(gvar.name_hint, 1), old.flops)
            continue
        tasks[key] = TuningTask(gvar.name_hint, wl, calls.get(gvar.name_hint, 1), float(estimate_tir_flops(wl)))
    return sorted(tasks.values(), key=lambda t: -t.flops * t.weight)


def _quota(tasks: list[TuningTask], trials: int) -> list[int]:
    """Trials per task within ``trials``: the default and one alternative for the heaviest tasks first,
    then the rest of the budget by share of the model's FLOPs."""
    quotas, left = [], trials
    for task in tasks:
        quotas.append(min(2, len(task.space), left))
        left -= quotas[-1]
    total = sum(t.flops * t.weight for t in tasks) or 1.0
    shares = [math.floor(left * t.flops * t.weight / total) for t in tasks]
    quotas = [min(len(t.space), q + s) for t, q, s in zip(tasks, quotas, shares)]
    left = trials - sum(quotas)
    for i, task in enumerate(tasks):  # what rounding and small spaces left over, heaviest first
        extra = min(left, len(task.space) - quotas[i])
        quotas[i] += extra
        left -= extra
    return quotas


@contextlib.contextmanager
def _without_tensor_intrinsics():
    """TuneContext imports tvm.s_tir.tensor_intrin (about a minute here) to register tensorize intrinsics.

    Our design spaces never tensorize, so a placeholder module stands in while the tasks are built.
    """
    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        yield
        return
    sys.modules[name] = types.ModuleType(name)
    try:
        yield
    finally:
        if isinstance(sys.modules.get(name), types.ModuleType) and not hasattr(sys.modules[name], "__file__"):
            del sys.modules[name]


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def tune(
    mod, target: Target, trials: int, cache: TuningCache, progress: bool = True, rpc: RpcConfig | None = None, log=None
) -> TuningResult:
    """Tune ``mod`` (a Relax IRModule, weights as parameters) for ``target``; records go to ``cache``.

    Progress lines (trials done out of ``trials``, the current task, its best latency, the time left) go to
    ``log``, or to stderr when ``progress`` and no ``log`` is given. Tasks the cache already holds are not tuned
    again. Raises CompilationError when a batch of candidates measures nothing (every build or run failed),
    naming the first error.
    """
    import tvm
    from tvm.s_tir import meta_schedule as ms

    if trials < 0:
        raise ValidationException(f"tuning trials must be >= 0, got {trials}", field="tuning-trials")
    if is_gpu(target):
        raise ValidationException(
            f"tuning is implemented for CPU targets; {target.name} is a GPU target", field="tuning-trials"
        )
    if target.is_cross and rpc is None:
        raise ValidationException(
            f"target {target.name} runs on another architecture: tuning it needs an RPC tracker", field="rpc"
        )
    started = time.perf_counter()
    shape = machine(target)
    cores = shape.cores
    configure_threads(cores)
    tvm_target = tvm.target.Target(target.tvm_target)
    report = log if log is not None else (_to_stderr if progress else None)
    all_tasks = extract_tasks(mod, target)
    if report is not None and trials > 0:
        report(f"tuning {len(all_tasks)} kernels for {target.name} ({_isa_label(target)}), up to {trials} trials")
    database = cache.database_for(target, create=True)
    reports, todo = [], []
    for task in all_tasks:
        if database.has_workload(task.workload) and database.get_top_k(database.commit_workload(task.workload), 1):
            best = database.get_top_k(database.commit_workload(task.workload), 1)[0]
            reports.append(TaskReport(task.name, 0, None, _ms(best.run_secs), cached=True))
        elif trials > 0:
            space = design_space(task.workload, shape)
            if len(space) > 1:  # a function with no choice to make keeps its default schedule
                todo.append(TuningTask(task.name, task.workload, task.weight, task.flops, space))
    if trials == 0 or not todo:
        return TuningResult(target.name, 0, time.perf_counter() - started, tuple(reports))
    quotas = _quota(todo, trials)
    todo, quotas = [t for t, q in zip(todo, quotas) if q > 0], [q for q in quotas if q > 0]
    # what MetaSchedule counts: each task's quota, the reference that leads every batch after the first, and the
    # final paired round
    budgets = [q + max(0, -(-(q - BATCH) // (BATCH - 1))) + BATCH for q in quotas]
    ledgers = [TaskLedger(len(task.space), quota, BATCH) for task, quota in zip(todo, quotas)]
    if report is not None:
        cached = f", {len(reports)} already in the cache" if reports else ""
        report(f"tuning {len(todo)} tasks with a choice to make{cached}: {sum(quotas)} trials")
    progress_cb = ProgressCallback(todo, ledgers, sum(quotas), database, tvm_target, log=report)
    builder, runner = measurement(target.cross_compiler, rpc)
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
    with _without_tensor_intrinsics():
        contexts = [
            ms.TuneContext(
                mod=task.workload,
                target=tvm_target,
                space_generator=ms.space_generator.ScheduleFn(
                    lambda sch: sch, sch_rules=[], postprocs=[], mutator_probs={}
                ),
                search_strategy=TemplateSearch(task.space, ledger, shape, progress_cb),
                task_name=task.name,
                num_threads=cores,
            )
            for task, ledger in zip(todo, ledgers)
        ]
        try:
            ms.tune_tasks(
                tasks=contexts,
                task_weights=[float(t.weight) for t in todo],
                work_dir=str(cache.root),
                max_trials_global=sum(budgets),
                max_trials_per_task=max(budgets),
                num_trials_per_iter=BATCH,
                builder=builder,
                runner=runner,
                database=database,
                cost_model="random",
                measure_callbacks=[progress_cb],
                task_scheduler="round-robin",
            )
        finally:
            progress_cb.close()
    if progress_cb.failure:
        raise CompilationError(f"tuning measured nothing for task {progress_cb.failure[0]}: {progress_cb.failure[1]}")
    if progress_cb.measured == 0:
        raise CompilationError("tuning ran but measured no candidate")
    for task, ledger in zip(todo, ledgers):
        reports.append(
            TaskReport(task.name, ledger.trials, _ms([ledger.default_s]), _ms([ledger.best_s]), cached=False)
        )
    return TuningResult(target.name, progress_cb.measured, time.perf_counter() - started, tuple(reports))


def _isa_label(target: Target) -> str:
    return f"{vector_isa(target.tvm_target).name}, mcpu {target.tvm_target.get('mcpu', 'generic')}"


def _ms(run_secs) -> float | None:
    values = [float(s) for s in run_secs or [] if s is not None]
    return 1e3 * sum(values) / len(values) if values else None
