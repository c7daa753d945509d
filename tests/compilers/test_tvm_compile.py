import json
import re
import zipfile

import numpy as np
import pytest

from compilers.frontends.intake import import_model
from compilers.model import CompileOptions
from compilers.runners import TvmRunner
from compilers.tvm_compile import compile_model, require_toolchain
from compilers.verify import check_against_onnxruntime
from packager.edge.model_runner import CompiledModel
from packager.errors import AccuracyMismatchError, CompilationError
from targets import get_target, host_target
from tests.conftest import with_broken_weights

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def compiled_tiny(tiny_model, tmp_path_factory):
    imported = import_model(*tiny_model)
    options = CompileOptions(work_dir=tmp_path_factory.mktemp("compile"))
    return imported, options, compile_model(imported, host_target(), options)


def test_compile_writes_library_params_and_manifest(compiled_tiny):
    imported, _, artifact = compiled_tiny
    assert artifact.library_path.stat().st_size > 0 and artifact.params_path.stat().st_size > 0
    manifest = json.loads(artifact.manifest_path.read_text())
    assert manifest["outputs"] == ["score", "anomaly_map"]
    # weights used as they are keep their names; the biases ship reshaped for broadcasting (compilers.prepack)
    assert manifest["params"][:2] == ["w1", "w2"] and all(p.startswith("prepacked.") for p in manifest["params"][2:])
    assert manifest["device"] == "cpu" and manifest["model_sha256"] == imported.sha256
    assert json.loads((artifact.model_dir / "spec.json").read_text())["input"]["name"] == "image"


def test_compiled_model_matches_onnxruntime(compiled_tiny):
    imported, options, artifact = compiled_tiny
    errors = check_against_onnxruntime(TvmRunner.load(artifact), imported, options)
    assert set(errors) == {"score", "anomaly_map"}
    assert all(e <= 1e-4 for e in errors.values())


def test_broken_model_fails_the_build_naming_output_and_error(compiled_tiny, tmp_path):
    """Corrupt the shipped weights: the check must catch it and name the output and its max error."""
    imported, options, artifact = compiled_tiny
    broken = with_broken_weights(artifact, tmp_path / "model")
    with pytest.raises(AccuracyMismatchError, match=r"output '(score|anomaly_map)': max abs error [0-9.e+-]+"):
        check_against_onnxruntime(TvmRunner.load(broken), imported, options)


class ShareOfTolerance:
    """A runner whose float outputs are ONNX Runtime's moved by ``share`` of the check's tolerance at every element."""

    label, native, emulated = "drifting", True, False

    def __init__(self, imported, share: float, rtol: float = 1e-3, atol: float = 1e-4):
        from compilers.runners import OnnxRuntimeRunner

        self.reference, self.share, self.rtol, self.atol = OnnxRuntimeRunner.load(imported), share, rtol, atol

    def run(self, x):
        out = self.reference.run(x)
        return {
            k: v + self.share * (self.atol + self.rtol * np.abs(v)) if v.dtype.kind == "f" else v
            for k, v in out.items()
        }


@pytest.mark.parametrize("share,fast_passes", [(0.3, True), (0.7, False)])
def test_a_fast_compile_must_agree_within_half_the_tolerance_and_a_precise_one_within_all_of_it(
    compiled_tiny, share, fast_passes
):
    """Winograd's larger tiles round by an amount that varies from input to input: a compile that may use them passes
    the check at under half the tolerance; the precise compile the build falls back to, at under all of it."""
    from dataclasses import replace

    imported, options, _ = compiled_tiny
    runner = ShareOfTolerance(imported, share)
    if fast_passes:
        check_against_onnxruntime(runner, imported, options)
    else:
        with pytest.raises(AccuracyMismatchError, match=r"tolerance rtol=0.0005, atol=5e-05"):
            check_against_onnxruntime(runner, imported, options)
    check_against_onnxruntime(runner, imported, replace(options, precise=True))


def corrupt_second_weight(artifact):
    """The artifact with 0.5 added to its weight w2 in params.bin: outputs far outside the check's tolerance."""
    import tvm

    params = dict(tvm.runtime.load_param_dict_from_file(str(artifact.params_path)))
    params["w2"] = tvm.runtime.tensor(params["w2"].numpy() + 0.5)
    tvm.runtime.save_param_dict_to_file(params, str(artifact.params_path))
    return artifact


def tiny_packaging_request(tiny_model, component_name: str, output_dir):
    """A packaging job for the tiny model on this host, two benchmark runs, written to ``output_dir``."""
    from packager.build.pipeline import PackagingRequest

    return PackagingRequest(
        model_path=tiny_model[0],
        spec_path=tiny_model[1],
        target=host_target(),
        component_name=component_name,
        component_version="1.0.0",
        output_dir=output_dir,
        benchmark_runs=2,
    )


