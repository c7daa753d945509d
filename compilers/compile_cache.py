"""The compile cache: a compiled model kept under a key of everything that decides its bytes.

A rebuild of an unchanged model for an unchanged target reuses the library and parameters instead of compiling
again; the ONNX Runtime check and the benchmark still run on every build. The key covers:

- ``model``: the ONNX graph as compiled, and every external-data file the graph names;
- ``spec``: the model spec (input shape, outputs, ...);
- ``target``: the resolved catalog record, compiler options included;
- ``tuning``: the tuning cache's records for that target, which the build applies;
- ``compiler``: apache-tvm's and tvm-ffi's versions, and the source of ``compilers/`` (our schedules and pipeline)
  and ``targets/``.

Entries are written to a temporary directory and renamed into place, so concurrent builds never see half of one,
and every file's SHA-256 is checked when it is read back: a damaged entry is a miss, never a wrong model.

A compile that fails the build check against ONNX Runtime keeps no files: its entry only records the check's error
(``mark_failed``), so the next build of the same key goes straight to the precise compile, and the disk does not hold
a model no build ships (DRAEM's fast compile is 1.3 GB of parameters).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

from compilers.files import file_sha256
from compilers.model import ImportedModel
from targets.catalog import Target

ENTRY_FORMAT = "packager-compile-cache/1"
ENTRY_FILE = "entry.json"
FAILED_CHECK = "failed_check"  # entry.json field: the build check's error; such an entry keeps no files
ENV_VAR = "PACKAGER_COMPILE_CACHE"  # overrides $PACKAGER_HOME/compile-cache
_SOURCE_SUFFIXES = (".py", ".json")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class CacheKey:
    parts: dict  # part name -> SHA-256 hex of that part

    @property
    def digest(self) -> str:
        return _sha256(json.dumps(self.parts, sort_keys=True).encode())


def external_data_files(imported: ImportedModel) -> list[Path]:
    """The files beside the model that its graph's tensors keep their data in (ONNX external data), sorted."""
    from compilers.frontends.onnx import may_name_external_data

    if not may_name_external_data(imported.onnx_bytes):
        return []  # and a build whose compile is a hit never imports onnx
    import onnx
    from onnx.external_data_helper import uses_external_data

    model = onnx.load_from_string(imported.onnx_bytes)
    locations = set()

    def visit(graph) -> None:
        tensors = list(graph.initializer) + [t.values for t in graph.sparse_initializer]
        for node in graph.node:
            for attribute in node.attribute:
                tensors += list(attribute.tensors) + ([attribute.t] if attribute.HasField("t") else [])
                for sub in [*attribute.graphs, *([attribute.g] if attribute.HasField("g") else [])]:
                    visit(sub)
        for tensor in tensors:
            if uses_external_data(tensor):
                locations.update(entry.value for entry in tensor.external_data if entry.key == "location")

    visit(model.graph)
    base = Path(imported.source_path).parent
    return sorted(base / location for location in locations)


def model_content_hash(imported: ImportedModel) -> str:
    """The graph as compiled, and the bytes of every external-data file it names (a missing one hashes as missing)."""
    digest = hashlib.sha256(bytes.fromhex(imported.sha256))  # of onnx_bytes, taken when they were read
    for path in external_data_files(imported):
        digest.update(f"\0{path.name}\0".encode())
        digest.update(file_sha256(path).encode() if path.is_file() else b"missing")
    return digest.hexdigest()


