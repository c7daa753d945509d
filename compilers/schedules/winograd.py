"""3x3 and 4x4 stride-1 convolutions by Winograd's minimal filtering: fewer multiplications, same result.

F(m x m, r x r) computes an m x m output tile from an (m+r-1) x (m+r-1) input tile with (m+r-1)^2
multiplications per channel pair instead of r^2 m^2: for 3x3 kernels 2.25x fewer with m = 2, 4x with m = 4;
for 4x4 kernels (EfficientAD's PDN) 2.56x with m = 2, 4x with m = 3. The largest tiles used (6 x 6) interpolate
at the same points for both kernel sizes, so they round alike.
The work becomes a batched matrix product (scheduled by the contraction template) between
transforms of the input and of the weights, and an inverse transform back to NCHW.
Transforms are written out term by term from the constant matrices, so after unrolling
each output adds only the nonzero products.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache

from tvm import relax, s_tir, te, tirx

KIND = "packager.schedule"  # block annotation naming the schedule a block needs


KERNEL_SIZES = (2, 3, 4)
# Output tile sizes m tried per kernel size, largest first: the 6 x 6 input tiles interpolate at the same 5 points,
# and 2x2 kernels (stride-2 convolutions split into phases, space_to_depth.py) stop at 5 x 5. TOPI's Cook-Toom
# construction needs at least 3 interpolation points, m + r - 2.
TILE_SIZES = {2: (4, 3), 3: (4, 2), 4: (3, 2)}
LARGEST_ALPHA = 6

# Larger tiles round more: in float32, F(4x4, 3x3) leaves about 4x the relative error of F(2x2, 3x3) per layer, and a
# network 51 convolutions deep at full resolution (DRAEM) compounds it to 10x ONNX Runtime's distance from a float64
# run, past the build check's tolerance; with F(2x2, r) tiles only it ends nearer float64 than direct convolution.
# A precise compile (compile's fallback when the check fails) keeps to those.
PRECISE_TILE = 2
_precise = ContextVar("winograd_precise", default=False)


@contextmanager
def precise_tiles(precise: bool = True):
    """Within this block, tile_size chooses F(2x2, r) tiles or none (when ``precise``)."""
    token = _precise.set(precise)
    try:
        yield
    finally:
        _precise.reset(token)


@cache
def transform_matrices(m: int, r: int = 3):
    """(A, B, G) of F(m x m, r x r), as TOPI's Cook-Toom construction gives them (numpy float64)."""
    from tvm.topi.nn.winograd_util import _cook_toom_convolution, _interpolation_points

    return _cook_toom_convolution(_interpolation_points(m + r - 2), m, r)


def eligible(data_shape, weight_shape, attrs, dtype: str) -> bool:
    return (
        plain_nchw(attrs)
        and all(int(s) == 1 for s in attrs.strides)
        and shapes_eligible(data_shape, weight_shape, dtype)
    )


def plain_nchw(attrs) -> bool:
    """An ungrouped, undilated NCHW / OIHW convolution."""
    return (
        attrs.data_layout == "NCHW"
        and attrs.kernel_layout == "OIHW"
        and attrs.out_layout == "NCHW"
        and int(attrs.groups) == 1
        and all(int(d) == 1 for d in attrs.dilation)
    )


def shapes_eligible(data_shape, weight_shape, dtype: str) -> bool:
    """Shapes a stride-1 Winograd convolution handles: one image, square kernels of KERNEL_SIZES, whole vectors of
    channels."""
    n, ci, h, w = data_shape
    co, _, kh, kw = weight_shape
    return (
        dtype == "float32"
        and n == 1
        and kh == kw
        and kh in KERNEL_SIZES
        and ci >= 16
        and co >= 16
        and co % 8 == 0
        and ci % 8 == 0
        and h >= 8
        and w >= 8
    )