def test_packaging_with_broken_weights_fails_and_writes_no_bundle(tiny_model, tmp_path, monkeypatch):
    """The packaging job's own function refuses to bundle a model whose compiled output disagrees with ONNX Runtime.
    (`build` runs it in a job worker; tests/packager/commands/test_build.py checks a FAILED job's exit code there.)"""
    import compilers.tvm_compile as tvm_compile
    from packager.build.pipeline import run_packaging

    real_compile = tvm_compile.compile_model

    def compile_then_corrupt(*args, **kwargs):
        return corrupt_second_weight(real_compile(*args, **kwargs))

    monkeypatch.setattr(tvm_compile, "compile_model", compile_then_corrupt)
    out = tmp_path / "gg"
    request = tiny_packaging_request(tiny_model, "com.example.Broken", out)
    with pytest.raises(AccuracyMismatchError, match=r"output '(score|anomaly_map)': max abs error"):
        run_packaging(request)
    assert AccuracyMismatchError.exit_code == 11
    assert not (out / "recipes").exists(), "no bundle may be written for a model that failed the check"


def test_a_build_that_fails_the_check_is_compiled_again_with_the_smallest_winograd_tiles(
    tiny_model, tmp_path, monkeypatch
):
    """Deep networks (DRAEM) drift past the check with F(4x4) Winograd tiles; the build then compiles precisely and
    bundles that, saying so. Here the fast compile is made to fail the check by corrupting its weights."""
    import compilers.tvm_compile as tvm_compile
    from packager.build.pipeline import run_packaging

    real_compile = tvm_compile.compile_model
    compiled = []

    def corrupt_unless_precise(imported, target, options, *args, **kwargs):
        artifact = real_compile(imported, target, options, *args, **kwargs)
        compiled.append(options.precise)
        return artifact if options.precise else corrupt_second_weight(artifact)

    monkeypatch.setattr(tvm_compile, "compile_model", corrupt_unless_precise)
    lines = []
    request = tiny_packaging_request(tiny_model, "com.example.Precise", tmp_path / "gg")
    result = run_packaging(request, progress=lines.append)
    assert compiled == [False, True]
    assert any("disagrees with ONNX Runtime" in line and "compiling again" in line for line in lines), lines
    assert "the precise compile passes the check" in lines
    assert all(e <= 1e-4 for e in result.max_abs_error.values())
    import zipfile

    with zipfile.ZipFile(next((tmp_path / "gg" / "artifacts").rglob("model.zip"))) as archive:
        manifest = json.loads(next(archive.read(n) for n in archive.namelist() if n.endswith("manifest.json")))
    assert manifest["precise"] is True  # the bundle holds the precise compile


def test_a_compile_that_failed_the_check_keeps_no_files_in_the_cache_and_the_next_build_compiles_precisely(
    tiny_model, tmp_path, monkeypatch
):
    """The compile cache entry of a fast compile that failed the check keeps only the check's error (DRAEM's fast
    compile was 1.3 GB of parameters that no build ships); the next build of the same model skips the fast compile and
    reuses the precise one."""
    from dataclasses import replace

    import compilers.tvm_compile as tvm_compile
    from packager.build.pipeline import run_packaging

    real_compile, real_inner = tvm_compile.compile_model, tvm_compile._compile
    compiled = []

    def corrupt_unless_precise(imported, target, options, *args, **kwargs):
        artifact = real_compile(imported, target, options, *args, **kwargs)
        return artifact if options.precise or artifact.from_cache else corrupt_second_weight(artifact)

    def counting(imported, target, options, *args, **kwargs):
        compiled.append(options.precise)
        return real_inner(imported, target, options, *args, **kwargs)

    monkeypatch.setattr(tvm_compile, "compile_model", corrupt_unless_precise)
    monkeypatch.setattr(tvm_compile, "_compile", counting)
    cache = tmp_path / "cc"

    def build(name):
        lines = []
        request = replace(
            tiny_packaging_request(tiny_model, "com.example.Precise", tmp_path / name), compile_cache_dir=cache
        )
        return run_packaging(request, progress=lines.append), lines

    first, _ = build("first")
    assert compiled == [False, True] and first.max_abs_error
    entries = {json.loads(e.read_text()).get("failed_check"): e.parent for e in cache.glob("*/entry.json")}
    [error] = [k for k in entries if k is not None]
    assert "disagrees with ONNX Runtime" in error and len(entries) == 2  # the marked fast entry and the precise one
    assert [p.name for p in entries[error].iterdir()] == ["entry.json"], "the failed compile's files are gone"
    assert not [p for p in cache.iterdir() if p.name.startswith(".")], "no staging or stale folder is left"

    second, lines = build("second")
    assert compiled == [False, True], "neither compile ran again"
    assert second.from_cache
    assert any(line.startswith("an earlier build of this model") and error in line for line in lines), lines
    assert not any("compiling again" in line for line in lines)
    with zipfile.ZipFile(next((tmp_path / "second" / "artifacts").rglob("model.zip"))) as archive:
        manifest = json.loads(next(archive.read(n) for n in archive.namelist() if n.endswith("manifest.json")))
    assert manifest["precise"] is True


