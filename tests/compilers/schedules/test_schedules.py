"""Default CPU schedules: every fused operator gets a parallel, vectorized schedule, and results match ONNX Runtime."""

import re

import numpy as np
import pytest

from compilers.schedules.pipeline import CpuPipeline, relax_pipeline
from targets import get_target, host_target
from targets.catalog import CompilerOptions
from targets.cpu import host_cpu, vector_isa

RTOL, ATOL = 1e-3, 1e-4


def onnx_model(nodes, inputs, outputs, initializers):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        initializer=[numpy_helper.from_array(v, k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def to_relax(model):
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    mod, params = relax.frontend.detach_params(from_onnx(model, keep_params_in_input=True))
    return mod, [p.numpy() for p in params.get("main", [])]


def compile_and_compare(model, pipeline):
    """Compile with ``pipeline``, run on random input, and compare every output with ONNX Runtime."""
    import onnxruntime as ort
    import tvm
    from tvm import relax

    mod, params = to_relax(model)
    executable = tvm.compile(mod, target=tvm.target.Target(pipeline.target.tvm_target), relax_pipeline=pipeline)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    vm = relax.VirtualMachine(executable, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x), *[tvm.runtime.tensor(p) for p in params])
    outs = [out] if isinstance(out, tvm.runtime.Tensor) else list(out)
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {model.graph.input[0].name: x}
    )
    for got, want in zip(outs, expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=RTOL, atol=ATOL)


def weights(*shape, seed=1):
    return (np.random.default_rng(seed).standard_normal(shape) * 0.2).astype(np.float32)


@pytest.fixture(scope="module")
def cpu():
    return host_target(CompilerOptions(num_cores=2))


# Tests of a schedule's shape name the ISA it is sized for: the host's own varies from machine to machine.
X86 = {
    "avx2": CompilerOptions(
        num_cores=2
    ),  # the portable LINUX/X86_64 target (core-avx2), which every x86 machine here runs
    "avx512": CompilerOptions(mcpu="skylake-avx512", num_cores=2),
}


def x86(isa: str):
    return get_target("LINUX/X86_64", X86[isa])


@pytest.fixture(scope="module")
def avx2():
    return x86("avx2")


def compare_where_it_runs(model, target):
    """compile_and_compare, on a CPU that can run the target's code; elsewhere the test ends skipped, its schedule
    checked and its results not."""
    if vector_isa(target.tvm_target).name == "avx512" and "avx512f" not in host_cpu().flags:
        pytest.skip("this CPU has no AVX-512: the schedule was checked, its results were not")
    compile_and_compare(model, relax_pipeline(target))


def conv_relu_model(cin=8, cout=16, size=16, stride=1, kernel=3):
    from onnx import helper

    return onnx_model(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[kernel // 2] * 4, strides=[stride, stride]),
            helper.make_node("Relu", ["y"], ["z"]),
        ],
        [("x", [1, cin, size, size])],
        ["z"],
        {"w": weights(cout, cin, kernel, kernel), "b": weights(cout, seed=2)},
    )


def scheduled_functions(model, target):
    """The PrimFuncs the CPU pipeline produced, as TVMScript text."""
    import tvm

    mod, _ = to_relax(model)
    lowered = CpuPipeline(target)(mod)
    return {gv.name_hint: f.script() for gv, f in lowered.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}


def test_conv_gets_a_parallel_vectorized_register_tiled_schedule(cpu):
    scripts = scheduled_functions(conv_relu_model(), cpu)
    conv = next(text for name, text in scripts.items() if "conv2d" in name and "weight_blocks" not in name)
    assert "T.parallel" in conv and "T.vectorized" in conv and "T.unroll" in conv
    assert 'scope="local"' in conv  # the accumulators of the register tile
    assert "T.max" in conv  # relu folded into the tile's write-back, not a second pass


VECTORIZED = r"T\.vectorized\((?:T\.int64\()?(\d+)"


