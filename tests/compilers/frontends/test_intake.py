import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from compilers.frontends.intake import import_model
from compilers.frontends.spec import OutputRole, spec_from_dict
from packager.errors import ModelImportError
from tests.conftest import make_tiny_autoencoder, tiny_spec_dict


def test_onnx_with_explicit_spec(tiny_model):
    model, spec = tiny_model
    imported = import_model(model, spec)
    assert imported.input_shape == (1, 3, 64, 64)
    assert imported.output_names == ("score", "anomaly_map")
    assert imported.frontend == "onnx" and imported.opset == 18
    assert len(imported.sha256) == 64


def test_spec_inferred_from_graph(tiny_model):
    model, _ = tiny_model
    imported = import_model(model)
    assert imported.spec.output(OutputRole.ANOMALY_MAP).name == "anomaly_map"
    assert imported.spec.output(OutputRole.SCORE).name == "score"
    assert imported.spec.preprocessing.resize == (64, 64)


def test_spec_from_anomalib_metadata(tmp_path):
    model = make_tiny_autoencoder(tmp_path / "model.onnx")
    (tmp_path / "metadata.json").write_text(
        json.dumps(
            {
                "task": "segmentation",
                "image_threshold": 12.5,
                "pixel_threshold": 11.0,
                "pred_scores.min": 3.0,
                "pred_scores.max": 30.0,
                "transform": {
                    "__class_fullname__": "Compose",
                    "transforms": [
                        {"__class_fullname__": "Resize", "height": 64, "width": 64},
                        {
                            "__class_fullname__": "Normalize",
                            "mean": [0.485, 0.456, 0.406],
                            "std": [0.229, 0.224, 0.225],
                        },
                    ],
                },
            }
        )
    )
    imported = import_model(model)
    assert imported.frontend == "anomalib"
    assert imported.spec.image_threshold == 12.5 and imported.spec.pixel_threshold == 11.0
    assert (imported.spec.normalization.min, imported.spec.normalization.max) == (3.0, 30.0)
    assert imported.spec.preprocessing.mean == (0.485, 0.456, 0.406)


def test_corrupt_onnx_names_the_file(tmp_path):
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf" * 10)
    with pytest.raises(ModelImportError, match="corrupt.onnx"):
        import_model(bad)


def test_truncated_onnx_names_the_file(tmp_path, tiny_model):
    data = tiny_model[0].read_bytes()
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelImportError, match="truncated.onnx"):
        import_model(bad)


def test_unknown_output_name_in_spec(tmp_path, tiny_model):
    spec = tiny_spec_dict()
    spec["outputs"][1]["name"] = "heatmap"
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(ModelImportError, match="'heatmap'.*graph outputs: \\['score', 'anomaly_map'\\]"):
        import_model(tiny_model[0], path)


def _single_node_model(path, node, out_shape=(1, 3, 8, 8), in_shape=(1, 3, 8, 8), opset=18, domain_opsets=()):
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, list(out_shape))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *domain_opsets])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def test_unsupported_operator_names_node_and_op(tmp_path):
    node = helper.make_node("Det", ["image"], ["anomaly_map"], name="determinant_node")
    path = _single_node_model(tmp_path / "det.onnx", node, out_shape=(1, 3))
    with pytest.raises(ModelImportError, match="determinant_node.*'Det'"):
        import_model(path)


def test_custom_domain_operator_is_rejected(tmp_path):
    node = helper.make_node("FancyNorm", ["image"], ["anomaly_map"], name="fancy", domain="com.acme")
    path = _single_node_model(tmp_path / "custom.onnx", node, domain_opsets=[helper.make_opsetid("com.acme", 1)])
    with pytest.raises(ModelImportError, match="fancy.*com.acme.FancyNorm"):
        import_model(path)


def test_missing_input_shape_asks_for_a_spec(tmp_path):
    node = helper.make_node("Relu", ["image"], ["anomaly_map"], name="relu")
    path = _single_node_model(
        tmp_path / "dynamic.onnx", node, in_shape=(1, 3, "height", "width"), out_shape=(1, 3, "height", "width")
    )
    with pytest.raises(ModelImportError, match="dynamic.onnx.*'image'.*dimension 2.*height"):
        import_model(path)


