"""RGB888 bitmaps in and out of the agent: size checks, and POSIX shared memory (segments under /dev/shm).

Shared memory is opened through /dev/shm with mmap rather than multiprocessing.shared_memory, whose resource
tracker would unlink the client's segments when the agent exits.
"""

from __future__ import annotations

import errno
import mmap
import os
import re
import stat
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MIN_SIDE = 64
MAX_SIDE = 4096
MAX_MESSAGE_BYTES = MAX_SIDE * MAX_SIDE * 3 + (1 << 20)  # a 4096x4096 bitmap inline, plus headroom
SHM_ROOT = Path("/dev/shm")
_SHM_NAME = re.compile(r"/?([A-Za-z0-9._-]{1,250})")


class InvalidBitmap(ValueError):
    """The request's bitmap or mask handle cannot be used; the message names the field."""


@dataclass(frozen=True)
class SharedRegion:
    name: str  # as the client gave it, "psm_x" or "/psm_x"
    size: int
    offset: int


def check_size(width: int, height: int, field: str = "bitmap") -> int:
    """The byte count an RGB888 bitmap of this size must have."""
    for side, value in (("width", width), ("height", height)):
        if not MIN_SIDE <= value <= MAX_SIDE:
            raise InvalidBitmap(f"{field}.{side} is {value}; it must be {MIN_SIDE}..{MAX_SIDE} pixels")
    return width * height * 3


def from_bytes(data: bytes, width: int, height: int) -> np.ndarray:
    expected = check_size(width, height)
    if len(data) != expected:
        raise InvalidBitmap(f"bitmap.byte_data has {len(data)} bytes; a {width}x{height} RGB888 bitmap has {expected}")
    return np.frombuffer(data, np.uint8).reshape(height, width, 3)


def _segment_path(name: str, field: str) -> Path:
    match = _SHM_NAME.fullmatch(name)
    if not match or match.group(1) in (".", ".."):
        raise InvalidBitmap(f"{field}.name {name!r} is not a shared memory name (letters, digits, '.', '_', '-')")
    return SHM_ROOT / match.group(1)


class _OpenSegments:
    """Segments stay mapped between calls, as a client reuses its segments frame after frame and opening and
    mapping one costs about 0.1 ms. A segment that was unlinked and created again, or resized, is mapped afresh.

    Copies in and out happen under one lock, so no mapping is closed while another thread copies through it.
    """

    def __init__(self, capacity: int = 16):
        self.capacity = capacity
        self._lock = threading.Lock()
        self._mapped: OrderedDict[tuple[Path, bool], tuple[tuple[int, int, int], mmap.mmap]] = OrderedDict()

    @contextmanager
    def mapped(self, region: SharedRegion, nbytes: int, field: str, writable: bool):
        path = _segment_path(region.name, field)
        with self._lock:
            view = self._view(path, region, field, writable)
            if region.offset + nbytes > len(view):
                raise InvalidBitmap(
                    f"{field}: offset {region.offset} + {nbytes} bytes runs past the end of the "
                    f"{len(view)}-byte segment {region.name!r}"
                )
            yield view

    def _view(self, path: Path, region: SharedRegion, field: str, writable: bool) -> mmap.mmap:
        key = (path, writable)
        try:
            found = os.lstat(path)  # the name itself: a symlink planted in /dev/shm is not followed
        except FileNotFoundError:
            self._forget(key)
            raise InvalidBitmap(f"{field}.name {region.name!r}: no such shared memory segment") from None
        if not stat.S_ISREG(found.st_mode):
            self._forget(key)
            raise _not_a_segment(region, field)
        identity = (found.st_dev, found.st_ino, found.st_size)
        cached = self._mapped.get(key)
        if cached is not None and cached[0] == identity:
            self._mapped.move_to_end(key)
            return cached[1]
        self._forget(key)
        view = _map(path, region, field, writable)
        self._mapped[key] = (identity, view)
        while len(self._mapped) > self.capacity:
            self._mapped.popitem(last=False)[1][1].close()
        return view

    def _forget(self, key: tuple[Path, bool]) -> None:
        cached = self._mapped.pop(key, None)
        if cached is not None:
            cached[1].close()


def _not_a_segment(region: SharedRegion, field: str) -> InvalidBitmap:
    return InvalidBitmap(
        f"{field}.name {region.name!r} is not a shared memory segment (a symlink, directory or device)"
    )


def _map(path: Path, region: SharedRegion, field: str, writable: bool) -> mmap.mmap:
    flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise InvalidBitmap(f"{field}.name {region.name!r}: no such shared memory segment") from None
    except PermissionError:
        raise InvalidBitmap(
            f"{field}.name {region.name!r}: the agent may not {'write' if writable else 'read'} it"
        ) from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.ENOTDIR):
            raise _not_a_segment(region, field) from None
        raise InvalidBitmap(
            f"{field}.name {region.name!r}: cannot open it ({errno.errorcode.get(exc.errno, exc.errno)})"
        ) from None
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode):  # what was opened, not what the name showed a moment before
            raise _not_a_segment(region, field)
        size = found.st_size
        if size == 0:
            raise InvalidBitmap(f"{field}.name {region.name!r}: the segment is empty")
        return mmap.mmap(fd, size, access=mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ)
    finally:
        os.close(fd)  # the mapping stays valid without it


_segments = _OpenSegments()


def from_shared_memory(region: SharedRegion, width: int, height: int) -> np.ndarray:
    """Copy the bitmap out of the client's segment, so the client may reuse it as soon as the call returns."""
    field = "bitmap.shared_memory_handle"
    expected = check_size(width, height)
    if region.size != expected:
        raise InvalidBitmap(f"{field}.size is {region.size}; a {width}x{height} RGB888 bitmap has {expected} bytes")
    with _segments.mapped(region, expected, field, writable=False) as view:
        data = view[region.offset : region.offset + expected]  # a copy: no buffer export outlives the mapping
    return np.frombuffer(data, np.uint8).reshape(height, width, 3)


def to_shared_memory(region: SharedRegion, pixels: np.ndarray) -> int:
    """Write an HxWx3 mask at the region's offset; returns the bytes written."""
    field = "anomaly_mask_params.shared_memory_handle"
    nbytes = pixels.size
    if region.size < nbytes:
        raise InvalidBitmap(
            f"{field}.size is {region.size}; the {pixels.shape[1]}x{pixels.shape[0]} mask needs {nbytes} bytes"
        )
    with _segments.mapped(region, nbytes, field, writable=True) as view:
        view[region.offset : region.offset + nbytes] = memoryview(np.ascontiguousarray(pixels, np.uint8)).cast("B")
    return nbytes


def check_mask_region(region: SharedRegion, width: int, height: int) -> None:
    """Reject a mask handle before inference, so a bad handle costs no model time."""
    field = "anomaly_mask_params.shared_memory_handle"
    needed = width * height * 3
    if region.size < needed:
        raise InvalidBitmap(f"{field}.size is {region.size}; the {width}x{height} mask needs {needed} bytes")
    with _segments.mapped(region, needed, field, writable=True):
        pass
