"""1x1 convolutions as GEMMs vectorized along the output's pixels: the template for ResNet's bottleneck convolutions.

The contraction template (templates.py) vectorizes a convolution along its output channels, which suits kernels with
many taps; a 1x1 convolution with 64-256 input channels then spends as long writing each register tile back, one
scalar per channel plane, as computing it. Here the tile runs along the output row, the way NCHW stores it. A strided
one (a downsampling shortcut) gathers the pixels it reads at legalization (``legalize_strided``) and is then stride 1.
"""

from __future__ import annotations

import math

from tvm import s_tir

from compilers.schedules import templates
from compilers.schedules.templates import Contraction, Decisions, Machine

PANEL_BUDGET = 128 * 1024  # bytes of staged input one panel of output rows reads (the L2 share a thread streams)


def applies(sch: s_tir.Schedule, c: Contraction, machine: Machine) -> bool:
    """A stride-1 1x1 NCHW convolution whose output rows fill whole pairs of vectors: a GEMM whose output rows (one
    per output channel) are contiguous. (One-vector tiles, 8 channels by 8 pixels on AVX2, ran at half the speed of
    the channel-vectorized template: 9 loads per 8 multiply-adds.)"""
    if c.channel is None or c.column is None or templates.pointwise_stride(sch, c) != 1:
        return False
    rows = [i for i in c.outer if i > c.channel]
    return len(rows) == 1 and rows[0] == c.column - 1 and c.extents[c.column] % (2 * machine.lanes) == 0


def row_panels(height: int, width: int, depth: int, leading: int, cores: int) -> tuple[list[int], int]:
    """Panel heights in output rows, and the default: the tallest whose staged input (``depth`` channels) fits
    PANEL_BUDGET, among those that leave every core two panels."""
    fits = [r for r in templates.divisors(height, height) if depth * r * width * 4 <= PANEL_BUDGET] or [1]
    balanced = [r for r in fits if leading * height // r >= 2 * cores] or [1]
    return fits, max(balanced)


def schedule(sch: s_tir.Schedule, c: Contraction, decisions: Decisions, machine: Machine) -> None:
    """A 1x1 convolution as a GEMM vectorized along the output's rows, the way NCHW stores them.

    out[co, y, x : x + V] += w[co, rc] * in[rc, y, x : x + V]: a register tile of ``ctile`` output channels by ``V``
    pixels loads V inputs per input channel and broadcasts ctile weights, and its write-back (with the bias,
    activation and residual folded into it) is ctile whole-vector stores, where a tile vectorized along output
    channels writes scalars across channel planes (ResNet's 64 -> 256 expansion ran at a third of the FMA peak so).
    The input rows of each panel are staged once as [y, x / V, rc, V]: every tile then reads one contiguous stream,
    and every output-channel tile of the panel reads the same copy from cache.
    """
    ext = c.extents
    row = c.column - 1
    height, width, channels, depth = ext[row], ext[c.column], ext[c.channel], ext[c.reductions[0]]
    vec = 2 * machine.lanes  # two vectors of pixels (see applies)
    ctiles = [d for d in templates.divisors(channels, 16) if 2 * d <= machine.accumulators]
    ctile = decisions.choose(sch, ctiles, max(ctiles))
    lead = [i for i in c.outer if i < c.channel]
    leading = math.prod(ext[i] for i in lead)
    panels, default_panel = row_panels(height, width, depth, leading, machine.cores)
    panel = decisions.choose(sch, panels, default_panel)
    prepacked = templates.prepacked_weight(sch, c)
    if prepacked is not None:
        sch.compute_inline(prepacked[0])  # broadcasts read the build-time blocks directly
    loops = sch.get_loops(c.block)
    f_o, f_i = sch.split(loops[c.channel], [None, ctile])
    y_o, y_i = sch.split(loops[row], [None, panel])
    x_o, x_v = sch.split(loops[c.column], [None, vec])
    par_loops = [loops[i] for i in lead] + [y_o]
    par_ext = [ext[i] for i in lead] + [height // panel]
    reductions = [loops[i] for i in c.reductions]
    sch.reorder(*par_loops, f_o, y_i, x_o, *reductions, f_i, x_v)
    acc = sch.cache_write(c.block, 0, "local")
    templates.inline_epilogue(sch, acc)
    sch.reverse_compute_at(acc, x_o, preserve_unit_loops=True)
    sch.vectorize(sch.get_loops(acc)[-1])
    sch.unroll(f_i)
    sch.vectorize(x_v)
    outer = templates.parallel_outer(sch, par_loops, par_ext, machine.cores)
    copy = sch.cache_read(c.block, c.data_index, "global")
    sch.compute_at(copy, outer, preserve_unit_loops=True)
    sch.transform_layout(copy, ("write", 0), lambda n, ch, y, x: (n, y, x // vec, ch, x % vec))
    # whole vectors in and out: a contiguous read along an input row, a contiguous [rc, V] write
    sch.vectorize(sch.split(sch.get_loops(copy)[-1], [None, vec])[1])
    sch.decompose_reduction(c.block, reductions[0])


def strided_applies(data_shape, weight_shape, attrs, dtype: str, out_shape, lanes: int) -> bool:
    """A strided 1x1 NCHW convolution without padding (a ResNet downsampling shortcut) whose output rows fill pairs of
    vectors: it reads one pixel in stride x stride, which a pass of its own gathers, and then it is this template's
    stride-1 convolution."""
    strides = [int(s) for s in attrs.strides]
    return (
        attrs.data_layout == "NCHW"
        and attrs.kernel_layout == "OIHW"
        and attrs.out_layout == "NCHW"
        and int(attrs.groups) == 1
        and dtype == "float32"
        and all(int(d) == 1 for d in attrs.dilation)
        and all(int(p) == 0 for p in attrs.padding)
        and tuple(weight_shape[2:]) == (1, 1)
        and max(strides) > 1
        and out_shape[3] % (2 * lanes) == 0
    )


def legalize_strided(bb, call, legalize_conv2d):
    """relax.nn.conv2d (strided 1x1) as a gather of the pixels it reads, then ``legalize_conv2d`` of a stride-1 one."""
    from tvm import relax, te

    sh, sw = [int(s) for s in call.attrs.strides]
    n, ci = [int(d) for d in call.args[0].ty.shape][:2]
    oh, ow = [int(d) for d in call.ty.shape][2:]
    picked = bb.emit(
        bb.call_te(
            lambda x: te.compute((n, ci, oh, ow), lambda b, c, y, x_: x[b, c, sh * y, sw * x_], name="strided_pixels"),
            call.args[0],
            primfunc_name_hint="strided_pixels",
        )
    )
    conv = bb.normalize(relax.op.nn.conv2d(picked, call.args[1], out_dtype=call.attrs.out_dtype))
    return legalize_conv2d(bb, conv)
