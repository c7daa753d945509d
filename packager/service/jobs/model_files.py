"""Registered model files, stored content-addressed under $PACKAGER_HOME/models/sha256/.

A single-file model is stored as ``<sha256>.onnx``. A model with external data (anomalib's ``model.onnx`` +
``model.onnx.data``) is stored as a folder ``<digest>/`` holding the model under its own name and every data file at
the location the model names; ``<digest>`` is the SHA-256 of the sorted ``<sha256 of file>  <relative path>`` lines of
all of them, so it changes when any file does."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from compilers.files import file_sha256
from packager.errors import ModelImportError

MODEL_SUFFIXES = (".onnx",)


def store_file(home: Path, source: Path, suffix: str) -> str:
    """Copy ``source`` to models/sha256/<hex><suffix> (once per content); returns that path relative to ``home``.
    Content already stored is found by its hash first, so a model registered again is read once and not copied."""
    target_dir = home / "models" / "sha256"
    target_dir.mkdir(parents=True, exist_ok=True)
    stored = f"models/sha256/{file_sha256(source)}{suffix}"
    if (home / stored).exists():
        return stored
    fd, tmp_name = tempfile.mkstemp(dir=target_dir, prefix=".incoming-")
    os.close(fd)
    try:
        shutil.copyfile(source, tmp_name)  # in the kernel; the copy is then hashed, so its name is what it holds
        relative = f"models/sha256/{file_sha256(Path(tmp_name))}{suffix}"
        final = home / relative
        if final.exists():
            os.unlink(tmp_name)
        else:
            os.chmod(tmp_name, 0o444)
            os.replace(tmp_name, final)  # atomic, so a concurrent reader never sees half a file
        return relative
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise


def model_files(path: Path) -> list[tuple[str, Path]]:
    """(path relative to the model's folder, file) for the model and each external data file it names."""
    from compilers.frontends.onnx import data_files_of

    folder = Path(path).parent.resolve()
    return [(Path(path).name, Path(path))] + [(f.relative_to(folder).as_posix(), f) for f in data_files_of(path)]


def store_model(home: Path, source: Path) -> tuple[str, str]:
    """Store a model and its external data: (its path relative to ``home``, the content digest)."""
    files = model_files(source)
    if len(files) == 1:
        relative = store_file(home, source, source.suffix.lower())
        return relative, Path(relative).stem
    lines = sorted(f"{file_sha256(f)}  {name}" for name, f in files)
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    target_dir = home / "models" / "sha256"
    target_dir.mkdir(parents=True, exist_ok=True)
    relative = f"models/sha256/{digest}/{source.name}"
    final = target_dir / digest
    if final.exists():
        return relative, digest
    incoming = Path(tempfile.mkdtemp(dir=target_dir, prefix=".incoming-"))
    try:
        for name, f in files:
            (incoming / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, incoming / name)
            os.chmod(incoming / name, 0o444)
        try:
            os.rename(incoming, final)  # atomic; a concurrent reader sees all files or none
        except OSError:
            if not final.exists():
                raise
            shutil.rmtree(incoming)  # another process stored the same content first
        return relative, digest
    except BaseException:
        shutil.rmtree(incoming, ignore_errors=True)
        raise


def check_model_file(path: Path) -> None:
    """The cheap checks before a model version is recorded: the file exists and is an ONNX file. Whether it parses,
    and whether every external-data file it names is beside it and long enough, is intake's check, which the caller
    runs next (import_model) and which a build has just run on the same bytes."""
    if not path.is_file():
        raise ModelImportError(f"{path}: model file not found", field="ModelPath")
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise ModelImportError(f"{path}: model must be one of {', '.join(MODEL_SUFFIXES)} files", field="ModelPath")
