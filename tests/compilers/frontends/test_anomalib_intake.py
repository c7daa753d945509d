"""anomalib 2.x exports at intake, on small graphs written with onnx.helper: external data, a symbolic batch axis,
run-time shape computations, opsets 11-21, output roles, bool outputs in the build check, and the model store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from compilers.frontends.intake import import_model
from compilers.frontends.spec import OutputRole
from packager.errors import ModelImportError

SIZE = 32


def anomalib_like(
    path: Path,
    *,
    opset: int = 18,
    external: bool = True,
    location: str | None = None,
    extra_symbolic: bool = False,
    classification: bool = False,
) -> Path:
    """conv -> per-pixel map -> anomalib's post-processing (normalise, > 0.5), with anomalib's names and a symbolic
    batch_size axis; the map is reshaped through Shape -> Gather -> Concat -> Reshape, as torch's exporter writes it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "conv.weight")
    c = lambda name, value: numpy_helper.from_array(np.asarray(value), name)  # noqa: E731
    inits = [
        w,
        c("zero_i", np.array([0], np.int64)),
        c("one", np.array([1], np.int64)),
        c("minus1", np.array([-1], np.int64)),
        c("axes1", np.array([1], np.int64)),
        c("axes23", np.array([2, 3], np.int64)),
        c("half", np.float32(0.5)),
        c("lo", np.float32(0.0)),
        c("hi", np.float32(1.0)),
        c("scale", np.float32(0.05)),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv.weight"], ["f"], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["f", "f"], ["f2"]),
        helper.make_node("ReduceMean", ["f2", "axes1"], ["m"], keepdims=1),
        helper.make_node("Shape", ["m"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero_i"], ["batch"], axis=0),
        helper.make_node("Concat", ["batch", "minus1"], ["flat_shape"], axis=0),
        helper.make_node("Reshape", ["m", "flat_shape"], ["flat"]),
        helper.make_node("Reshape", ["flat", "shape"], ["raw_map"]),
        helper.make_node("Mul", ["raw_map", "scale"], ["scaled"]),
        helper.make_node("Clip", ["scaled", "lo", "hi"], ["anomaly_map"]),
        helper.make_node("ReduceMax", ["anomaly_map", "axes23"], ["s4"], keepdims=0),
        helper.make_node("Reshape", ["s4", "minus1"], ["pred_score"]),
        helper.make_node("Greater", ["pred_score", "half"], ["pred_label"]),
        helper.make_node("Greater", ["anomaly_map", "half"], ["pred_mask"]),
    ]
    if opset < 13:  # ReduceMean/ReduceMax take axes as an attribute before opset 18
        nodes[2] = helper.make_node("ReduceMean", ["f2"], ["m"], axes=[1], keepdims=1)
        nodes[10] = helper.make_node("ReduceMax", ["anomaly_map"], ["s4"], axes=[2, 3], keepdims=0)
    elif opset < 18:
        nodes[2] = helper.make_node("ReduceMean", ["f2"], ["m"], axes=[1], keepdims=1)
        nodes[10] = helper.make_node("ReduceMax", ["anomaly_map"], ["s4"], axes=[2, 3], keepdims=0)
    outputs = [
        helper.make_tensor_value_info("pred_score", TensorProto.FLOAT, ["batch_size"]),
        helper.make_tensor_value_info("pred_label", TensorProto.BOOL, ["batch_size"]),
    ]
    if not classification:
        outputs += [
            helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["batch_size", 1, SIZE, SIZE]),
            helper.make_tensor_value_info("pred_mask", TensorProto.BOOL, ["batch_size", 1, SIZE, SIZE]),
        ]
    height = "height" if extra_symbolic else SIZE
    graph = helper.make_graph(
        nodes,
        "anomalib_like",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch_size", 3, height, SIZE])],
        outputs,
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7 if opset < 15 else 9
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.parent / (location or path.name)).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(
        model,
        str(path),
        save_as_external_data=external,
        all_tensors_to_one_file=True,
        location=location or path.name + ".data",
        size_threshold=512,
    )
    return path


def test_external_data_beside_the_model_imports(tmp_path):
    path = anomalib_like(tmp_path / "model.onnx")
    assert (tmp_path / "model.onnx.data").is_file()
    imported = import_model(path)
    assert imported.input_shape == (1, 3, SIZE, SIZE)
    roles = {o.name: o.role for o in imported.spec.outputs}
    assert roles == {
        "pred_score": OutputRole.SCORE,
        "pred_label": OutputRole.LABEL,
        "anomaly_map": OutputRole.ANOMALY_MAP,
        "pred_mask": OutputRole.MASK,
    }
    assert imported.spec.image_threshold == 0.5 and imported.spec.pixel_threshold == 0.5
    assert (imported.spec.normalization.min, imported.spec.normalization.max) == (0.0, 1.0)


def test_shape_computations_are_folded_and_tvm_imports_the_graph(tmp_path):
    import onnx

    from compilers.tvm_compile import to_relax

    imported = import_model(anomalib_like(tmp_path / "model.onnx"))
    graph = onnx.load_from_string(imported.onnx_bytes).graph
    assert not {n.op_type for n in graph.node} & {"Shape", "Gather", "Concat"}
    assert [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim] == [1]
    to_relax(imported)  # TVM's ONNX frontend takes the folded graph


@pytest.mark.parametrize("location", ["weights/all.bin", "model.onnx.data"])
def test_any_relative_location_is_read_and_the_result_matches_onnxruntime(tmp_path, location):
    import onnxruntime as ort

    from compilers.runners import OnnxRuntimeRunner

    path = anomalib_like(tmp_path / "m" / "model.onnx", location=location)
    imported = import_model(path)
    x = np.random.default_rng(1).random((1, 3, SIZE, SIZE), dtype=np.float32)
    want = ort.InferenceSession(str(path)).run(None, {"input": x})
    got = OnnxRuntimeRunner.load(imported).run(x)
    for value, expected in zip(got.values(), want):
        np.testing.assert_array_equal(value, expected)


def test_missing_or_short_external_data_names_the_tensor_and_file(tmp_path):
    path = anomalib_like(tmp_path / "model.onnx")
    data = tmp_path / "model.onnx.data"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(ModelImportError, match=r"tensor 'conv.weight' keeps its data in 'model.onnx.data' .*100 bytes"):
        import_model(path)
    data.unlink()
    with pytest.raises(
        ModelImportError, match=r"'conv.weight' keeps its data in 'model.onnx.data', which is missing"
    ) as info:
        import_model(path)
    assert "\n" not in info.value.message


def test_external_data_outside_the_models_folder_is_refused(tmp_path):
    import onnx

    path = anomalib_like(tmp_path / "inner" / "model.onnx")
    model = onnx.load(str(path), load_external_data=False)
    for init in model.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                entry.value = "../model.onnx.data"
    (tmp_path / "model.onnx.data").write_bytes((tmp_path / "inner" / "model.onnx.data").read_bytes())
    onnx.save(model, str(path))
    with pytest.raises(ModelImportError, match="not a path relative to the model's folder"):
        import_model(path)


def test_a_symbolic_dimension_other_than_batch_is_one_line_naming_input_and_dimension(tmp_path):
    path = anomalib_like(tmp_path / "model.onnx", extra_symbolic=True)
    with pytest.raises(ModelImportError) as info:
        import_model(path)
    assert "input 'input'" in info.value.message and "dimension 2 (height)" in info.value.message
    assert "\n" not in info.value.message
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "input": {"name": "input", "shape": [1, 3, SIZE, SIZE]},
                "image_threshold": 0.5,
                "outputs": [
                    {"name": "pred_score", "role": "score"},
                    {"name": "pred_label", "role": "label"},
                    {"name": "anomaly_map", "role": "anomaly_map"},
                    {"name": "pred_mask", "role": "mask"},
                ],
            }
        )
    )
    assert import_model(path, spec).input_shape == (1, 3, SIZE, SIZE)  # the spec fixes it


