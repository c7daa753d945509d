"""The tuning cache: MetaSchedule records kept per target under $PACKAGER_HOME/tuning.

Each target gets one MetaSchedule JSON database in its own directory, named after a hash
of its TVM target dict. Inside, MetaSchedule keys records by workload (the structural hash
of one fused PrimFunc), so a record is found by (workload, target): a rebuild of the same
model for the same target finds every record and tunes nothing. Export and import move
records between caches as one JSON file, so a team or a device farm can share them.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packager.errors import ValidationException
from targets.catalog import Target

EXPORT_FORMAT = "packager-tuning/1"
_WORKLOADS = "database_workload.json"
_RECORDS = "database_tuning_record.json"
_TARGET_FILE = "target.json"


def target_key(tvm_target: dict) -> str:
    """A directory name for one TVM target: readable kind and mcpu, then a hash of the whole dict."""
    canonical = json.dumps(tvm_target, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    label = "-".join(str(tvm_target.get(k)) for k in ("kind", "mcpu") if tvm_target.get(k))
    return f"{label}-{digest}" if label else digest


@dataclass(frozen=True)
class CacheEntry:
    tvm_target: dict
    directory: Path
    workloads: int
    records: int


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open() as f:
        return sum(1 for line in f if line.strip())


@dataclass(frozen=True)
class TuningCache:
    root: Path

    def directory_for(self, tvm_target: dict) -> Path:
        return self.root / target_key(tvm_target)

    def has_records(self, target: Target) -> bool:
        return _count_lines(self.directory_for(target.tvm_target) / _RECORDS) > 0

    def records_digest(self, target: Target) -> str:
        """SHA-256 of the records a build for ``target`` applies (both database files); part of the compile cache's key."""
        digest = hashlib.sha256()
        for name in (_WORKLOADS, _RECORDS):
            path = self.directory_for(target.tvm_target) / name
            digest.update(f"{name}\0".encode() + (path.read_bytes() if path.is_file() else b"none") + b"\0")
        return digest.hexdigest()

    def database_for(self, target: Target, create: bool = False):
        """The MetaSchedule database for ``target``; None when nothing was tuned for it and ``create`` is False."""
        return self._database(target.tvm_target, create)

    def _database(self, tvm_target: dict, create: bool):
        from tvm.s_tir import meta_schedule as ms

        directory = self.directory_for(tvm_target)
        if not create and not (directory / _RECORDS).exists():
            return None
        directory.mkdir(parents=True, exist_ok=True)
        target_file = directory / _TARGET_FILE
        if not target_file.exists():
            target_file.write_text(json.dumps(tvm_target, indent=2, sort_keys=True) + "\n")
        return ms.database.JSONDatabase(str(directory / _WORKLOADS), str(directory / _RECORDS), allow_missing=True)

    def entries(self) -> list[CacheEntry]:
        found = []
        if not self.root.is_dir():
            return found
        for directory in sorted(p for p in self.root.iterdir() if (p / _TARGET_FILE).exists()):
            found.append(
                CacheEntry(
                    json.loads((directory / _TARGET_FILE).read_text()),
                    directory,
                    _count_lines(directory / _WORKLOADS),
                    _count_lines(directory / _RECORDS),
                )
            )
        return found

    def export(self, path: Path, target: Target | None = None) -> int:
        """Write every record (or one target's) to ``path``; returns the number of records written."""
        chosen = [e for e in self.entries() if target is None or e.tvm_target == target.tvm_target]
        doc = {
            "format": EXPORT_FORMAT,
            "databases": [
                {
                    "target": e.tvm_target,
                    "workloads": (e.directory / _WORKLOADS).read_text(),
                    "records": (e.directory / _RECORDS).read_text(),
                }
                for e in chosen
            ],
        }
        Path(path).write_text(json.dumps(doc, indent=1) + "\n")
        return sum(e.records for e in chosen)

    def import_file(self, path: Path) -> int:
        """Merge the records of an exported file into this cache; returns how many were new."""
        from tvm.s_tir import meta_schedule as ms

        doc = _read_export(Path(path))
        added = 0
        for i, db in enumerate(doc["databases"]):
            if not isinstance(db, dict) or not isinstance(db.get("target"), dict) or "kind" not in db["target"]:
                raise ValidationException(f"{path}: databases[{i}].target must be a TVM target object", field="target")
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / _WORKLOADS).write_text(str(db.get("workloads", "")))
                (Path(tmp) / _RECORDS).write_text(str(db.get("records", "")))
                try:
                    source = ms.database.JSONDatabase(
                        str(Path(tmp) / _WORKLOADS), str(Path(tmp) / _RECORDS), allow_missing=False
                    )
                    records = source.get_all_tuning_records()
                except Exception as exc:  # the JSON database raises bare TVMError on a malformed line
                    raise ValidationException(
                        f"{path}: databases[{i}] is not a MetaSchedule database ({str(exc).splitlines()[-1][:200]})",
                        field=f"databases[{i}]",
                    ) from None
                added += _merge(records, self._database(db["target"], create=True))
        return added


def _read_export(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValidationException(f"{path}: tuning export file not found", field="import") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValidationException(f"{path}: not a tuning export (invalid JSON: {exc})", field="import") from None
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT or not isinstance(doc.get("databases"), list):
        raise ValidationException(f"{path}: not a tuning export (expected format {EXPORT_FORMAT!r})", field="import")
    return doc


def _record_key(record) -> tuple:
    import tvm_ffi

    return (tvm_ffi.structural_hash(record.workload.mod), json.dumps(record.trace.as_json(), default=str))


def _merge(records, database) -> int:
    from tvm.s_tir import meta_schedule as ms

    existing = {_record_key(r) for r in database.get_all_tuning_records()}
    added = 0
    for record in records:
        if _record_key(record) in existing:
            continue
        workload = database.commit_workload(record.workload.mod)
        database.commit_tuning_record(
            ms.database.TuningRecord(record.trace, workload, record.run_secs, record.target, record.args_info)
        )
        existing.add(_record_key(record))
        added += 1
    return added


def open_tuning_cache(directory: Path | str) -> TuningCache:
    """The cache under ``directory`` (the packager's is packager.home.tuning_cache_dir()). Creates nothing."""
    return TuningCache(Path(directory).expanduser().absolute())
