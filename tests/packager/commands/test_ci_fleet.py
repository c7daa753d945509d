"""docs/ci.md's packaging step (.ci/package-fleet), run twice against moto's S3 over HTTP, as two CI runs would:
each on a fresh $PACKAGER_HOME, the second with only the first's compile cache restored."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import make_tiny_autoencoder, tiny_spec_dict
from tests.packager.service.jobs.support import REPO_ROOT, S3_BUCKET, home, s3_server  # noqa: F401  (fixtures)

SCRIPT = REPO_ROOT / ".ci" / "package-fleet"
TARGETS = ("jetson_xavier", "LINUX/X86_64")


def test_the_documented_workflow_runs_setup_restores_the_caches_and_calls_the_script():
    text = (REPO_ROOT / "docs" / "ci.md").read_text()
    [workflow] = [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)]
    steps = workflow["jobs"]["package"]["steps"]
    runs = [step.get("run", "") for step in steps]
    assert "./setup.sh" in runs and ".ci/package-fleet" in runs
    assert runs.index("./setup.sh") < runs.index(".ci/package-fleet")
    [cache] = [step for step in steps if step.get("uses", "").startswith("actions/cache")]
    assert set(cache["with"]["path"].split()) == {".packager/compile-cache", ".packager/tuning"}
    assert workflow["jobs"]["package"]["env"]["PACKAGER_HOME"].endswith("/.packager")
    script = SCRIPT.read_text()
    assert "${TARGETS:-jetson_xavier LINUX/X86_64}" in script
    assert "--max-ratio" in script and "--s3-output" in script and "--summary-json" in script


def _models(root: Path) -> Path:
    for i, name in enumerate(("pcb", "housing")):
        folder = root / name
        folder.mkdir(parents=True)
        make_tiny_autoencoder(folder / "model.onnx", seed=i)
        (folder / "model_spec.json").write_text(json.dumps(tiny_spec_dict()))
    return root


@pytest.mark.slow
def test_two_ci_runs_second_hits_the_cache_with_byte_identical_artifacts(home, s3_server, tmp_path):  # noqa: F811
    models = _models(tmp_path / "models")
    runs = []
    for run in ("first", "second"):
        run_home = tmp_path / f"runner-{run}" / ".packager"
        if runs:  # the CI cache step: only the caches travel between runs
            shutil.copytree(runs[0]["home"] / "compile-cache", run_home / "compile-cache")
        out = tmp_path / f"runner-{run}" / "greengrass-build"
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "PACKAGER_HOME": str(run_home),
            "MODELS_DIR": str(models),
            "S3_OUTPUT": f"s3://{S3_BUCKET}/vision",
            "VERSION": "1.0.7",
            "COMPONENT_PREFIX": "com.factory",
            "MAX_RATIO": "1000",
            "BENCHMARK_RUNS": "3",
            "OUTPUT_DIR": str(out),
            "NO_REGISTER": "1",
        }
        done = subprocess.run(
            ["bash", str(SCRIPT)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1500
        )
        assert done.returncode == 0, done.stderr[-3000:]
        summaries = {name: json.loads((out / f"summary-{name}.json").read_text()) for name in ("pcb", "housing")}
        runs.append({"home": run_home, "out": out, "summaries": summaries})
    first, second = runs
    for name in ("pcb", "housing"):
        a, b = first["summaries"][name], second["summaries"][name]
        assert a["status"] == b["status"] == "SUCCEEDED" and a["component"] == f"com.factory.{name}"
        assert [t["target"] for t in b["targets"]] == list(TARGETS)
        assert [t["compile_cache"] for t in a["targets"]] == ["miss", "miss"]
        assert [t["compile_cache"] for t in b["targets"]] == ["hit", "hit"], "the restored cache serves every target"
        for ta, tb in zip(a["targets"], b["targets"]):
            assert ta["digest"] == tb["digest"]
            assert Path(ta["artifact"]).read_bytes() == Path(tb["artifact"]).read_bytes()
        jetson, x86 = b["targets"]
        assert jetson["ratio_tvm_to_ort"] is None and jetson["ratio_not_measured"] == "not measured: no device"
        assert x86["ratio_tvm_to_ort"] > 0 and x86["max_abs_error"]
        recipe = yaml.safe_load(Path(b["recipe"]).read_text())
        assert [m["Platform"]["architecture"] for m in recipe["Manifests"]] == ["aarch64", "amd64"]
        prefix = f"vision/com.factory.{name}/1.0.7/"
        keys = {o["Key"] for o in s3_server.list_objects_v2(Bucket=S3_BUCKET, Prefix=prefix)["Contents"]}
        assert keys == {
            prefix + f
            for f in (
                "model-jetson_xavier.zip",
                "model-linux-x86_64.zip",
                "recipe.yaml",
                "benchmark-jetson_xavier.json",
                "benchmark-linux-x86_64.json",
            )
        }
        for target in b["targets"]:
            remote = s3_server.get_object(Bucket=S3_BUCKET, Key=prefix + Path(target["artifact"]).name)["Body"].read()
            assert remote == Path(target["artifact"]).read_bytes()
        report = s3_server.get_object(Bucket=S3_BUCKET, Key=prefix + "benchmark-linux-x86_64.json")["Body"].read()
        assert report == Path(x86["report"]).read_bytes(), "the second run's report replaced the first's"
