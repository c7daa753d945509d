"""CPU schedule templates: one search space per kind of block, shared by default builds and tuning.

A template asks a ``Decisions`` object for each choice (vector width, register tile, ...).
``DefaultDecisions`` answers with a heuristic, so an untuned build gets parallel,
vectorized, register-tiled code; tuning's ``ReplayDecisions`` (compilers/tuning/space.py)
answers from a candidate tuple and records each choice with ``sample_categorical``, so
MetaSchedule's trace records it and a tuning record replays exactly the schedule that was measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis.common_analysis import collect_vars_used_in_prim_expr, get_sblockrealize


@dataclass(frozen=True)
class Machine:
    """What a schedule is sized by: the cores it runs on and the target's vector unit (targets.cpu.vector_isa)."""

    cores: int
    lanes: int = 8  # float32 lanes of one vector register: 8 for AVX2, 16 for AVX-512, 4 for NEON
    accumulators: int = 12  # register-tile accumulators that fit beside the weight vectors and one broadcast


class Decisions:
    """Answers the questions a template asks; ``choose`` returns one of ``candidates``."""

    def choose(self, sch: s_tir.Schedule, candidates: list[int], default: int) -> int:
        raise NotImplementedError


class DefaultDecisions(Decisions):
    def choose(self, sch, candidates, default):
        return default


@dataclass(frozen=True)
class Contraction:
    """A reduction block ``out[...] += A[...] * B[...]`` and the role of each of its loops.

    ``channel`` indexes B and the output but not A (the output channel of a conv, N of a matmul);
    ``column`` is the last loop that indexes A and the output but not B (output width, M);
    ``outer`` are the other spatial loops in their original order.
    """

    block: s_tir.schedule.SBlockRV
    data_index: int  # which read is A
    weight_index: int  # which read is B
    channel: int | None  # positions into the block's loops
    column: int | None
    outer: tuple[int, ...]
    reductions: tuple[int, ...]
    extents: tuple[int, ...]
    weight_channel_dim: int | None  # which dimension of B the channel loop indexes
    weight_ndim: int
    out_channel_dim: int | None


def _is_single_var(expr) -> bool:
    return isinstance(expr, tirx.Var)


def analyze_contraction(sch: s_tir.Schedule, block_rv) -> Contraction | None:
    block = sch.get(block_rv)
    if len(block.writes) != 1 or len(block.reads) < 2 or block.init is None:
        return None
    if not isinstance(block.body, tirx.BufferStore) or not isinstance(block.body.value, tirx.Add):
        return None
    loops = sch.get_loops(block_rv)
    if len(loops) != len(block.iter_vars):
        return None
    loop_vars = [sch.get(loop).loop_var for loop in loops]
    binding = _iter_bindings(sch, block_rv)
    if binding is None or [b for b in binding] != loop_vars:
        return None
    out_buf = block.writes[0].source
    operands = [i for i, r in enumerate(block.reads) if not r.source.same_as(out_buf)]
    if len(operands) != 2:
        return None
    iter_vars = [iv.var for iv in block.iter_vars]

    def used(region) -> list[set]:
        return [collect_vars_used_in_prim_expr(r.min) & set(iter_vars) for r in region]

    out_dims = used(block.writes[0].region)
    out_vars = set().union(*out_dims)
    reads = {i: used(block.reads[i].region) for i in operands}

    # B (the weights) is the operand that shares fewer loops with the output: a conv's filter, a matmul's
    # right side; on a tie, the one whose last dimension is an output loop (contiguous along it).
    def weight_score(i):
        shared = set().union(*reads[i]) & out_vars
        last = reads[i][-1] if reads[i] else set()
        return (len(shared), 0 if last & out_vars else 1, i)

    b_idx, a_idx = sorted(operands, key=weight_score)
    a_vars, b_vars = set().union(*reads[a_idx]), set().union(*reads[b_idx])
    extents = tuple(int(iv.dom.extent) if isinstance(iv.dom.extent, tirx.IntImm) else -1 for iv in block.iter_vars)
    if -1 in extents:
        return None
    spatial = [i for i, iv in enumerate(block.iter_vars) if iv.iter_type == 0]
    reductions = tuple(i for i, iv in enumerate(block.iter_vars) if iv.iter_type == 2)
    if len(spatial) + len(reductions) != len(iter_vars) or not reductions:
        return None
    channels = [
        i for i in spatial if iter_vars[i] in b_vars and iter_vars[i] not in a_vars and iter_vars[i] in out_vars
    ]
    columns = [i for i in spatial if iter_vars[i] in a_vars and iter_vars[i] not in b_vars and iter_vars[i] in out_vars]
    channel = channels[-1] if channels else None
    column = columns[-1] if columns else None
    w_dim = out_dim = None
    if channel is not None:
        var = iter_vars[channel]
        w_dims = [d for d, s in enumerate(reads[b_idx]) if var in s]
        o_dims = [d for d, s in enumerate(out_dims) if var in s]
        if len(w_dims) != 1 or len(o_dims) != 1 or not _is_single_var(block.reads[b_idx].region[w_dims[0]].min):
            channel = None
        else:
            w_dim, out_dim = w_dims[0], o_dims[0]
    outer = tuple(i for i in spatial if i not in (channel, column))
    return Contraction(
        block_rv,
        a_idx,
        b_idx,
        channel,
        column,
        outer,
        reductions,
        extents,
        w_dim,
        len(block.reads[b_idx].region),
        out_dim,
    )


