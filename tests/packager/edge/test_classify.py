"""The unpacked artifact classifies the example images with the TVM runtime alone."""

import json
import os
import subprocess
import sys
import zipfile

import pytest

from packager.build.pipeline import PackagingRequest, run_packaging
from targets import host_target

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def unpacked_example(example_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("gg")
    result = run_packaging(
        PackagingRequest(
            model_path=example_model[0],
            spec_path=example_model[1],
            target=host_target(),
            component_name="com.example.Runner",
            component_version="1.0.0",
            output_dir=out,
            benchmark_runs=2,
        )
    )
    root = tmp_path_factory.mktemp("device") / "model"
    with zipfile.ZipFile(result.bundle.artifacts[0].path) as archive:
        archive.extractall(root)
    return root


def run_runner(root, *images, model_dir=None):
    # Only the unpacked artifact is importable as code: no packager, no compilers on the path.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(root)}
    code = (
        "import sys, runpy; root = sys.argv.pop(1); "
        "sys.modules['packager'] = None; sys.modules['compilers'] = None; "
        "sys.argv[0] = 'lookout_edge.classify'; runpy.run_module('lookout_edge.classify', run_name='__main__')"
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(root), "--model-dir", str(model_dir or root / "compiled"), *map(str, images)],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=120,
    )


def test_runner_classifies_normal_and_defective_images(unpacked_example, example_images):
    result = run_runner(unpacked_example, example_images / "normal_01.png", example_images / "defect_scratch_01.png")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    by_name = {os.path.basename(line["image"]): line for line in lines}
    assert by_name["normal_01.png"]["is_anomalous"] is False
    assert by_name["defect_scratch_01.png"]["is_anomalous"] is True
    assert (
        by_name["defect_scratch_01.png"]["score"]
        > by_name["defect_scratch_01.png"]["threshold"]
        > by_name["normal_01.png"]["score"]
    )
    assert 0.0 <= by_name["normal_01.png"]["confidence"] <= 1.0


def test_runner_self_check(unpacked_example):
    result = run_runner(unpacked_example, "--self-check")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[0])["self_check"] == "ok"


def test_runner_reports_unreadable_image(unpacked_example, tmp_path):
    bad = tmp_path / "not_an_image.png"
    bad.write_bytes(b"nope")
    result = run_runner(unpacked_example, bad)
    assert result.returncode == 2
    assert "cannot read image" in result.stderr and "Traceback" not in result.stderr


def test_runner_names_what_a_cuda_model_is_missing(unpacked_example, tmp_path):
    """Here there is no NVIDIA driver: the runner says so, through model_runner's message, and exits 2."""
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1")
        pytest.skip("this machine has the NVIDIA driver's libcuda.so.1")
    except OSError:
        pass
    (tmp_path / "manifest.json").write_text(
        json.dumps({"device": "cuda", "entry": "main", "params": [], "outputs": ["score"]})
    )
    result = run_runner(unpacked_example, "--self-check", model_dir=tmp_path)
    assert result.returncode == 2
    assert (
        "cannot load the model" in result.stderr
        and "TVM's CUDA runtime" in result.stderr
        and "libcuda" in result.stderr
    )
