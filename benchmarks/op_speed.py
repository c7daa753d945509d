"""Single-op benchmarks with the anomalib zoo's shapes: TVM (default schedules) against ONNX Runtime, side by side.

    python benchmarks/op_speed.py                       # every case, writes benchmarks/results/op_speed.{json,md}
    python benchmarks/op_speed.py --cases pdn_conv2 rn_1x1_1024_256 --rounds 20
    python benchmarks/op_speed.py --model /tmp/zoo/stfpm/model.onnx   # every distinct convolution of one model

Each case is one small ONNX graph (random weights) of an op class the zoo's time goes to: EfficientAD's PDN
convolutions, wide_resnet50_2's bottleneck 1x1 convolutions, strided stems, ConvTranspose, PatchCore's
nearest-neighbour GEMM + min, LayerNorm, bilinear Resize and Where/Greater. Engines alternate within every
round, so load from other processes on a shared machine falls on both alike; figures are medians.

With ``--model``, the cases are every distinct Conv and ConvTranspose of that ONNX model instead (its shapes,
strides, pads and groups; random weights), each with how many times the model runs it, so the layers where TVM
loses to ORT show up one by one, weighted by their count.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
THREADS_DEFAULT = 2


def _conv(name, ci, co, k, size, stride=1, pad=0, relu=True):
    return {
        "name": name,
        "kind": "conv",
        "ci": ci,
        "co": co,
        "k": k,
        "size": size,
        "stride": stride,
        "pad": pad,
        "relu": relu,
    }


CASES = {
    # EfficientAD-S PDN at 256x256: 4x4 convolutions, avg-pooled between them
    "pdn_conv1": _conv("pdn_conv1", 3, 128, 4, 256, pad=3),
    "pdn_conv2": _conv("pdn_conv2", 128, 256, 4, 130, pad=3),
    "pdn_conv3": _conv("pdn_conv3", 256, 256, 3, 67, pad=1),
    "pdn_conv4": _conv("pdn_conv4", 256, 384, 4, 67, relu=False),
    # EfficientAD-M's PDN: wider
    "pdn_m_conv2": _conv("pdn_m_conv2", 256, 512, 4, 130, pad=3),
    # wide_resnet50_2 bottlenecks at 256x256
    "rn_1x1_256_128": _conv("rn_1x1_256_128", 256, 128, 1, 64),
    # resnet50's layer1 expansion (DFM, and wide_resnet50_2's at half the inner width): few inputs, many outputs
    "rn_1x1_64_256": _conv("rn_1x1_64_256", 64, 256, 1, 64),
    "rn_1x1_128_512": _conv("rn_1x1_128_512", 128, 512, 1, 32),
    "rn_1x1_512_256": _conv("rn_1x1_512_256", 512, 256, 1, 32),
    "rn_1x1_1024_512": _conv("rn_1x1_1024_512", 1024, 512, 1, 16),
    "rn_1x1_512_1024": _conv("rn_1x1_512_1024", 512, 1024, 1, 16, relu=False),
    "rn_3x3_512": _conv("rn_3x3_512", 512, 512, 3, 16, pad=1),
    # the downsampling shortcuts: 1x1 / 2 (resnet18's layer2, wide_resnet50_2's layer2)
    "rn_1x1_s2_64_128": _conv("rn_1x1_s2_64_128", 64, 128, 1, 64, stride=2, relu=False),
    "rn_1x1_s2_256_512": _conv("rn_1x1_s2_256_512", 256, 512, 1, 64, stride=2, relu=False),
    # GANomaly's encoder pyramid: 4x4 / 2, channels doubling as the map halves (1.07 GFLOP each)
    "gan_4x4_s2_128": _conv("gan_4x4_s2_128", 64, 128, 4, 128, stride=2, pad=1),
    "gan_4x4_s2_512": _conv("gan_4x4_s2_512", 256, 512, 4, 32, stride=2, pad=1),
    # GANomaly's encoder end: 1024 -> 2048 channels, 4x4 / 2 on an 8x8 map; 134 MB of weights for 16 output pixels
    "gan_4x4_s2_2048": _conv("gan_4x4_s2_2048", 1024, 2048, 4, 8, stride=2, pad=1),
    "rn_3x3_256_s2": _conv("rn_3x3_256_s2", 256, 256, 3, 64, stride=2, pad=1),
    "rn_3x3_128": _conv("rn_3x3_128", 128, 128, 3, 64, pad=1),
    # stems
    "stem_7x7_s2": _conv("stem_7x7_s2", 3, 64, 7, 256, stride=2, pad=3),
    "stem_4x4_s2": _conv("stem_4x4_s2", 3, 32, 4, 256, stride=2, pad=1),
    # Reverse Distillation's decoder upsampling
    "deconv_2x2_s2_512": {
        "name": "deconv_2x2_s2_512",
        "kind": "deconv",
        "ci": 1024,
        "co": 512,
        "k": 2,
        "size": 8,
        "stride": 2,
    },
    # GANomaly's decoder start: 2048 -> 1024 channels, 4x4 / 2 from a 4x4 map (134 MB of weights)
    "gan_deconv_4x4_s2": {
        "name": "gan_deconv_4x4_s2",
        "kind": "deconv",
        "ci": 2048,
        "co": 1024,
        "k": 4,
        "size": 4,
        "stride": 2,
        "pad": 1,
    },
    # GANomaly's decoder pyramid: 4x4 / 2, 1.07 GFLOP each
    "gan_deconv_4x4_s2_256": {
        "name": "gan_deconv_4x4_s2_256",
        "kind": "deconv",
        "ci": 512,
        "co": 256,
        "k": 4,
        "size": 16,
        "stride": 2,
        "pad": 1,
    },
    "deconv_2x2_s2_256": {
        "name": "deconv_2x2_s2_256",
        "kind": "deconv",
        "ci": 512,
        "co": 256,
        "k": 2,
        "size": 16,
        "stride": 2,
    },
    # PatchCore: 32x32 patches of 1536 features against a 16384-row memory bank, nearest distance
    "nn_search": {"name": "nn_search", "kind": "nn", "queries": 1024, "bank": 16384, "dim": 1536},
    "layernorm": {"name": "layernorm", "kind": "layernorm", "rows": 4096, "dim": 384},
    "resize_256": {"name": "resize_256", "kind": "resize", "channels": 1, "size": 64, "out": 256},
    "where_greater": {"name": "where_greater", "kind": "where", "size": 256},
}


def _model(case: dict) -> tuple[bytes, tuple[int, ...]]:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    kind = case["kind"]
    inits, nodes = [], []

    def weight(name, shape, scale):
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name))
        return name

    if kind in ("conv", "deconv"):
        ci, co, k, s = case["ci"], case["co"], case["k"], case["size"]
        shape = (1, ci, s, case.get("width", s))
        group = case.get("group", 1)
        pads = case.get("pads", [case.get("pad", 0)] * 4)
        extra = {"group": group, "dilations": [case.get("dilation", 1)] * 2} if group > 1 or "dilation" in case else {}
        if kind == "conv":
            w = weight("w", (co, ci // group, k, k), (ci // group * k * k) ** -0.5)
            b = weight("b", (co,), 0.1)
            nodes.append(
                helper.make_node(
                    "Conv", ["x", w, b], ["c"], kernel_shape=[k, k], strides=[case["stride"]] * 2, pads=pads, **extra
                )
            )
        else:
            w = weight("w", (ci, co // group, k, k), (ci * k * k) ** -0.5)
            b = weight("b", (co,), 0.1)
            nodes.append(
                helper.make_node(
                    "ConvTranspose",
                    ["x", w, b],
                    ["c"],
                    kernel_shape=[k, k],
                    strides=[case["stride"]] * 2,
                    pads=pads,
                    **extra,
                )
            )
        nodes.append(
            helper.make_node("Relu", ["c"], ["y"])
            if case.get("relu", True)
            else helper.make_node("Identity", ["c"], ["y"])
        )
    elif kind == "nn":
        q, m, d = case["queries"], case["bank"], case["dim"]
        shape = (q, d)
        bank = weight("bank", (m, d), 1.0)
        bank_t = weight("bank_t", (d, m), 1.0)
        inits[-1] = numpy_helper.from_array(numpy_helper.to_array(inits[0]).T.copy(), "bank_t")
        bank_sq = numpy_helper.from_array((numpy_helper.to_array(inits[0]) ** 2).sum(1).astype(np.float32), "bank_sq")
        inits.append(bank_sq)
        inits.append(numpy_helper.from_array(np.array([1], np.int64), "one"))
        inits.append(numpy_helper.from_array(np.array([-2.0], np.float32), "minus2"))
        del bank
        # anomalib's euclidean_dist: x^2 - 2 x.y + y^2, clamped, sqrt; then min(1), as PatchCore's nearest_neighbors
        nodes += [
            helper.make_node("Mul", ["x", "x"], ["xx"]),
            helper.make_node("ReduceSum", ["xx", "one"], ["x_sq"], keepdims=1),
            helper.make_node("MatMul", ["x", bank_t], ["xy"]),
            helper.make_node("Mul", ["xy", "minus2"], ["xy2"]),
            helper.make_node("Add", ["xy2", "x_sq"], ["s1"]),
            helper.make_node("Add", ["s1", "bank_sq"], ["s2"]),
            helper.make_node("Relu", ["s2"], ["s3"]),
            helper.make_node("Sqrt", ["s3"], ["dist"]),
            helper.make_node("ReduceMin", ["dist"], ["y"], axes=[1], keepdims=1),
            helper.make_node("ArgMin", ["dist"], ["idx"], axis=1, keepdims=1),
        ]
    elif kind == "layernorm":
        shape = (1, case["rows"], case["dim"])
        g = weight("g", (case["dim"],), 1.0)
        b = weight("b", (case["dim"],), 0.1)
        nodes.append(helper.make_node("LayerNormalization", ["x", g, b], ["y"], axis=-1, epsilon=1e-6))
    elif kind == "resize":
        c, s, o = case["channels"], case["size"], case["out"]
        shape = (1, c, s, s)
        inits.append(numpy_helper.from_array(np.array([1, c, o, o], np.int64), "sizes"))
        nodes.append(
            helper.make_node(
                "Resize", ["x", "", "", "sizes"], ["y"], mode="linear", coordinate_transformation_mode="half_pixel"
            )
        )
    elif kind == "where":
        s = case["size"]
        shape = (1, 1, s, s)
        inits.append(numpy_helper.from_array(np.array(0.5, np.float32), "t"))
        inits.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero"))
        nodes += [
            helper.make_node("Greater", ["x", "t"], ["mask"]),
            helper.make_node("Where", ["mask", "x", "zero"], ["y"]),
        ]
    else:
        raise ValueError(kind)
    graph = helper.make_graph(
        nodes,
        case["name"],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString(), shape


def model_cases(path: Path) -> list[dict]:
    """Every distinct 2-D Conv and ConvTranspose of a model as `build` takes it in (shapes fixed and folded by
    intake), with how often it runs."""
    import onnx
    from onnx import shape_inference

    from compilers.frontends.intake import import_model

    model = shape_inference.infer_shapes(onnx.load_from_string(import_model(path).onnx_bytes))
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output)
    }
    cases: dict[tuple, dict] = {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        x, y = shapes.get(node.input[0]), shapes.get(node.output[0])
        if not x or len(x) != 4 or not all(x) or not y or len(y) != 4 or not y[1]:
            print(
                f"skipped {node.op_type} {node.name or node.output[0]}: its shape is not known statically", flush=True
            )
            continue
        k = attrs.get("kernel_shape", [None])[0]
        if k is None or len(set(attrs["kernel_shape"])) != 1 or len(set(attrs.get("strides", [1]))) != 1:
            print(f"skipped {node.op_type} {node.name or node.output[0]}: not a square kernel and stride", flush=True)
            continue
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            print(f"skipped {node.op_type} {node.name or node.output[0]}: auto_pad", flush=True)
            continue
        case = {
            "kind": "conv" if node.op_type == "Conv" else "deconv",
            "ci": x[1],
            "co": y[1],
            "k": k,
            "size": x[2],
            "width": x[3],
            "stride": attrs.get("strides", [1])[0],
            "pads": list(attrs.get("pads", [0, 0, 0, 0])),
            "group": attrs.get("group", 1),
            "dilation": attrs.get("dilations", [1])[0],
            "relu": False,
        }
        key = tuple(sorted((n, str(v)) for n, v in case.items()))
        if key in cases:
            cases[key]["count"] += 1
            continue
        p = case["pads"]
        case["name"] = (
            f"{'conv' if case['kind'] == 'conv' else 'deconv'}_{k}x{k}_s{case['stride']}_{x[1]}_{y[1]}_{x[2]}"
            + (f"x{x[3]}" if x[3] != x[2] else "")
            + (f"_p{''.join(map(str, p))}" if any(p) else "")
            + (f"_g{case['group']}" if case["group"] > 1 else "")
        )
        case["count"] = 1
        cases[key] = case
    return list(cases.values())


def _out(size: int, k: int, stride: int, pad_before: int, pad_after: int, dilation: int = 1) -> int:
    return (size + pad_before + pad_after - dilation * (k - 1) - 1) // stride + 1


def flops(case: dict) -> float:
    kind = case["kind"]
    if kind == "conv":
        p = case.get("pads", [case.get("pad", 0)] * 4)
        d = case.get("dilation", 1)
        oh = _out(case["size"], case["k"], case["stride"], p[0], p[2], d)
        ow = _out(case.get("width", case["size"]), case["k"], case["stride"], p[1], p[3], d)
        return 2.0 * case["ci"] * case["co"] // case.get("group", 1) * case["k"] ** 2 * oh * ow
    if kind == "deconv":
        return (
            2.0
            * case["ci"]
            * case["co"]
            // case.get("group", 1)
            * case["k"] ** 2
            * case["size"]
            * case.get("width", case["size"])
        )
    if kind == "nn":
        return 2.0 * case["queries"] * case["bank"] * case["dim"]
    return 0.0


def run_case(case: dict, target, threads: int, rounds: int, calls: int) -> dict:
    import numpy as np

    from benchmarks import suite_engines as se

    onnx_bytes, shape = _model(case)
    x = np.random.default_rng(1).random(shape, dtype=np.float32)
    ort = se.ort_engine(onnx_bytes, "x", threads)
    mod, params = se.relax_module(onnx_bytes, target)
    tvm = se.tvm_engine("tvm_default", mod, params, target)
    want, got = ort.run(x)[0], tvm.run(x)[0]
    error = float(np.abs(got.astype(np.float64) - want).max())
    engines = [ort, tvm]
    se.sample(engines, x, rounds, calls, warmup=2)
    medians = {e.name: float(np.median(e.samples_ms)) for e in engines}
    f = flops(case)
    row = {
        "case": case["name"],
        "spec": case,
        "ort_ms": medians["ort"],
        "tvm_ms": medians["tvm_default"],
        "ratio": medians["tvm_default"] / medians["ort"],
        "max_abs_error": error,
        "gflop": f / 1e9,
    }
    if f:
        row["tvm_gflops"] = f / medians["tvm_default"] / 1e6
        row["ort_gflops"] = f / medians["ort"] / 1e6
    return row


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=None, choices=list(CASES))
    parser.add_argument(
        "--model", type=Path, default=None, help="an ONNX model: its distinct convolutions are the cases"
    )
    parser.add_argument("--threads", type=int, default=THREADS_DEFAULT)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--output", type=Path, default=None, help="write op_speed.json and op_speed.md here")
    args = parser.parse_args(argv)
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    sys.path.insert(0, str(REPO))
    from benchmarks.cpu_info import cpu_description, fma_peak
    from targets.catalog import CompilerOptions, host_target

    target = host_target(CompilerOptions(num_cores=args.threads))
    cpu = cpu_description()
    peak, peak_how = fma_peak(target, args.threads)
    print(
        f"CPU {cpu['model']} ({', '.join(cpu['isa'])}); target {target.tvm_target}; FMA peak {peak:.0f} GFLOP/s ({peak_how}) on "
        f"{args.threads} cores",
        flush=True,
    )
    if args.model and args.cases:
        parser.error("--model and --cases are exclusive")
    cases = model_cases(args.model) if args.model else [CASES[n] for n in args.cases or CASES]
    rows = []
    for case in cases:
        row = run_case(case, target, args.threads, args.rounds, args.calls)
        row["count"] = case.get("count", 1)
        rows.append(row)
        rate = (
            f"  TVM {row['tvm_gflops']:6.1f} GFLOP/s ({100 * row['tvm_gflops'] / peak:4.1f}% of peak), ORT {row['ort_gflops']:6.1f}"
            if "tvm_gflops" in row
            else ""
        )
        print(
            f"{row['count']:2d} x {case['name']:28s} ORT {row['ort_ms']:9.3f} ms  TVM {row['tvm_ms']:9.3f} ms  x{row['ratio']:.2f}{rate}"
            f"  err {row['max_abs_error']:.1e}",
            flush=True,
        )
    if args.model:
        ort_ms = sum(r["count"] * r["ort_ms"] for r in rows)
        tvm_ms = sum(r["count"] * r["tvm_ms"] for r in rows)
        print(
            f"all convolutions of {args.model}, weighted by count: ORT {ort_ms:.2f} ms  TVM {tvm_ms:.2f} ms", flush=True
        )
        for r in sorted(rows, key=lambda r: -r["count"] * (r["tvm_ms"] - r["ort_ms"]))[:8]:
            print(f"  TVM behind by {r['count'] * (r['tvm_ms'] - r['ort_ms']):6.2f} ms: {r['count']} x {r['case']}")
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
        doc = {
            "command": "python benchmarks/op_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
            "cpu": cpu,
            "target": target.tvm_target,
            "threads": args.threads,
            "fma_peak_gflops": peak,
            "fma_peak_how": peak_how,
            "load_end": [round(v, 2) for v in os.getloadavg()],
            "cases": rows,
        }
        (args.output / "op_speed.json").write_text(json.dumps(doc, indent=2) + "\n")
        lines = [
            f"# Single-op speed: TVM default schedules vs ONNX Runtime ({args.threads} threads)",
            "",
            (
                f"CPU: {cpu['model']}, ISA {', '.join(cpu['isa'])}; TVM target `{json.dumps(target.tvm_target)}`; "
                f"2-core FMA peak {peak:.0f} GFLOP/s ({peak_how}). Medians of {args.rounds} rounds x {args.calls} calls, engines "
                "alternating; the machine was shared with other work, so absolute times are noisy."
            ),
            "",
            "| case | ORT ms | TVM ms | TVM/ORT | TVM GFLOP/s | % of peak | ORT GFLOP/s |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            g = (
                f"{r['tvm_gflops']:.1f} | {100 * r['tvm_gflops'] / peak:.0f}% | {r['ort_gflops']:.1f}"
                if "tvm_gflops" in r
                else "- | - | -"
            )
            lines.append(f"| {r['case']} | {r['ort_ms']:.3f} | {r['tvm_ms']:.3f} | {r['ratio']:.2f} | {g} |")
        (args.output / "op_speed.md").write_text("\n".join(lines) + "\n")
        print("wrote", args.output / "op_speed.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