@pytest.mark.parametrize(
    "name,options,lanes",
    [
        ("LINUX/X86_64", CompilerOptions(num_cores=2), 8),
        ("LINUX/X86_64", CompilerOptions(mcpu="skylake-avx512", num_cores=2), 16),
        ("LINUX/X86_64", CompilerOptions(mcpu="sapphirerapids", num_cores=2), 16),
        ("LINUX/ARM64", CompilerOptions(num_cores=4), 4),
    ],
)
def test_default_schedules_follow_the_targets_vector_width(name, options, lanes):
    """AVX2 gets 8-float vectors, AVX-512 16 and NEON 4, in convolutions and elementwise work alike."""
    from onnx import helper

    model = onnx_model(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1] * 4), helper.make_node("Sigmoid", ["x"], ["s"])],
        [("x", [1, 16, 16, 16])],
        ["y", "s"],
        {"w": weights(64, 16, 3, 3), "b": weights(64, seed=2)},
    )
    scripts = scheduled_functions(model, get_target(name, options))
    conv = next(text for n, text in scripts.items() if "conv2d" in n)
    sigmoid = next(text for n, text in scripts.items() if "sigmoid" in n)
    for text in (conv, sigmoid):
        widths = {int(w) for w in re.findall(VECTORIZED, text)}
        assert widths and all(w % lanes == 0 for w in widths), (name, options, widths)
    assert lanes in {int(w) for w in re.findall(VECTORIZED, sigmoid)}


def test_pipeline_schedules_every_function_and_reports_it(cpu):
    pipeline = relax_pipeline(cpu)
    compile_and_compare(conv_relu_model(), pipeline)
    assert pipeline.default_scheduled >= 1 and pipeline.records_applied == 0 and pipeline.unscheduled == []


@pytest.mark.parametrize("size,stride", [(24, 1), (14, 1), (24, 2), (14, 2)])
def test_a_pointwise_convolution_reads_its_input_in_place_and_stages_one_row_at_a_time(cpu, size, stride):
    """A 1x1 convolution (a ResNet bottleneck's, or its downsampling shortcut's at stride 2) has no padding pass, and
    copies each input row it needs once, inside the parallel loop, as [row, x / tile, input channel, tile]: a register
    tile then reads consecutive addresses instead of one page per input channel; every output channel block of the row
    reads the copy."""
    model = conv_relu_model(cin=32, cout=32, size=size, kernel=1, stride=stride)
    scripts = scheduled_functions(model, cpu)
    conv = next(text for name, text in scripts.items() if "conv2d" in name and "weight_blocks" not in name)
    assert 'T.sblock("pad_temp")' not in conv
    [(name, shape)] = re.findall(r"(\w+_global) = T\.sblock_alloc_buffer(.*)", conv)
    dims = [int(d) for d in re.findall(r"T\.int64\((\d+)\)", shape)]
    assert dims[:2] == [1, size] and dims[3] == 32 and dims[2] * dims[4] == size, dims
    assert conv.index("T.parallel") < conv.index(f'T.sblock("{name}")'), "staged inside the rows' parallel loop"
    compile_and_compare(model, relax_pipeline(cpu))


