"""Tuning: a short run records trials, a second run hits the cache, and a tuned build still matches ONNX Runtime."""

import json

import pytest

from compilers.schedules.pipeline import machine, relax_pipeline, workload
from compilers.tuning import tune as tuning
from compilers.tuning.cache import open_tuning_cache, target_key
from compilers.tuning.measure import InProcessBuilder, InProcessRunner
from compilers.tuning.space import design_space
from compilers.tuning.tune import extract_tasks, tune
from packager.errors import CompilationError, ValidationException
from targets import get_target, host_target
from targets.catalog import CompilerOptions
from tests.compilers.schedules.test_schedules import compile_and_compare, conv_relu_model, to_relax


@pytest.fixture(scope="module")
def cpu():
    return host_target(CompilerOptions(num_cores=2))


@pytest.fixture(scope="module")
def model():
    return conv_relu_model(cin=8, cout=32, size=16)


@pytest.fixture(scope="module")
def tuned(model, cpu, tmp_path_factory):
    """One short tuning run into a fresh cache, then the same request again."""
    cache = open_tuning_cache(tmp_path_factory.mktemp("tuning"))
    mod, _ = to_relax(model)
    lines = []
    first = tune(mod, cpu, trials=4, cache=cache, log=lines.append)
    second = tune(mod, cpu, trials=4, cache=cache, progress=False)
    return cache, first, second, lines


def test_conv_task_has_a_design_space_starting_at_the_default(model, cpu):
    tasks = extract_tasks(to_relax(model)[0], cpu)
    conv = next(t for t in tasks if "conv2d" in t.name)
    space = design_space(conv.workload, machine(cpu))
    assert len(space) > 1 and len(set(space)) == len(space)
    assert conv.flops == pytest.approx(2 * 32 * 8 * 9 * 16 * 16, rel=0.2)