# Multiply-add equivalents each weight read from memory costs per call: about 20 GB/s of DRAM against 157 GFLOP/s
# of FMA on 2 cores. compilers.prepack computes the transformed weights once, at build time, but every call still
# reads them, (m + r - 1)^2 / r^2 times the size of the direct weights. With few tiles that read decides: GANomaly's
# 512 -> 1024 4x4 / 2 convolution at 8x8 (4 tiles of F(4x4, 2x2), 210 MB of transformed weights) took 19 ms
# against 11 ms direct. With 2 the estimate picked it; with 16 every choice measured before stays as it was.
_KERNEL_READ_COST = 16
# F(4x4, 3x3) needs enough tiles to feed its 36 batched products: with fewer than 64 (an image under 32x32) each product
# is a GEMM a few rows tall, and F(2x2) was faster on every such shape measured (AMD EPYC, 2 threads, op_speed-style
# single convolutions): 512 channels at 8x8 4.8 ms against 5.7 ms (direct 6.4 ms), at 16x16 7.6 against 8.2 ms,
# 256 channels at 16x16 2.2 against 2.4-3.2 ms; at 32x32 (64 tiles) the two tie, and at 64x64 F(4x4) wins.
# The same holds for the 6 x 6 tiles of F(3x3, 4x4).
MIN_F4_TILES = 64