@pytest.mark.parametrize(
    "isa,batch,cin,cout,size",
    [("avx2", 1, 64, 32, 16), ("avx2", 2, 24, 40, 32), ("avx512", 1, 64, 32, 32), ("avx512", 2, 24, 40, 64)],
)
def test_a_pointwise_convolution_with_rows_of_whole_vectors_is_vectorized_along_its_pixels(isa, batch, cin, cout, size):
    """A 1x1 convolution whose output rows fill pairs of vectors runs as a GEMM along NCHW's rows: its register tile
    (output channels by two vectors of pixels: 16 on AVX2, 32 on AVX-512) is written back, with the bias, the residual
    of a second convolution and the relu, as whole vectors of one output row, and each panel of input rows is staged
    as [y, x / 16, input channel, 16] (AVX2)."""
    from onnx import helper

    model = onnx_model(
        [
            helper.make_node("Conv", ["x", "w1", "b1"], ["a"]),
            helper.make_node("Conv", ["x", "w2", "b2"], ["c"]),
            helper.make_node("Add", ["c", "a"], ["y"]),
            helper.make_node("Relu", ["y"], ["z"]),
        ],
        [("x", [batch, cin, size, size])],
        ["z"],
        {
            "w1": weights(cout, cin, 1, 1),
            "b1": weights(cout, seed=2),
            "w2": weights(cout, cin, 1, 1, seed=3),
            "b2": weights(cout, seed=4),
        },
    )
    target = x86(isa)
    pixels = 2 * vector_isa(target.tvm_target).lanes
    scripts = scheduled_functions(model, target)
    residual = next(text for name, text in scripts.items() if re.search(r"conv2d\d*_add\d*_add", name))
    [shape] = re.findall(r"\w+_global = T\.sblock_alloc_buffer(.*)", residual)
    assert [int(d) for d in re.findall(r"T\.int64\((\d+)\)", shape)] == [batch, size, size // pixels, cin, pixels]
    write_back = residual[residual.rindex("T.vectorized") :]
    assert "T.max" in write_back and write_back.count("T.reads(") == 1, "bias, residual and relu in one vector store"
    assert f"T.vectorized(T.int64({pixels}))" in residual[residual.rindex("T.unroll") - 200 :]
    compare_where_it_runs(model, target)


def test_a_strided_pointwise_convolution_gathers_its_pixels_then_runs_as_a_gemm_along_the_rows(avx2):
    """A ResNet downsampling shortcut (1x1 / 2) whose output rows fill vector pairs reads one pixel in four: a pass of
    its own gathers them, and the stride-1 GEMM along the rows computes the rest."""
    model = conv_relu_model(cin=24, cout=32, size=32, kernel=1, stride=2)
    scripts = scheduled_functions(model, avx2)
    assert any("strided_pixels" in text for text in scripts.values())
    conv = next(text for name, text in scripts.items() if "conv2d" in name and "weight_blocks" not in name)
    [shape] = re.findall(r"\w+_global = T\.sblock_alloc_buffer(.*)", conv)
    assert [int(d) for d in re.findall(r"T\.int64\((\d+)\)", shape)] == [1, 16, 1, 24, 16]
    compile_and_compare(model, relax_pipeline(avx2))


def test_a_convolution_whose_weight_blocks_outgrow_the_cache_reads_each_block_once_for_all_output_rows(avx2):
    """512 input channels by 3x3 taps make 295 KB of weights per block of 16 output channels: the threads share out
    channel blocks only, and inside one, each block of 16 input channels (9 KB of weights, in L1) runs over every
    output row before the next is read (GANomaly's 512 -> 1024 4x4 / 2 convolution re-read its blocks once per row)."""
    model = conv_relu_model(cin=512, cout=32, size=8, stride=2)
    scripts = scheduled_functions(model, avx2)
    conv = next(text for name, text in scripts.items() if "conv2d" in name and "weight_blocks" not in name)
    parallel = re.search(r"for (\w+) in T\.parallel\(T\.int64\((\d+)\)\):\n(?=\s+for yy_init)", conv)
    assert parallel and int(parallel.group(2)) == 2, "one parallel iteration per block of 16 output channels"
    grid = re.search(r"for (rc_0, yy, [\w, ]+) in T\.grid\((.*)\):", conv)
    assert grid, conv
    extents = [int(e) for e in re.findall(r"T\.int64\((\d+)\)", grid.group(2))]
    assert grid.group(1).split(", ")[:4] == ["rc_0", "yy", "xx_0", "rc_1"] and extents[:4] == [32, 4, 1, 16]
    compile_and_compare(model, relax_pipeline(avx2))


@pytest.mark.parametrize("size,blocked", [(64, True), (16, False)])
def test_a_wide_output_row_blocks_its_input_channels_so_their_weights_stay_in_l1(avx2, size, blocked):
    """128 input channels by 3x3 taps make 72 KB of weights per block of 16 output channels, more than L1. A row of
    8 register tiles (a 3x3 / 2 convolution at 64x64, as in ResNet's second stage) would read them all from L2 once per
    tile: blocked by input channels (8 of them with AVX2's 16-lane blocks: 4.6 KB of weights) it reads each block
    once per row. A row of 2 tiles keeps the plain reduction."""
    model = conv_relu_model(cin=128, cout=32, size=size, stride=2)
    scripts = scheduled_functions(model, avx2)
    conv = next(text for name, text in scripts.items() if "conv2d" in name and "weight_blocks" not in name)
    grid = re.search(r"for (rc_0, xx_0, rc_1, ry, rx) in T\.grid\((.*)\):", conv)
    if blocked:
        assert grid, conv
        blocks, tiles, block = [int(e) for e in re.findall(r"T\.int64\((\d+)\)", grid.group(2))][:3]
        assert blocks * block == 128 and block <= 16 and tiles >= 8
    else:
        assert not grid and re.search(r"for rc, ry, rx in T\.grid", conv), conv
    compile_and_compare(model, relax_pipeline(avx2))


@pytest.mark.parametrize("cout,stride,kernel", [(16, 1, 3), (32, 2, 3), (3, 1, 3), (64, 2, 1), (8, 2, 7)])
def test_conv2d_matches_onnxruntime(cpu, cout, stride, kernel):
    compile_and_compare(
        conv_relu_model(cin=3 if kernel == 7 else 8, cout=cout, stride=stride, kernel=kernel), relax_pipeline(cpu)
    )


@pytest.mark.parametrize("kernel,stride,pads,output_padding", [(4, 2, 1, 0), (3, 2, 1, 1), (2, 2, 0, 0), (3, 1, 1, 0)])
def test_conv_transpose_by_phases_matches_onnxruntime(cpu, kernel, stride, pads, output_padding):
    from onnx import helper

    model = onnx_model(
        [
            helper.make_node(
                "ConvTranspose",
                ["x", "w", "b"],
                ["y"],
                kernel_shape=[kernel, kernel],
                strides=[stride, stride],
                pads=[pads] * 4,
                output_padding=[output_padding] * 2,
            ),
            helper.make_node("Relu", ["y"], ["z"]),
        ],
        [("x", [1, 8, 9, 9])],
        ["z"],
        {"w": weights(8, 16, kernel, kernel), "b": weights(16, seed=3)},
    )
    compile_and_compare(model, relax_pipeline(cpu))


@pytest.mark.parametrize("size", [8, 16])
def test_a_2x2_stride_2_transposed_convolution_is_1x1_convolutions_that_read_the_input_in_place(avx2, size):
    """A 2x2 / 2 ConvTranspose (Reverse Distillation's decoder) has one tap per output phase and no border: each
    phase is a 1x1 convolution of the input itself, with no padding pass and no `if_then_else` in the multiply-add.
    Rows of whole vector pairs (16) make one GEMM to all four phases' channels, which the pixel template runs along
    the rows; narrower ones four convolutions. A convolution with a real padding keeps its condition (in a pass of its
    own, or in the Winograd input)."""
    from onnx import helper

    model = onnx_model(
        [helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], kernel_shape=[2, 2], strides=[2, 2])],
        [("x", [1, 16, size, size])],
        ["y"],
        {"w": weights(16, 32, 2, 2), "b": weights(32, seed=3)},
    )
    scripts = scheduled_functions(model, avx2)
    convs = [text for name, text in scripts.items() if "conv2d" in name and "weight" not in name]
    channels = 4 * 32 if size == 16 else 32  # one convolution to all four phases, or one per phase (a shared PrimFunc)
    assert [f"T.int64({channels}), T.int64({size}), T.int64({size})" in conv for conv in convs] == [True]
    assert any("interleave_phases" in name for name in scripts)
    for conv in convs:
        assert 'T.sblock("data_pad")' not in conv and "if_then_else" not in conv
    if size == 16:  # the pixel template's staged panel of input rows
        assert re.search(r"x_global = T\.sblock_alloc_buffer\(\(T\.int64\(1\), T\.int64\(16\), T\.int64\(1\)", convs[0])
    compile_and_compare(model, relax_pipeline(avx2))
    padded = scheduled_functions(conv_relu_model(cin=8, cout=16, size=16, kernel=3), avx2)
    conv = next(text for name, text in padded.items() if "conv2d" in name and "weight_blocks" not in name)
    assert "if_then_else" in conv  # the real padding: computed in a pass of its own, or in the Winograd input


