"""The compile cache: every part of the key misses when it changes; a hit gives the same files; a damaged entry is a miss."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from compilers import compile_cache
from compilers.compile_cache import (
    compile_cache_key,
    compiler_fingerprint,
    model_content_hash,
    open_compile_cache,
)
from compilers.frontends.intake import import_model
from compilers.model import CompileOptions
from compilers.tuning.cache import open_tuning_cache
from targets import get_target, host_target
from targets.catalog import CompilerOptions
from tests.conftest import make_tiny_autoencoder, tiny_spec_dict


def _key(imported, target=None, tuning_dir: Path | None = None):
    target = target or host_target()
    return compile_cache_key(
        imported, target, open_tuning_cache(tuning_dir or Path("/nonexistent")).records_digest(target)
    )


@pytest.fixture
def imported(tiny_model):
    return import_model(*tiny_model)


def test_the_same_inputs_give_the_same_key(imported, tiny_model):
    assert _key(imported) == _key(import_model(*tiny_model))
    assert set(_key(imported).parts) == {"model", "spec", "target", "tuning", "compiler"}


def test_a_precise_compile_has_a_key_of_its_own(imported):
    target = host_target()
    fast = _key(imported)
    precise = compile_cache_key(imported, target, fast.parts["tuning"], precise=True)
    assert precise.digest != fast.digest and set(precise.parts) == set(fast.parts) | {"precise"}


def test_other_weights_miss(imported, tmp_path):
    other = make_tiny_autoencoder(tmp_path / "other.onnx", seed=1)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(tiny_spec_dict()))
    changed = _key(import_model(other, spec))
    assert changed.digest != _key(imported).digest and changed.parts["model"] != _key(imported).parts["model"]


def test_a_changed_external_data_file_misses(tmp_path):
    """The graph's bytes stay the same when only an external-data file changes: the key must still change."""
    import onnx

    model = onnx.load(make_tiny_autoencoder(tmp_path / "inline.onnx"))
    onnx.save(
        model,
        tmp_path / "external.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(tiny_spec_dict()))
    base = import_model(tmp_path / "inline.onnx", spec)
    external = replace(
        base, source_path=tmp_path / "external.onnx", onnx_bytes=(tmp_path / "external.onnx").read_bytes()
    )
    assert compile_cache.external_data_files(external) == [tmp_path / "weights.bin"]
    before = model_content_hash(external)
    data = bytearray((tmp_path / "weights.bin").read_bytes())
    data[0] ^= 0xFF
    (tmp_path / "weights.bin").write_bytes(bytes(data))
    assert model_content_hash(external) != before
    (tmp_path / "weights.bin").unlink()
    assert model_content_hash(external) != before


def test_a_changed_spec_misses(imported, tmp_path):
    spec = tiny_spec_dict()
    spec["image_threshold"] = 0.75
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    changed = _key(replace(imported, spec=import_model(imported.source_path, tmp_path / "spec.json").spec))
    assert changed.parts["spec"] != _key(imported).parts["spec"] and changed.digest != _key(imported).digest


def test_another_target_or_compiler_option_misses(imported):
    keys = {
        _key(imported, target).digest
        for target in (
            get_target("LINUX/X86_64"),
            get_target("LINUX/X86_64", CompilerOptions(mcpu="skylake")),
            get_target("LINUX/X86_64", CompilerOptions(num_cores=2)),
            get_target("LINUX/ARM64"),
            get_target("jetson_xavier"),
        )
    }
    assert len(keys) == 5


def test_new_tuning_records_miss(imported, tmp_path):
    target = host_target()
    cache = open_tuning_cache(tmp_path / "tuning")
    before = _key(imported, target, tmp_path / "tuning")
    directory = cache.directory_for(target.tvm_target)
    directory.mkdir(parents=True)
    (directory / "database_tuning_record.json").write_text("[0, [[], []], [0.001], {}, []]\n")
    after = _key(imported, target, tmp_path / "tuning")
    assert after.parts["tuning"] != before.parts["tuning"] and after.digest != before.digest
    other_target = get_target("LINUX/ARM64")
    assert _key(imported, other_target, tmp_path / "tuning") == _key(imported, other_target), (
        "records for one target do not change another target's key"
    )


def test_a_changed_compiler_source_or_tvm_version_misses(imported, tmp_path, monkeypatch):
    import importlib.metadata

    import compilers

    before = compiler_fingerprint()
    copy = tmp_path / "compilers"
    shutil.copytree(Path(compilers.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(compilers, "__file__", str(copy / "__init__.py"))
    compiler_fingerprint.cache_clear()
    assert compiler_fingerprint() == before, "a byte-identical copy of the sources gives the same fingerprint"
    (copy / "schedules" / "pipeline.py").write_text(
        (copy / "schedules" / "pipeline.py").read_text() + "\n# a schedule changed\n"
    )
    compiler_fingerprint.cache_clear()
    edited = compiler_fingerprint()
    assert edited != before
    real_version = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda dist: "0.28.0" if dist == "apache-tvm" else real_version(dist)
    )
    compiler_fingerprint.cache_clear()
    assert compiler_fingerprint() not in (before, edited)
    monkeypatch.undo()
    compiler_fingerprint.cache_clear()
    assert compiler_fingerprint() == before


def test_environment_variable_moves_the_default_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("PACKAGER_COMPILE_CACHE", raising=False)
    assert compile_cache.default_compile_cache_dir(tmp_path / "home") == tmp_path / "home" / "compile-cache"
    monkeypatch.setenv("PACKAGER_COMPILE_CACHE", str(tmp_path / "ci-cache"))
    assert compile_cache.default_compile_cache_dir(tmp_path / "home") == tmp_path / "ci-cache"


@pytest.mark.slow
def test_a_hit_restores_the_same_files_and_a_damaged_entry_compiles_again(imported, tmp_path):
    from compilers.tvm_compile import compile_model

    def build(name: str):
        return compile_model(
            imported,
            host_target(),
            CompileOptions(
                work_dir=tmp_path / name, tuning_cache_dir=tmp_path / "tc", compile_cache_dir=tmp_path / "cc"
            ),
        )

    first, second = build("first"), build("second")
    assert (first.from_cache, second.from_cache) == (False, True)
    for name in ("model.so", "params.bin", "manifest.json", "spec.json"):
        assert (first.model_dir / name).read_bytes() == (second.model_dir / name).read_bytes(), name
    # The hit says what each file's checked SHA-256 is, so bundling need not read them to find its ZIP.
    assert first.file_sha256 == {} and second.file_sha256 == {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in second.model_dir.iterdir()
    }
    [entry] = [p for p in (tmp_path / "cc").iterdir() if not p.name.startswith(".")]
    (entry / "params.bin").write_bytes(b"damaged")
    third = build("third")
    assert (
        not third.from_cache
        and (third.model_dir / "params.bin").read_bytes() == (first.model_dir / "params.bin").read_bytes()
    )
    assert build("fourth").from_cache, "the damaged entry was replaced by the fresh compile"
    uncached = compile_model(
        imported, host_target(), CompileOptions(work_dir=tmp_path / "fifth", tuning_cache_dir=tmp_path / "tc")
    )
    assert not uncached.from_cache
    assert (
        open_compile_cache(tmp_path / "cc").load(_key(imported, tuning_dir=tmp_path / "tc"), tmp_path / "sixth")
        is not None
    )


def test_a_hit_links_the_entry_and_a_later_compile_there_leaves_the_entry_whole(imported, tmp_path):
    """A hit links the entry's files (a large model's params.bin is not copied); a compile into the same directory
    afterwards writes new files, so the entry keeps its bytes and still hits."""
    from compilers.tvm_compile import compile_model

    def build(cache: bool):
        return compile_model(
            imported,
            host_target(),
            CompileOptions(
                work_dir=tmp_path / "work",
                tuning_cache_dir=tmp_path / "tc",
                compile_cache_dir=tmp_path / "cc" if cache else None,
            ),
        )

    build(True)
    hit = build(True)
    [entry] = [p for p in (tmp_path / "cc").iterdir() if not p.name.startswith(".")]
    assert hit.from_cache and (hit.model_dir / "params.bin").samefile(entry / "params.bin")
    before = {p.name: p.read_bytes() for p in entry.iterdir()}
    fresh = build(False)
    assert not fresh.from_cache and not (fresh.model_dir / "params.bin").samefile(entry / "params.bin")
    assert {p.name: p.read_bytes() for p in entry.iterdir()} == before
    assert build(True).from_cache
