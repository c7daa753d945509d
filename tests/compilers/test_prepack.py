"""Weight work moves to build time: the shipped parameters are the transformed weights, and results do not change."""

from __future__ import annotations

import re

import numpy as np
import pytest
from onnx import numpy_helper

from compilers.prepack import PREPACKED, prepack_weights
from tests.compilers.schedules.test_schedules import ATOL, RTOL, onnx_model, weights

CHANNELS, SIZE = 32, 14


def conv_model(kernel: int, out_channels: int = CHANNELS, size: int = SIZE):
    from onnx import helper

    return onnx_model(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[kernel // 2] * 4),
            helper.make_node("Relu", ["y"], ["z"]),
        ],
        [("x", [1, CHANNELS, size, size])],
        ["z"],
        {"w": weights(out_channels, CHANNELS, kernel, kernel), "b": weights(out_channels, seed=2)},
    )


def prepacked(model, target):
    import tvm

    from compilers.tvm_compile import onnx_to_relax

    return prepack_weights(*onnx_to_relax(model.SerializeToString()), tvm.target.Target(target.tvm_target))


@pytest.fixture(scope="module")
def cpu():
    from targets import host_target
    from targets.catalog import CompilerOptions

    return host_target(CompilerOptions(num_cores=2))


@pytest.mark.parametrize(
    "out_channels, size, row",
    [(CHANNELS, SIZE, None), (512, SIZE, None), (64, 18, 64), (512, 18, 528)],
    ids=["32-blocked", "512-blocked", "64-rows", "512-padded-rows"],
)
def test_winograd_kernel_is_computed_at_build_time_and_matches_onnxruntime(cpu, out_channels, size, row):
    """With few tiles (14x14: 49 of F(2x2)) the transformed kernel is blocked by output channels, (alpha, alpha,
    co / L, ci, L), so each vector block of output channels reads one stream. With more (18x18: 81), it keeps rows of
    output channels: rows of 512 lie 2 KB apart and 32 of them overfill the 2 L1 sets they share, so they are padded
    by a cache line (winograd.kernel_row); 32 rows of 64 channels spread over 16 sets and are not. The padding is
    zeros and is never read."""
    import onnxruntime as ort
    import tvm
    from tvm import relax

    from compilers.schedules.pipeline import CpuPipeline
    from compilers.schedules.winograd import BLOCKED_KERNEL_MAX_TILES, tile_size, transform_matrices

    model = conv_model(kernel=3, out_channels=out_channels, size=size)
    m = tile_size(CHANNELS, out_channels, size, size)
    assert m == 2  # too few tiles for F(4x4) (winograd.MIN_F4_TILES)
    assert ((size // m) ** 2 <= BLOCKED_KERNEL_MAX_TILES) == (row is None)
    mod, params = prepacked(model, cpu)
    assert not [gvar.name_hint for gvar in mod.functions if "winograd_kernel" in gvar.name_hint]
    packed = [
        value.numpy() for name, value in params if name.startswith(PREPACKED) and value.shape[:2] == (m + 2, m + 2)
    ]
    assert len(packed) == 1
    if row is None:
        lanes = packed[0].shape[-1]
        assert packed[0].shape == (m + 2, m + 2, out_channels // lanes, CHANNELS, lanes) and lanes % 8 == 0
        kernel = packed[0].transpose(0, 1, 3, 2, 4).reshape(m + 2, m + 2, CHANNELS, out_channels)
    else:
        assert packed[0].shape == (m + 2, m + 2, CHANNELS, row)
        assert not packed[0][..., out_channels:].any()
        kernel = packed[0][..., :out_channels]
    _, _, g = transform_matrices(m)
    w = weights(out_channels, CHANNELS, 3, 3)
    np.testing.assert_allclose(kernel, np.einsum("ik,jl,ockl->ijco", g, g, w), rtol=1e-5, atol=1e-6)

    executable = tvm.compile(mod, target=tvm.target.Target(cpu.tvm_target), relax_pipeline=CpuPipeline(cpu))
    x = np.random.default_rng(0).random((1, CHANNELS, size, size), dtype=np.float32)
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x), *[value for _, value in params])
    (want,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(got.numpy(), want, rtol=RTOL, atol=ATOL)


def test_a_stride_2_convolution_splits_its_kernel_into_phases_at_build_time(cpu):
    from onnx import helper

    model = onnx_model(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1] * 4, strides=[2, 2])],
        [("x", [1, CHANNELS, 64, 64])],
        ["y"],
        {"w": weights(CHANNELS, CHANNELS, 4, 4)},
    )
    mod, params = prepacked(model, cpu)
    names = [gvar.name_hint for gvar in mod.functions]
    assert "phase_data" in " ".join(names)
    assert not [name for name in names if "phase_weight" in name or "winograd_kernel" in name]
    # F(4x4, 2x2) of the 2x2 phase kernels over 4 x 32 channels, 64 tiles (32x32 outputs), so blocked by output
    # channels: 5 x 5 x (32 / L) x 128 x L
    (shape,) = [value.shape for _, value in params if value.shape[:2] == (5, 5)]
    assert shape == (5, 5, CHANNELS // shape[-1], 4 * CHANNELS, shape[-1])


def test_weights_used_as_they_are_keep_their_names(cpu):
    # 1x1, 4 output channels: no Winograd form, no vector-wide blocks of output channels; the weight passes through
    _, params = prepacked(conv_model(kernel=1, out_channels=4), cpu)
    names = [name for name, _ in params]
    assert "w" in names
    assert [name for name in names if name.startswith(PREPACKED)]  # the bias, reshaped once for broadcasting
    assert len(set(names)) == len(names)


def deconv_model(kernel: int, stride: int):
    from onnx import helper

    return onnx_model(
        [helper.make_node("ConvTranspose", ["x", "w"], ["y"], kernel_shape=[kernel] * 2, strides=[stride] * 2)],
        [("x", [1, CHANNELS, SIZE, SIZE])],
        ["y"],
        {"w": weights(CHANNELS, CHANNELS, kernel, kernel)},  # IOHW
    )


@pytest.mark.parametrize(
    "model,blocks_of",
    [
        (lambda: conv_model(kernel=1), lambda w, lanes: w.reshape(-1, lanes, *w.shape[1:]).transpose(0, 2, 3, 4, 1)),
        # 3x3 / 2: its kernel is padded to 4x4 (two taps per phase) inside the same build-time step
        (
            lambda: deconv_model(kernel=3, stride=2),
            lambda w, lanes: (
                np.pad(w, ((0, 0), (0, 0), (0, 1), (0, 1)))
                .reshape(w.shape[0], -1, lanes, 4, 4)
                .transpose(1, 0, 3, 4, 2)
            ),
        ),
    ],
    ids=["conv", "conv_transpose"],
)
def test_convolution_weight_blocks_are_made_at_build_time(cpu, model, blocks_of):
    """A direct convolution's (and a transposed one's) weights are blocked by output channel ([O / L, I, KH, KW, L])
    once, at build time: the per-call function reads the blocks and repacks nothing (GANomaly's 134 MB convolutions
    repacked on every call), and the model still matches ONNX Runtime."""
    import onnxruntime as ort
    import tvm
    from tvm import relax

    from compilers.schedules.pipeline import CpuPipeline
    from tests.compilers.schedules.test_schedules import scheduled_functions

    model = model()
    mod, params = prepacked(model, cpu)
    assert not [gvar.name_hint for gvar in mod.functions if "weight_blocks" in gvar.name_hint], "lifted out of main"
    [blocks] = [value.numpy() for _, value in params if value.ndim == 5]
    w = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "w"))
    np.testing.assert_array_equal(blocks, blocks_of(w, blocks.shape[-1]))
    scripts = scheduled_functions(model, cpu)
    conv = next(text for name, text in scripts.items() if "conv2d" in name and "weight_blocks" not in name)
    # The blocked weights are the call's one 5-D parameter; nothing copies them (a staged input row may be copied).
    shapes = dict(re.findall(r"(\w+): T\.Buffer\(\(([^)]*\)(?:, [^)]*\))*)\)", conv))
    [weights] = [name for name, shape in shapes.items() if shape.count("T.int64(") == 5]
    assert f"{weights}_global" not in conv and "weight_unblocked" not in conv, (
        "the call reads the blocks; packs nothing"
    )

    executable = tvm.compile(mod, target=tvm.target.Target(cpu.tvm_target), relax_pipeline=CpuPipeline(cpu))
    x = np.random.default_rng(0).random((1, CHANNELS, SIZE, SIZE), dtype=np.float32)
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x), *[value for _, value in params])
    (want,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(got.numpy(), want, rtol=RTOL, atol=ATOL)


def test_gpu_targets_keep_the_weights_as_imported():
    from compilers.frontends.intake import import_model
    from compilers.tvm_compile import relax_for_target, to_relax
    from packager.example_model import example_model_paths
    from targets import get_target, host_target

    imported = import_model(*example_model_paths())
    as_imported = [name for name, _ in to_relax(imported)[1]]
    assert [name for name, _ in relax_for_target(imported, get_target("jetson_xavier"))[1]] == as_imported
    on_cpu = [name for name, _ in relax_for_target(imported, host_target())[1]]
    assert on_cpu != as_imported and any(name.startswith(PREPACKED) for name in on_cpu)


def test_a_failing_weight_step_names_the_model(monkeypatch):
    import compilers.prepack
    from compilers.frontends.intake import import_model
    from compilers.tvm_compile import relax_for_target
    from packager.errors import CompilationError
    from packager.example_model import example_model_paths
    from targets import host_target

    def fail(*_):
        raise RuntimeError("InternalError: Check failed: lifted function")

    monkeypatch.setattr(compilers.prepack, "prepack_weights", fail)
    with pytest.raises(CompilationError, match=r"precomputing the weights of model\.onnx failed: .*Check failed"):
        relax_for_target(import_model(*example_model_paths()), host_target())


@pytest.mark.parametrize("exponent", [2.0, 3.0, 0.5, 1.0, 2.5])
def test_a_constant_exponent_of_two_three_or_a_half_is_a_product_or_a_square_root(cpu, exponent):
    """Pow with a single-element exponent weight (STFPM's and FastFlow's squares): the exponent is bound into the
    module at build time, so 2 and 3 are products, 0.5 a square root and 1 nothing, instead of a powf call per
    element; any other exponent keeps powf. Either way the model matches ONNX Runtime and ships no exponent."""
    import onnxruntime as ort
    import tvm
    from onnx import helper
    from tvm import relax

    from compilers.schedules.pipeline import CpuPipeline

    model = onnx_model(
        [helper.make_node("Abs", ["x"], ["a"]), helper.make_node("Pow", ["a", "p"], ["y"])],
        [("x", [1, 4, 8, 16])],
        ["y"],
        {"p": np.array(exponent, np.float32)},
    )
    mod, params = prepacked(model, cpu)
    assert "p" not in [name for name, _ in params]
    scripts = "\n".join(f.script() for _, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc))
    assert ("T.pow(" in scripts) is (exponent == 2.5)
    executable = tvm.compile(mod, target=tvm.target.Target(cpu.tvm_target), relax_pipeline=CpuPipeline(cpu))
    x = np.random.default_rng(0).standard_normal((1, 4, 8, 16)).astype(np.float32)
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x), *[value for _, value in params])
    (want,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(got.numpy(), want, rtol=RTOL, atol=ATOL)