def test_conv_transpose_does_no_work_on_dilation_zeros(cpu):
    from onnx import helper

    model = onnx_model(
        [helper.make_node("ConvTranspose", ["x", "w"], ["y"], kernel_shape=[4, 4], strides=[2, 2], pads=[1] * 4)],
        [("x", [1, 8, 16, 16])],
        ["y"],
        {"w": weights(8, 16, 4, 4)},
    )
    text = next(t for n, t in scheduled_functions(model, cpu).items() if "conv2d_transpose" in n)
    assert "data_dilate" not in text and "conv2d_transpose_phases" in text


def test_matmul_pool_and_reductions_match_onnxruntime(cpu):
    """The PaDiM tail: a batched matrix-vector product, max pooling and reductions."""
    from onnx import helper

    axes = np.array([1], np.int64)
    model = onnx_model(
        [
            helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4),
            helper.make_node("Reshape", ["p", "shape"], ["v"]),  # [P=64, 1, D=12]
            helper.make_node("MatMul", ["v", "m"], ["d"]),
            helper.make_node("Mul", ["d", "v"], ["e"]),
            helper.make_node("ReduceSum", ["e", "axes"], ["s"], keepdims=0),
            helper.make_node("ReduceMean", ["p"], ["mean"], axes=[1], keepdims=1),
        ],
        [("x", [1, 12, 16, 16])],
        ["s", "mean"],
        {"shape": np.array([64, 1, 12], np.int64), "m": weights(64, 12, 12), "axes": axes},
    )
    compile_and_compare(model, relax_pipeline(cpu))


