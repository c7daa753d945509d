from __future__ import annotations

import uuid
from multiprocessing import shared_memory

import numpy as np
import pytest

from packager.edge import bitmaps
from packager.edge.bitmaps import InvalidBitmap, SharedRegion


@pytest.fixture
def segment():
    shm = shared_memory.SharedMemory(create=True, size=128 * 64 * 3 + 100)
    yield shm
    shm.close()
    shm.unlink()


@pytest.mark.parametrize("width, height", [(63, 64), (64, 63), (4097, 64), (64, 4097), (0, 0), (-64, 64)])
def test_sides_outside_64_to_4096_are_refused(width, height):
    with pytest.raises(InvalidBitmap, match="64..4096"):
        bitmaps.check_size(width, height)


def test_sides_at_the_limits_are_accepted():
    assert bitmaps.check_size(64, 4096) == 64 * 4096 * 3


def test_byte_count_must_be_width_height_3():
    with pytest.raises(InvalidBitmap, match="byte_data has 100 bytes"):
        bitmaps.from_bytes(b"\0" * 100, 64, 64)
    assert bitmaps.from_bytes(bytes(64 * 64 * 3), 64, 64).shape == (64, 64, 3)


@pytest.mark.parametrize("prefix", ["", "/"])
def test_shared_memory_round_trip_at_an_offset(segment, prefix):
    image = np.random.default_rng(0).integers(0, 256, (64, 128, 3), dtype=np.uint8)
    written = bitmaps.to_shared_memory(SharedRegion(prefix + segment.name, image.size + 50, 50), image)
    assert written == image.size
    read = bitmaps.from_shared_memory(SharedRegion(prefix + segment.name, image.size, 50), 128, 64)
    np.testing.assert_array_equal(read, image)
    segment.buf[50] = (int(image[0, 0, 0]) + 1) % 256  # the copy is the agent's own
    assert read[0, 0, 0] == image[0, 0, 0]


def test_shared_memory_refusals(segment):
    size = 128 * 64 * 3
    with pytest.raises(InvalidBitmap, match="size is 10"):
        bitmaps.from_shared_memory(SharedRegion(segment.name, 10, 0), 128, 64)
    with pytest.raises(InvalidBitmap, match="runs past the end"):
        bitmaps.from_shared_memory(SharedRegion(segment.name, size, 101), 128, 64)
    with pytest.raises(InvalidBitmap, match="not a shared memory name"):
        bitmaps.from_shared_memory(SharedRegion("../../etc/passwd", size, 0), 128, 64)
    with pytest.raises(InvalidBitmap, match="no such shared memory segment"):
        bitmaps.from_shared_memory(SharedRegion(segment.name + "-gone", size, 0), 128, 64)
    with pytest.raises(InvalidBitmap, match="mask needs"):
        bitmaps.check_mask_region(SharedRegion(segment.name, size - 1, 0), 128, 64)
    bitmaps.check_mask_region(SharedRegion(segment.name, size, 100), 128, 64)


def _fill(name: str, size: int, value: int) -> shared_memory.SharedMemory:
    shm = shared_memory.SharedMemory(name=name, create=True, size=size)
    shm.buf[:size] = bytes([value]) * size
    return shm


def test_a_segment_created_again_under_the_same_name_is_read_afresh():
    name, size = f"edge-test-{uuid.uuid4().hex[:12]}", 64 * 64 * 3
    first = _fill(name, size, 7)
    assert bitmaps.from_shared_memory(SharedRegion(name, size, 0), 64, 64)[0, 0, 0] == 7  # now kept mapped
    first.close()
    first.unlink()
    with pytest.raises(InvalidBitmap, match="no such shared memory segment"):
        bitmaps.from_shared_memory(SharedRegion(name, size, 0), 64, 64)
    second = _fill(name, size + 3, 9)  # same name, another segment, another size
    try:
        assert bitmaps.from_shared_memory(SharedRegion(name, size, 3), 64, 64)[0, 0, 0] == 9
    finally:
        second.close()
        second.unlink()


def test_mappings_kept_between_calls_are_bounded_and_each_sees_its_own_segment():
    segments = [
        _fill(f"edge-test-{uuid.uuid4().hex[:12]}", 64 * 64 * 3, i) for i in range(bitmaps._segments.capacity + 4)
    ]
    try:
        for _ in range(2):
            for i, shm in enumerate(segments):
                assert bitmaps.from_shared_memory(SharedRegion(shm.name, 64 * 64 * 3, 0), 64, 64)[5, 5, 2] == i
        assert len(bitmaps._segments._mapped) == bitmaps._segments.capacity
    finally:
        for shm in segments:
            shm.close()
            shm.unlink()


def test_writing_the_mask_twice_through_the_kept_mapping_reaches_the_client(segment):
    for value in (3, 4):
        mask = np.full((64, 128, 3), value, np.uint8)
        bitmaps.to_shared_memory(SharedRegion(segment.name, mask.size, 0), mask)
        assert bytes(segment.buf[: mask.size]) == mask.tobytes()
