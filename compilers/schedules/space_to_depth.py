"""Stride-2 convolutions and transposed convolutions as stride-1 ones over four phases, so that Winograd applies.

A k x k stride-2 convolution (k even) reads input row 2y + i for output row y. Splitting the padded input into its
four phases (even/odd rows x even/odd columns) stacked as 4 ci channels, and each kernel the same way into
k/2 x k/2 taps per phase, gives a stride-1 convolution with the same output:
out[o, y, x] = sum over phase (a, b), c, i, j of w[o, c, 2i + a, 2j + b] * x[c, 2(y + i) + a, 2(x + j) + b].
GANomaly's 4x4 / 2 encoder becomes 2x2 stride-1 convolutions over 4 ci channels, which F(4x4, 2x2) computes with
25 products per 16 outputs instead of 64. The phase split is one pass over the input; the kernel's is made at
build time, with the Winograd kernel after it.

A 4x4 / 2 transposed convolution (GANomaly's decoder) is the other way round: each of its four output phases is a
2x2 stride-1 convolution of the input, and one pass interleaves them. A 2x2 / 2 one (Reverse Distillation's decoder)
has 1x1 phases: GEMMs.
"""

from __future__ import annotations

from compilers.schedules import winograd


def phase_shapes(data_shape, weight_shape, padding):
    """(data, weight) shapes of the stride-1 convolution: ((1, 4 ci, hp, wp), (co, 4 ci, k/2, k/2)).

    A padded height or width that is odd drops its last row or column, which no output of an even kernel reads."""
    _, ci, h, w = data_shape
    co, _, k, _ = weight_shape
    pt, pl, pb, pr = padding
    kp = k // 2
    oh, ow = (h + pt + pb - k) // 2 + 1, (w + pl + pr - k) // 2 + 1
    return (1, 4 * ci, oh + kp - 1, ow + kp - 1), (co, 4 * ci, kp, kp)


def applies(data_shape, weight_shape, attrs, dtype: str, out_shape) -> bool:
    """A stride-2 square convolution whose stride-1 form Winograd computes with fewer products."""
    if not (winograd.plain_nchw(attrs) and all(int(s) == 2 for s in attrs.strides) and weight_shape[2] % 2 == 0):
        return False  # an odd kernel would pay for the zero taps its phases add; not measured to win
    phased_data, phased_weight = phase_shapes(data_shape, weight_shape, [int(p) for p in attrs.padding])
    return winograd.shapes_eligible(phased_data, phased_weight, dtype) and (
        winograd.tile_size(phased_data[1], phased_weight[0], out_shape[2], out_shape[3], r=phased_weight[2]) is not None
    )


def phase_data(data, padding, shape):
    """The padded input's four phases as channels: [0, (2a + b) ci + c, y, x] = padded[0, c, 2y + a, 2x + b]."""
    from tvm import te, tirx

    ci, h, w = [int(d) for d in data.shape[1:]]
    pt, pl = padding[0], padding[1]
    zero = tirx.const(0.0, data.dtype)

    def value(n, p, y, x):
        phase, c = p // ci, p % ci
        row, col = 2 * y + phase // 2 - pt, 2 * x + phase % 2 - pl
        return tirx.if_then_else(tirx.all(row >= 0, row < h, col >= 0, col < w), data[n, c, row, col], zero)

    return te.compute(shape, value, name="phase_data")