def row_reductions_model():
    """Reductions along contiguous memory: LayerNorm over the last axis, Softmax, and a ReduceMean over H and W."""
    from onnx import helper

    return onnx_model(
        [
            helper.make_node("LayerNormalization", ["x", "g", "b"], ["n"], axis=-1, epsilon=1e-5),
            helper.make_node("Softmax", ["n"], ["s"], axis=-1),
            helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=1),
        ],
        [("x", [1, 8, 24, 48])],
        ["s", "m"],
        {"g": weights(48), "b": weights(48, seed=2)},
    )


def test_row_reductions_keep_vector_partial_sums_and_match_onnxruntime(cpu):
    compile_and_compare(row_reductions_model(), relax_pipeline(cpu))
    texts = "\n".join(scheduled_functions(row_reductions_model(), cpu).values())
    # each row's sum runs as vector-wide partial sums (an rfactor block), initialised with a vector store
    assert re.search(r'sblock\("\w+_rf_update"\)', texts)
    assert re.search(r'for \w+ in T\.vectorized\(T\.int64\(\d+\)\):\s+with T\.sblock\("\w+_rf_init"\)', texts)


def test_a_wide_weight_matrix_is_read_as_contiguous_vector_blocks(cpu):
    """PatchCore's distance GEMM in small: [M, K] x [K, N] with N wide. The weight is repacked as [N / lanes, K, lanes]
    so each vector block of N streams through K contiguously, and the result still matches ONNX Runtime."""
    from onnx import helper

    model = onnx_model(
        [helper.make_node("MatMul", ["x", "bank"], ["d"]), helper.make_node("Sqrt", ["d"], ["y"])],
        [("x", [128, 96])],
        ["y"],
        {"bank": np.abs(weights(96, 256))},
    )
    compile_and_compare(model, relax_pipeline(cpu))
    texts = "\n".join(scheduled_functions(model, cpu).values())
    blocks = re.findall(r"alloc_buffer\(\(T\.int64\((\d+)\), T\.int64\(96\), T\.int64\((\d+)\)\)", texts)
    assert blocks and all(int(n) * int(lanes) == 256 for n, lanes in blocks)


@pytest.mark.parametrize("tokens", [37, 261])
def test_attention_over_a_token_count_that_fills_no_vectors_pads_its_columns(cpu, tokens):
    """A ViT's attention scores, Q K^T over 261 tokens (256 patches + 5 class and register tokens) or 37: the right
    operand gets zero columns up to whole vectors in a pass of its own, the product runs vectorized over them, and the
    crop leaves the result ONNX Runtime gives."""
    from onnx import helper

    model = onnx_model(
        [
            helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
            helper.make_node("MatMul", ["q", "kt"], ["scores"]),
            helper.make_node("Softmax", ["scores"], ["p"], axis=-1),
            helper.make_node("MatMul", ["p", "v"], ["y"]),
        ],
        [("q", [1, 2, tokens, 16])],
        ["y"],
        {"k": weights(1, 2, tokens, 16), "v": weights(1, 2, tokens, 16, seed=2)},
    )
    scripts = scheduled_functions(model, cpu)
    [scores] = [text for text in scripts.values() if "matmul_pad" in text]
    assert "matmul_crop" in scores and "T.vectorized" in scores[scores.index('sblock("matmul_wide') :]
    compile_and_compare(model, relax_pipeline(cpu))


def test_elementwise_rows_that_do_not_divide_into_vectors_run_their_whole_vectors_vectorized(cpu):
    """A softmax over 37-wide rows: its normalisation runs the first 32 elements of each row as vectors and the last 5
    as scalars (before, the whole row was scalar), and the result is ONNX Runtime's."""
    from onnx import helper

    model = onnx_model([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], [("x", [1, 2, 37, 37])], ["y"], {})
    [text] = scheduled_functions(model, cpu).values()
    norm = text[text.index('sblock("T_softmax_norm') :]
    assert re.search(r"in T\.vectorized\(T\.int64\(\d+\)\):\s+with T\.sblock\(\"T_softmax_norm", norm)
    assert "range(T.int64(32), T.int64(37))" in norm
    compile_and_compare(model, relax_pipeline(cpu))