@pytest.mark.parametrize("opset", [11, 13, 17, 18, 21])
def test_opsets_11_to_21_import(tmp_path, opset):
    from compilers.tvm_compile import to_relax

    imported = import_model(anomalib_like(tmp_path / "model.onnx", opset=opset))
    assert imported.opset == opset
    to_relax(imported)


def test_classification_only_export_gets_score_and_label(tmp_path):
    imported = import_model(anomalib_like(tmp_path / "model.onnx", classification=True))
    assert imported.spec.is_classification
    assert [(o.name, o.role) for o in imported.spec.outputs] == [
        ("pred_score", OutputRole.SCORE),
        ("pred_label", OutputRole.LABEL),
    ]


def test_bool_outputs_may_differ_only_at_the_threshold():
    from compilers.verify import compare_outputs

    score = np.array([0.2, 0.5 + 5e-4, 0.9], np.float32)  # within atol + rtol * 0.5 of the threshold
    want = {"pred_score": score, "pred_label": score > 0.5}
    near = {"pred_score": score, "pred_label": np.array([False, False, True])}  # flipped where the score is at 0.5
    far = {"pred_score": score, "pred_label": np.array([True, True, True])}  # flipped at 0.2
    pairs = {"pred_label": ("pred_score", 0.5)}
    assert all(r.within_tolerance for r in compare_outputs(near, want, 1e-3, 1e-4, pairs))
    assert not compare_outputs(far, want, 1e-3, 1e-4, pairs)[1].within_tolerance