def phase_weight(weight, shape):
    """The kernel split the same way: [o, (2a + b) ci + c, i, j] = w[o, c, 2i + a, 2j + b]."""
    from tvm import te

    ci = int(weight.shape[1])

    def value(o, p, i, j):
        phase, c = p // ci, p % ci
        return weight[o, c, 2 * i + phase // 2, 2 * j + phase % 2]

    return te.compute(shape, value, name="phase_weight")


def legalize_conv2d(bb, call, legalize_stride_one):
    """relax.nn.conv2d (stride 2) as ``legalize_stride_one`` of its stride-1 form over the phases."""
    from tvm import relax

    data_shape = [int(d) for d in call.args[0].ty.shape]
    weight_shape = [int(d) for d in call.args[1].ty.shape]
    padding = [int(p) for p in call.attrs.padding]
    data_phases, weight_phases = phase_shapes(data_shape, weight_shape, padding)
    data = bb.emit(
        bb.call_te(lambda d: phase_data(d, padding, data_phases), call.args[0], primfunc_name_hint="phase_data")
    )
    weight = bb.emit(
        bb.call_te(lambda w: phase_weight(w, weight_phases), call.args[1], primfunc_name_hint="phase_weight")
    )
    stride_one = bb.normalize(
        relax.op.nn.conv2d(
            data,
            weight,
            strides=(1, 1),
            padding=(0, 0, 0, 0),
            dilation=(1, 1),
            groups=1,
            data_layout=call.attrs.data_layout,
            kernel_layout=call.attrs.kernel_layout,
            out_layout=call.attrs.out_layout,
            out_dtype=call.attrs.out_dtype,
        )
    )
    return legalize_stride_one(bb, stride_one)


def transpose_phase_padding(pad: int, phase: int, taps: int) -> tuple[int, int]:
    """(before, after) padding of the input for output phase ``phase`` of a 2 taps x 2 transposed convolution with
    padding ``pad``: output row 2u + phase meets input rows u + (phase + pad) // 2 - a at kernel row
    2a + (phase + pad) % 2, a ``taps``-tap correlation over the input padded by taps - 1 - (phase + pad) // 2 before."""
    before = taps - 1 - (phase + pad) // 2
    return before, 2 * taps - 2 - pad - before


def transpose_applies(data_shape, weight_shape, attrs, dtype: str) -> bool:
    """A 4x4 / 2 transposed convolution (GANomaly's and DCGAN's decoders) whose four output phases, each a 2x2
    stride-1 convolution of the input, Winograd computes with fewer products; or a 2x2 / 2 one without padding
    (Reverse Distillation's decoder), whose phases are 1x1 convolutions."""
    _, ci, h, w = data_shape
    _, co, kh, kw = weight_shape
    if not (
        attrs.data_layout == "NCHW"
        and attrs.kernel_layout == "IOHW"
        and attrs.out_layout == "NCHW"
        and int(attrs.groups) == 1
        and all(int(d) == 1 for d in attrs.dilation)
        and all(int(s) == 2 for s in attrs.strides)
        and all(int(p) == 0 for p in attrs.output_padding)
        and kh == kw
        and kh in (2, 4)
        and len({int(p) for p in attrs.padding}) == 1
        and int(attrs.padding[0]) <= kh // 2
    ):
        return False
    pad = int(attrs.padding[0])
    if kh == 2:
        return pad == 0
    rows, cols = h + 1 - pad, w + 1 - pad  # each phase's output: the transposed output is 2 h + 2 - 2 pad
    return winograd.shapes_eligible((1, ci, rows + 1, cols + 1), (co, ci, 2, 2), dtype) and (
        winograd.tile_size(ci, co, rows, cols, r=2) is not None
    )


def transpose_phase_weight(weight, row_phase: int, col_phase: int, pad: int):
    """Output phase (row_phase, col_phase)'s k/2 x k/2 correlation kernel, OIHW, from the IOHW k x k transposed
    kernel."""
    from tvm import te

    ci, co, k = int(weight.shape[0]), int(weight.shape[1]), int(weight.shape[2])
    taps = k // 2
    row, col = (row_phase + pad) % 2, (col_phase + pad) % 2
    return te.compute(
        (co, ci, taps, taps),
        lambda o, c, t, s: weight[c, o, 2 * (taps - 1 - t) + row, 2 * (taps - 1 - s) + col],
        name="transpose_phase_weight",
    )


def interleave_phases(phases, out_shape):
    """The transposed output from its four phases: [n, c, 2u + r, 2v + q] = phases[2 r + q][n, c, u, v]."""
    from tvm import te, tirx

    def value(n, c, y, x):
        parts = [phase[n, c, y // 2, x // 2] for phase in phases]
        row, col = y % 2, x % 2
        return tirx.Select(
            row == 0, tirx.Select(col == 0, parts[0], parts[1]), tirx.Select(col == 0, parts[2], parts[3])
        )

    return te.compute(out_shape, value, name="interleave_phases")


def legalize_conv2d_transpose(bb, call, legalize_conv2d, lanes: int):
    """relax.nn.conv2d_transpose (4x4 or 2x2 / 2) as ``legalize_conv2d`` of its four phase convolutions, interleaved.

    2x2 phases over rows of whole vector pairs (``lanes`` floats per vector) are one 1x1 convolution to all four
    phases' channels: one GEMM, which pointwise.py runs along the rows. On 8-pixel rows, four convolutions ran in
    1.2x ORT's time against 1.5x for the one (1024 -> 512 from 8x8, op_speed deconv_2x2_s2_512)."""
    from tvm import relax

    pad = int(call.attrs.padding[0])
    taps = int(call.args[1].ty.shape[2]) // 2
    out_shape = [int(d) for d in call.ty.shape]
    if taps == 1 and int(call.args[0].ty.shape[3]) % (2 * lanes) == 0:
        return _legalize_pointwise_transpose(bb, call, legalize_conv2d, out_shape)
    phases = []
    for row_phase in (0, 1):
        for col_phase in (0, 1):
            weight = bb.emit(
                bb.call_te(
                    lambda w, r=row_phase, q=col_phase: transpose_phase_weight(w, r, q, pad),
                    call.args[1],
                    primfunc_name_hint="transpose_phase_weight",
                )
            )
            top, bottom = transpose_phase_padding(pad, row_phase, taps)
            left, right = transpose_phase_padding(pad, col_phase, taps)
            conv = bb.normalize(
                relax.op.nn.conv2d(
                    call.args[0],
                    weight,
                    strides=(1, 1),
                    padding=(top, left, bottom, right),
                    out_dtype=call.attrs.out_dtype,
                )
            )
            phases.append(bb.emit(legalize_conv2d(bb, conv)))
    return bb.call_te(
        lambda *parts: interleave_phases(parts, out_shape), *phases, primfunc_name_hint="interleave_phases"
    )


def _legalize_pointwise_transpose(bb, call, legalize_conv2d, out_shape):
    """A 2x2 / 2 transposed convolution without padding as one 1x1 convolution to 4 co channels (phase-major), whose
    output one pass interleaves: a single GEMM reads the input once for all four phases."""
    from tvm import relax, te

    ci, co = int(call.args[1].ty.shape[0]), int(call.args[1].ty.shape[1])
    weight = bb.emit(
        bb.call_te(
            lambda w: te.compute(
                (4 * co, ci, 1, 1),
                lambda o, c, t, s: w[c, o % co, o // co // 2, o // co % 2],
                name="transpose_phase_weight",
            ),
            call.args[1],
            primfunc_name_hint="transpose_phase_weight",
        )
    )
    conv = bb.normalize(relax.op.nn.conv2d(call.args[0], weight, out_dtype=call.attrs.out_dtype))
    phases = bb.emit(legalize_conv2d(bb, conv))
    return bb.call_te(
        lambda p: te.compute(
            out_shape,
            lambda n, c, y, x: p[n, (2 * (y % 2) + x % 2) * co + c, y // 2, x // 2],
            name="interleave_phases",
        ),
        phases,
        primfunc_name_hint="interleave_phases",
    )