def test_scheduling_leaves_the_function_it_schedules_as_it_was(cpu):
    """A TVM schedule rewrites in place the statements only its module holds. Before workload() and schedule_candidate
    copied, every tuning candidate was scheduled from the one before it, and a build's own module changed as it
    compiled: compiling it again (the tuned compile after tuning read it) failed in TVM's StorageRewrite."""
    import tvm
    from onnx import helper

    from compilers.prepack import prepack_weights
    from compilers.schedules.pipeline import default_schedule
    from compilers.tuning.space import ReplayDecisions, schedule_candidate
    from compilers.tvm_compile import onnx_to_relax
    from tests.compilers.schedules.test_schedules import onnx_model, weights

    model = onnx_model(
        [
            helper.make_node("Conv", ["x", "w"], ["y"], pads=[1] * 4),
            helper.make_node("MaxPool", ["y"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4),
            helper.make_node("ReduceMean", ["p"], ["m"], keepdims=1, axes=[2, 3]),
        ],
        [("x", [1, 8, 32, 32])],
        ["m"],
        {"w": weights(16, 8, 3, 3)},
    )
    # as a build compiles it: prepacking legalizes the operators into PrimFuncs the pipeline then schedules
    mod, _ = prepack_weights(*onnx_to_relax(model.SerializeToString()), tvm.target.Target(cpu.tvm_target))
    before = mod.script()
    conv = next(t for t in extract_tasks(mod, cpu) if "conv2d" in t.name)
    task = conv.workload.script()
    design_space(conv.workload, machine(cpu))
    schedule_candidate(conv.workload, ReplayDecisions(), machine(cpu))
    default_schedule(conv.workload["main"], cpu)
    assert conv.workload.script() == task
    for _ in range(2):
        tvm.compile(mod, target=tvm.target.Target(cpu.tvm_target), relax_pipeline=relax_pipeline(cpu))
        assert mod.script() == before


@pytest.mark.slow
def test_short_tuning_run_records_trials(tuned, cpu):
    cache, first, _, lines = tuned
    assert first.trials == 4
    # the progress a build shows: trials done out of the budget, the task, its best latency, the time it took
    assert lines[-1].startswith("tuning 4/4 trials, task ") and "best " in lines[-1] and "done in" in lines[-1]
    conv = next(t for t in first.tasks if "conv2d" in t.name)
    assert conv.trials == 4 and not conv.cached and conv.best_ms is not None and conv.best_ms <= conv.default_ms
    # recorded: the default, and only what beat it by the margin in the final round
    _assert_default_and_confirmed_records(cache.database_for(cpu), conv.default_ms)


def _assert_default_and_confirmed_records(database, default_ms):
    from compilers.tuning.search import MARGIN

    times = sorted(1e3 * float(r.run_secs[0]) for r in database.get_all_tuning_records())
    assert 1 <= len(times) <= 4 and default_ms in times
    assert all(t < default_ms * (1 - MARGIN) for t in times if t != default_ms)


@pytest.mark.slow
def test_second_run_hits_the_cache_and_the_build_applies_records(tuned, model, cpu):
    cache, first, second, _ = tuned
    assert second.trials == 0
    assert [t.name for t in second.tasks if t.cached] == [t.name for t in first.tasks if not t.cached]
    pipeline = relax_pipeline(cpu, cache.database_for(cpu))
    compile_and_compare(model, pipeline)  # the tuned build equals ONNX Runtime within rtol 1e-3 / atol 1e-4
    assert pipeline.records_applied == 1


@pytest.mark.slow
def test_tuned_build_applies_the_fastest_record(tuned, model, cpu):
    cache, first, _, _ = tuned
    database = cache.database_for(cpu)
    mod, _ = to_relax(model)
    task = next(t for t in extract_tasks(mod, cpu) if "conv2d" in t.name)
    best = database.get_top_k(database.commit_workload(task.workload), 1)[0]
    assert 1e3 * float(best.run_secs[0]) == pytest.approx(next(t.best_ms for t in first.tasks if "conv2d" in t.name))


@pytest.mark.slow
def test_export_then_import_moves_records(tuned, cpu, tmp_path):
    cache, _, _, _ = tuned
    exported = tmp_path / "tuning.json"
    count = len(cache.database_for(cpu).get_all_tuning_records())
    assert cache.export(exported) == count >= 1
    other = open_tuning_cache(tmp_path / "other")
    assert other.database_for(cpu) is None
    assert other.import_file(exported) == count
    assert other.import_file(exported) == 0  # records already there are not duplicated
    assert len(other.database_for(cpu).get_all_tuning_records()) == count
    assert other.entries()[0].tvm_target == cpu.tvm_target
    assert other.entries()[0].directory.name == target_key(cpu.tvm_target)


def test_import_rejects_a_file_that_is_not_an_export(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValidationException, match="not a tuning export"):
        open_tuning_cache(tmp_path / "c").import_file(bad)
    with pytest.raises(ValidationException, match="not found"):
        open_tuning_cache(tmp_path / "c").import_file(tmp_path / "missing.json")


def test_cache_lives_under_packager_home(monkeypatch, tmp_path):
    from packager.home import tuning_cache_dir

    monkeypatch.setenv("PACKAGER_HOME", str(tmp_path))
    assert open_tuning_cache(tuning_cache_dir()).root == tmp_path / "tuning"


def test_bad_requests_fail_before_any_work(model, cpu, tmp_path):
    cache = open_tuning_cache(tmp_path)
    mod, _ = to_relax(model)
    with pytest.raises(ValidationException, match="trials"):
        tune(mod, cpu, trials=-1, cache=cache)
    with pytest.raises(ValidationException, match="RPC"):
        tune(mod, get_target("LINUX/ARM64"), trials=4, cache=cache)
    with pytest.raises(ValidationException, match="GPU"):
        tune(mod, get_target("jetson_xavier"), trials=4, cache=cache)


@pytest.mark.slow
def test_a_round_that_measures_nothing_fails_loudly(model, cpu, tmp_path, monkeypatch):
    """A runner that cannot find what the builder built: every trial fails, and tuning must say so."""
    monkeypatch.setattr(tuning, "measurement", lambda cross, rpc: (InProcessBuilder({}), InProcessRunner({})))
    mod, _ = to_relax(model)
    with pytest.raises(CompilationError, match="measured nothing.*no built module"):
        tune(mod, cpu, trials=2, cache=open_tuning_cache(tmp_path), progress=False)


def test_workload_key_ignores_the_scheduled_flag(model, cpu):
    import tvm
    import tvm_ffi

    from compilers.schedules.pipeline import fuse_operators

    fused = fuse_operators(to_relax(model)[0], tvm.target.Target(cpu.tvm_target))
    func = next(f for _, f in fused.functions_items() if isinstance(f, tvm.tirx.PrimFunc))
    assert tvm_ffi.structural_hash(workload(func)) == tvm_ffi.structural_hash(
        workload(func.with_attr("tirx.is_scheduled", True))
    )


def test_trial_budget_goes_to_the_heaviest_tasks_and_is_never_exceeded():
    from compilers.tuning.tune import TuningTask, _quota

    tasks = [
        TuningTask(str(i), None, 1, flops, tuple(range(n)))
        for i, (flops, n) in enumerate([(10, 9), (5, 9), (1, 4), (0.1, 3)])
    ]
    assert _quota(tasks, 3) == [2, 1, 0, 0]
    assert _quota(tasks, 12) == [5, 3, 2, 2]
    assert _quota(tasks, 100) == [9, 9, 4, 3]  # never more than a task's whole space
    assert all(sum(_quota(tasks, n)) == min(n, 25) for n in range(30))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["conv", "conv_transpose", "winograd", "winograd_4x4"])