def test_postprocess_follows_the_graphs_label_and_mask():
    from packager.edge.model_runner import postprocess

    spec = {
        "outputs": [
            {"name": "pred_score", "role": "score"},
            {"name": "pred_label", "role": "label"},
            {"name": "anomaly_map", "role": "anomaly_map"},
            {"name": "pred_mask", "role": "mask"},
        ],
        "image_threshold": 0.5,
        "pixel_threshold": 0.5,
        "normalization": {"min": 0.0, "max": 1.0},
    }
    mask = np.zeros((1, 1, 4, 4), bool)
    mask[0, 0, 1, 1] = True
    outputs = {
        "pred_score": np.array([0.3], np.float32),
        "pred_label": np.array([True]),
        "anomaly_map": np.full((1, 1, 4, 4), 0.9, np.float32),
        "pred_mask": mask,
    }
    result = postprocess(outputs, spec)
    assert result.is_anomalous is True  # the label, though the score is under the threshold
    assert result.score == pytest.approx(0.3) and result.threshold == pytest.approx(0.5)
    assert result.anomaly_map.sum() == 1.0 and result.pixel_threshold == 0.5  # the mask, not the map
    classification = postprocess(
        {"pred_score": outputs["pred_score"], "pred_label": np.array([False])}, {**spec, "outputs": spec["outputs"][:2]}
    )
    assert classification.anomaly_map is None and classification.is_anomalous is False


def test_raw_scores_and_threshold_share_the_normalised_scale():
    from packager.edge.model_runner import postprocess

    spec = {
        "outputs": [{"name": "score", "role": "score"}, {"name": "map", "role": "anomaly_map"}],
        "image_threshold": 3.0,
        "normalization": {"min": 1.0, "max": 5.0},
    }
    result = postprocess({"score": np.array([4.0], np.float32), "map": np.zeros((1, 1, 4, 4), np.float32)}, spec)
    assert (result.score, result.threshold, result.is_anomalous) == (pytest.approx(0.75), pytest.approx(0.5), True)


def test_register_model_keeps_every_file_and_hashes_them_all(tmp_path):
    from packager.service.jobs import api

    home = tmp_path / "home"
    path = anomalib_like(tmp_path / "export" / "model.onnx")
    first = api.register_model("zoo", path, create_project=True, home=home)
    stored = list((home / "models" / "sha256").iterdir())
    assert len(stored) == 1 and sorted(p.name for p in stored[0].iterdir()) == ["model.onnx", "model.onnx.data"]
    assert stored[0].name == first["ModelSha256"]
    import_model(stored[0] / "model.onnx")  # the stored copy is complete
    data = tmp_path / "export" / "model.onnx.data"
    changed = bytearray(data.read_bytes())
    changed[0] ^= 1
    data.write_bytes(bytes(changed))
    second = api.register_model("zoo", path, home=home)
    assert second["ModelSha256"] != first["ModelSha256"]  # the digest covers the data file too


def test_register_model_through_the_client(tmp_path, monkeypatch):
    import packager

    home = tmp_path / "home"
    monkeypatch.setenv("PACKAGER_HOME", str(home))
    path = anomalib_like(tmp_path / "export" / "model.onnx")
    response = packager.client().register_model(ProjectName="zoo-client", ModelPath=str(path), CreateProject=True)
    assert response["ModelMetadata"]["ModelVersion"] == "1"
    assert (home / "models" / "sha256" / response["ModelSha256"] / "model.onnx.data").is_file()
