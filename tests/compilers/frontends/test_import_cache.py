"""The intake cache: a hit is the same ImportedModel without running intake; every input of intake misses when it
changes; a damaged entry is a miss; bad models get the same errors with the cache as without."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from compilers.frontends import import_cache, intake
from compilers.frontends.intake import import_model
from packager.errors import ModelImportError
from tests.conftest import make_tiny_autoencoder, tiny_spec_dict


@pytest.fixture
def external_model(tmp_path) -> tuple[Path, Path]:
    """The tiny autoencoder saved as anomalib does: the graph in model.onnx, the weights in model.onnx.data."""
    import onnx

    make_tiny_autoencoder(tmp_path / "single.onnx")
    model = onnx.load(str(tmp_path / "single.onnx"))
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save_model(
        model,
        str(folder / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=0,
    )
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(tiny_spec_dict()))
    return folder / "model.onnx", spec


def _entries(cache_dir: Path) -> list[Path]:
    root = cache_dir / import_cache.FOLDER
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []


def test_a_hit_is_the_same_model_without_running_intake(external_model, tmp_path, monkeypatch):
    model, spec = external_model
    fresh = import_model(model, spec)
    first = import_model(model, spec, cache_dir=tmp_path / "cache")
    assert first == fresh
    assert len(_entries(tmp_path / "cache")) == 1

    def refuse(*_args):
        raise AssertionError("intake ran on a cache hit")

    monkeypatch.setattr(intake, "_import_model", refuse)
    again = import_model(model, spec, cache_dir=tmp_path / "cache")
    assert again == fresh


def test_a_second_read_in_one_process_hashes_nothing_until_a_file_changes(external_model, tmp_path, monkeypatch):
    """build checks the model and then registers it in one process: the second intake reuses the first, by the
    files' stat signatures, until the model, its external data or the cache entry changes."""
    model, spec = external_model
    first = import_model(model, spec, cache_dir=tmp_path / "cache")
    hashed = []
    key_and_data_files = import_cache._key_and_data_files
    monkeypatch.setattr(
        import_cache, "_key_and_data_files", lambda *args: hashed.append(args) or key_and_data_files(*args)
    )
    assert import_model(model, spec, cache_dir=tmp_path / "cache") == first
    assert hashed == []
    _change_last_byte(model.parent / "model.onnx.data")
    changed = import_model(model, spec, cache_dir=tmp_path / "cache")
    assert len(hashed) == 1 and changed.sha256 != first.sha256  # new weights: hashed, and intake ran again
    assert len(_entries(tmp_path / "cache")) == 2
    for entry in _entries(tmp_path / "cache"):
        shutil.rmtree(entry)
    import_model(model, spec, cache_dir=tmp_path / "cache")
    assert len(hashed) == 2  # its cache entry went: read again, not remembered


def test_a_copy_elsewhere_hits_with_its_own_source_path(external_model, tmp_path):
    model, spec = external_model
    import_model(model, spec, cache_dir=tmp_path / "cache")
    copy = tmp_path / "store-copy"
    shutil.copytree(model.parent, copy)
    hit = import_model(copy / "model.onnx", spec, cache_dir=tmp_path / "cache")
    assert hit.source_path == copy / "model.onnx"
    assert len(_entries(tmp_path / "cache")) == 1


def _change_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("part", ["external data", "graph", "spec", "anomalib metadata"])
def test_every_input_of_intake_is_in_the_key(external_model, tmp_path, part):
    model, spec = external_model
    metadata = model.parent / intake.ANOMALIB_METADATA
    spec_for_key = None if part == "anomalib metadata" else spec
    before = import_cache.intake_key(model, spec_for_key, metadata)
    if part == "external data":
        _change_last_byte(model.parent / "model.onnx.data")
    elif part == "graph":
        import onnx

        graph = onnx.load(str(model), load_external_data=False)
        graph.doc_string = "re-exported"
        onnx.save_model(graph, str(model))
    elif part == "spec":
        spec.write_text(json.dumps({**tiny_spec_dict(), "image_threshold": 0.25}))
    else:
        metadata.write_text("{}")
    assert import_cache.intake_key(model, spec_for_key, metadata) not in (None, before)


def test_a_changed_spec_gives_its_own_model(external_model, tmp_path):
    model, spec = external_model
    import_model(model, spec, cache_dir=tmp_path / "cache")
    spec.write_text(json.dumps({**tiny_spec_dict(), "image_threshold": 0.25}))
    changed = import_model(model, spec, cache_dir=tmp_path / "cache")
    assert changed.spec.image_threshold == 0.25
    assert len(_entries(tmp_path / "cache")) == 2


def test_a_damaged_entry_is_a_miss_and_is_written_again(external_model, tmp_path):
    model, spec = external_model
    fresh = import_model(model, spec, cache_dir=tmp_path / "cache")
    (entry,) = _entries(tmp_path / "cache")
    _change_last_byte(entry / import_cache.GRAPH_FILE)
    assert import_model(model, spec, cache_dir=tmp_path / "cache") == fresh
    (rewritten,) = _entries(tmp_path / "cache")
    assert import_cache.load(tmp_path / "cache", rewritten.name, model) == fresh


def test_bad_models_fail_as_they_do_without_the_cache(external_model, tmp_path):
    model, spec = external_model
    (model.parent / "model.onnx.data").unlink()
    with pytest.raises(ModelImportError, match="model.onnx.data"):
        import_model(model, spec, cache_dir=tmp_path / "cache")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a protobuf")
    with pytest.raises(ModelImportError):
        import_model(corrupt, spec, cache_dir=tmp_path / "cache")
    assert _entries(tmp_path / "cache") == []
