"""Every anomalib 2.x zoo model, exported as anomalib writes it, through `python -m packager build --model <export>`:
it compiles, matches ONNX Runtime on the original export, and the Edge Agent serves it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from benchmarks.models.anomalib_zoo import CLASSIFICATION_ONLY, MODELS

pytestmark = pytest.mark.slow  # each model is exported (torch) and compiled (TVM)

REPO = Path(__file__).resolve().parents[3]
COMPONENT = "com.acme.Zoo"
RTOL, ATOL = 1e-3, 1e-4  # the build check's tolerance
DEPLOYED = ("stfpm", "dfkde")  # a segmentation model and a classification one, through deploy-local


class ZooBuild:
    def __init__(self, export_dir: Path, build_dir: Path | None, model_dir: Path):
        self.export_dir, self.build_dir, self.model_dir = export_dir, build_dir, model_dir

    @property
    def onnx_path(self) -> Path:
        return self.export_dir / "model.onnx"


@pytest.fixture(scope="session")
def zoo_build(tmp_path_factory):
    """name -> ZooBuild: exported once per session and built with the CLI; later tests reuse the build."""
    from benchmarks.models.anomalib_zoo import export

    builds: dict[str, ZooBuild] = {}
    root = tmp_path_factory.mktemp("zoo")

    def get(name: str) -> ZooBuild:
        if name not in builds:
            export_dir, build_dir = root / name / "export", root / name / "gg"
            export(name, export_dir)
            built = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "packager",
                    "build",
                    "--model",
                    str(export_dir / "model.onnx"),
                    "--output",
                    str(build_dir),
                    "--component-name",
                    COMPONENT,
                    "--benchmark-runs",
                    "1",
                ],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=1800,
                env={**os.environ, "PACKAGER_HOME": str(root / name / "home")},
            )
            assert built.returncode == 0, built.stderr[-3000:]
            # The build's home (model store, intake and compile caches) is not read again, and over the whole zoo it
            # is most of the session's disk: 11 of 17 GB, DRAEM's alone 3 GB.
            shutil.rmtree(root / name / "home")
            model_dir = root / name / "unzipped"
            with zipfile.ZipFile(next((build_dir / "artifacts" / COMPONENT).glob("*/model.zip"))) as archive:
                archive.extractall(model_dir)
            if name not in DEPLOYED:  # the bundle is only read by deploy-local; the rest use the unzipped model
                shutil.rmtree(build_dir)
            builds[name] = ZooBuild(export_dir, build_dir if name in DEPLOYED else None, model_dir / "compiled")
        return builds[name]

    return get


def assert_outputs_match(got: dict, want: dict) -> None:
    """Floats within the build check's tolerance; bools equal except where their float is that close to 0.5."""
    pairs = {"pred_label": "pred_score", "pred_mask": "anomaly_map"}
    for name, expected in want.items():
        actual = got[name]
        assert actual.shape == expected.shape, name
        if expected.dtype == np.bool_:
            differ = actual != expected
            differ &= np.abs(want[pairs[name]].astype(np.float64) - 0.5) > ATOL + RTOL * 0.5
            assert not differ.any(), f"{name}: {int(differ.sum())} elements differ away from the threshold"
        else:
            np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL, err_msg=name)


