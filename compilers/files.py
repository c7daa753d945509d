"""Reading model-sized files once: their SHA-256 by stat signature, for the life of a process."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

# A build reads the same large files several times in one process (the model when build checks it, registers it and
# stores it; the cache entry when it verifies and bundles it): their digests are kept by stat signature, the way git's
# index and make decide a file is unchanged. Small files are hashed every time (cheap), and so is a file modified
# within _RACY_NS of being read, whose next change could keep the same coarse timestamps (git's "racy" rule).
_digests: dict[tuple, str] = {}
_MEMO_MIN_BYTES = 1 << 20
_RACY_NS = 100_000_000


def stat_signature(path: Path) -> tuple:
    """What changes when a file does: its resolved path, device, inode, size, modification and change times."""
    st = os.stat(path)
    return (str(Path(path).resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks; a large file unchanged since this process hashed it is not read again."""
    signature = stat_signature(path)
    if signature in _digests:
        return _digests[signature]
    started = time.time_ns()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    hexdigest = digest.hexdigest()
    _remember(signature, hexdigest, started)
    return hexdigest


def _remember(signature: tuple, hexdigest: str, started_ns: int) -> None:
    if signature[3] >= _MEMO_MIN_BYTES and max(signature[4], signature[5]) < started_ns - _RACY_NS:
        if len(_digests) > 256:
            _digests.clear()
        _digests[signature] = hexdigest


def read_with_sha256(path: Path) -> tuple[bytes, str]:
    """The file's bytes and their hex SHA-256, which file_sha256() then knows without reading it again."""
    signature = stat_signature(path)
    started = time.time_ns()
    data = Path(path).read_bytes()
    hexdigest = _digests.get(signature) or hashlib.sha256(data).hexdigest()
    _remember(signature, hexdigest, started)
    return data, hexdigest