def test_gpu_target_gets_thread_bindings():
    import tvm

    target = get_target("jetson_xavier")
    mod, _ = to_relax(conv_relu_model())
    with tvm.target.Target(target.tvm_target):
        lowered = relax_pipeline(target)(mod)
    texts = [f.script() for _, f in lowered.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert texts and all("threadIdx.x" in t for t in texts)


@pytest.mark.parametrize(
    "channels,size,pads,kernel",
    [(16, 32, 1, 3), (16, 30, 1, 3), (16, 33, 1, 3), (24, 34, 0, 3), (16, 32, 3, 4), (16, 31, 0, 4), (24, 17, 3, 4)],
)
def test_winograd_conv_matches_onnxruntime(cpu, channels, size, pads, kernel):
    """3x3 kernels, and EfficientAD's 4x4 ones (with its padding of 3 and of 0), on widths that tile and that do not."""
    from onnx import helper

    model = onnx_model(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[pads] * 4), helper.make_node("Relu", ["y"], ["z"])],
        [("x", [1, channels, size, size])],
        ["z"],
        {"w": weights(channels, channels, kernel, kernel), "b": weights(channels, seed=2)},
    )
    text = next(t for n, t in scheduled_functions(model, cpu).items() if "conv2d" in n)
    assert "winograd_bgemm" in text
    compile_and_compare(model, relax_pipeline(cpu))


def test_the_planes_of_a_winograd_product_start_one_cache_line_apart_within_a_page(cpu):
    """The inverse transform reads one value from each of the product's 6 x 6 planes; 64 tiles x 64 channels make a
    plane 16 KB, and unaligned every read would fall in one cache set."""
    import tvm
    from onnx import helper

    from compilers.schedules.winograd import PLANE_ALIGN, ROW_PAD

    model = onnx_model(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1] * 4)],
        [("x", [1, 64, 32, 32])],
        ["y"],
        {"w": weights(64, 64, 3, 3)},
    )
    mod, _ = to_relax(model)
    lowered = CpuPipeline(cpu)(mod)
    conv = tvm.IRModule({gv: f for gv, f in lowered.functions_items() if "conv2d" in gv.name_hint})
    passes = tvm.s_tir.transform
    compact = tvm.transform.Sequential(
        [passes.LowerInitBlock(), passes.ConvertBlocksToOpaque(), passes.CompactBufferAllocation()]
    )(conv)
    (line,) = [line for line in compact.script().splitlines() if "winograd_bgemm = " in line]
    strides = re.search(r"strides=\(T\.int64\(\d+\), T\.int64\((\d+)\)", line)
    assert strides, f"the product keeps its dense layout: {line.strip()}"
    plane = int(strides.group(1))
    assert plane >= 64 * 64 and plane % PLANE_ALIGN == ROW_PAD
    compile_and_compare(model, relax_pipeline(cpu))


@pytest.mark.parametrize("size,pads,kernel", [(40, 1, 3), (37, 3, 4), (38, 0, 4)])
def test_a_winograd_convolution_over_its_workspace_budget_runs_in_bands_of_rows(cpu, monkeypatch, size, pads, kernel):
    """EfficientAD-M's PDN needed 224 MB of working memory in one call; bands of whole tile rows, the last one short,
    with the padding at the top and bottom bands only."""
    from onnx import helper

    from compilers.schedules import winograd

    monkeypatch.setattr(winograd, "WORKSPACE_BUDGET", 64 * 2**10)
    model = onnx_model(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[pads] * 4), helper.make_node("Relu", ["y"], ["z"])],
        [("x", [1, 16, size, size])],
        ["z"],
        {"w": weights(16, 16, kernel, kernel), "b": weights(16, seed=2)},
    )
    out = size + 2 * pads - kernel + 1
    m = winograd.tile_size(16, 16, out, out, r=kernel)
    bands = winograd.row_bands(16, 16, out, out, m, kernel)
    assert len(bands) > 2 and sum(rows for _, rows in bands) == out
    assert all(rows % m == 0 for _, rows in bands[:-1])
    texts = scheduled_functions(model, cpu)
    assert sum("winograd_bgemm" in text for text in texts.values()) == len(bands)
    compile_and_compare(model, relax_pipeline(cpu))


