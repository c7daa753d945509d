"""Compile an ImportedModel with TVM Relax for one Target."""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from compilers.compile_cache import CachedCompile, compile_cache_key, open_compile_cache
from compilers.gpu import check_shipped_gpu_code, pack_imports_with_kernel_entries, prepare_nvptx
from compilers.model import CompiledArtifact, CompileOptions, ImportedModel
from compilers.tuning.cache import open_tuning_cache
from compilers.verify import graph_output_names
from packager.edge import model_runner
from packager.errors import CompilationError, ModelImportError, ValidationException
from targets import Target

MANIFEST_FORMAT = "packager-compiled/1"


def _error_summary(exc: Exception) -> str:
    """TVM errors carry a C++ backtrace; keep the line that says what went wrong."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    flagged = [line for line in lines if "Error" in line.split(":")[0] or "Check failed" in line]
    return (flagged[-1] if flagged else lines[-1] if lines else type(exc).__name__)[:500]


def onnx_to_relax(onnx_bytes: bytes, shape_dict: dict | None = None):
    """ONNX -> Relax IRModule with the weights detached: (mod, [(name, tensor), ...])."""
    import onnx
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    mod = from_onnx(onnx.load_from_string(onnx_bytes), shape_dict=shape_dict, keep_params_in_input=True)
    mod, params = relax.frontend.detach_params(mod)
    names = [p.name for p in mod["main"].params[1:]]
    return mod, list(zip(names, params.get("main", [])))


def to_relax(imported: ImportedModel):
    """The imported model as a Relax IRModule with the weights detached; a frontend failure names the model file."""
    try:
        return onnx_to_relax(imported.onnx_bytes, {imported.spec.input.name: list(imported.input_shape)})
    except Exception as exc:  # the frontend raises bare TVMError/ValueError/KeyError, naming the op in its text
        raise ModelImportError(f"{imported.source_path}: TVM's ONNX frontend failed: {_error_summary(exc)}") from None


def relax_for_target(imported: ImportedModel, target: Target):
    """The Relax module compile and tuning both start from: (mod, [(name, tensor), ...]).

    On CPU targets, what depends on the weights alone is computed here once (compilers.prepack), and the module
    takes the results as its parameters. GPU targets keep the stock lowering, which does no such work.
    """
    import tvm

    from compilers.prepack import prepack_weights
    from compilers.schedules.pipeline import is_gpu

    mod, params = to_relax(imported)
    if is_gpu(target):
        return mod, params
    try:
        return prepack_weights(mod, params, tvm.target.Target(target.tvm_target))
    except Exception as exc:
        raise CompilationError(
            f"precomputing the weights of {imported.source_path.name} failed: {_error_summary(exc)}"
        ) from None


def require_toolchain(target: Target) -> None:
    if target.cross_compiler and shutil.which(target.cross_compiler) is None:
        package = "gcc-" + target.host_triple.replace("_", "-")
        raise CompilationError(
            f"target {target.name} needs the cross linker '{target.cross_compiler}', which is not installed; "
            f"install it with: apt-get install -y {package}"
        )


def _export(executable, target: Target, library_path: Path) -> None:
    import tvm.support.cc

    options = {}
    if target.device == "cuda":
        options["fpack_imports"] = pack_imports_with_kernel_entries
    if target.cross_compiler:
        options["fcompile"] = tvm.support.cc.cross_compiler(target.cross_compiler)
    executable.export_library(str(library_path), **options)


def relax_pipeline_for(target: Target, database):
    """The Relax pass pipeline: our default schedules, plus tuned records when a database is given."""
    from compilers.schedules import pipeline as schedules

    if target.device == "cuda":
        prepare_nvptx()

    return schedules.relax_pipeline(target, database)


def tuned_database(mod, target: Target, options: CompileOptions, progress=None):
    """Tune when asked, then the tuning cache's records for this target: (database or None, trials run).

    The cache is keyed by workload and target, so a rebuild of the same model applies the earlier records with no trials."""
    from compilers.schedules.pipeline import is_gpu
    from compilers.tuning.tune import tune

    if is_gpu(target):
        if options.tuning_trials:
            raise ValidationException(
                f"tuning-trials: tuning is implemented for CPU targets; {target.name} is a GPU target",
                field="tuning-trials",
            )
        return None, 0
    if options.tuning_cache_dir is None:
        if options.tuning_trials:
            raise ValidationException(
                "tuning-trials: tuning needs a tuning cache directory to keep its records", field="tuning-trials"
            )
        return None, 0
    cache = open_tuning_cache(options.tuning_cache_dir)
    if options.tuning_trials == 0 and not cache.has_records(target):
        return None, 0
    result = tune(
        mod,
        target,
        options.tuning_trials,
        cache,
        progress=options.tuning_progress,
        log=progress if options.tuning_progress else None,
    )
    return cache.database_for(target), result.trials


def compile_model(
    imported: ImportedModel, target: Target, options: CompileOptions, database=None, progress=None
) -> CompiledArtifact:
    """Compile, export model.so + params.bin + manifest.json + spec.json into options.work_dir/model.

    Without an explicit ``database``, records come from the tuning cache (after tuning options.tuning_trials trials;
    tuning reports its progress in lines to ``progress``, a callable taking a str, or to stderr when it is None),
    and with options.compile_cache_dir an unchanged model, spec, target, records and compiler reuse an earlier compile."""
    require_toolchain(target)
    started = time.perf_counter()
    model_runner.import_tvm()
    if options.precise:  # around all of it: prepacking legalizes the convolutions too
        from compilers.schedules import winograd  # imports TVM's compiler, which a compile cache hit does without

        with winograd.precise_tiles():
            return _compile_any(imported, target, options, started, database, progress)
    return _compile_any(imported, target, options, started, database, progress)


def _compile_any(imported, target, options, started, database, progress) -> CompiledArtifact:
    if database is not None or options.compile_cache_dir is None:
        return _compile(imported, target, options, started, database=database, progress=progress)
    return _compile_cached(imported, target, options, started, progress)


def _compile_cached(
    imported: ImportedModel, target: Target, options: CompileOptions, started: float, progress=None
) -> CompiledArtifact:
    prepared, trials = None, 0
    if options.tuning_trials:  # tune first: the records it adds are part of the key
        mod, params = relax_for_target(imported, target)
        database, trials = tuned_database(mod, target, options, progress)
        prepared = (mod, params, database)
    cache = open_compile_cache(options.compile_cache_dir)
    records = open_tuning_cache(options.tuning_cache_dir).records_digest(target) if options.tuning_cache_dir else ""
    key = compile_cache_key(imported, target, records, precise=options.precise)
    model_dir = Path(options.work_dir) / "model"
    hit = cache.load(key, model_dir)
    if hit is not None:
        return CompiledArtifact(
            cache_key=key,
            failed_check=hit.failed_check,
            model_dir=model_dir,
            target_name=target.name,
            device=target.device,
            library_path=model_dir / model_runner.LIBRARY,
            params_path=model_dir / model_runner.PARAMS,
            manifest_path=model_dir / model_runner.MANIFEST,
            compile_seconds=time.perf_counter() - started,
            tuning_trials=trials,
            tuning_records_applied=hit.tuning_records_applied,
            from_cache=True,
            file_sha256=hit.files,
        )
    artifact = _compile(imported, target, options, started, prepared=prepared, progress=progress)
    cache.store(key, artifact.model_dir, CachedCompile(artifact.tuning_records_applied, artifact.compile_seconds))
    return replace(artifact, tuning_trials=trials, cache_key=key)


def forget_failed_compile(artifact: CompiledArtifact, options: CompileOptions, error: str) -> None:
    """The build check failed ``artifact``: its compile cache entry keeps only ``error`` (compile_cache.mark_failed)."""
    if artifact.cache_key is not None and options.compile_cache_dir is not None:
        open_compile_cache(options.compile_cache_dir).mark_failed(artifact.cache_key, error)


def _compile_untuned(imported: ImportedModel, mod, target: Target):
    """(executable, pipeline) with the default schedules only."""
    import tvm

    pipeline = relax_pipeline_for(target, None)
    try:
        return tvm.compile(mod, target=tvm.target.Target(target.tvm_target), relax_pipeline=pipeline), pipeline
    except Exception as exc:
        raise CompilationError(
            f"TVM failed to compile {imported.source_path.name} for {target.name}: {_error_summary(exc)}"
        ) from None


def _compile(
    imported: ImportedModel,
    target: Target,
    options: CompileOptions,
    started: float,
    database=None,
    prepared: tuple | None = None,
    progress=None,
) -> CompiledArtifact:
    """prepared: (mod, params, database) when the caller already imported and tuned."""
    import tvm

    from compilers.schedules.pipeline import CpuPipeline

    trials = 0
    if prepared is not None:
        mod, params, database = prepared
    else:
        mod, params = relax_for_target(imported, target)
        if database is None:
            database, trials = tuned_database(mod, target, options, progress)
    tvm_target = tvm.target.Target(target.tvm_target)
    if database is None:
        executable, pipeline = _compile_untuned(imported, mod, target)
    else:
        pipeline = relax_pipeline_for(target, database)
        try:
            executable = tvm.compile(mod, target=tvm_target, relax_pipeline=pipeline)
        except Exception as exc:  # noqa: BLE001 - any failure of the tuned schedules falls back to the defaults
            # A tuned schedule that built alone in the tuner can still fail inside the whole module: seen once, in one
            # zoo_speed run with 400 trials (STFPM's and DFM's compiles: "VectorizeLoop before LiftStorageAlloc"); a
            # rerun of STFPM's did not repeat it.
            (progress or (lambda line: print(line, file=sys.stderr)))(
                f"the tuned schedules failed to compile ({_error_summary(exc)}); compiling with the default schedules"
            )
            executable, pipeline = _compile_untuned(imported, mod, target)
    # What the build used, counted as it scheduled each kernel; the GPU pipeline applies no records yet.
    applied = pipeline.records_applied if isinstance(pipeline, CpuPipeline) else 0
    model_dir = Path(options.work_dir) / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    for old in (p for p in model_dir.iterdir() if p.is_file()):
        old.unlink()  # new files, never old ones rewritten: one may be a compile cache entry's, linked by a hit
    library_path = model_dir / model_runner.LIBRARY
    try:
        _export(executable, target, library_path)
    except Exception as exc:
        raise CompilationError(f"linking the library for {target.name} failed: {_error_summary(exc)}") from None
    ptx_isa = None
    if target.device == "cuda":
        ptx_isa = ".".join(map(str, max(m.version for m in check_shipped_gpu_code(library_path, target).ptx)))
    params_path = model_dir / model_runner.PARAMS
    try:
        tvm.runtime.save_param_dict_to_file(dict(params), str(params_path))
    except Exception as exc:  # noqa: BLE001 - TVM reports a failed write as an InternalError, whatever the cause
        size = sum(math.prod(value.shape) * np.dtype(value.dtype).itemsize for _, value in params) / 2**20
        free = shutil.disk_usage(model_dir).free / 2**20
        raise CompilationError(
            f"writing {params_path} ({size:.0f} MiB of parameters) failed, with {free:.0f} MiB free on its disk: "
            f"{_error_summary(exc)}"
        ) from None
    manifest = {
        "format": MANIFEST_FORMAT,
        "entry": "main",
        "input": imported.spec.input.name,
        "input_shape": list(imported.input_shape),
        "params": [name for name, _ in params],
        "outputs": graph_output_names(imported),
        "device": target.device,
        "target": target.name,
        "tvm_target": target.tvm_target,
        "tvm_version": tvm.__version__,
        "gpu_code": target.options.gpu_code,
        "cuda_ver": target.options.cuda_ver,
        "trt_ver": target.options.trt_ver,
        "ptx_isa": ptx_isa,
        "model_sha256": imported.sha256,
        "precise": options.precise,
    }
    manifest_path = model_dir / model_runner.MANIFEST
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    (model_dir / model_runner.SPEC).write_text(imported.spec.to_json())
    return CompiledArtifact(
        model_dir=model_dir,
        target_name=target.name,
        device=target.device,
        library_path=library_path,
        params_path=params_path,
        manifest_path=manifest_path,
        compile_seconds=time.perf_counter() - started,
        tuning_trials=trials,
        tuning_records_applied=applied,
    )


def runs_on_this_host(target: Target) -> bool:
    return not target.is_cross and target.device == "cpu"
