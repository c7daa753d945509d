"""Several targets in one component, machine-readable results, and the speed gate."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from packager.build.benchmark import EMULATED, NO_DEVICE, BenchmarkReport, LatencyStats
from packager.build.pipeline import check_speed_gate
from packager.cli import main
from packager.errors import SpeedGateError
from packager.greengrass.bundle import (
    AGENT_COMPONENT,
    ComponentIdentity,
    TargetBuild,
    bundle_targets,
    reproducible_zip,
)
from packager.greengrass.local.deploy import DeployOptions, plan_deployment, this_platform
from targets import get_target
from tests.packager.service.jobs.support import home  # noqa: F401  (fixture)

SHARED_SCHEMA = Path("/work/shared/reference/greengrass-recipe.schema.json")
PACKAGED_SCHEMA = Path(__file__).resolve().parents[3] / "packager" / "data" / "greengrass-recipe.schema.json"


def _lower(value):
    if isinstance(value, dict):
        return {str(k).lower(): _lower(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lower(v) for v in value]
    return value


def _report(target_name: str, tvm_ms: float | None, ort_ms: float = 1.0, **fields) -> BenchmarkReport:
    ort = LatencyStats.from_seconds([ort_ms / 1e3] * 3)
    tvm = LatencyStats.from_seconds([tvm_ms / 1e3] * 3) if tvm_ms is not None else None
    return BenchmarkReport(
        **{
            "target": target_name,
            "device": "host x86_64",
            "emulated": False,
            "threads": 2,
            "warmup": 1,
            "tvm": tvm,
            "onnxruntime": ort,
            "ratio_tvm_to_ort": tvm_ms / ort_ms if tvm_ms else None,
            "input_shape": (1, 3, 8, 8),
            "not_measured": None if tvm else NO_DEVICE,
            **fields,
        }
    )


def _fleet_bundle(tmp_path: Path, names: tuple[str, ...] = ("LINUX/X86_64", "jetson_xavier")):
    builds = [
        TargetBuild(
            target=get_target(name),
            archive=reproducible_zip([("compiled/model.so", name.encode())]),
            report=_report(name, None),
        )
        for name in names
    ]
    return bundle_targets(builds, ComponentIdentity("com.acme.Fleet", "2.0.0"), tmp_path / "gg")


# -- flags -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv,flag,words",
    [
        (["--target", "LINUX/X86_64", "--target", "LINUX/X86_64"], "--target", ["LINUX/X86_64", "twice"]),
        (
            ["--target-device", "jetson_xavier", "--target-platform", "LINUX/ARM64"],
            "--target",
            ["jetson_xavier", "LINUX/ARM64", "linux/aarch64", "two components"],
        ),
        (["--target", "LINUX/X86_64", "--target-platform", "LINUX/ARM64"], "--target", ["cannot be mixed"]),
        (
            ["--target", "LINUX/X86_64", "--target", "LINUX/ARM64", "--device-rpc", "127.0.0.1:9190"],
            "--device-rpc",
            ["one target"],
        ),
        (["--target", "LINUX/X86_64", "--target", "LINUX/RISCV64"], "--target-platform", ["X86_64, ARM64"]),
        (["--max-ratio", "0"], "--max-ratio", ["above 0"]),
    ],
)
def test_bad_fleet_flags_are_one_line_errors(home, tiny_model, capsys, argv, flag, words):  # noqa: F811
    code = main(["build", "--model", str(tiny_model[0]), "--model-spec", str(tiny_model[1]), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: ValidationException: {flag}"), err
    for word in words:
        assert word in err[0]
    assert not home.exists(), "nothing may be registered or started for a request with a bad flag"


def test_a_bad_flag_still_writes_a_failed_summary(home, tiny_model, tmp_path, capsys):  # noqa: F811
    summary = tmp_path / "summary.json"
    assert main(["build", "--model", str(tiny_model[0]), "--max-ratio", "-1", "--summary-json", str(summary)]) == 2
    doc = json.loads(summary.read_text())
    assert doc["status"] == "FAILED" and doc["exit_code"] == 2 and doc["error"]["code"] == "ValidationException"
    assert "--max-ratio" in doc["error"]["message"]


# -- one component, a manifest per platform ------------------------------------------------------------------------


def test_fleet_recipe_has_a_manifest_and_artifact_per_platform_and_validates(tmp_path):
    component = _fleet_bundle(tmp_path)
    recipe = yaml.safe_load(component.recipe_path.read_text())
    platforms = [m["Platform"] for m in recipe["Manifests"]]
    assert platforms == [{"os": "linux", "architecture": "amd64"}, {"os": "linux", "architecture": "aarch64"}]
    digests = {a.uri: a.sha256_b64 for a in component.artifacts}
    uris = [m["Artifacts"][0]["Uri"] for m in recipe["Manifests"]]
    assert [u.rsplit("/", 1)[1] for u in uris] == ["model-linux-x86_64.zip", "model-jetson_xavier.zip"]
    assert [m["Artifacts"][0]["Digest"] for m in recipe["Manifests"]] == [digests[u] for u in uris]
    assert len(set(digests.values())) == 2
    roots = [m["Lifecycle"]["Setenv"]["PYTHONPATH"] for m in recipe["Manifests"]]
    assert roots == [
        "{artifacts:decompressedPath}/model-linux-x86_64",
        "{artifacts:decompressedPath}/model-jetson_xavier",
    ]
    assert [p.name for p in component.reports] == ["benchmark-linux-x86_64.json", "benchmark-jetson_xavier.json"]
    schema = json.loads((SHARED_SCHEMA if SHARED_SCHEMA.exists() else PACKAGED_SCHEMA).read_text())
    for bundle in (component, *component.dependencies):
        jsonschema.Draft7Validator(schema).validate(_lower(yaml.safe_load(bundle.recipe_path.read_text())))
    if SHARED_SCHEMA.exists():
        assert SHARED_SCHEMA.read_bytes() == PACKAGED_SCHEMA.read_bytes(), "the packaged schema is GDK's"


def test_a_mixed_fleet_depends_on_one_agent_with_a_manifest_per_flavour(tmp_path):
    component = _fleet_bundle(tmp_path)
    [agent] = component.dependencies
    assert agent.component_name == f"{AGENT_COMPONENT}.cpu.cuda-10.2.trt-7.1.3"
    recipe = yaml.safe_load(component.recipe_path.read_text())
    assert list(recipe["ComponentDependencies"]) == [agent.component_name]
    assert all(f"{{{agent.component_name}:work:path}}" in m["Lifecycle"]["Run"]["Script"] for m in recipe["Manifests"])
    agent_recipe = yaml.safe_load(agent.recipe_path.read_text())
    installs = [m["Lifecycle"]["Install"]["Script"] for m in agent_recipe["Manifests"]]
    assert [m["Platform"]["architecture"] for m in agent_recipe["Manifests"]] == ["amd64", "aarch64"]
    assert "trt-ver" not in installs[0] and "7.1.3" in installs[1]
    assert [a.name for a in agent.artifacts] == ["edge_agent-cpu.zip", "edge_agent-cuda-10.2.trt-7.1.3.zip"]


def test_cpu_targets_share_the_plain_agent(tmp_path):
    component = _fleet_bundle(tmp_path, ("LINUX/X86_64", "LINUX/ARM64"))
    assert [d.component_name for d in component.dependencies] == [AGENT_COMPONENT]


def test_deploy_local_plans_this_machines_manifest(tmp_path):
    if this_platform() != {"os": "linux", "architecture": "amd64"}:
        pytest.skip("the fleet here is LINUX/X86_64 + jetson_xavier; this machine is neither")
    component = _fleet_bundle(tmp_path)
    plan = plan_deployment(tmp_path / "gg", DeployOptions(root=tmp_path / "root", configuration_updates={}))
    chosen = {c.name: c for c in plan.components}
    assert [a.file_name for a in chosen["com.acme.Fleet"].artifacts] == ["model-linux-x86_64.zip"]
    assert "model-linux-x86_64" in chosen["com.acme.Fleet"].lifecycle["Run"]["Script"]
    agent = component.dependencies[0].component_name
    assert [a.file_name for a in chosen[agent].artifacts] == ["edge_agent-cpu.zip"]


# -- the speed gate --------------------------------------------------------------------------------------------


def test_speed_gate_fails_over_the_ratio_and_passes_under_it():
    said = []
    check_speed_gate(_report("LINUX/X86_64", 0.9), 1.0, said.append)
    assert said == ["speed gate: TVM/ORT p50 0.90x <= 1 on LINUX/X86_64"]
    with pytest.raises(SpeedGateError, match=r"1\.50x on LINUX/X86_64 .* above --max-ratio 1\.2; nothing was bundled"):
        check_speed_gate(_report("LINUX/X86_64", 1.5), 1.2)
    assert SpeedGateError.exit_code == 13
    check_speed_gate(_report("LINUX/X86_64", 50.0), None)  # no gate asked for


@pytest.mark.parametrize("fields,why", [({}, NO_DEVICE), ({"emulated": True, "ratio_tvm_to_ort": None}, EMULATED)])
def test_speed_gate_neither_passes_nor_fails_what_was_not_measured(fields, why):
    report = _report("LINUX/ARM64", 80.0 if fields else None, **fields, ratio_not_measured=why)
    said = []
    check_speed_gate(report, 0.5, said.append)
    assert said == [f"speed gate: {why} on LINUX/ARM64; neither passed nor failed"]


# -- whole builds ----------------------------------------------------------------------------------------------


def _build(tiny_model, out: Path, *argv: str) -> int:
    return main(
        [
            "build",
            "--model",
            str(tiny_model[0]),
            "--model-spec",
            str(tiny_model[1]),
            "--output",
            str(out),
            "--benchmark-runs",
            "3",
            *argv,
        ]
    )


@pytest.mark.slow
def test_speed_gate_over_a_real_build(home, tiny_model, tmp_path, capsys):  # noqa: F811
    summary = tmp_path / "summary.json"
    assert _build(tiny_model, tmp_path / "fail", "--max-ratio", "0.001", "--summary-json", str(summary)) == 13
    err = capsys.readouterr().err
    assert "error: SpeedGateFailed: speed gate: TVM/ORT p50 is" in err and "above --max-ratio 0.001" in err
    assert not (tmp_path / "fail" / "recipes").exists() and not (tmp_path / "fail" / "artifacts").exists()
    doc = json.loads(summary.read_text())
    assert (doc["status"], doc["exit_code"], doc["error"]["type"]) == ("FAILED", 13, "SpeedGateError")
    assert _build(tiny_model, tmp_path / "pass", "--max-ratio", "1000", "--summary-json", "-") == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)  # '-': only the JSON on stdout; the text summary goes to stderr
    assert doc["status"] == "SUCCEEDED" and doc["targets"][0]["ratio_tvm_to_ort"] <= 1000
    assert "TVM/ORT:" in captured.err and "speed gate: TVM/ORT p50" in captured.err


@pytest.mark.slow
def test_fleet_build_then_a_cached_rebuild_with_the_same_bytes(home, tiny_model, tmp_path, capsys):  # noqa: F811
    docs = []
    for run in ("first", "second"):
        out = tmp_path / run
        assert (
            _build(
                tiny_model,
                out,
                "--target",
                "LINUX/X86_64",
                "--target",
                "LINUX/ARM64",
                "--max-ratio",
                "1000",
                "--summary-json",
                str(tmp_path / f"{run}.json"),
            )
            == 0
        ), capsys.readouterr().err
        text = capsys.readouterr().out
        assert "LINUX/X86_64  linux/amd64" in text and "not measured: no device" in text
        docs.append(json.loads((tmp_path / f"{run}.json").read_text()))
    first, second = docs
    assert [t["target"] for t in first["targets"]] == ["LINUX/X86_64", "LINUX/ARM64"]
    assert [t["compile_cache"] for t in first["targets"]] == ["miss", "miss"]
    assert [t["compile_cache"] for t in second["targets"]] == ["hit", "hit"]
    for a, b in zip(first["targets"], second["targets"]):
        assert a["digest"] == b["digest"] and Path(a["artifact"]).read_bytes() == Path(b["artifact"]).read_bytes()
        assert Path(b["report"]).is_file()
    x86, arm = second["targets"]
    assert x86["ratio_tvm_to_ort"] > 0 and x86["max_abs_error"] and x86["tvm_p50_ms"] > 0
    assert arm["ratio_tvm_to_ort"] is None and arm["ratio_not_measured"] == NO_DEVICE and arm["tvm_p50_ms"] is None
    assert Path(first["recipe"]).read_text() == Path(second["recipe"]).read_text()
    assert not [p for p in (tmp_path / "second").iterdir() if p.name.startswith(".targets-")], "scratch is removed"