def test_every_point_of_the_design_space_computes_the_same_result(cpu, kind):
    """Tuning may pick any candidate, so each one must equal the default schedule's output."""
    import numpy as np
    import tvm
    from onnx import helper
    from tvm.s_tir import meta_schedule as ms

    from compilers.tuning.measure import _arguments
    from compilers.tuning.space import ReplayDecisions, schedule_candidate
    from tests.compilers.schedules.test_schedules import onnx_model, weights

    if kind == "conv":
        model = conv_relu_model(cin=32, cout=32, size=14)
    elif kind == "winograd":
        model = conv_relu_model(cin=16, cout=16, size=32)
    elif kind == "winograd_4x4":
        model = conv_relu_model(cin=16, cout=16, size=32, kernel=4)
    else:
        model = onnx_model(
            [helper.make_node("ConvTranspose", ["x", "w"], ["y"], kernel_shape=[4, 4], strides=[2, 2], pads=[1] * 4)],
            [("x", [1, 16, 8, 8])],
            ["y"],
            {"w": weights(16, 16, 4, 4)},
        )
    task = max(extract_tasks(to_relax(model)[0], cpu), key=lambda t: t.flops)
    space = design_space(task.workload, machine(cpu))
    assert len(space) >= 4
    args = _arguments(ms.arg_info.ArgInfo.from_prim_func(task.workload["main"]), tvm.cpu())
    results = []
    for decisions in space:
        executable = tvm.compile(
            schedule_candidate(task.workload, ReplayDecisions(decisions), machine(cpu)).mod,
            target=tvm.target.Target(cpu.tvm_target),
        )
        args[-1] = tvm.runtime.tensor(np.zeros(args[-1].shape, "float32"))
        executable.mod["main"](*args)
        results.append(args[-1].numpy())
    for decisions, result in zip(space[1:], results[1:]):
        np.testing.assert_allclose(result, results[0], rtol=1e-5, atol=1e-5, err_msg=f"decisions {decisions}")


