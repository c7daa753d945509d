"""Schedule a whole fused PrimFunc: contractions by their templates, the rest by generic CPU rules.

Contractions (conv, conv_transpose, matmul) get the register-tiled templates of
templates.py; Winograd stages get theirs from winograd.py; elementwise blocks
are inlined where possible and otherwise parallelized and vectorized; pooling and
reductions run parallel over output rows, vectorized where their reads are contiguous.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis.common_analysis import collect_vars_used_in_prim_expr, get_sblockrealize

from compilers.schedules import pointwise, winograd
from compilers.schedules.templates import (
    Decisions,
    Machine,
    analyze_contraction,
    inline_epilogue,
    parallel_outer,
    schedule_contraction,
)


def _unit_stride(index, var) -> bool:
    """Whether ``index`` moves by exactly one element when ``var`` does (a vector load, not a gather)."""
    from tvm.sym.pattern import detect_linear_equation

    coefficients = detect_linear_equation(index, [var])
    return len(coefficients) == 2 and isinstance(coefficients[0], tirx.IntImm) and int(coefficients[0]) == 1


def _window_producers(sch: s_tir.Schedule, block_rv) -> set[str]:
    """Producers a reduction reads through a sliding window (pooling's padding): inlined, they would put a
    bounds check on every load of the inner loop, so they stay materialized."""
    block = sch.get(block_rv)
    reduce_vars = {iv.var for iv in block.iter_vars if iv.iter_type == 2}
    spatial_vars = {iv.var for iv in block.iter_vars if iv.iter_type == 0}
    windowed = set()
    for read in block.reads:
        for r in read.region:
            used = collect_vars_used_in_prim_expr(r.min)
            if used & reduce_vars and used & spatial_vars:
                windowed.add(read.source)
    return {
        sch.get(p).name_hint
        for p in sch.get_producers(block_rv)
        if any(w.source in windowed for w in sch.get(p).writes)
    }


def _is_spatial(sch: s_tir.Schedule, block_rv) -> bool:
    return all(iv.iter_type == 0 for iv in sch.get(block_rv).iter_vars)


def _static_extents(sch: s_tir.Schedule, loops) -> list[int] | None:
    extents = [sch.get(loop).extent for loop in loops]
    return [int(e) for e in extents] if all(isinstance(e, tirx.IntImm) for e in extents) else None


# A row at least this many vectors long that does not divide into them runs its whole vectors vectorized and the rest
# as scalars (loop_partition); shorter ones stay scalar.
MIN_PARTITIONED_ROW = 2


def _schedule_elementwise(sch: s_tir.Schedule, block_rv, machine: Machine) -> None:
    loops = sch.get_loops(block_rv)
    extents = _static_extents(sch, loops)
    if not loops or extents is None:
        return
    lanes = machine.lanes
    if extents[-1] % lanes == 0 and extents[-1] >= lanes:
        outer, lane = sch.split(loops[-1], [None, lanes])
        loops = [*loops[:-1], outer]
        extents = [*extents[:-1], extents[-1] // lanes]
        sch.vectorize(lane)
    elif extents[-1] > MIN_PARTITIONED_ROW * lanes and len(loops) > 1:
        # rows of whole vectors plus a scalar remainder: a softmax over a ViT's 261 tokens was all scalar
        whole, _ = sch.loop_partition(loops[-1], [extents[-1] // lanes * lanes, None])
        _, lane = sch.split(whole, [None, lanes])
        sch.vectorize(lane)
        loops, extents = loops[:-1], extents[:-1]
    if len(loops) and extents:
        parallel_outer(sch, loops, extents, machine.cores)


def _schedule_reduction(sch: s_tir.Schedule, block_rv, machine: Machine) -> None:
    """Pooling and reductions: parallel over output rows, vectorized along the output's last axis when reads are contiguous."""
    block = sch.get(block_rv)
    loops = sch.get_loops(block_rv)
    extents = _static_extents(sch, loops)
    if extents is None or len(loops) != len(block.iter_vars) or get_sblockrealize(sch, block_rv) is None:
        return
    kinds = [iv.iter_type for iv in block.iter_vars]
    spatial = [i for i, k in enumerate(kinds) if k == 0]
    reductions = [i for i, k in enumerate(kinds) if k == 2]
    if len(spatial) + len(reductions) != len(kinds) or not spatial:
        return
    last = spatial[-1]
    last_var = block.iter_vars[last].var
    contiguous = all(r.region and _unit_stride(r.region[-1].min, last_var) for r in block.reads)
    order = [loops[i] for i in spatial]
    if contiguous and extents[last] >= machine.lanes:
        order = [loops[i] for i in spatial[:-1]] + [loops[i] for i in reductions] + [loops[last]]
        sch.reorder(*order)
        if extents[last] % machine.lanes == 0:
            _, lane = sch.split(loops[last], [None, machine.lanes])
            sch.vectorize(lane)
        par = spatial[:-1]
    else:
        sch.reorder(*order, *[loops[i] for i in reductions])
        if _contiguous_inner_reduction(block, reductions[-1], extents, machine) and _vectorize_inner_reduction(
            sch, block_rv, loops[reductions[-1]], [extents[i] for i in spatial], machine
        ):
            return
        par = spatial
    if par:
        parallel_outer(sch, [loops[i] for i in par], [extents[i] for i in par], machine.cores)


def _contiguous_inner_reduction(block, inner: int, extents: list[int], machine: Machine) -> bool:
    """Whether every read that moves with the innermost reduction reads consecutive elements (a row's sum, mean or
    variance: LayerNorm, Softmax, ReduceMean over the last axes), over whole vectors."""
    var = block.iter_vars[inner].var
    written = block.writes[0].source
    moving = [
        r
        for r in block.reads
        if not r.source.same_as(written)
        and any(any(v.same_as(var) for v in collect_vars_used_in_prim_expr(dim.min)) for dim in r.region)
    ]
    return (
        bool(moving)
        and extents[inner] >= 2 * machine.lanes
        and extents[inner] % machine.lanes == 0
        and all(_unit_stride(r.region[-1].min, var) for r in moving)
    )


def _vectorize_inner_reduction(
    sch: s_tir.Schedule, block_rv, inner_loop, spatial_extents: list[int], machine: Machine
) -> bool:
    """A reduction along contiguous memory as ``lanes`` partial sums, one vector register wide, added up at the end
    of each row: a scalar loop would wait on one add at a time. (rfactor: the partial sums form their own block.)"""
    _, lane = sch.split(inner_loop, [None, machine.lanes])
    try:
        partial = sch.rfactor(lane, factor_axis=len(spatial_extents))
    except s_tir.ScheduleError:  # not a reduction rfactor can split (the split alone changes nothing): stay scalar
        return False
    outer = parallel_outer(sch, sch.get_loops(block_rv)[: len(spatial_extents)], spatial_extents, machine.cores)
    sch.compute_at(partial, outer)
    loops = sch.get_loops(partial)
    lane_var = get_sblockrealize(sch, partial).iter_values[0]  # rfactor puts the lane axis first
    at = next((i for i, loop in enumerate(loops) if sch.get(loop).loop_var.same_as(lane_var)), None)
    steps = loops[at + 1 :] if at is not None else []  # the reduction loops, now outside the lanes
    if not steps:
        return True  # correct as it stands, only not vectorized
    sch.reorder(*steps, loops[at])
    init = sch.decompose_reduction(partial, steps[0])
    sch.vectorize(sch.get_loops(init)[-1])
    sch.unroll(sch.get_loops(partial)[-1])  # vectorize refuses a loop inside a reduction block; LLVM's SLP pass does it
    return True


def _intermediate_buffers(sch: s_tir.Schedule, root) -> set:
    return set(sch.get(root).alloc_buffers)


def _existing(sch: s_tir.Schedule, names: list[str]):
    """Blocks by name, skipping those an earlier step inlined away."""
    for name in names:
        try:
            yield sch.get_sblock(name)
        except (s_tir.ScheduleError, ValueError):
            continue


def _is_plain_copy(sch: s_tir.Schedule, block_rv) -> bool:
    """A block that copies a buffer element for element (a convolution's padding of zero width): reading it in place
    costs nothing, where a copy is a pass over the whole input."""
    block = sch.get(block_rv)
    body = block.body
    if not isinstance(body, tirx.BufferStore) or len(block.reads) != 1:
        return False
    load = body.value  # a TensorLoad, whose buffer is its ``source``
    if type(load).__name__ != "TensorLoad":
        return False
    source, target = load.source, body.buffer
    same_shape = [int(d) for d in source.shape] == [int(d) for d in target.shape]
    return same_shape and all(a.same_as(b) for a, b in zip(body.indices, load.indices, strict=True))


def schedule_function(sch: s_tir.Schedule, decisions: Decisions, machine: Machine) -> bool:
    """Schedule every block of a fused PrimFunc; returns False when nothing was recognised."""
    from tvm.s_tir.dlight.analysis import get_root_block

    root = get_root_block(sch)
    blocks = sch.get_child_blocks(root)
    names_before = {sch.get(b).name_hint for b in blocks}
    keep, done, changed = set(), set(), False
    for block_rv in _existing(sch, [sch.get(b).name_hint for b in blocks]):
        c = analyze_contraction(sch, block_rv)
        if c is None:
            if not _is_spatial(sch, block_rv):
                keep |= _window_producers(sch, block_rv)
            continue
        copies = [p for p in sch.get_producers(block_rv) if _is_plain_copy(sch, p)]
        while copies:  # read what they copy in place; a padding it copies is then the producer to keep
            sch.compute_inline(copies[0])
            copies = [p for p in sch.get_producers(block_rv) if _is_plain_copy(sch, p)]
        for producer in sch.get_producers(block_rv):
            keep.add(sch.get(producer).name_hint)
        c = analyze_contraction(sch, block_rv)
        if c is None:
            continue
        name = sch.get(block_rv).name_hint
        if pointwise.applies(sch, c, machine) and decisions.choose(sch, [0, 1], 1) == 1:
            pointwise.schedule(sch, c, decisions, machine)
            done.add(name)
            changed = True
        elif schedule_contraction(sch, c, decisions, machine):
            done.add(name)
            changed = True
    blocks = sch.get_child_blocks(root)
    done |= {sch.get(b).name_hint for b in blocks} - names_before
    special = {}  # blocks whose compute asked for a schedule of its own (see winograd.py)
    for block_rv in _existing(sch, [sch.get(b).name_hint for b in blocks]):
        kind = winograd.kind(sch, block_rv)
        if kind == "winograd_inverse":
            sch.compute_inline(block_rv)
        elif kind is not None:
            special[sch.get(block_rv).name_hint] = kind
    for name, kind in special.items():
        if kind == "winograd_output":
            inline_epilogue(sch, sch.get_sblock(name))

    keep |= set(special)
    blocks = sch.get_child_blocks(root)
    intermediates = _intermediate_buffers(sch, root)
    for block_rv in _existing(sch, [sch.get(b).name_hint for b in blocks]):
        name = sch.get(block_rv).name_hint
        if name in done or name in keep or not _is_spatial(sch, block_rv):
            continue
        if any(w.source not in intermediates for w in sch.get(block_rv).writes):
            continue
        try:
            sch.compute_inline(block_rv)
            changed = True
        except s_tir.ScheduleError:
            pass
    for block_rv in sch.get_child_blocks(root):
        name = sch.get(block_rv).name_hint
        if name in done:
            continue
        if name in special and winograd.schedule_block(sch, block_rv, special[name], machine.lanes):
            changed = True
            continue
        if _is_spatial(sch, block_rv):
            _schedule_elementwise(sch, block_rv, machine)
        else:
            _schedule_reduction(sch, block_rv, machine)
        changed = True
    for block_rv in sch.get_child_blocks(root):
        winograd.align_product(sch, block_rv)
    return changed
