"""The Relax pipeline compile uses: fused operators get real schedules, tuned or default.

Stock Relax on CPU legalizes operators to naive loop nests and schedules none of them.
Here every fused PrimFunc gets a schedule: the best tuning record from a MetaSchedule
database when one exists, otherwise the default decisions of the templates in
``compilers.schedules.templates`` (parallel, vectorized, register-tiled). GPU targets get
the stock dlight GPU rules so every PrimFunc has thread bindings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from compilers.schedules import pointwise, space_to_depth, winograd
from compilers.schedules.fused import schedule_function
from compilers.schedules.templates import DefaultDecisions, Machine
from targets.catalog import Target
from targets.cpu import vector_isa

GPU_KINDS = ("cuda", "nvptx", "rocm", "metal", "vulkan", "opencl")


def is_gpu(target: Target) -> bool:
    return target.tvm_target.get("kind") in GPU_KINDS


def num_cores(target: Target) -> int:
    """Threads the device runs: the target's num-cores, else this machine's CPU count."""
    import os

    host = target.tvm_target.get("host", target.tvm_target)
    return int(target.tvm_target.get("num-cores") or host.get("num-cores") or os.cpu_count() or 1)


def machine(target: Target):
    """What the CPU schedules are sized by: the target's cores and its vector ISA (AVX2, AVX-512, NEON)."""
    isa = vector_isa(target.tvm_target)
    return Machine(cores=num_cores(target), lanes=isa.lanes, accumulators=isa.accumulators)


