"""Stride-2 convolutions as stride-1 ones over the input's four phases (space to depth), so that Winograd applies.

A k x k stride-2 convolution reads input row 2y + i for output row y. Splitting the padded input into its four
phases (even/odd rows x even/odd columns) stacked as 4 ci channels, and each kernel the same way into
ceil(k/2) x ceil(k/2) taps per phase (zeros where an odd k runs out), gives a stride-1 convolution with the same
output: out[o, y, x] = sum over phase (a, b), c, i, j of w[o, c, 2i + a, 2j + b] * x[c, 2(y + i) + a, 2(x + j) + b].
GANomaly's 4x4 / 2 encoder becomes 2x2 stride-1 convolutions over 4 ci channels, which F(4x4, 2x2) computes with
25 products per 16 outputs instead of 64. The phase split is one pass over the input; the kernel's is made at
build time, with the Winograd kernel after it.
"""

from __future__ import annotations

from compilers.schedules import winograd


def phase_shapes(data_shape, weight_shape, padding):
    """(data, weight) shapes of the stride-1 convolution: ((1, 4 ci, hp, wp), (co, 4 ci, kp, kp)).

    A padded height or width that is odd drops its last row or column: with an even kernel no output reads it, and
    with an odd one the zero tap added for the phase split is the only one that would."""
    _, ci, h, w = data_shape
    co, _, k, _ = weight_shape
    pt, pl, pb, pr = padding
    kp = -(-k // 2)
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
    """The kernel split the same way: [o, (2a + b) ci + c, i, j] = w[o, c, 2i + a, 2j + b] (0 past an odd k)."""
    from tvm import te, tirx

    ci, k = int(weight.shape[1]), int(weight.shape[2])
    zero = tirx.const(0.0, weight.dtype)

    def value(o, p, i, j):
        phase, c = p // ci, p % ci
        row, col = 2 * i + phase // 2, 2 * j + phase % 2
        return tirx.if_then_else(tirx.all(row < k, col < k), weight[o, c, row, col], zero)

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