# Reverse Distillation's decoder amplifies rounding (its anomaly_map is 1 - cosine similarity of deep features): its
# default compile used 77% of the check's tolerance on the check's input and 353% on another. The build check holds a
# first compile to half the tolerance, so Reverse Distillation ships its precise compile, which measured under 50% on
# these inputs on an AVX-512 machine (AMD EPYC Zen 4). On AVX2 machines, where ONNX Runtime's own kernels round
# otherwise, the default compile drifted 47 of 65536 pixels past the tolerance (up to 7.9e-4); the precise compile
# has not been measured there yet, so it is an expected failure there until it has (issue 14), never a pass.
def _unmeasured_here(name: str) -> bool:
    from targets.cpu import host_cpu

    return name == "reverse_distillation" and "avx512f" not in host_cpu().flags


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            n,
            marks=pytest.mark.xfail(
                reason="Reverse Distillation's precise compile is unmeasured on AVX2 (issue 14)", strict=False
            ),
        )
        if _unmeasured_here(n)
        else n
        for n in sorted(MODELS)
    ],
)
def test_zoo_model_builds_from_its_export_and_matches_onnxruntime(name, zoo_build):
    import onnx
    import onnxruntime as ort

    from packager.edge.model_runner import CompiledModel

    build = zoo_build(name)
    exported = onnx.load(str(build.onnx_path), load_external_data=False)  # as anomalib writes it
    assert (build.export_dir / "model.onnx.data").is_file()
    assert [i.type.tensor_type.shape.dim[0].dim_param for i in exported.graph.input] == ["batch_size"]
    outputs = [o.name for o in exported.graph.output]
    expected_outputs = ["pred_score", "pred_label"] + (
        [] if name in CLASSIFICATION_ONLY else ["anomaly_map", "pred_mask"]
    )
    assert outputs == expected_outputs

    spec = json.loads((build.model_dir / "spec.json").read_text())
    roles = {o["name"]: o["role"] for o in spec["outputs"]}
    expected_roles = {"pred_score": "score", "pred_label": "label", "anomaly_map": "anomaly_map", "pred_mask": "mask"}
    assert roles == {k: v for k, v in expected_roles.items() if k in outputs}

    compiled = CompiledModel.load(build.model_dir)
    session = ort.InferenceSession(str(build.onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(7)
    for x in (rng.random((1, 3, 256, 256), dtype=np.float32), np.full((1, 3, 256, 256), 0.5, np.float32)):
        want = dict(zip(outputs, session.run(outputs, {"input": x})))
        assert_outputs_match(compiled.run(x), want)


def test_agent_serves_zoo_models_with_masks_at_the_image_size(zoo_build, tmp_path):
    """Segmentation models (DRAEM's map is [batch, h, w], STFPM's [batch, 1, h, w]) and a classification one in one
    agent: verdicts follow the graph's label and mask."""
    import grpc
    import onnxruntime as ort

    from packager.edge import edge_agent_pb2 as pb
    from packager.edge import edge_agent_pb2_grpc as pb_grpc
    from packager.edge import registry
    from packager.edge.agent import serve
    from packager.edge.model_host import ModelHost
    from packager.edge.model_runner import preprocess
    from tests.packager.edge.conftest import bitmap, wait_for_status

    served = ["stfpm", "dfkde", "draem"]
    registry_dir = tmp_path / "registry"
    for name in served:
        registry.add(registry_dir, registry.ModelRegistration(f"zoo-{name}", "1.0.0", zoo_build(name).model_dir))
    address = f"unix://{tmp_path}/agent.sock"
    server = serve(address, ModelHost(registry_dir), 4)
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (180, 300, 3), dtype=np.uint8)  # not the model's 256 x 256
    try:
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.EdgeAgentStub(channel)
            for name in served:
                component = f"zoo-{name}"
                stub.StartModel(pb.StartModelRequest(model_component=component))
                assert wait_for_status(stub, component, pb.RUNNING).status == pb.RUNNING
                result = stub.DetectAnomalies(
                    pb.DetectAnomaliesRequest(model_component=component, bitmap=bitmap(image))
                )
                result = result.detect_anomaly_result
                build = zoo_build(name)
                spec = json.loads((build.model_dir / "spec.json").read_text())
                session = ort.InferenceSession(str(build.onnx_path), providers=["CPUExecutionProvider"])
                want = dict(
                    zip([o.name for o in session.get_outputs()], session.run(None, {"input": preprocess(image, spec)}))
                )
                assert result.is_anomalous is bool(want["pred_label"].ravel()[0])
                assert result.anomaly_score == pytest.approx(float(want["pred_score"].ravel()[0]), abs=1e-3)
                assert result.anomaly_threshold == pytest.approx(0.5)
                assert 0.0 <= result.confidence <= 1.0
                if name in CLASSIFICATION_ONLY:
                    assert not result.HasField("anomaly_mask") and list(result.anomalies) == []
                    continue
                assert (result.anomaly_mask.width, result.anomaly_mask.height) == (300, 180)
                painted = np.frombuffer(result.anomaly_mask.byte_data, np.uint8).reshape(image.shape)
                marked = np.any(painted != (0, 0, 0), axis=-1)  # the spec's background is black
                area = sum(a.pixel_anomaly.total_percentage_area for a in result.anomalies[1:])
                assert area == pytest.approx(float(marked.mean()), abs=1e-6)
                assert area == pytest.approx(float(want["pred_mask"].mean()), abs=0.02)  # the graph's mask, upsampled
    finally:
        server.stop(grace=None).wait()


@pytest.mark.parametrize("name", DEPLOYED)
def test_deploy_local_serves_a_zoo_build(zoo_build, tmp_path, name):
    """The built components run as the Greengrass nucleus would run them; the agent answers for the model: a mask of
    the image's own size for a segmentation model, none (and no anomalies) for a classification one."""
    import grpc

    from packager.edge import edge_agent_pb2 as pb
    from packager.edge import edge_agent_pb2_grpc as pb_grpc
    from packager.greengrass.bundle import AGENT_COMPONENT
    from tests.packager.edge.conftest import bitmap, wait_for_status
    from tests.packager.greengrass.local.test_deploy import deploy_local, states, wait_for

    build = zoo_build(name)
    root, address = tmp_path / "root", f"unix://{tmp_path}/agent.sock"
    update = json.dumps({AGENT_COMPONENT: {"MERGE": {"Socket": address}}})
    process = subprocess.Popen(
        deploy_local(str(build.build_dir), "--root", str(root), "--update-config", update),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    image = np.random.default_rng(5).integers(0, 256, (150, 220, 3), dtype=np.uint8)
    try:
        wait_for(
            lambda: states(root) == {AGENT_COMPONENT: "RUNNING", COMPONENT: "FINISHED"} or process.poll() is not None,
            timeout=300,
        )
        assert process.poll() is None, process.stdout.read()
        with grpc.insecure_channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
            stub = pb_grpc.EdgeAgentStub(channel)
            wait_for(lambda: stub.ListModels(pb.ListModelsRequest()).models)
            assert stub.StartModel(pb.StartModelRequest(model_component=COMPONENT)).status == pb.STARTING
            assert wait_for_status(stub, COMPONENT, pb.RUNNING, timeout=300).status == pb.RUNNING
            result = stub.DetectAnomalies(pb.DetectAnomaliesRequest(model_component=COMPONENT, bitmap=bitmap(image)))
            result = result.detect_anomaly_result
            assert 0.0 <= result.anomaly_score <= 1.0 and result.anomaly_threshold == pytest.approx(0.5)
            if name in CLASSIFICATION_ONLY:
                assert not result.HasField("anomaly_mask") and list(result.anomalies) == []
            else:
                assert (result.anomaly_mask.width, result.anomaly_mask.height) == (220, 150)
                assert len(result.anomaly_mask.byte_data) == image.size
        stop = subprocess.run(
            deploy_local("--stop", "--root", str(root)), cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert stop.returncode == 0, stop.stderr
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