def tile_size(ci: int, co: int, oh: int, ow: int, r: int = 3) -> int | None:
    """The F(m x m, r x r) tile with the lowest estimated cost, or None when direct convolution is cheaper.

    With many channels and a small image, reading the larger transformed weights outweighs the saved products.
    """
    direct = r * r * ci * co * oh * ow + _KERNEL_READ_COST * r * r * ci * co
    best, best_cost = None, 0.75 * direct  # below this, Winograd's extra passes are not worth it
    for m in TILE_SIZES[r]:
        if _precise.get() and m > PRECISE_TILE:
            continue
        alpha, tiles = (m + r - 1) ** 2, -(-oh // m) * -(-ow // m)
        if alpha == LARGEST_ALPHA**2 and tiles < MIN_F4_TILES:
            continue
        cost = alpha * ci * co * tiles + _KERNEL_READ_COST * alpha * ci * co + 2 * alpha * ci * tiles
        if cost < best_cost:
            best, best_cost = m, cost
    return best


def _select(index, values):
    """values[index] for a loop variable ``index``: folds to one value once the loop is unrolled."""
    expr = values[-1]
    for k in range(len(values) - 2, -1, -1):
        expr = tirx.Select(index == k, values[k], expr)
    return expr


def _combine(terms):
    """Sum of coefficient * value, without multiplying by 0 or 1."""
    expr = None
    for coef, value in terms:
        coef = round(float(coef), 9)  # the Cook-Toom matrices carry float noise around their exact values
        if coef == 0:
            continue
        part = value if coef == 1 else (-value if coef == -1 else value * tirx.const(float(coef), "float32"))
        expr = part if expr is None else expr + part
    return expr if expr is not None else tirx.const(0.0, "float32")


# The batched product reads a vector of output channels from each of the transformed kernel's ci rows. Rows of a
# multiple of 64 floats lie a multiple of 256 bytes apart and share a few cache sets: at 1024 channels (4 KB apart)
# a 16-lane block's 1024 rows fall in one L1 set and 16 of L2's, and stream from L3 on every pass. Rows padded by one
# cache line spread over all sets. Whole F(m x m) convolutions, default schedule, 2 threads (AMD EPYC), kernel rows
# padded alone, alternating runs: 1024 -> 1024 at 32x32 (F(2x2)) 150, 135 -> 90, 94 ms. With the transformed input's
# rows padded too (an experiment; alone, they moved 1024 -> 1024 by 144 -> 139 ms): 1024 -> 1024 at 32x32 88 -> 61 ms
# (F(4x4)); 256 -> 256 at 64x64 16.8 -> 11.6 ms (kernel rows alone: the same 11.6); 128 -> 128 at 128x128 10.7 -> 8.6
# ms; 64 -> 64 at 256x256 13.2 -> 10.0 ms (F(2x2)); 512 -> 512 at 32x32 within noise.
# Rows that fit the sets they share need no padding, and padding costs params.bin ROW_PAD / co of the kernel
# (FastFlow's Edge Agent peak RSS went from 1.16x to 1.22x ONNX Runtime's with every multiple of 64 padded):
# 64 -> 64 at 256x256 (64 rows in 16 sets) measured the same either way.
ROW_PAD = 16
L1_SETS, L1_WAYS, LINE_FLOATS = 64, 8, 16

# With few tiles, each weight of the batched product is used a few times per call, and reading the transformed kernel
# decides its time: 512 channels at 8x8 (16 tiles of F(2x2)) read 16 MB. A vector block of output channels then reads
# one contiguous stream, (alpha, alpha, co / lanes, ci, lanes), instead of a vector from each of ci rows a row apart.
# Single 3x3 convolutions against ONNX Runtime, side by side, two runs each (benchmarks/op_speed.py --model, 2 threads,
# AMD EPYC), rows then blocks: 512 at 8x8 1.45, 1.41 -> 1.00, 1.08x ORT; 256 at 16x16 (64 tiles) 1.07, 0.95 -> 0.78,
# 0.85x; 128 at 32x32 (64 tiles of F(4x4)) 1.00, 0.87 -> 0.77, 0.77x; 64 at 64x64 (256 tiles) 1.11, 1.13 -> 1.14,
# 1.14x, no gain, so many tiles keep the rows.
BLOCKED_KERNEL_MAX_TILES = 64


def kernel_row(ci: int, co: int) -> int:
    """Floats from one row of the transformed kernel (one input channel) to the next, for ``co`` output channels:
    padded by a cache line when the ``ci`` rows a vector block reads would not fit the L1 sets they map to."""
    if co % LINE_FLOATS:
        return co
    sets = L1_SETS // math.gcd(L1_SETS, co // LINE_FLOATS)
    return co + ROW_PAD if ci > L1_WAYS * sets else co


def winograd_kernel(weight, m: int, lanes: int | None = None):
    """The weights of F(m x m, r x r): (alpha, alpha, ci, kernel_row(ci, co)), G g G^T per channel pair, zero past co.
    With ``lanes``, blocked as (alpha, alpha, co / lanes, ci, lanes) instead (see BLOCKED_KERNEL_MAX_TILES). It
    depends on the weights alone, so compile's prepacking step computes it once, at build time."""
    co, ci, r = int(weight.shape[0]), int(weight.shape[1]), int(weight.shape[2])
    alpha, row = m + r - 1, (co if lanes else kernel_row(ci, co))
    _, _, g_mat = transform_matrices(m, r)
    weight_t = te.compute(
        (ci, r, r, row),
        lambda c, y, x, o: tirx.if_then_else(o < co, weight[o, c, y, x], tirx.const(0.0, "float32")),
        name="winograd_weight",
        attrs={KIND: "winograd_weight"},
    )
    kernel_rows = te.compute(
        (alpha, r, ci, row),
        lambda e1, kx, c, o: _select(
            e1, [_combine([(g_mat[i, ky], weight_t[c, ky, kx, o]) for ky in range(r)]) for i in range(alpha)]
        ),
        name="winograd_kernel_rows",
        attrs={KIND: "winograd_rows"},
    )

    def transformed(e1, e2, c, o):
        return _select(
            e2, [_combine([(g_mat[j, kx], kernel_rows[e1, kx, c, o]) for kx in range(r)]) for j in range(alpha)]
        )

    if lanes:
        shape, value = (
            (alpha, alpha, co // lanes, ci, lanes),
            lambda e1, e2, b, c, v: transformed(e1, e2, c, b * lanes + v),
        )
    else:
        shape, value = (alpha, alpha, ci, row), transformed
    return te.compute(shape, value, name="winograd_kernel_pack", attrs={KIND: "winograd_kernel"})


def conv2d_winograd(data, packed_kernel, co: int, padding, m: int, tiles_padded: int | None = None, rows=None):
    """TE compute of an r x r stride-1 NCHW conv (batch 1) to ``co`` channels by F(m x m, r x r), from
    winograd_kernel's weights.

    ``tiles_padded``: how many tiles the batched product computes (at least the real count), so that its register
    tile divides them; the extra tiles read zeros and are never read back. ``rows``: (first, count) to compute that
    band of output rows only (default: all)."""
    from compilers.schedules.templates import PREPACKED_LANES

    _, ci, h, w = [int(d) for d in data.shape]
    alpha = int(packed_kernel.shape[0])
    if len(packed_kernel.shape) == 5:  # blocked by output channels: the product's schedule reads the blocks directly
        blocked, lanes = packed_kernel, int(packed_kernel.shape[4])
        packed_kernel = te.compute(
            (alpha, alpha, ci, co),
            lambda e1, e2, c, o: blocked[e1, e2, o // lanes, c, o % lanes],
            name="winograd_kernel_unblocked",
            attrs={PREPACKED_LANES: lanes},
        )
    r = alpha - m + 1
    pt, pl, pb, pr = [int(p) for p in padding]
    oh, ow = h + pt + pb - r + 1, w + pl + pr - r + 1
    if rows is not None:
        pt, oh = pt - rows[0], rows[1]  # the band's first input row is the padded input's row rows[0]
    n_h, n_w = -(-oh // m), -(-ow // m)
    n_p = max(tiles_padded or 0, n_h * n_w)
    n_h_image = -(-n_p // n_w)
    a_mat, b_mat, _ = transform_matrices(m, r)
    zero = tirx.const(0.0, "float32")

    image = te.compute(  # padded to whole tiles, channels last so transforms vectorize over channels
        (n_h_image * m + r - 1, n_w * m + r - 1, ci),
        lambda y, x, c: tirx.if_then_else(
            tirx.all(y >= pt, y < h + pt, x >= pl, x < w + pl), data[0, c, y - pt, x - pl], zero
        ),
        name="winograd_input",
        attrs={KIND: "winograd_input"},
    )

    # Each transform is separable (M^T X M): rows first, then columns, alpha terms at a time.
    def data_rows(e1, rb, p, c):
        return _select(
            e1,
            [
                _combine([(b_mat[ra, i], image[(p // n_w) * m + ra, (p % n_w) * m + rb, c]) for ra in range(alpha)])
                for i in range(alpha)
            ],
        )

    rows = te.compute((alpha, alpha, n_p, ci), data_rows, name="winograd_data_rows", attrs={KIND: "winograd_rows"})
    packed_data = te.compute(
        (alpha, alpha, n_p, ci),
        lambda e1, e2, p, c: _select(
            e2, [_combine([(b_mat[rb, j], rows[e1, rb, p, c]) for rb in range(alpha)]) for j in range(alpha)]
        ),
        name="winograd_data_pack",
        attrs={KIND: "winograd_data"},
    )
    rc = te.reduce_axis((0, ci), name="rc")
    # channels innermost, so the inverse transform reads whole vectors of output channels
    product = te.compute(
        (alpha, alpha, n_p, co),
        lambda e1, e2, p, o: te.sum(packed_data[e1, e2, p, rc] * packed_kernel[e1, e2, rc, o], axis=rc),
        name="winograd_bgemm",
    )
    inverse_rows = te.compute(
        (m, alpha, n_h * n_w, co),
        lambda vh, rb, p, o: _select(
            vh, [_combine([(a_mat[ra, i], product[ra, rb, p, o]) for ra in range(alpha)]) for i in range(m)]
        ),
        name="winograd_inverse_rows",
        attrs={KIND: "winograd_rows"},
    )
    tiles = te.compute(
        (co, n_h * n_w, m, m),
        lambda o, p, vh, vw: _select(
            vw, [_combine([(a_mat[rb, j], inverse_rows[vh, rb, p, o]) for rb in range(alpha)]) for j in range(m)]
        ),
        name="winograd_inverse",
        attrs={KIND: "winograd_inverse"},
    )
    return te.compute(
        (1, co, oh, ow),
        lambda b, o, y, x: tiles[o, (y // m) * n_w + x // m, y % m, x % m],
        name="conv2d_winograd",
        attrs={KIND: "winograd_output", "winograd_m": m},
    )


def legalize_conv2d(bb, call, direct=None, padded=None, lanes=None):
    """relax.nn.conv2d: Winograd where it applies, ``direct`` (default: TOPI's direct convolution) elsewhere.

    ``padded(tiles)`` gives the tile count the batched product should compute (None: the real count).
    ``lanes(co, tiles)`` gives the vector width the product's schedule picks, which a kernel blocked by output
    channels is made for (None: not blocked)."""
    from tvm.relax.transform.legalize_ops.nn import _nn_conv2d

    _nn_conv2d = direct or _nn_conv2d
    data_shape = [int(d) for d in call.args[0].ty.shape]
    weight_shape = [int(d) for d in call.args[1].ty.shape]
    if not eligible(data_shape, weight_shape, call.attrs, call.args[0].ty.dtype):
        return _nn_conv2d(bb, call)
    out_shape = [int(d) for d in call.ty.shape]
    m = tile_size(data_shape[1], weight_shape[0], out_shape[2], out_shape[3], r=weight_shape[2])
    if m is None:
        return _nn_conv2d(bb, call)
    padding = [int(p) for p in call.attrs.padding]
    bands = row_bands(data_shape[1], weight_shape[0], out_shape[2], out_shape[3], m, weight_shape[2])
    tiles = _band_tiles(bands[0], out_shape[3], m, padded)
    block = lanes(weight_shape[0], tiles) if lanes is not None and tiles <= BLOCKED_KERNEL_MAX_TILES else None
    packed = bb.emit(
        bb.call_te(lambda w: winograd_kernel(w, m, block), call.args[1], primfunc_name_hint="winograd_kernel")
    )
    parts = [_band(bb, call.args[0], packed, weight_shape[0], padding, m, rows, out_shape[3], padded) for rows in bands]
    if len(parts) == 1:
        return parts[0]
    return relax.op.concat([bb.emit(part) for part in parts], axis=2)


def _band(bb, data, packed, co: int, padding, m: int, rows: tuple[int, int], width: int, padded):
    """The call computing output rows rows[0] .. rows[0] + rows[1] - 1 (all ``width`` columns)."""
    tiles_padded = _band_tiles(rows, width, m, padded)
    return bb.call_te(
        lambda d, k: conv2d_winograd(d, k, co, padding, m, tiles_padded, rows),
        data,
        packed,
        primfunc_name_hint="conv2d",
    )


def _band_tiles(rows: tuple[int, int], width: int, m: int, padded) -> int:
    """The tiles a band's batched product computes: ``padded``'s count, or the real one (no ``padded``, or it says
    None)."""
    tiles = -(-rows[1] // m) * -(-width // m)
    return (padded(tiles) if padded is not None else None) or tiles


# The transformed input and the batched product of one call are working memory that TVM's workspace pool keeps for
# the process's life: EfficientAD-M's 256 -> 512 PDN convolution at 133x133 needed 224 MB of it, and the Edge Agent's
# peak RSS went from 0.80x to 1.20x ONNX Runtime's. Above this, the output rows are computed in bands, one call each.
WORKSPACE_BUDGET = 32 * 2**20


def row_bands(ci: int, co: int, oh: int, ow: int, m: int, r: int) -> list[tuple[int, int]]:
    """(first output row, rows) of each band, whole tiles each, so that a band's working memory fits the budget."""
    alpha, tile_rows, tiles_across = (m + r - 1) ** 2, -(-oh // m), -(-ow // m)
    workspace = 4 * alpha * tiles_across * tile_rows * (ci + co)
    count = min(tile_rows, -(-workspace // WORKSPACE_BUDGET))
    per_band = -(-tile_rows // count) * m
    return [(first, min(per_band, oh - first)) for first in range(0, oh, per_band)]


def kind(sch: s_tir.Schedule, block_rv) -> str | None:
    value = sch.get(block_rv).annotations.get(KIND)
    return str(value) if value is not None else None


def _lanes_dividing(extent: int, lanes: int) -> int:
    """The widest vector of at most ``lanes`` floats that divides ``extent`` (eligible() makes 8 always divide)."""
    while extent % lanes:
        lanes //= 2
    return lanes


def _vectorized_transform(sch, block_rv, vector: int, parallel: int, lanes: int) -> None:
    """Columns stage of a transform: tile loops unrolled (the constant matrix folds away), channels vectorized;
    its rows stage is computed per channel vector into a small local buffer."""
    loops = sch.get_loops(block_rv)
    lanes = _lanes_dividing(int(sch.get(loops[vector]).extent), lanes)
    outer, lane = sch.split(loops[vector], [None, lanes])
    sch.reorder(loops[parallel], outer, loops[0], loops[1], lane)
    sch.unroll(loops[0])
    sch.unroll(loops[1])
    sch.vectorize(lane)
    sch.parallel(loops[parallel])
    _rows_at(sch, block_rv, outer)


def _rows_at(sch, block_rv, loop) -> None:
    for producer in sch.get_producers(block_rv):
        if kind(sch, producer) != "winograd_rows":
            continue
        sch.compute_at(producer, loop, preserve_unit_loops=True)
        sch.set_scope(producer, 0, "local")
        inner = sch.get_loops(producer)[-4:]  # the tile loops, then the channel vector
        sch.unroll(inner[0])
        sch.unroll(inner[1])
        sch.vectorize(inner[3])


def schedule_block(sch: s_tir.Schedule, block_rv, name: str, lanes: int) -> bool:
    """Schedule one Winograd stage, ``lanes`` float32 wide where the channels allow; False for stages another step owns."""
    if name in ("winograd_data", "winograd_kernel"):  # loops e1, e2, p|c, c|o
        _vectorized_transform(sch, block_rv, vector=3, parallel=2, lanes=lanes)
    elif name == "winograd_output":
        _schedule_output(sch, block_rv, lanes)
    elif name == "winograd_rows":
        pass  # computed inside its consumer
    elif name == "winograd_input":
        # NCHW -> HWC: read along rows, write with a stride; gathering across channels instead hits one cache
        # set again and again when a channel plane is a power-of-two size
        y, x, c = sch.get_loops(block_rv)
        sch.reorder(y, c, x)
        sch.parallel(y)
    else:
        return False
    return True


# The inverse transform reads each tile's alpha^2 products, one from each (e1, e2) plane of the batched product, and
# planes of a power-of-two size (4096 tiles x 64 channels) all start in one cache set. Each plane is placed one
# cache line further along a 4 KB page than the last, so those reads spread over as many sets. Per-kernel profiles,
# 2 threads (AMD EPYC), unaligned then aligned, two each: FastFlow's kernels 65.8, 67.2 -> 55.4, 54.8 ms; DRAEM's
# (precise) 2208, 2197 -> 2119, 2180 ms; STFPM's within this machine's noise.
PRODUCT = "winograd_bgemm"
PLANE_ALIGN = 1024


def align_product(sch: s_tir.Schedule, block_rv) -> None:
    """Offset the (e1, e2) planes of the batched product's buffer, when ``block_rv`` writes it."""
    for index, region in enumerate(sch.get(block_rv).writes):
        if region.source.name == PRODUCT and region.source.scope() == "global":
            sch.storage_align(block_rv, index, 1, PLANE_ALIGN, ROW_PAD)


def _schedule_output(sch: s_tir.Schedule, block_rv, lanes: int) -> None:
    """Output tiles: the inverse transform inlined, unrolled per m x m tile, vectorized over output channels."""
    m = int(sch.get(block_rv).annotations["winograd_m"])
    n, o, y, x = sch.get_loops(block_rv)
    o_o, o_v = sch.split(o, [None, _lanes_dividing(int(sch.get(o).extent), lanes)])
    y_o, y_i = sch.split(y, [None, m])
    x_o, x_i = sch.split(x, [None, m])
    sch.reorder(n, o_o, y_o, x_o, y_i, x_i, o_v)
    sch.unroll(y_i)
    sch.unroll(x_i)
    sch.vectorize(o_v)
    sch.parallel(sch.fuse(n, o_o, y_o))
    _rows_at(sch, block_rv, x_o)
