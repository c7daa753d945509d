"""Registered model files, stored content-addressed under $PACKAGER_HOME/models/sha256/."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from packager.errors import ModelImportError

_CHUNK = 1 << 20
MODEL_SUFFIXES = (".onnx",)


def store_file(home: Path, source: Path, suffix: str) -> str:
    """Copy ``source`` to models/sha256/<hex><suffix> (once per content); returns that path relative to ``home``."""
    target_dir = home / "models" / "sha256"
    target_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=target_dir, prefix=".incoming-")
    try:
        with open(source, "rb") as src, os.fdopen(fd, "wb") as dst:
            for chunk in iter(lambda: src.read(_CHUNK), b""):
                digest.update(chunk)
                dst.write(chunk)
        relative = f"models/sha256/{digest.hexdigest()}{suffix}"
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


def check_model_file(path: Path) -> None:
    """Cheap intake check before a model version is recorded: the file exists and parses as ONNX."""
    if not path.is_file():
        raise ModelImportError(f"{path}: model file not found", field="ModelPath")
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise ModelImportError(f"{path}: model must be one of {', '.join(MODEL_SUFFIXES)} files", field="ModelPath")
    import onnx  # heavy; only register needs it

    try:
        onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError or ValueError subclasses depending on the damage
        raise ModelImportError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})", field="ModelPath") from None