@lru_cache(maxsize=1)
def compiler_fingerprint() -> str:
    """apache-tvm's and tvm-ffi's versions, and every source file of compilers/ and targets/."""
    from importlib.metadata import PackageNotFoundError, version

    import compilers
    import targets

    digest = hashlib.sha256()
    for dist in ("apache-tvm", "apache-tvm-ffi"):
        try:
            digest.update(f"{dist}=={version(dist)}\n".encode())
        except PackageNotFoundError:
            digest.update(f"{dist} missing\n".encode())
    for package in (compilers, targets):
        root = Path(package.__file__).parent
        for path in sorted(p for p in root.rglob("*") if p.suffix in _SOURCE_SUFFIXES and "__pycache__" not in p.parts):
            digest.update(f"{package.__name__}/{path.relative_to(root).as_posix()}\n".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def compile_cache_key(
    imported: ImportedModel, target: Target, tuning_records_digest: str, precise: bool = False
) -> CacheKey:
    parts = {
        "model": model_content_hash(imported),
        "spec": _sha256(imported.spec.to_json().encode()),
        "target": _sha256(json.dumps(asdict(target), sort_keys=True, default=str).encode()),
        "tuning": tuning_records_digest,
        "compiler": compiler_fingerprint(),
    }
    if precise:  # only then, so that the keys of every earlier (fast) compile stay as they were
        parts["precise"] = "winograd F(2x2) tiles"
    return CacheKey(parts)


@dataclass(frozen=True)
class CachedCompile:
    """What a hit restores beside the files: what the original compile reported."""

    tuning_records_applied: int
    compile_seconds: float  # of the compile that filled the entry
    files: dict = field(default_factory=dict)  # on a hit: each file's SHA-256 (hex), as just checked
    failed_check: str | None = None  # the build check's error for this key's compile; then no files are kept


@dataclass(frozen=True)
class CompileCache:
    root: Path

    def entry_dir(self, key: CacheKey) -> Path:
        return self.root / key.digest

    def load(self, key: CacheKey, model_dir: Path) -> CachedCompile | None:
        """Copy the entry's files into ``model_dir`` and say what they were; None on a miss or a damaged entry."""
        entry = self.entry_dir(key)
        try:
            doc = json.loads((entry / ENTRY_FILE).read_text())
            if doc.get("format") != ENTRY_FORMAT or doc.get("key") != key.parts:
                return None
            if doc.get(FAILED_CHECK):
                return CachedCompile(0, float(doc["compile_seconds"]), failed_check=str(doc[FAILED_CHECK]))
            files = doc["files"]
            if any(file_sha256(entry / name) != sha for name, sha in files.items()):
                shutil.rmtree(entry, ignore_errors=True)  # damaged: the next build writes it again
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        model_dir.mkdir(parents=True, exist_ok=True)
        for name in files:
            # A new file, never the old one rewritten: a library this process still has loaded from model_dir stays
            # intact (rewriting it in place changes the pages dlopen mapped, and the next dlopen of it crashes).
            staged = model_dir / f".{name}.incoming"
            staged.unlink(missing_ok=True)
            try:  # the entry's own file, linked (its bytes were just checked); copied across file systems
                os.link(entry / name, staged)
            except OSError:
                shutil.copyfile(entry / name, staged)
            os.replace(staged, model_dir / name)
        return CachedCompile(
            tuning_records_applied=int(doc["tuning_records_applied"]),
            compile_seconds=float(doc["compile_seconds"]),
            files=dict(files),
        )

    def store(self, key: CacheKey, model_dir: Path, compiled: CachedCompile) -> None:
        """Keep ``model_dir``'s files under ``key``; a failure to write only costs the next build a compile."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=self.root))
            files = {}
            for path in sorted(p for p in model_dir.iterdir() if p.is_file()):
                shutil.copyfile(path, staging / path.name)
                files[path.name] = file_sha256(staging / path.name)
            doc = {
                "format": ENTRY_FORMAT,
                "key": key.parts,
                "files": files,
                "tuning_records_applied": compiled.tuning_records_applied,
                "compile_seconds": compiled.compile_seconds,
            }
            (staging / ENTRY_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
            try:
                os.rename(staging, self.entry_dir(key))
            except OSError:  # another build stored the same key first: theirs is as good
                shutil.rmtree(staging, ignore_errors=True)
        except OSError:
            pass

    def mark_failed(self, key: CacheKey, error: str) -> None:
        """Replace ``key``'s entry, files and all, with the build check's ``error``; a failure to write costs nothing
        but the disk the entry's files keep and, at the next build, the fast compile's check."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=self.root))
            doc = {"format": ENTRY_FORMAT, "key": key.parts, "files": {}, FAILED_CHECK: error, "compile_seconds": 0.0}
            (staging / ENTRY_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
            entry = self.entry_dir(key)
            stale = Path(tempfile.mkdtemp(prefix=".stale-", dir=self.root))
            try:
                os.replace(entry, stale / "entry")  # whole: a concurrent load sees the old entry or none, not half
            except FileNotFoundError:
                pass
            try:
                os.rename(staging, entry)
            except OSError:  # another build stored the key again meanwhile: the next check marks it
                shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass


def open_compile_cache(directory: Path) -> CompileCache:
    return CompileCache(Path(directory).expanduser().absolute())


def default_compile_cache_dir(packager_home: Path) -> Path:
    """$PACKAGER_COMPILE_CACHE, else <packager home>/compile-cache."""
    return Path(os.environ[ENV_VAR]) if os.environ.get(ENV_VAR) else Path(packager_home) / "compile-cache"