def test_missing_input_shape_is_fixed_by_spec(tmp_path):
    node = helper.make_node("Relu", ["image"], ["anomaly_map"], name="relu")
    path = _single_node_model(
        tmp_path / "dynamic.onnx", node, in_shape=(1, 3, "height", "width"), out_shape=(1, 3, "height", "width")
    )
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "input": {"name": "image", "shape": [1, 3, 32, 48]},
                "outputs": [{"name": "anomaly_map", "role": "anomaly_map"}],
                "image_threshold": 1.0,
            }
        )
    )
    imported = import_model(path, spec)
    fixed = onnx.load_from_string(imported.onnx_bytes)
    assert [d.dim_value for d in fixed.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 32, 48]


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelImportError, match="nope.onnx: model file not found"):
        import_model(tmp_path / "nope.onnx")


def test_unsupported_format(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"x")
    with pytest.raises(ModelImportError, match="unsupported model format '.tflite'"):
        import_model(path)


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda s: s["input"].update(shape=[1, 3, 64]), "input.shape"),
        (lambda s: s["input"].update(layout="CHWN"), "input.layout"),
        (lambda s: s["outputs"][0].update(role="heatmap"), "outputs[0].role"),
        (lambda s: s.update(outputs=[{"name": "anomaly_map", "role": "mask"}]), "outputs"),
        (lambda s: s["outputs"][1].update(role="score"), "outputs[1].role"),
        (lambda s: s["outputs"].append({"name": "score", "role": "label"}), "outputs[2].name"),
        (lambda s: s.pop("image_threshold"), "image_threshold"),
        (lambda s: s["classes"][0].update(color="red"), "classes"),
        (lambda s: s["preprocessing"].update(std=[1, 0, 1]), "preprocessing.std"),
        (lambda s: s["preprocessing"].update(mean=[0, 0]), "preprocessing.mean"),
        (lambda s: s["preprocessing"].update(resize=[32, 32]), "preprocessing.resize"),
        (lambda s: s.update(normalization={"min": 2, "max": 1}), "normalization"),
    ],
)
def test_bad_spec_names_the_field(mutate, field):
    spec = tiny_spec_dict()
    mutate(spec)
    with pytest.raises(ModelImportError) as info:
        spec_from_dict(spec)
    assert info.value.field == field
    assert field.split("[")[0].split(".")[0] in info.value.message


def test_spec_round_trips_through_json():
    spec = spec_from_dict(tiny_spec_dict())
    assert spec_from_dict(json.loads(spec.to_json())) == spec


def test_pytorch_exported_program(tmp_path):
    torch = pytest.importorskip("torch")
    from tests.conftest import save_tiny_exported_program

    path = tmp_path / "net.pt2"
    net = save_tiny_exported_program(path)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(tiny_spec_dict()))
    imported = import_model(path, spec)
    assert imported.frontend == "pytorch"
    import onnxruntime as ort

    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    session = ort.InferenceSession(imported.onnx_bytes, providers=["CPUExecutionProvider"])
    score, anomaly_map = session.run(["score", "anomaly_map"], {"image": x})
    want_score, want_map = net(torch.from_numpy(x))
    np.testing.assert_allclose(anomaly_map, want_map.detach().numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(score, want_score.detach().numpy(), rtol=1e-4, atol=1e-6)


def test_pytorch_needs_a_spec(tmp_path):
    path = tmp_path / "net.pt2"
    path.write_bytes(b"x")
    with pytest.raises(ModelImportError, match="needs a model spec"):
        import_model(path)


def test_the_recorded_onnx_op_list_is_the_installed_tvms():
    """Registering a model checks ops against the recorded list, so that it need not import TVM (3 s)."""
    import json

    from compilers.frontends.onnx import SUPPORTED_OPS_FILE, installed_tvm_version, tvm_onnx_converters

    recorded = json.loads(SUPPORTED_OPS_FILE.read_text())
    rerecord = 'python -c "from compilers.frontends.onnx import record_supported_ops; record_supported_ops()"'
    assert recorded["apache-tvm"] == installed_tvm_version(), f"the apache-tvm pin changed: {rerecord}"
    assert set(recorded["ops"]) == tvm_onnx_converters(), f"TVM's converters differ from the record: {rerecord}"


def test_registering_a_model_does_not_import_tvm(tmp_path):
    import subprocess
    import sys

    from packager.example_model import example_model_paths

    model, spec = example_model_paths()
    code = (
        "import sys; from compilers.frontends.intake import import_model; "
        f"import_model({str(model)!r}, {str(spec)!r}); print('tvm' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