@pytest.mark.slow
def test_later_batches_are_scaled_by_the_default_measured_again(cpu, tmp_path):
    """10 trials = a batch of 8, then the default again with 2 new candidates, on the real builder and runner:
    10 trials counted, and what is recorded is the default and what beat it, none duplicated."""
    from compilers.tuning.tune import BATCH

    cache = open_tuning_cache(tmp_path)
    model = conv_relu_model(cin=32, cout=32, size=28)
    result = tune(to_relax(model)[0], cpu, trials=BATCH + 2, cache=cache, progress=False)
    assert result.trials == BATCH + 2
    conv = next(t for t in result.tasks if "conv2d" in t.name)
    database = cache.database_for(cpu)
    _assert_default_and_confirmed_records(database, conv.default_ms)
    traces = [str(r.trace) for r in database.get_all_tuning_records()]
    assert len(set(traces)) == len(traces)


def test_progress_lines_say_trials_task_best_and_time_left():
    from compilers.tuning.search import ProgressLines

    now = [0.0]
    lines = []
    progress = ProgressLines(total=32, tasks=3, emit=lines.append, interval=5.0, clock=lambda: now[0])
    now[0] = 60.0
    progress.batch(8, 0, "fused_conv2d_add", 2.5, 3.0)
    now[0] = 61.0
    assert progress.batch(8, 0, "fused_conv2d_add", 2.0, 3.0) is None  # within the interval: no line
    now[0] = 120.0
    progress.batch(8, 1, "fused_matmul", None, None)
    now[0] = 150.0
    progress.batch(8, 2, "fused_matmul1", 1.0, 1.25)
    assert lines == [
        "tuning 8/32 trials, task 1/3 fused_conv2d_add: best 2.500 ms (default 3.000 ms); about 3 min 00 s left",
        "tuning 24/32 trials, task 2/3 fused_matmul: no result yet; about 40 s left",
        "tuning 32/32 trials, task 3/3 fused_matmul1: best 1.000 ms (default 1.250 ms); done in 2 min 30 s",
    ]


def _search(ledger, times, slow_reference_in=()):
    """Drive a TaskLedger as MetaSchedule would: ``times[p]`` is position p's true time; in the search batches
    numbered in ``slow_reference_in`` the default reads twice as slow. Returns the batches measured."""
    batches = []
    while (positions := ledger.next_batch()) is not None:
        number = len(batches)
        batches.append(list(positions))
        slow = number in slow_reference_in and positions is not ledger.final
        ledger.record([times[p] * (2.0 if slow and p == 0 else 1.0) for p in positions])
    return batches


def test_a_batch_whose_reference_reads_slow_does_not_make_its_candidates_the_record():
    from compilers.tuning.search import TaskLedger

    # the default takes 1.0; position 3 is truly faster (0.9); every other candidate is slower (1.05 and up)
    times = {p: 1.05 + 0.01 * p for p in range(20)} | {0: 1.0, 3: 0.9}
    ledger = TaskLedger(space_size=20, quota=16, batch=8)
    ledger.start(max_trials=100, batch=8)
    batches = _search(ledger, times, slow_reference_in={1})
    # the second batch's reference read 2.0, so its candidates were estimated at about half their time...
    assert ledger.estimates[8] == pytest.approx(times[8] / 2) and ledger.estimates[8] < times[3]
    # ...yet each batch's best goes to the final round first, so position 3 is there beside batch 2's best (8), and
    # the final round measures them again beside the default, interleaved, each more than once
    final = batches[-1]
    assert final[0] == 0 and len(final) == 8 and set(final) == {0, 3, 8, 9}
    assert ledger.trials == 16  # the reference and the final round add no trials
    # only what beat the default side by side is recorded: the default and position 3, with paired times
    assert ledger.settled == {0: 1.0, 3: 0.9}
    assert ledger.best_s == 0.9 and ledger.default_s == 1.0
    ledger = TaskLedger(space_size=20, quota=16, batch=8)
    ledger.start(max_trials=100, batch=8)
    _search(ledger, times | {9: 0.5}, slow_reference_in={1})  # a candidate in the slow batch that really is fast
    assert ledger.settled == {0: 1.0, 3: 0.9, 9: 0.5}


