"""Tuning records shared through the job store, so a build on one host reuses what another host tuned.

The compiler keeps its records in the host's tuning cache (compilers.tuning.cache) and knows nothing of the store;
a job brings the store's records for its target into that cache before it compiles, and hands the cache's
records back after, in the cache's own export format (one document per target).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from compilers.tuning.cache import TuningCache, open_tuning_cache, target_key
from packager.home import tuning_cache_dir
from targets import Target


def pull_tuning_records(store, target: Target, cache: TuningCache | None = None) -> int:
    """Merge the store's records for ``target`` into this host's cache; returns how many were new here."""
    export = store.tuning_export(target_key(target.tvm_target))
    if export is None:
        return 0
    cache = cache or open_tuning_cache(tuning_cache_dir())
    with tempfile.TemporaryDirectory(prefix="tuning-pull-") as scratch:
        path = Path(scratch) / "export.json"
        path.write_text(json.dumps(export))
        return cache.import_file(path)


def push_tuning_records(store, target: Target, cache: TuningCache | None = None) -> int:
    """Hand this host's records for ``target`` to the store when it has more than the store; returns the count sent."""
    cache = cache or open_tuning_cache(tuning_cache_dir())
    entry = next((e for e in cache.entries() if e.tvm_target == target.tvm_target), None)
    if entry is None or entry.records == 0:
        return 0
    with tempfile.TemporaryDirectory(prefix="tuning-push-") as scratch:
        path = Path(scratch) / "export.json"
        records = cache.export(path, target)
        store.put_tuning_export(target_key(target.tvm_target), json.loads(path.read_text()), records)
    return records
