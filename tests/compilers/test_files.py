"""Model-sized files are hashed once per process while they are unchanged, and a model that names no external data is
not parsed to find out."""

from __future__ import annotations

import os
import time
from pathlib import Path

import onnx
import pytest

from compilers import files
from compilers.files import file_sha256, read_with_sha256
from compilers.frontends import onnx as onnx_frontend
from compilers.frontends.onnx import data_files_of
from tests.conftest import make_tiny_autoencoder


def _old_file(path: Path, data: bytes) -> Path:
    """A file written a moment ago: outside the window in which a change could keep its timestamps."""
    path.write_bytes(data)
    time.sleep(2 * files._RACY_NS / 1e9)
    return path


def _count_hashes(monkeypatch) -> list:
    calls = []
    real = files.hashlib.sha256
    monkeypatch.setattr(files.hashlib, "sha256", lambda *args: calls.append(1) or real(*args))
    return calls


def test_a_large_unchanged_file_is_hashed_once_and_again_when_it_changes(tmp_path, monkeypatch):
    big = _old_file(tmp_path / "params.bin", os.urandom(2 << 20))
    calls = _count_hashes(monkeypatch)
    first = file_sha256(big)
    assert file_sha256(big) == first and len(calls) == 1
    data, digest = read_with_sha256(big)
    assert digest == first and data == big.read_bytes() and len(calls) == 1, "read_with_sha256 knows it too"
    with open(big, "r+b") as f:  # changed in place: size and inode stay, the times do not
        f.write(b"\0" * 16)
    assert file_sha256(big) != first and len(calls) == 2


def test_small_and_just_written_files_are_always_hashed(tmp_path, monkeypatch):
    small = _old_file(tmp_path / "spec.json", b"{}")
    fresh = tmp_path / "fresh.bin"
    fresh.write_bytes(os.urandom(2 << 20))  # its next change could keep the same coarse timestamps
    calls = _count_hashes(monkeypatch)
    for _ in range(2):
        file_sha256(small)
        file_sha256(fresh)
    assert len(calls) == 4


def test_a_single_file_model_is_not_parsed_to_list_its_data_files(tmp_path, monkeypatch):
    model = tmp_path / "model.onnx"
    make_tiny_autoencoder(model)
    monkeypatch.setattr(onnx, "load_from_string", lambda *a: pytest.fail("parsed a model that names no data file"))
    assert data_files_of(model) == []


def test_external_data_files_are_listed_and_checked(tmp_path, monkeypatch):
    model = tmp_path / "model.onnx"
    make_tiny_autoencoder(tmp_path / "single.onnx")
    onnx.save(
        onnx.load(tmp_path / "single.onnx"),
        model,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=0,
    )
    assert data_files_of(model) == [(tmp_path / "model.onnx.data").resolve()]
    parsed = []
    real = onnx.load_from_string
    monkeypatch.setattr(onnx, "load_from_string", lambda *a: parsed.append(1) or real(*a))
    assert data_files_of(model) == [(tmp_path / "model.onnx.data").resolve()] and parsed == [], "remembered"
    (tmp_path / "model.onnx.data").write_bytes(b"short")
    with pytest.raises(onnx_frontend.ModelImportError, match="truncated or from another export"):
        data_files_of(model)