def test_the_final_round_keeps_only_candidates_that_beat_the_default_by_the_margin():
    from compilers.tuning.search import MARGIN, TaskLedger

    times = {0: 1.0, 1: 1.0 - MARGIN / 2, 2: 1.0 - 2 * MARGIN, 3: 1.2}
    ledger = TaskLedger(space_size=4, quota=4, batch=8)
    ledger.start(max_trials=100, batch=8)
    batches = _search(ledger, times)
    assert batches == [[0, 1, 2, 3], [0, 2, 1, 0, 2, 1, 0, 2]]  # fastest first, cycled to fill the batch
    assert ledger.settled == {0: 1.0, 2: 1.0 - 2 * MARGIN}


def test_a_search_that_finds_nothing_faster_records_the_default_without_a_final_round():
    from compilers.tuning.search import TaskLedger

    ledger = TaskLedger(space_size=5, quota=5, batch=8)
    ledger.start(max_trials=100, batch=8)
    batches = _search(ledger, {0: 1.0, 1: 1.1, 2: 1.2, 3: 1.3, 4: 1.0})
    assert batches == [[0, 1, 2, 3, 4]] and ledger.settled == {0: 1.0}


def test_tuning_records_what_the_final_round_confirms_not_what_a_noisy_batch_suggested(cpu, tmp_path, monkeypatch):
    """tune() through MetaSchedule, with a builder and runner that return scripted times: the default takes 1 ms,
    position 5 is truly faster, and the second batch's reference reads slow, so its candidates look fast."""
    import tvm
    import tvm_ffi
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.runner.local_runner import LocalRunnerFuture

    from compilers.tuning.space import ReplayDecisions, schedule_candidate

    model = conv_relu_model(cin=32, cout=32, size=28)
    mod, _ = to_relax(model)
    task = next(t for t in extract_tasks(mod, cpu) if "conv2d" in t.name)
    space = design_space(task.workload, machine(cpu))
    positions = {}
    for p, decisions in enumerate(space):
        scheduled = schedule_candidate(task.workload, ReplayDecisions(decisions), machine(cpu))
        positions.setdefault(str(tvm_ffi.structural_hash(scheduled.mod)), p)
    true_ms = {p: 1.05 + 0.01 * p for p in range(len(space))} | {0: 1.0, 5: 0.9}
    batches = []

    @derived_object
    class ScriptedBuilder(ms.builder.PyBuilder):
        def build(self, build_inputs):
            return [ms.builder.BuilderResult(str(tvm_ffi.structural_hash(b.mod)), None) for b in build_inputs]

    @derived_object
    class ScriptedRunner(ms.runner.PyRunner):
        def run(self, runner_inputs):
            found = [positions[r.artifact_path] for r in runner_inputs]
            batches.append(found)
            slow = len(batches) == 2  # the second search batch: its reference, the default, reads twice as slow
            return [LocalRunnerFuture(res=[1e-3 * true_ms[p] * (2.0 if slow and p == 0 else 1.0)]) for p in found]

    monkeypatch.setattr(tuning, "measurement", lambda cross, rpc: (ScriptedBuilder(), ScriptedRunner()))
    cache = open_tuning_cache(tmp_path)
    result = tune(mod, cpu, trials=16, cache=cache, progress=False)
    assert [len(b) for b in batches] == [8, 8, 2, 8]  # search: 8, then the default with 7 and with 1 new
    assert batches[-1][0] == 0 and 5 in batches[-1]
    database = cache.database_for(cpu)
    records = database.get_all_tuning_records()
    recorded = {}
    for record in records:
        sch = tvm.s_tir.Schedule(task.workload)
        record.trace.apply_to_schedule(sch, remove_postproc=False)
        recorded[positions[str(tvm_ffi.structural_hash(sch.mod))]] = 1e3 * float(record.run_secs[0])
    assert recorded == pytest.approx({0: 1.0, 5: 0.9})
    best = database.get_top_k(database.commit_workload(task.workload), 1)[0]
    assert 1e3 * float(best.run_secs[0]) == pytest.approx(0.9)
    report = next(t for t in result.tasks if t.name == task.name)
    assert report.trials == 16 and report.default_ms == pytest.approx(1.0) and report.best_ms == pytest.approx(0.9)