def _conv2d_transpose_phases(bb, call):
    """conv2d_transpose as stride-phase convolutions: no multiplications by the zeros of a dilated input.

    The stock legalization dilates the input with zeros and runs a dense conv over it,
    which for stride 2 spends three of every four multiply-adds on zeros. Output row
    ``s*i + r`` only meets kernel rows ``kh = s*a + (r + pad) % s``, at input row
    ``i + (r + pad) // s - a``; computing out[n, co, i, r, j, q] that way touches only real taps,
    and the [..., i, r, j, q] order is already NCHW memory order. On CPU the weights come blocked by output channel
    from a step of their own that compile's prepacking runs once at build time (see _conv2d_direct).
    """
    import tvm
    from tvm import te, tirx
    from tvm.relax.transform.legalize_ops.nn import _nn_conv2d_transpose

    from compilers.schedules.templates import PREPACKED_LANES

    attrs = call.attrs
    data_shape = [int(d) for d in call.args[0].ty.shape]
    w_shape = [int(d) for d in call.args[1].ty.shape]
    out_shape = [int(d) for d in call.ty.shape]
    plain = (
        attrs.data_layout == "NCHW"
        and attrs.kernel_layout == "IOHW"
        and attrs.out_layout == "NCHW"
        and int(attrs.groups) == 1
        and all(int(d) == 1 for d in attrs.dilation)
    )
    if not plain or call.args[0].ty.dtype != "float32":
        return _nn_conv2d_transpose(bb, call)
    if space_to_depth.transpose_applies(data_shape, w_shape, attrs, call.args[0].ty.dtype):
        lanes = target_isa(tvm.target.Target.current()).lanes
        return space_to_depth.legalize_conv2d_transpose(bb, call, _legalize_conv2d, lanes)
    (sh, sw), (pt, pl) = [int(s) for s in attrs.strides], [int(p) for p in attrs.padding[:2]]
    n, ci, h, w = data_shape
    _, co, kh, kw = w_shape
    oh, ow = out_shape[2], out_shape[3]
    taps_h, taps_w = -(-kh // sh), -(-kw // sw)
    rows, cols = -(-oh // sh), -(-ow // sw)
    pad_h, pad_w = rows + (sh - 1 + pt) // sh + taps_h - 1, cols + (sw - 1 + pl) // sw + taps_w - 1
    lanes = _prepack_lanes(tvm.target.Target.current(), co, cols)

    def padded_weight(weight, c, o, y, x):
        if kh % sh == 0 and kw % sw == 0:
            return weight[c, o, y, x]
        return tirx.if_then_else(tirx.all(y < kh, x < kw), weight[c, o, y, x], tirx.const(0.0, "float32"))

    weight_arg = call.args[1]
    if lanes is not None:
        weight_arg = bb.emit(
            bb.call_te(
                lambda w: te.compute(
                    (co // lanes, ci, taps_h * sh, taps_w * sw, lanes),
                    lambda b, c, y, x, v: padded_weight(w, c, b * lanes + v, y, x),
                    name="weight_blocks",
                ),
                weight_arg,
                primfunc_name_hint="conv2d_transpose_weight_blocks",
            )
        )

    def compute(data, weight):
        if (pad_h, pad_w, taps_h, taps_w) == (h, w, 1, 1):
            data_pad = data  # one tap per phase and no border (a 2x2 / 2 decoder step): the phases read the input
        else:
            data_pad = te.compute(
                (n, ci, pad_h, pad_w),
                lambda b, c, y, x: tirx.if_then_else(
                    tirx.all(y >= taps_h - 1, y < h + taps_h - 1, x >= taps_w - 1, x < w + taps_w - 1),
                    data[b, c, y - (taps_h - 1), x - (taps_w - 1)],
                    tirx.const(0.0, "float32"),
                ),
                name="data_pad",
            )
        if lanes is not None:
            weight = te.compute(
                (ci, co, taps_h * sh, taps_w * sw),
                lambda c, o, y, x: weight[o // lanes, c, y, x, o % lanes],
                name="weight_unblocked",
                attrs={PREPACKED_LANES: lanes},
            )
        elif kh % sh or kw % sw:
            weight = te.compute(
                (ci, co, taps_h * sh, taps_w * sw),
                lambda c, o, y, x: tirx.if_then_else(
                    tirx.all(y < kh, x < kw), weight[c, o, y, x], tirx.const(0.0, "float32")
                ),
                name="weight_pad",
            )
        rc = te.reduce_axis((0, ci), name="rc")
        ra = te.reduce_axis((0, taps_h), name="ra")
        rb = te.reduce_axis((0, taps_w), name="rb")
        phases = te.compute(
            (n, co, rows, sh, cols, sw),
            lambda b, o, i, r, j, q: te.sum(
                data_pad[b, rc, i + (r + pt) // sh - ra + taps_h - 1, j + (q + pl) // sw - rb + taps_w - 1]
                * weight[rc, o, sh * ra + (r + pt) % sh, sw * rb + (q + pl) % sw],
                axis=[rc, ra, rb],
            ),
            name="conv2d_transpose_phases",
        )
        return te.compute(
            (n, co, oh, ow), lambda b, o, y, x: phases[b, o, y // sh, y % sh, x // sw, x % sw], name="T_phases_nchw"
        )

    return bb.call_te(compute, call.args[0], weight_arg, primfunc_name_hint="conv2d_transpose")


_MAX_PAD_WASTE = 0.08  # extra columns computed, as a share of the real ones
_MIN_PADDED_REDUCTION = 256  # multiply-adds per output below which a direct convolution keeps its own width


def _tile_accumulators(extent: int, accumulators: int) -> int:
    """The most accumulators a register tile of whole columns (dividing ``extent``) times 1 or 2 vectors holds."""
    return max(
        v * max(d for d in range(1, min(extent, 32) + 1) if extent % d == 0 and d * v <= accumulators) for v in (1, 2)
    )


def padded_extent(extent: int, accumulators: int) -> int | None:
    """The column count a contraction computes so that a full register tile divides it; None: keep ``extent``.

    EfficientAD's PDN convolutions are 259, 133 and 67 columns wide (7 x 37, 7 x 19, a prime) and the Winograd
    product of the 67-wide one has 289 tiles (17 x 17): without padding their register tiles hold 7, 7, 1 and 1
    columns, and no tuning decision can do better. The extra columns read zeros and are cropped.
    """
    have = _tile_accumulators(extent, accumulators)
    if extent < 24 or have >= min(accumulators - 4, 12):
        return None
    best = max(
        range(extent, int(extent * (1 + _MAX_PAD_WASTE)) + 1), key=lambda w: (_tile_accumulators(w, accumulators), -w)
    )
    return best if _tile_accumulators(best, accumulators) > have else None


def target_isa(tvm_target):
    """The vector ISA of a tvm.target.Target (AVX2 when legalizing outside any target)."""
    return vector_isa(dict(tvm_target.export()) if tvm_target is not None else {"mcpu": "core-avx2"})


def target_accumulators(tvm_target) -> int:
    """Register-tile accumulators of a tvm.target.Target (AVX2's when legalizing outside any target)."""
    return target_isa(tvm_target).accumulators


def _conv2d_direct(bb, call):
    """conv2d by a direct NCHW convolution, over extra zero columns when the width has no good register tile, and on
    CPU with its weights blocked by output channel ([O / L, I, KH, KW, L], the layout the template's vector loads
    stream through) in a step of their own, which compile's prepacking runs once at build time instead of the
    template repacking them on every call (GANomaly's 134 MB 1024 -> 2048 4x4 convolution spent 2/3 of its time so).

    The extra output columns read only zero padding and are cropped in the same function.
    """
    import tvm
    from tvm import te, topi
    from tvm.relax.transform.legalize_ops.nn import _nn_conv2d

    from compilers.schedules.templates import PREPACKED_LANES

    attrs = call.attrs
    out_shape = [int(d) for d in call.ty.shape]
    plain = (
        attrs.data_layout == "NCHW"
        and attrs.kernel_layout == "OIHW"
        and attrs.out_layout == "NCHW"
        and int(attrs.groups) == 1
        and call.args[0].ty.dtype == "float32"
    )
    co, ci, kh, kw = [int(d) for d in call.args[1].ty.shape]
    current = tvm.target.Target.current()
    # With a short reduction (an RGB stem), writing the output costs as much as computing it: a crop pass would not pay.
    long_reduction = ci * kh * kw >= _MIN_PADDED_REDUCTION
    padded = padded_extent(out_shape[3], target_accumulators(current)) if plain and long_reduction else None
    lanes = _prepack_lanes(current, co, padded or out_shape[3]) if plain else None
    if padded is None and lanes is None:
        return _nn_conv2d(bb, call)
    weight = call.args[1]
    if lanes is not None:
        weight = bb.emit(
            bb.call_te(
                lambda w: te.compute(
                    (co // lanes, ci, kh, kw, lanes),
                    lambda b, i, y, x, v: w[b * lanes + v, i, y, x],
                    name="weight_blocks",
                ),
                weight,
                primfunc_name_hint="conv2d_weight_blocks",
            )
        )
    strides = [int(s) for s in attrs.strides]
    dilation = [int(d) for d in attrs.dilation]
    pt, pl, pb, pr = [int(p) for p in attrs.padding]
    extra = (padded or out_shape[3]) - out_shape[3]

    def compute(data, weight):
        if lanes is not None:
            weight = te.compute(
                (co, ci, kh, kw),
                lambda o, i, y, x: weight[o // lanes, i, y, x, o % lanes],
                name="weight_unblocked",
                attrs={PREPACKED_LANES: lanes},
            )
        data_pad = topi.nn.pad(data, [0, 0, pt, pl], [0, 0, pb, pr + extra * strides[1]], name="pad_temp")
        wide = topi.nn.conv2d_nchw(data_pad, weight, strides, 0, dilation)
        if not extra:
            return wide
        return te.compute(out_shape, lambda n, c, y, x: wide[n, c, y, x], name="conv2d_crop")

    return bb.call_te(compute, call.args[0], weight, primfunc_name_hint="conv2d")


def _prepack_lanes(tvm_target, channels: int, columns: int) -> int | None:
    """The vector width the contraction template picks for a convolution with this many output channels and columns
    (templates.default_lanes), which its build-time weight blocks are made for; None off the CPU or when the
    channels do not fill vectors (the template then vectorizes otherwise)."""
    from compilers.schedules.templates import default_lanes

    if tvm_target is None or tvm_target.kind.name != "llvm":
        return None
    isa = vector_isa(dict(tvm_target.export()))
    if channels % isa.lanes:
        return None
    options = [v for v in (isa.lanes, 2 * isa.lanes, 4 * isa.lanes) if channels % v == 0]
    return default_lanes(options, columns, Machine(cores=1, lanes=isa.lanes, accumulators=isa.accumulators))


def _legalize_conv2d(bb, call):
    import tvm

    data_shape = [int(d) for d in call.args[0].ty.shape]
    weight_shape = [int(d) for d in call.args[1].ty.shape]
    out_shape = [int(d) for d in call.ty.shape]
    if space_to_depth.applies(data_shape, weight_shape, call.attrs, call.args[0].ty.dtype, out_shape):
        return space_to_depth.legalize_conv2d(bb, call, _legalize_conv2d)
    current = tvm.target.Target.current()
    isa = target_isa(current)
    if pointwise.strided_applies(data_shape, weight_shape, call.attrs, call.args[0].ty.dtype, out_shape, isa.lanes):
        return pointwise.legalize_strided(bb, call, _legalize_conv2d)
    return winograd.legalize_conv2d(
        bb,
        call,
        direct=_conv2d_direct,
        padded=lambda n: padded_extent(n, isa.accumulators),
        lanes=lambda co, tiles: _prepack_lanes(current, co, tiles),
    )


# Padding copies the right operand once per call; a product with few rows reads that operand about once anyway (PaDiM's
# per-patch matrix-vector products: 4096 x 100 x 100, 160 MB), so the copy would double its time instead of saving it.
_MIN_PADDED_MATMUL_ROWS = 16


def _legalize_matmul(bb, call):
    """relax.matmul over extra zero columns when its output rows do not fill whole vectors, cropped in the same function.

    The contraction template vectorizes along the output's last axis and has no vector loop for a remainder: a ViT's
    attention scores (261 tokens = 9 x 29) ran as scalars, 4 GFLOP/s, 45% of the model's time. The right operand is
    padded with zero columns in a pass of its own (a few hundred KB), so its loads stay whole vectors."""
    import tvm
    from tvm import te, topi
    from tvm.relax.transform.legalize_ops.linear_algebra import _matmul

    a_ty, b_ty = call.args[0].ty, call.args[1].ty
    shapes = [getattr(t, "shape", None) for t in (a_ty, b_ty, call.ty)]
    if any(s is None or not all(isinstance(d, tvm.tirx.IntImm) for d in s) for s in shapes):
        return _matmul(bb, call)
    a_shape, b_shape, out_shape = [[int(d) for d in s] for s in shapes]
    lanes = target_isa(tvm.target.Target.current()).lanes
    columns, depth = out_shape[-1], a_shape[-1]
    if (
        a_ty.dtype != "float32"
        or b_ty.dtype != "float32"
        or len(a_shape) < 2
        or len(b_shape) < 2
        or columns % lanes == 0
        or columns < 2 * lanes
        or depth < lanes
        or out_shape[-2] < _MIN_PADDED_MATMUL_ROWS
    ):
        return _matmul(bb, call)
    padded = -(-columns // lanes) * lanes

    def compute(a, b):
        b_pad = topi.nn.pad(b, [0] * len(b_shape), [0] * (len(b_shape) - 1) + [padded - columns], name="matmul_pad")
        k = te.reduce_axis((0, depth), name="k")
        batch = len(out_shape) - 2

        def operand_index(shape, idx, last_two):
            lead = len(shape) - 2  # right-aligned broadcasting of the batch axes, as numpy's matmul
            return [0 if shape[d] == 1 else idx[batch - lead + d] for d in range(lead)] + last_two

        wide = te.compute(
            out_shape[:-1] + [padded],
            lambda *idx: te.sum(
                a[tuple(operand_index(a_shape, idx, [idx[-2], k]))]
                * b_pad[tuple(operand_index(b_shape, idx, [k, idx[-1]]))],
                axis=k,
            ),
            name="matmul_wide",
        )
        return te.compute(out_shape, lambda *idx: wide[idx], name="matmul_crop")

    return bb.call_te(compute, call.args[0], call.args[1], primfunc_name_hint="matmul")


def _relax_function_pass(mutator_class, name: str):
    """A module pass that rewrites every Relax function of the module with ``mutator_class`` (a PyExprMutator)."""
    import tvm
    from tvm import relax

    @tvm.transform.module_pass(opt_level=0, name=name)
    def _pass(mod, _ctx):
        mutator_ = mutator_class(mod)
        for gvar, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                mutator_.builder_.update_func(gvar, mutator_.visit_expr(func))
        return mutator_.builder_.get()

    return _pass


def powers_as_products():
    """A Relax pass: ``power(x, c)`` with a constant scalar c of 2 or 3 becomes products of x, 0.5 a square root, 1 x.

    Otherwise each element calls libm's powf, scalar: STFPM's anomaly map (0.5 * ||t - s||^2 per layer, upsampled)
    spent 4.6 ms of 56 so, and FastFlow's squared flow outputs 3.3 ms of 62. x * x is what powf(x, 2) rounds to."""
    import tvm
    import tvm_ffi
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class _Powers(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.power"):
                return call
            x, exponent = call.args
            if not isinstance(exponent, tvm.ir.Constant) or not str(exponent.value.dtype).startswith("float"):
                return call
            value = exponent.value.numpy()
            if value.size != 1 or not tvm_ffi.structural_equal(call.ty, x.ty):
                return call  # an exponent that broadcasts x to another shape or dtype
            value = float(value.ravel()[0])
            if value == 1.0:
                return x
            if value == 0.5:
                return relax.op.sqrt(x)
            if value == 2.0:
                return relax.op.multiply(x, x)
            if value == 3.0:
                return relax.op.multiply(self.builder_.emit(relax.op.multiply(x, x)), x)
            return call

    return _relax_function_pass(_Powers, "PowersAsProducts")


SELECTION_TOPK_MAX_K = 16  # top-k by repeated selection up to this k; k passes over the row cost less than a sort


def topk_by_selection():
    """A Relax pass: ``topk`` with a small k becomes k rounds of argmin/argmax, each masking the element it took.

    On CPU, TVM sorts through ``tvm.contrib.sort``, packed functions of the full compiler library: the Edge Agent loads
    models with TVM's runtime alone, where they do not exist, and PatchCore failed to load ("Cannot find function
    tvm.contrib.sort.topk"). PatchCore takes the 1 and 9 nearest of 16384 memory-bank rows: k scans of a row are
    cheaper than sorting it anyway. Ties go to the lower index, as argmin and ORT's TopK do."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class _Selection(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.topk"):
                return call
            data, attrs = call.args[0], call.attrs
            k, shape = int(attrs.k), getattr(data.ty, "shape", None)
            if k > SELECTION_TOPK_MAX_K or shape is None or data.ty.dtype not in ("float32", "float16"):
                return call
            axis = int(attrs.axis) % len(shape)
            largest, index_dtype = bool(attrs.largest), str(attrs.dtype)
            pick = relax.op.argmax if largest else relax.op.argmin
            taken = relax.const(float("-inf") if largest else float("inf"), data.ty.dtype)
            remaining, values, indices = data, [], []
            for _ in range(k):
                index = self.builder_.emit(pick(remaining, axis=axis, keepdims=True))
                values.append(self.builder_.emit(relax.op.gather_elements(remaining, index, axis=axis)))
                indices.append(self.builder_.emit(relax.op.astype(index, index_dtype)))
                updates = self.builder_.emit(relax.op.broadcast_to(taken, index.ty.shape))
                remaining = self.builder_.emit(relax.op.scatter_elements(remaining, index, updates, axis=axis))
            value = relax.op.concat(values, axis=axis) if k > 1 else values[0]
            index = relax.op.concat(indices, axis=axis) if k > 1 else indices[0]
            ret_type = str(attrs.ret_type)
            if ret_type == "values":
                return value
            if ret_type == "indices":
                return index
            return relax.Tuple([self.builder_.emit(value), self.builder_.emit(index)])

    return _relax_function_pass(_Selection, "TopkBySelection")


def legalize(mod, tvm_target):
    """Relax operators to TIR, with our own lowerings for convolutions (Winograd, stride phases).

    exp, tanh, erf and softmax become TOPI's polynomial versions (FastMathTransform): LLVM has no vector exp, so
    a vectorized ``exp`` is eight libm calls, and FastFlow's affine couplings (tanh, exp over every feature) took 27%
    of its time at 0.4 GFLOP/s. The polynomials are within a few float32 ulps of libm over the clamped range."""
    import tvm
    from tvm import relax

    with tvm_target:
        return tvm.transform.Sequential(
            [
                relax.transform.DecomposeOpsForInference(),
                relax.transform.CanonicalizeBindings(),
                relax.transform.FastMathTransform(),
                powers_as_products(),
                topk_by_selection(),
                relax.backend.DispatchSampling(),
                relax.backend.DispatchSortScan(),
                relax.transform.LegalizeOps(
                    customize_legalize_map={
                        "relax.nn.conv2d_transpose": _conv2d_transpose_phases,
                        "relax.nn.conv2d": _legalize_conv2d,
                        "relax.matmul": _legalize_matmul,
                    }
                ),
            ]
        )(mod)


def fuse_operators(mod, tvm_target):
    """Legalize and fuse: the IRModule whose PrimFuncs are the tuning tasks and the units we schedule."""
    import tvm
    from tvm import relax

    mod = legalize(mod, tvm_target)
    with tvm_target:
        return tvm.transform.Sequential(
            [
                relax.transform.AnnotateTIROpPattern(),
                relax.transform.FoldConstant(),
                relax.transform.FuseOps(),
                relax.transform.FuseTIR(),
            ]
        )(mod)


def private_copy(mod):
    """A deep copy of ``mod``. A TVM schedule rewrites in place the statements only its module holds, and a function
    made by ``with_attr`` shares its statements with the original: scheduling it changed the original function too
    (the module a build compiled, and the workload every later tuning candidate was scheduled from)."""
    import tvm

    return tvm.ir.load_json(tvm.ir.save_json(mod))


def workload(func):
    """The IRModule MetaSchedule keys a PrimFunc by, the same at tuning and at build time; a copy of its own, so a
    schedule of it leaves ``func`` as it was."""
    import tvm

    return private_copy(
        tvm.IRModule({"main": func.with_attr("global_symbol", "main").without_attr("tirx.is_scheduled")})
    )


def default_schedule(func, target: Target):
    """Schedule one PrimFunc with the templates' default decisions; None when no block was recognised."""
    from tvm import s_tir

    sch = s_tir.Schedule(workload(func))
    if not schedule_function(sch, DefaultDecisions(), machine(target)):
        return None
    return sch


def _lower_passes():
    from tvm import relax

    return [
        relax.transform.RewriteDataflowReshape(),
        relax.transform.ToNonDataflow(),
        relax.transform.RemovePurityChecking(),
        relax.transform.CallTIRRewrite(),
        relax.transform.StaticPlanBlockMemory(),
        relax.transform.LowerAllocTensor(),
        relax.transform.KillAfterLastUse(),
        relax.transform.LowerRuntimeBuiltin(),
        relax.transform.ComputePrimValue(),
        relax.transform.VMShapeLower(),
        relax.transform.AttachGlobalSymbol(),
    ]


@dataclass
class CpuPipeline:
    """A relax_pipeline for tvm.compile that records what it did (read it after the build)."""

    target: Target
    database: object = None  # tvm.s_tir.meta_schedule.Database
    records_applied: int = 0
    default_scheduled: int = 0
    unscheduled: list[str] = field(default_factory=list)

    def __call__(self, mod):
        import tvm

        tvm_target = tvm.target.Target(self.target.tvm_target)
        mod = fuse_operators(mod, tvm_target)
        self.records_applied = self.default_scheduled = 0
        self.unscheduled = []
        for gvar, func in list(mod.functions_items()):
            if not isinstance(func, tvm.tirx.PrimFunc) or func.attrs.get("tirx.is_scheduled", False):
                continue
            sch = None
            if self.database is not None:
                sch = self.database.query_schedule(workload(func), tvm_target, workload_name="main")
                if sch is not None:
                    self.records_applied += 1
            if sch is None:
                sch = default_schedule(func, self.target)
                if sch is not None:
                    self.default_scheduled += 1
            if sch is None:
                self.unscheduled.append(gvar.name_hint)
                continue
            scheduled = sch.mod["main"].with_attr("tirx.is_scheduled", True)
            mod[gvar] = (
                scheduled.with_attr("global_symbol", func.attrs["global_symbol"])
                if "global_symbol" in func.attrs
                else scheduled.without_attr("global_symbol")
            )
        with tvm_target:
            return tvm.transform.Sequential(_lower_passes())(mod)


def gpu_pipeline(target: Target):
    """The stock GPU pipeline: dlight default rules give every PrimFunc thread bindings."""
    import tvm
    from tvm import relax
    from tvm.s_tir import dlight as dl

    from compilers.gpu import int32_take_indices, narrow_indices_to_int32

    tvm_target = tvm.target.Target(target.tvm_target)

    @tvm.transform.module_pass(opt_level=0, name="PackagerGpuPipeline")
    def _pipeline(mod, _ctx):
        with tvm_target:
            return tvm.transform.Sequential(
                [
                    relax.transform.DecomposeOpsForInference(),
                    relax.backend.DispatchSampling(),
                    relax.backend.DispatchSortScan(),
                    int32_take_indices(),
                    relax.transform.LegalizeOps(),
                    relax.transform.AnnotateTIROpPattern(),
                    relax.transform.FoldConstant(),
                    relax.transform.FuseOps(),
                    relax.transform.FuseTIR(),
                    dl.ApplyDefaultSchedule(
                        dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback()
                    ),
                    narrow_indices_to_int32(),
                    *_lower_passes(),
                ]
            )(mod)

    return _pipeline


def relax_pipeline(target: Target, database=None):
    """What compile passes as tvm.compile(..., relax_pipeline=...).

    CPU: a ``CpuPipeline`` (tuned records from ``database`` where present, default templates elsewhere).
    GPU: the dlight GPU pipeline; ``database`` is not used there yet.
    """
    if is_gpu(target):
        return gpu_pipeline(target)
    return CpuPipeline(target, database)