@pytest.mark.parametrize("channels,size,pads", [(16, 48, 1), (16, 49, 1), (24, 46, 0), (16, 47, 2)])
def test_a_stride_2_convolution_is_split_into_phases_for_winograd_and_matches_onnxruntime(cpu, channels, size, pads):
    """GANomaly's 4x4 / 2 convolutions: even and odd padded sizes (an odd one's last row is never read)."""
    from onnx import helper

    model = onnx_model(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[pads] * 4, strides=[2, 2]),
            helper.make_node("Relu", ["y"], ["z"]),
        ],
        [("x", [1, channels, size, size])],
        ["z"],
        {"w": weights(2 * channels, channels, 4, 4), "b": weights(2 * channels, seed=2)},
    )
    texts = scheduled_functions(model, cpu)
    assert "phase_data" in texts
    assert any("winograd_bgemm" in text for text in texts.values())
    compile_and_compare(model, relax_pipeline(cpu))


@pytest.mark.parametrize("pads", [0, 1, 2])
def test_a_4x4_stride_2_transposed_convolution_runs_as_four_winograd_phases_and_matches_onnxruntime(cpu, pads):
    """GANomaly's decoder steps: each output phase is a 2x2 correlation of the input, padded by the phase."""
    from onnx import helper

    model = onnx_model(
        [
            helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2], pads=[pads] * 4),
            helper.make_node("Relu", ["y"], ["z"]),
        ],
        [("x", [1, 32, 32, 32])],
        ["z"],
        {"w": weights(32, 16, 4, 4), "b": weights(16, seed=2)},
    )
    texts = scheduled_functions(model, cpu)
    assert any("winograd_bgemm" in text for text in texts.values())  # phases with the same padding share one
    assert any("interleave_phases" in name for name in texts)
    compile_and_compare(model, relax_pipeline(cpu))


def test_only_even_stride_2_kernels_with_enough_tiles_are_split_into_phases():
    from types import SimpleNamespace

    from compilers.schedules.space_to_depth import applies, phase_shapes

    def attrs(stride):
        return SimpleNamespace(
            data_layout="NCHW",
            kernel_layout="OIHW",
            out_layout="NCHW",
            groups=1,
            strides=(stride,) * 2,
            dilation=(1, 1),
            padding=(1,) * 4,
        )

    assert phase_shapes((1, 64, 128, 128), (128, 64, 4, 4), (1, 1, 1, 1)) == ((1, 256, 65, 65), (128, 256, 2, 2))
    assert applies((1, 64, 128, 128), (128, 64, 4, 4), attrs(2), "float32", (1, 128, 64, 64))
    assert not applies((1, 64, 128, 128), (128, 64, 3, 3), attrs(2), "float32", (1, 128, 64, 64))  # odd kernel
    assert not applies((1, 64, 128, 128), (128, 64, 4, 4), attrs(1), "float32", (1, 128, 127, 127))
    assert not applies((1, 512, 16, 16), (1024, 512, 4, 4), attrs(2), "float32", (1, 1024, 8, 8))  # 4 tiles


def test_winograd_is_chosen_only_where_it_saves_work():
    from compilers.schedules.winograd import tile_size

    assert tile_size(64, 64, 56, 56) == 4  # ResNet layer1: 4x fewer products
    assert tile_size(256, 256, 14, 14) == 2  # layer3: 16 F(4x4) tiles are too few; F(2x2) was faster (MIN_F4_TILES)
    assert tile_size(128, 128, 32, 32) == 4  # 64 F(4x4) tiles
    assert tile_size(512, 512, 8, 8) == 2  # ResNet-18 layer4 at 256x256: F(4x4) was 5.7 ms, F(2x2) 4.8, direct 6.4
    assert tile_size(512, 512, 2, 2) is None  # one tile: reading the transformed weights costs more than it saves
    # EfficientAD's PDN 4x4 convolutions at 256x256: F(3x3, 4x4), 4x fewer products
    assert tile_size(128, 256, 133, 133, r=4) == 3
    assert tile_size(256, 384, 64, 64, r=4) == 3
    assert tile_size(256, 256, 12, 12, r=4) == 2  # 16 tiles of 3x3: too few for the 6x6 input tiles
    # GANomaly's 4x4 / 2 pyramid as 2x2 stride-1 convolutions over 4 ci phase channels (space_to_depth.py)
    assert tile_size(256, 128, 64, 64, r=2) == 4
    # 512 -> 1024 at 8x8: 4 tiles would read 210 MB of transformed weights per call, 6x the direct ones
    assert tile_size(2048, 1024, 8, 8, r=2) is None


