"""The intake cache: a model file that passed intake once is not read, checked and folded again.

Intake (checker, shape folding, operator check) costs seconds on a large model, and a build runs it twice: when build
registers the model and again in the job. The key covers every input of intake: the model file, the external-data
files its graph names, the spec file (or anomalib's metadata.json beside the model when there is no spec), and the
compiler's fingerprint (compilers/, targets/, apache-tvm) with the onnx and onnxslim versions. An entry keeps the graph
as intake left it and its spec; its external data stays beside the model, whose bytes the key already vouches for.

It lives under the compile cache's directory, so a CI step that keeps the compile cache keeps this too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from compilers.compile_cache import compiler_fingerprint
from compilers.files import file_sha256, read_with_sha256, stat_signature
from compilers.model import ImportedModel

ENTRY_FORMAT = "packager-intake-cache/1"
ENTRY_FILE = "entry.json"
GRAPH_FILE = "model.onnx"
FOLDER = "intake"  # under the compile cache directory


def _tool_versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = [compiler_fingerprint()]
    for dist in ("onnx", "onnxslim"):
        try:
            parts.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} missing")
    return "\n".join(parts)


def intake_key(path: Path, spec_path: Path | None, metadata_path: Path | None) -> str | None:
    """SHA-256 over everything intake reads; None when a file cannot be read (intake then runs and says why)."""
    found = _key_and_data_files(path, spec_path, metadata_path)
    return found[0] if found is not None else None


def _key_and_data_files(
    path: Path, spec_path: Path | None, metadata_path: Path | None
) -> tuple[str, list[Path]] | None:
    digest = hashlib.sha256(_tool_versions().encode())
    data_files: list[Path] = []
    try:
        data, model_sha256 = read_with_sha256(path)
        digest.update(f"\0model{path.suffix.lower()}\0{model_sha256}".encode())
        if path.suffix.lower() == ".onnx":
            from compilers.frontends.onnx import data_files_of

            data_files = data_files_of(path, data)
        del data
        for data_file in data_files:
            digest.update(f"\0data\0{data_file.relative_to(path.parent.resolve())}\0{file_sha256(data_file)}".encode())
        digest.update(f"\0spec\0{file_sha256(spec_path) if spec_path is not None else 'none'}".encode())
        if spec_path is None and metadata_path is not None and metadata_path.is_file():
            digest.update(f"\0metadata\0{file_sha256(metadata_path)}".encode())
    except Exception:  # noqa: BLE001 - any unreadable or malformed input: no key, and intake reports it properly
        return None
    return digest.hexdigest(), data_files


# This process's cache reads, by the stat signatures of every file involved (model, external data, spec, metadata,
# and the cache entry itself): build reads the model for its own check and again to register it, and a 176 MB model
# costs a hash and a parse each time. A file that changed in any way (inode, size, modification or change time) is
# read again, the way make and git's index decide.
_recent: dict[tuple, tuple[tuple[Path, ...], tuple, ImportedModel]] = {}


def _signature(path: Path | None) -> tuple | None:
    if path is None:
        return None
    try:
        return stat_signature(path)
    except OSError:
        return ("missing", str(path))


def cached_intake(
    cache_dir: Path, path: Path, spec_path: Path | None, metadata_path: Path | None, run_intake
) -> ImportedModel:
    """The intake of ``path`` from this process's last read of the same files, the cache, or ``run_intake()``
    (then kept in the cache)."""
    signature = (str(cache_dir), _signature(path), _signature(spec_path), _signature(metadata_path))
    if signature in _recent:
        watched, signatures, imported = _recent[signature]
        if signatures == tuple(_signature(f) for f in watched):
            return replace(imported, source_path=Path(path))
    found = _key_and_data_files(path, spec_path, metadata_path)
    if found is None:
        return run_intake()
    key, data_files = found
    imported = load(cache_dir, key, path)
    if imported is None:
        imported = run_intake()
        store(cache_dir, key, imported)
    entry = Path(cache_dir) / FOLDER / key
    watched = (*data_files, entry / ENTRY_FILE, entry / GRAPH_FILE)
    _recent.clear()  # one model at a time: a process that builds many keeps one graph in memory, not all
    _recent[signature] = (watched, tuple(_signature(f) for f in watched), imported)
    return imported


def load(cache_dir: Path, key: str, source_path: Path) -> ImportedModel | None:
    """The entry for ``key`` as an ImportedModel of ``source_path``; None on a miss or a damaged entry."""
    from compilers.frontends.spec import spec_from_dict

    entry = Path(cache_dir) / FOLDER / key
    try:
        doc = json.loads((entry / ENTRY_FILE).read_text())
        if doc.get("format") != ENTRY_FORMAT or doc.get("key") != key:
            return None
        graph = (entry / GRAPH_FILE).read_bytes()
        if hashlib.sha256(graph).hexdigest() != doc["sha256"]:
            shutil.rmtree(entry, ignore_errors=True)  # damaged: the next build writes it again
            return None
        spec = spec_from_dict(doc["spec"], where=str(entry / ENTRY_FILE))
        return ImportedModel(
            source_path=Path(source_path),
            onnx_bytes=graph,
            spec=spec,
            sha256=doc["sha256"],
            opset=int(doc["opset"]),
            frontend=str(doc["frontend"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    except Exception:  # noqa: BLE001 - a spec the schema now refuses: a miss, and intake runs again
        return None


def store(cache_dir: Path, key: str, imported: ImportedModel) -> None:
    """Keep ``imported`` under ``key``; a failure to write only costs the next build an intake."""
    root = Path(cache_dir) / FOLDER
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=root))
        (staging / GRAPH_FILE).write_bytes(imported.onnx_bytes)
        doc = {
            "format": ENTRY_FORMAT,
            "key": key,
            "sha256": imported.sha256,
            "spec": imported.spec.to_json_dict(),
            "opset": imported.opset,
            "frontend": imported.frontend,
        }
        (staging / ENTRY_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        try:
            os.rename(staging, root / key)
        except OSError:  # another build stored the same key first: theirs is as good
            shutil.rmtree(staging, ignore_errors=True)
    except OSError:
        pass