def _iter_bindings(sch: s_tir.Schedule, block_rv):
    values = get_sblockrealize(sch, block_rv).iter_values
    return list(values) if all(isinstance(v, tirx.Var) for v in values) else None


def divisors(n: int, limit: int) -> list[int]:
    return [d for d in range(1, min(n, limit) + 1) if n % d == 0]


def _column_tiles(extent: int, vectors_per_row: int, machine: Machine) -> tuple[list[int], int]:
    """Register tile widths that divide the column loop, and the default: most accumulators that fit."""
    fits = [d for d in divisors(extent, 32) if d * vectors_per_row <= machine.accumulators]
    if not fits:
        return [1], 1
    return fits, max(fits)


def default_lanes(options: list[int], column_extent: int, machine: Machine) -> int:
    """The vector width whose best register tile holds the most accumulators, measured preference on ties.

    Two vectors are best when their tile reaches all but four of the accumulators (8 of AVX2's 12); four-vector
    tiles double the weight working set and load four vectors per step, so they are the last resort.
    """
    enough = machine.accumulators - 4

    def score(lanes: int) -> float:
        vectors = -(-lanes // machine.lanes)
        accumulators = vectors * _column_tiles(column_extent, vectors, machine)[1]
        return min(accumulators, enough) + {2: 0.5, 4: -2.0}.get(vectors, 0.0)

    return max(options, key=score)


def _channel_innermost(dim: int, ndim: int, lanes: int):
    """Index map moving dimension ``dim`` to the innermost position, split by ``lanes``."""

    def index_map(*idx):
        head = [idx[d] // lanes if d == dim else idx[d] for d in range(ndim)]
        return (*head, idx[dim] % lanes)

    return index_map


PREPACKED_LANES = "packager.prepacked_lanes"  # block annotation: this block unpacks weights blocked by that many lanes


def prepacked_weight(sch: s_tir.Schedule, c: Contraction):
    """(block, lanes) when the contraction's weights come unpacked from a [O / lanes, ..., lanes] parameter, which
    the build computed once from the real weights (pipeline.legalize; compilers/prepack.py); else None."""
    weight = sch.get(c.block).reads[c.weight_index].source
    for producer in sch.get_producers(c.block):
        block = sch.get(producer)
        lanes = block.annotations.get(PREPACKED_LANES)
        if lanes is not None and any(w.source.same_as(weight) for w in block.writes):
            return producer, int(lanes)
    return None


def _blocks_matrix(c: Contraction) -> bool:
    """A matrix weight [K, N] read a vector of N at a time walks K at N's stride: a page per step for a wide N (PatchCore's
    1536 x 16384 memory bank). Repacked as [N / lanes, K, lanes] each vector block is one contiguous stream; worth
    the repacking pass when enough output rows reuse it."""
    rows = 1
    for i in (*c.outer, *([c.column] if c.column is not None else [])):
        rows *= c.extents[i]
    return c.weight_ndim == 2 and c.weight_channel_dim == 1 and rows >= MATRIX_PACK_MIN_ROWS


MATRIX_PACK_MIN_ROWS = 64
WEIGHT_BLOCK_CACHED = 256 * 1024  # bytes of one output channel block's weights that stay cached from row to row
WEIGHT_BLOCK_L1 = 16 * 1024  # bytes of weights an input channel block keeps in L1 across the whole output
L1_BYTES = 32 * 1024
# Rows of at least this many register tiles block their input channels when the weights outgrow L1, into blocks of
# at most this many bytes of weights. DRAEM's 3x3 convolutions at 256x256, direct, 2 threads (AMD EPYC): 128 -> 128
# 151 -> 127-129 ms with blocks of 8 or 16 input channels, 128 -> 64 72 -> 62 ms, 64 -> 128 at 128x128 (16 ms with
# blocks of 8); 64 -> 128 3x3 / 2 at 64x64 (8 tiles a row) 1.67 -> 1.23 ms. 256 -> 512 3x3 / 2 at 16x16 (2 tiles a
# row) was fastest unblocked.
WIDE_ROW_TILES = 8
WIDE_ROW_WEIGHT_BLOCK = 8 * 1024


def _packed_weight_layout(dim: int, ndim: int, lanes: int):
    """Where a packed weight puts its elements: a matrix [K, N] as [N / lanes, K, lanes], others channel innermost."""
    if ndim == 2 and dim == 1:
        return lambda k, n: (n // lanes, k, n % lanes)
    return _channel_innermost(dim, ndim, lanes)


def inline_epilogue(sch: s_tir.Schedule, writeback) -> None:
    """Fold bias, activation and other elementwise consumers into the write-back of a register tile.

    A consumer that writes a smaller buffer (the crop of a convolution computed over padded columns) stays apart:
    TIR would inline it without a bounds check, and the tile's padded columns would land in the next row.
    """
    while True:
        consumers = sch.get_consumers(writeback)
        if len(consumers) != 1:
            return
        produced = [int(d) for d in sch.get(writeback).writes[0].source.shape]
        if [int(d) for d in sch.get(consumers[0]).writes[0].source.shape] != produced:
            return
        try:
            sch.reverse_compute_inline(consumers[0])
        except s_tir.ScheduleError:
            return


def schedule_contraction(sch: s_tir.Schedule, c: Contraction, decisions: Decisions, machine: Machine) -> bool:
    """Register-tiled, vectorized, parallel schedule for conv2d / conv2d_transpose / matmul blocks."""
    ext = c.extents
    channel_ext = ext[c.channel] if c.channel is not None else 0
    weight_last = c.weight_channel_dim == c.weight_ndim - 1
    lane = machine.lanes
    if c.channel is not None and channel_ext % lane == 0:
        lane_options = [v for v in (lane, 2 * lane, 4 * lane) if channel_ext % v == 0]
        column_ext = ext[c.column] if c.column is not None else 1
        prepacked = prepacked_weight(sch, c)
        if prepacked is not None and channel_ext % prepacked[1] == 0:
            sch.compute_inline(prepacked[0])  # reads the build-time blocks directly: [o // L, ..., o % L]
            return _vectorize_channels(sch, c, prepacked[1], decisions, machine, pack=False)
        lanes = decisions.choose(sch, lane_options, default_lanes(lane_options, column_ext, machine))
        return _vectorize_channels(sch, c, lanes, decisions, machine, pack=not weight_last or _blocks_matrix(c))
    if c.channel is not None and weight_last and 2 <= channel_ext <= 16 * lane:
        return _vectorize_channels(sch, c, channel_ext, decisions, machine, pack=False)
    if c.column is not None and ext[c.column] % lane == 0:
        return _vectorize_columns(sch, c, decisions, machine)
    return False


def parallel_outer(sch: s_tir.Schedule, loops: list, extents: list[int], num_cores: int):
    """Fuse leading loops into one parallel loop with enough iterations to balance the cores."""
    take, total = 0, 1
    for extent in extents:
        if total >= 8 * num_cores and take > 0:
            break
        take, total = take + 1, total * extent
    fused = sch.fuse(*loops[:take]) if take > 1 else loops[0]
    if total > 1:
        sch.parallel(fused)
    return fused


def _vectorize_channels(sch, c: Contraction, lanes: int, decisions: Decisions, machine: Machine, pack: bool) -> bool:
    ext = c.extents
    vectors = -(-lanes // machine.lanes)
    column_ext = ext[c.column] if c.column is not None else 1
    tiles, default_tile = _column_tiles(column_ext, vectors, machine)
    tile = decisions.choose(sch, tiles, default_tile)
    # Input-channel blocking: with the channel loop split outside the column tiles, a block of weights
    # stays in L1 across a whole output row; the row's accumulators then live in a stack buffer.
    red0 = c.reductions[0]
    rest = [i for i in c.outer if i > c.channel]
    splits = [0]
    if c.column is not None and (column_ext // tile > 1 or any(ext[i] > 1 for i in rest)):
        splits += [b for b in (8, 16, 32, 64) if ext[red0] % b == 0 and b < ext[red0]]
    # The weights per output and input channel, from the weight buffer: a transposed convolution's phases together
    # read all of its kernel's taps, though each phase's reduction covers a quarter of them.
    weight = sch.get(c.block).reads[c.weight_index].source
    taps = math.prod(int(d) for d in weight.shape) // (ext[c.channel] * ext[red0])
    weight_block = lanes * ext[red0] * taps * 4  # bytes of weights one output channel block reads
    streams = weight_block > WEIGHT_BLOCK_CACHED and any(ext[i] > 1 for i in rest) and len(splits) > 1
    # A convolution's row of many register tiles, each reading the whole block of weights (every tap of every input
    # channel), reads them from L2 once they outgrow L1; blocked by input channels, each block stays in L1 for the row.
    wide_row = (
        len(c.reductions) > 1
        and taps > 1
        and column_ext // tile >= WIDE_ROW_TILES
        and weight_block > L1_BYTES
        and len(splits) > 1
    )
    budget = WEIGHT_BLOCK_L1 if streams else WIDE_ROW_WEIGHT_BLOCK if wide_row else 0
    # Blocks of 32 lanes (AVX-512's two-vector tiles) pass the budget even at 8 channels; they take the smallest
    # block (not measured on AVX-512).
    smallest = min(splits[1:], default=0) if wide_row else 0
    default_block = max((b for b in splits if b and lanes * b * taps * 4 <= budget), default=smallest)
    channel_block = decisions.choose(sch, splits, default_block)
    # A register tile two (or more) output rows tall, for narrow outputs whose width alone cannot fill it.
    rows_at = [i for i in c.outer if i > c.channel and (c.column is None or i < c.column) and ext[i] > 1]
    row = rows_at[-1] if rows_at else None
    row_options = (
        [d for d in divisors(ext[row], 4) if d * tile * vectors <= machine.accumulators] if row is not None else [1]
    )
    row_tile = decisions.choose(sch, row_options or [1], 1)
    # Rows inside the channel blocks: each block of weights is read once for the whole output, not once per row
    # (GANomaly's 512 -> 1024 4x4 / 2 convolution re-read its 512 KB per output channel block for each of 8 rows).
    rows_inside = (
        bool(channel_block) and any(ext[i] > 1 for i in rest) and decisions.choose(sch, [0, 1], int(streams)) == 1
    )
    stride = pointwise_stride(sch, c) if not channel_block else 0
    staged_rows = stride > 0 and decisions.choose(sch, [0, 1], 1) == 1
    if pack:
        packed = sch.cache_read(c.block, c.weight_index, "global")
        sch.transform_layout(packed, ("write", 0), _packed_weight_layout(c.weight_channel_dim, c.weight_ndim, lanes))
        sch.parallel(sch.get_loops(packed)[0])
    loops = sch.get_loops(c.block)
    f_o, f_v = sch.split(loops[c.channel], [None, lanes])
    x_o = x_i = None
    if c.column is not None:
        x_o, x_i = sch.split(loops[c.column], [None, tile])
    y_i = None
    if row_tile > 1:
        y_o, y_i = sch.split(loops[row], [None, row_tile])
        loops = [y_o if i == row else loop for i, loop in enumerate(loops)]
    # leading dims, then the channel block, then rows: each thread owns whole output rows. With staged rows, the
    # threads share out rows only, and every channel block of a row reads the row's one staged copy.
    lead = [i for i in c.outer if i < c.channel]
    rows_ext = [ext[i] // (row_tile if i == row else 1) for i in rest]
    if rows_inside:
        par_loops = [loops[i] for i in lead] + [f_o]
        par_ext = [ext[i] for i in lead] + [ext[c.channel] // lanes]
    elif staged_rows:
        par_loops = [loops[i] for i in lead] + [loops[i] for i in rest]
        par_ext = [ext[i] for i in lead] + rows_ext
    else:
        par_loops = [loops[i] for i in lead] + [f_o] + [loops[i] for i in rest]
        par_ext = [ext[i] for i in lead] + [ext[c.channel] // lanes] + rows_ext
    reductions = [loops[i] for i in c.reductions]
    if channel_block:
        r_o, r_i = sch.split(reductions[0], [None, channel_block])
        rows = [loops[i] for i in rest] if rows_inside else []
        order = par_loops + [r_o, *rows, x_o, r_i] + reductions[1:]
    elif staged_rows:
        order = par_loops + [f_o, x_o] + reductions
    else:
        order = par_loops + ([x_o] if x_o is not None else []) + reductions
    sch.reorder(*order, *([y_i] if y_i is not None else []), *([x_i] if x_i is not None else []), f_v)
    acc = sch.cache_write(c.block, 0, "local")
    out_ndim = len(sch.get(c.block).writes[0].region)
    sch.transform_layout(c.block, ("write", 0), _channel_innermost(c.out_channel_dim, out_ndim, lanes))
    inline_epilogue(sch, acc)
    anchor = x_o if x_o is not None and not channel_block else par_loops[-1]
    sch.reverse_compute_at(acc, anchor, preserve_unit_loops=True)
    if x_i is not None and tile > 1:
        sch.unroll(x_i)
    if y_i is not None:
        sch.unroll(y_i)
    if lanes % machine.lanes == 0:
        sch.vectorize(f_v)  # other widths are left to LLVM's loop vectorizer: odd-width vector types spill
    parallel_outer(sch, par_loops, par_ext, machine.cores)
    if staged_rows:
        _stage_rows(sch, c, f_o, tile * stride)
    sch.decompose_reduction(c.block, r_o if channel_block else reductions[0])
    return True


def pointwise_stride(sch: s_tir.Schedule, c: Contraction) -> int:
    """The stride of a 1x1 NCHW convolution (a ResNet bottleneck's, stride 1, or its downsampling shortcut's, stride 2),
    0 for any other contraction. A register tile of one reads input channel ``rc`` at [rc, y * s, (x : x + tile) * s],
    a whole input row apart from the next channel's, a new page for every multiply-add step. Staged per output row as
    [x / tile, rc, tile * s], the tile's reads are one contiguous stream (_stage_rows)."""
    block = sch.get(c.block)
    data, out = block.reads[c.data_index].source, block.writes[0].source
    if len(data.shape) != 4 or len(out.shape) != 4 or c.column is None or c.out_channel_dim != 1:
        return 0
    if any(c.extents[i] != 1 for i in c.reductions[1:]) or c.column != len(c.extents) - len(c.reductions) - 1:
        return 0
    input_channel = block.iter_vars[c.reductions[0]].var
    if not block.reads[c.data_index].region[1].min.same_as(input_channel):  # data[n, rc, y, x]
        return 0
    (height, width), (out_height, out_width) = [[int(d) for d in b.shape[2:]] for b in (data, out)]
    stride = width // out_width
    return stride if stride >= 1 and (height, width) == (stride * out_height, stride * out_width) else 0


def _stage_rows(sch: s_tir.Schedule, c: Contraction, channel_outer, tile: int) -> None:
    """Copy the input row an output row needs into a [row, x / tile, rc, tile] buffer (``tile`` input columns: the
    register tile's times the stride), once per row, before the channel blocks that all read it: a register tile then
    streams its inputs from consecutive addresses."""
    staged = sch.cache_read(c.block, c.data_index, "global")
    loops = sch.get_loops(c.block)
    position = next(i for i, loop in enumerate(loops) if sch.get(loop).same_as(sch.get(channel_outer)))
    sch.compute_at(staged, loops[position - 1], preserve_unit_loops=True)
    sch.transform_layout(staged, ("write", 0), lambda n, ch, y, x: (n, y, x // tile, ch, x % tile))


def _vectorize_columns(sch, c: Contraction, decisions: Decisions, machine: Machine) -> bool:
    """Few output channels (an RGB or single-channel conv): vectorize along the output width instead."""
    ext = c.extents
    width = ext[c.column]
    lane = machine.lanes
    lane_options = [v for v in (lane, 2 * lane, 4 * lane) if width % v == 0]
    lanes = decisions.choose(sch, lane_options, 2 * lane if 2 * lane in lane_options else lane)
    loops = sch.get_loops(c.block)
    chan_tiles = divisors(ext[c.channel], 4) if c.channel is not None else [1]
    ctile = decisions.choose(sch, chan_tiles, max(d for d in chan_tiles if d * lanes // lane <= machine.accumulators))
    x_o, x_v = sch.split(loops[c.column], [None, lanes])
    lead = [loops[i] for i in c.outer]
    par_ext = [ext[i] for i in c.outer]
    if c.channel is not None:
        f_o, f_i = sch.split(loops[c.channel], [None, ctile])
        lead = [loops[i] for i in c.outer if i < c.channel] + [f_o] + [loops[i] for i in c.outer if i > c.channel]
        par_ext = [ext[i] for i in c.outer if i < c.channel] + [ext[c.channel] // ctile]
        par_ext += [ext[i] for i in c.outer if i > c.channel]
        inner = [f_i, x_v]
    else:
        inner = [x_v]
    sch.reorder(*lead, x_o, *[loops[i] for i in c.reductions], *inner)
    acc = sch.cache_write(c.block, 0, "local")
    inline_epilogue(sch, acc)
    sch.reverse_compute_at(acc, x_o, preserve_unit_loops=True)
    if len(inner) == 2 and ctile > 1:
        sch.unroll(inner[0])
    sch.vectorize(x_v)
    parallel_outer(sch, lead, par_ext, machine.cores)
    sch.decompose_reduction(c.block, loops[c.reductions[0]])
    return True