def test_a_precise_compile_keeps_to_the_smallest_winograd_tiles():
    """F(4x4, 3x3) rounds about 4x more than F(2x2, 3x3); the build's fallback after a failed check keeps to F(2x2)."""
    from compilers.schedules.winograd import precise_tiles, tile_size

    with precise_tiles():
        assert tile_size(64, 64, 56, 56) == 2
        assert tile_size(128, 256, 133, 133, r=4) == 2
        assert tile_size(256, 128, 64, 64, r=2) is None  # 2x2 kernels have no F(2x2) form: direct
        with precise_tiles(False):
            assert tile_size(64, 64, 56, 56) == 4
    assert tile_size(64, 64, 56, 56) == 4


def test_widths_without_a_full_register_tile_are_padded():
    """EfficientAD's PDN widths (133, 67, 259) and its 289 Winograd tiles get a few zero columns; good widths do not."""
    from compilers.schedules.pipeline import padded_extent

    assert [padded_extent(w, 12) for w in (133, 67, 259, 289)] == [138, 72, 264, 294]
    assert [padded_extent(w, 12) for w in (16, 64, 128, 130, 256)] == [None] * 5
    assert padded_extent(64, 28) is None and padded_extent(67, 28) == 70


@pytest.mark.parametrize("kernel,size,pad,stride", [(4, 70, 3, 1), (3, 67, 1, 1), (4, 64, 1, 2)])
def test_padded_convolutions_match_onnxruntime_and_crop_in_their_own_pass(cpu, kernel, size, pad, stride):
    """73 columns (padded to 78), 67 (Winograd, 289 tiles padded to 294), and 32 (not padded): the padding never reaches the output."""
    from onnx import helper

    model = onnx_model(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[pad] * 4, strides=[stride] * 2),
            helper.make_node("Relu", ["y"], ["z"]),
        ],
        [("x", [1, 16, size, size])],
        ["z"],
        {"w": weights(32, 16, kernel, kernel), "b": weights(32, seed=2)},
    )
    compile_and_compare(model, relax_pipeline(cpu))


def test_exp_tanh_erf_and_softmax_are_polynomials_that_match_onnxruntime(cpu):
    """FastFlow's couplings (tanh, exp), a GELU's erf and a softmax: no libm call is left in the scheduled code
    (LLVM has no vector exp, so a vectorized one is a call per lane), and the outputs stay within the check's tolerance
    over a wide input range."""
    from onnx import helper

    model = onnx_model(
        [
            helper.make_node("Mul", ["x", "spread"], ["wide"]),
            helper.make_node("Tanh", ["wide"], ["t"]),
            helper.make_node("Exp", ["t"], ["e"]),
            helper.make_node("Erf", ["wide"], ["f"]),
            helper.make_node("Softmax", ["wide"], ["s"], axis=-1),
            helper.make_node("Mul", ["e", "f"], ["ef"]),
            helper.make_node("Add", ["ef", "s"], ["y"]),
        ],
        [("x", [1, 8, 16, 16])],
        ["y"],
        {"spread": np.array(12.0, np.float32)},  # x in [0, 12): tanh saturates, erf reaches 1
    )
    text = "\n".join(scheduled_functions(model, cpu).values())
    assert not re.search(r"T\.(exp|tanh|erf)\(", text), "a libm call is left"
    compile_and_compare(model, relax_pipeline(cpu))


@pytest.mark.parametrize("largest", [0, 1])
def test_topk_is_a_selection_with_no_sort_library_call_and_matches_onnxruntime(cpu, largest):
    """PatchCore's TopK (k=9 of 16384) compiled to tvm.contrib.sort, which the Edge Agent's runtime-only TVM does not
    have ("Cannot find function tvm.contrib.sort.topk"): a small k is now k rounds of argmin/argmax in plain TIR."""
    import tvm
    from onnx import TensorProto, helper

    from compilers.schedules.pipeline import legalize

    model = onnx_model(
        [
            helper.make_node("MatMul", ["x", "bank"], ["d"]),
            helper.make_node("TopK", ["d", "k"], ["near", "rows"], axis=-1, largest=largest),
            helper.make_node("Cast", ["rows"], ["rows_f"], to=TensorProto.FLOAT),
        ],
        [("x", [1, 16, 8])],
        ["near", "rows_f"],
        {"bank": weights(8, 300), "k": np.array([9], np.int64)},
    )
    mod, _ = to_relax(model)
    legalized = legalize(mod, tvm.target.Target(cpu.tvm_target))
    assert "tvm.contrib.sort" not in legalized.script()
    compile_and_compare(model, relax_pipeline(cpu))