def test_a_failed_parameter_write_names_the_file_and_the_free_space(compiled_tiny, tmp_path, monkeypatch):
    """A full disk (here: a write TVM refuses) is a CompilationError naming params.bin and the disk's free space, not
    TVM's InternalError."""
    import tvm

    imported, _, _ = compiled_tiny

    def refuse(params, path):
        raise tvm.error.InternalError("Check failed: err == 0 (1 vs. 0) : SimpleBinaryFileStream.Write incomplete")

    monkeypatch.setattr(tvm.runtime, "save_param_dict_to_file", refuse)
    with pytest.raises(
        CompilationError, match=r"writing .*params\.bin \(\d+ MiB of parameters\) failed, with \d+ MiB free"
    ):
        compile_model(imported, host_target(), CompileOptions(work_dir=tmp_path))


def test_tuned_schedules_that_fail_to_compile_fall_back_to_the_default_ones(tiny_model, tmp_path, monkeypatch):
    """A build never fails because of its tuning records: when the tuned pipeline fails inside tvm.compile, the
    default schedules compile the model, and the build says so."""
    import tvm

    import compilers.tvm_compile as tvm_compile

    real_pipeline = tvm_compile.relax_pipeline_for

    def failing_when_tuned(target, database):
        if database is None:
            return real_pipeline(target, None)

        @tvm.transform.module_pass(opt_level=0, name="BrokenTunedSchedules")
        def broken(mod, _ctx):
            raise RuntimeError("Check failed: VectorizeLoop before LiftStorageAlloc")

        return broken

    monkeypatch.setattr(tvm_compile, "relax_pipeline_for", failing_when_tuned)
    imported = import_model(*tiny_model)
    lines = []
    artifact = tvm_compile.compile_model(
        imported, host_target(), CompileOptions(work_dir=tmp_path), database=object(), progress=lines.append
    )
    assert any("tuned schedules failed to compile" in line and "VectorizeLoop" in line for line in lines), lines
    assert artifact.tuning_records_applied == 0
    check_against_onnxruntime(TvmRunner.load(artifact), imported, CompileOptions(work_dir=tmp_path))


def test_compiled_model_runs_through_device_loader(compiled_tiny):
    imported, _, artifact = compiled_tiny
    model = CompiledModel.load(artifact.model_dir)
    outputs = model.run(np.zeros(imported.input_shape, np.float32))
    assert outputs["score"].shape == (1,) and outputs["anomaly_map"].shape == (1, 1, 64, 64)


def test_missing_cross_toolchain_says_how_to_install(monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(CompilationError, match="apt-get install -y gcc-aarch64-linux-gnu"):
        require_toolchain(get_target("LINUX/ARM64"))


def test_compiling_twice_gives_identical_library_and_params(compiled_tiny, tmp_path):
    imported, _, artifact = compiled_tiny
    again = compile_model(imported, host_target(), CompileOptions(work_dir=tmp_path))
    assert again.library_path.read_bytes() == artifact.library_path.read_bytes()
    assert again.params_path.read_bytes() == artifact.params_path.read_bytes()
    assert again.manifest_path.read_bytes() == artifact.manifest_path.read_bytes()


def test_tuned_build_then_cached_rebuild(tiny_model, tmp_path):
    """A build with tuning-trials records trials and matches ONNX Runtime; the rebuild applies the cache with 0 trials."""
    imported = import_model(*tiny_model)
    cache_dir = tmp_path / "tuning"
    lines = []
    tuned = compile_model(
        imported,
        host_target(),
        CompileOptions(work_dir=tmp_path / "a", tuning_trials=6, tuning_cache_dir=cache_dir),
        progress=lines.append,
    )
    assert tuned.tuning_trials > 0 and tuned.tuning_records_applied > 0
    # the build's own progress channel carries the tuning's lines: trials done out of N, task, best, time
    assert lines[0].startswith("tuning ") and "up to 6 trials" in lines[0]
    assert any(
        re.match(r"tuning (\d+)/\1 trials, task \d+/\d+ \S+: best [\d.]+ ms .*done in", line) for line in lines
    ), lines
    assert (
        max(
            check_against_onnxruntime(TvmRunner.load(tuned), imported, CompileOptions(work_dir=tmp_path / "a")).values()
        )
        <= 1e-4
    )
    rebuilt = compile_model(
        imported,
        host_target(),
        CompileOptions(work_dir=tmp_path / "b", tuning_cache_dir=cache_dir, tuning_progress=False),
    )
    assert rebuilt.tuning_trials == 0
    assert rebuilt.tuning_records_applied == tuned.tuning_records_applied
    assert rebuilt.library_path.read_bytes() == tuned.library_path.read_bytes()


def test_tuning_a_gpu_target_is_refused(tiny_model, tmp_path):
    from packager.errors import ValidationException

    imported = import_model(*tiny_model)
    with pytest.raises(ValidationException, match="tuning-trials"):
        compile_model(imported, get_target("jetson_xavier"), CompileOptions(work_dir=tmp_path, tuning_trials=4))
