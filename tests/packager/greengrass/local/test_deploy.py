"""deploy-local: manifests, digests, safe unarchiving, recipe variables, lifecycles, and the build -> deploy -> gRPC path."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from packager.cli import main as cli_main
from packager.errors import ConflictException, ResourceNotFoundException, ValidationException
from packager.greengrass.local.deploy import (
    DeployOptions,
    interpolate,
    plan_deployment,
    prepare_component,
    version_satisfies,
)
from packager.greengrass.local.nucleus import LocalNucleus, State, StepFailed, claim_root, read_state

REPO = Path(__file__).resolve().parents[4]


def digest(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def zip_bytes(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for info, data in entries:
            archive.writestr(info, data)
    return buffer.getvalue()


def write_component(
    build: Path,
    name: str,
    lifecycle: dict,
    version: str = "1.0.0",
    files: dict | None = None,
    configuration: dict | None = None,
    dependencies: dict | None = None,
    manifests: list | None = None,
    wrong_digest: bool = False,
) -> Path:
    artifacts = []
    for file_name, data in (files or {}).items():
        path = build / "artifacts" / name / version / file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        artifacts.append(
            {
                "Uri": f"s3://BUCKET_NAME/{name}/{version}/{file_name}",
                "Digest": digest(data + b"x" if wrong_digest else data),
                "Algorithm": "SHA-256",
                **({"Unarchive": "ZIP"} if file_name.endswith(".zip") else {}),
                "Permission": {"Read": "OWNER", "Execute": "NONE"},
            }
        )
    recipe = {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": version,
        "ComponentConfiguration": {"DefaultConfiguration": configuration or {}},
        "ComponentDependencies": dependencies or {},
        "Manifests": manifests or [{"Platform": {"os": "linux"}, "Lifecycle": lifecycle, "Artifacts": artifacts}],
    }
    path = build / "recipes" / f"{name}-{version}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def options(tmp_path: Path, **updates) -> DeployOptions:
    return DeployOptions(root=tmp_path / "root", configuration_updates=updates)


# -- plan: manifests, dependencies, versions ------------------------------------------------------------------


def test_first_manifest_matching_this_machine_is_used(tmp_path):
    build = tmp_path / "build"
    write_component(
        build,
        "a",
        {},
        manifests=[
            {"Platform": {"os": "windows"}, "Lifecycle": {"Run": "echo windows"}},
            {"Platform": {"os": "linux", "architecture": "/no-such-arch|sparc/"}, "Lifecycle": {"Run": "echo sparc"}},
            {"Platform": {"os": "linux", "architecture": "*"}, "Lifecycle": {"Run": "echo linux"}},
            {"Lifecycle": {"Run": "echo any"}},
        ],
    )
    assert plan_deployment(build, options(tmp_path)).components[0].lifecycle == {"Run": "echo linux"}


def test_no_matching_manifest_is_refused(tmp_path):
    build = tmp_path / "build"
    write_component(build, "a", {}, manifests=[{"Platform": {"os": "windows"}, "Lifecycle": {"Run": "x"}}])
    with pytest.raises(ValidationException, match="no manifest matches this machine"):
        plan_deployment(build, options(tmp_path))


def test_dependencies_come_first_and_ranges_are_checked(tmp_path):
    build = tmp_path / "build"
    write_component(build, "app", {"Run": "true"}, dependencies={"lib": {"VersionRequirement": "^1.0.0"}})
    write_component(build, "lib", {"Run": "true"}, version="1.4.0")
    write_component(build, "lib", {"Run": "true"}, version="1.2.0")
    plan = plan_deployment(build, options(tmp_path))
    assert [(c.name, c.version) for c in plan.components] == [("lib", "1.4.0"), ("app", "1.0.0")]
    write_component(build, "lib", {"Run": "true"}, version="2.0.0")
    with pytest.raises(ValidationException, match=r"app needs lib \^1.0.0, but the build has 2.0.0"):
        plan_deployment(build, options(tmp_path))


def test_missing_dependency_is_not_found(tmp_path):
    build = tmp_path / "build"
    write_component(build, "app", {"Run": "true"}, dependencies={"lib": {"VersionRequirement": "*"}})
    with pytest.raises(ResourceNotFoundException, match="depends on lib"):
        plan_deployment(build, options(tmp_path))


@pytest.mark.parametrize(
    "version, requirement, ok",
    [
        ("1.0.0", ">=1.0.0 <2.0.0", True),
        ("2.0.0", ">=1.0.0 <2.0.0", False),
        ("1.9.3", "^1.2.0", True),
        ("1.1.0", "^1.2.0", False),
        ("1.2.9", "~1.2.0", True),
        ("1.3.0", "~1.2.0", False),
        ("3.1.4", "*", True),
        ("1.0.0", "1.0.0", True),
        ("1.0.1", "=1.0.0", False),
    ],
)
def test_version_ranges(version, requirement, ok):
    assert version_satisfies(version, requirement) is ok


# -- artifacts: digests and safe unarchiving ------------------------------------------------------------------


def test_bad_digest_is_refused_before_anything_is_copied(tmp_path, capsys):
    build = tmp_path / "build"
    write_component(
        build, "a", {"Run": "true"}, files={"payload.zip": zip_bytes([("f.txt", b"hi")])}, wrong_digest=True
    )
    root = tmp_path / "root"
    assert cli_main(["deploy-local", str(build), "--root", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ValidationException: a: artifact payload.zip has SHA-256") and "refusing" in err
    assert len(err.splitlines()) == 1
    assert not (root / "packages").exists()


@pytest.mark.parametrize(
    "entry, reason",
    [
        ("../escaped.txt", "zip-slip"),
        ("a/../../escaped.txt", "zip-slip"),
        ("/tmp/absolute.txt", "absolute path"),
        ("C:/windows.txt", "absolute path"),
    ],
)
def test_archive_entries_that_escape_are_refused(tmp_path, entry, reason):
    build = tmp_path / "build"
    write_component(
        build, "a", {"Run": "true"}, files={"evil.zip": zip_bytes([("ok.txt", b"fine"), (entry, b"pwned")])}
    )
    plan = plan_deployment(build, options(tmp_path))
    with pytest.raises(ValidationException, match=reason):
        prepare_component(plan, plan.components[0])
    assert not (tmp_path / "root" / "packages" / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
    assert not (plan.decompressed_path(plan.components[0]) / "evil").exists()


def test_symlink_entries_are_refused(tmp_path):
    link = zipfile.ZipInfo("link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    build = tmp_path / "build"
    write_component(build, "a", {"Run": "true"}, files={"evil.zip": zip_bytes([(link, b"/etc/passwd")])})
    plan = plan_deployment(build, options(tmp_path))
    with pytest.raises(ValidationException, match="symlink"):
        prepare_component(plan, plan.components[0])


def test_zip_is_unarchived_into_a_folder_named_after_it(tmp_path):
    build = tmp_path / "build"
    write_component(
        build, "a", {"Run": "true"}, files={"model.zip": zip_bytes([("dir/f.txt", b"data")]), "raw.bin": b"\x01"}
    )
    plan = plan_deployment(build, options(tmp_path))
    prepare_component(plan, plan.components[0])
    assert (plan.decompressed_path(plan.components[0]) / "model" / "dir" / "f.txt").read_bytes() == b"data"
    assert (plan.artifacts_path(plan.components[0]) / "raw.bin").read_bytes() == b"\x01"


# -- recipe variables ----------------------------------------------------------------------------------------


def test_recipe_variables_are_substituted(tmp_path):
    build = tmp_path / "build"
    write_component(build, "lib", {"Run": "true"}, configuration={"Socket": "unix:///x.sock"})
    write_component(
        build,
        "app",
        {"Run": "true"},
        configuration={"a": {"b": 7, "s": "text"}, "list": [1, 2]},
        dependencies={"lib": {"VersionRequirement": ">=1.0.0"}},
    )
    plan = plan_deployment(build, options(tmp_path, app={"MERGE": {"a": {"s": "merged"}}}))
    app, lib, root = plan.component("app"), plan.component("lib"), plan.root
    text = (
        "{artifacts:path}|{artifacts:decompressedPath}|{work:path}|{kernel:rootPath}|{iot:thingName}|"
        "{configuration:/a/b}|{configuration:/a/s}|{configuration:/list}|{lib:work:path}|{lib:configuration:/Socket}|"
        "{lib:artifacts:decompressedPath}|{unknown:thing}|${HOME}"
    )
    assert interpolate(text, plan, app).split("|") == [
        f"{root}/packages/artifacts/app/1.0.0",
        f"{root}/packages/artifacts-unarchived/app/1.0.0",
        f"{root}/work/app",
        str(root),
        "deploy-local",
        "7",
        "merged",
        "[1, 2]",
        f"{root}/work/lib",
        "unix:///x.sock",
        f"{root}/packages/artifacts-unarchived/lib/1.0.0",
        "{unknown:thing}",
        "${HOME}",
    ]
    with pytest.raises(ValidationException, match="not one of its dependencies"):
        interpolate("{app:work:path}", plan, lib)
    with pytest.raises(ValidationException, match="not in the component's configuration"):
        interpolate("{configuration:/missing}", plan, app)


# -- lifecycles ----------------------------------------------------------------------------------------------


def write_two_components(build: Path) -> None:
    write_component(
        build,
        "lib",
        {"Install": {"Script": "echo installed > {work:path}/installed"}, "Run": "exec sleep 300"},
        configuration={"Port": 1234},
    )
    write_component(
        build,
        "app",
        {
            "Setenv": {"GREETING": "hello from {iot:thingName}"},
            "Install": {
                "Script": "test -f {lib:work:path}/installed && echo ok > installed",
                "Setenv": {"STEP": "install"},
            },
            "Run": {
                "Script": 'printf "%s|%s|%s" "$GREETING" "{lib:configuration:/Port}" "$(pwd)" > run.txt; exec sleep 300'
            },
            "Shutdown": "echo bye > {work:path}/shutdown.txt",
        },
        dependencies={"lib": {"VersionRequirement": "^1.0.0", "DependencyType": "HARD"}},
    )


def wait_for(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def states(root: Path) -> dict:
    state = read_state(root) or {"components": {}}
    return {name: c["state"] for name, c in state["components"].items()}


def deploy_local(*args: str) -> list[str]:
    return [sys.executable, "-m", "packager", "deploy-local", *args]


def test_lifecycle_runs_install_then_run_and_stops_cleanly(tmp_path):
    build, root = tmp_path / "build", tmp_path / "root"
    write_two_components(build)
    process = subprocess.Popen(
        deploy_local(str(build), "--root", str(root)),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: states(root) == {"lib": "RUNNING", "app": "RUNNING"})
        run_txt = root / "work" / "app" / "run.txt"
        wait_for(run_txt.exists)
        greeting, port, cwd = wait_for(lambda: run_txt.read_text()).split("|")
        assert (greeting, port, cwd) == ("hello from deploy-local", "1234", str(root / "work" / "app"))
        assert (root / "work" / "app" / "installed").read_text() == "ok\n"
        pids = [c["pid"] for c in read_state(root)["components"].values()]
        status = subprocess.run(deploy_local("--status", "--root", str(root)), cwd=REPO, capture_output=True, text=True)
        assert "RUNNING" in status.stdout and "app" in status.stdout
        stop = subprocess.run(
            deploy_local("--stop", "--root", str(root)), cwd=REPO, capture_output=True, text=True, timeout=60
        )
        assert stop.returncode == 0 and "stopped deploy-local" in stop.stdout
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    output = process.stdout.read()
    assert output.index("lib 1.0.0: INSTALLED") < output.index("app 1.0.0: INSTALLED")
    assert output.index("app 1.0.0: STOPPED") < output.index("lib 1.0.0: STOPPED")  # dependents stop first
    assert (root / "work" / "app" / "shutdown.txt").read_text() == "bye\n"
    assert states(root) == {"lib": "STOPPED", "app": "STOPPED"}
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "run: printf" in (root / "logs" / "app.log").read_text()


def test_ctrl_c_stops_cleanly(tmp_path):
    build, root = tmp_path / "build", tmp_path / "root"
    write_two_components(build)
    process = subprocess.Popen(deploy_local(str(build), "--root", str(root)), cwd=REPO, stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: states(root).get("app") == "RUNNING")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert states(root) == {"lib": "STOPPED", "app": "STOPPED"}
    assert not (root / "deploy-local.pid").exists()


@pytest.mark.parametrize(
    "install, message",
    [
        ({"Script": "echo boom; exit 3"}, "install failed with exit code 3"),
        ({"Script": "sleep 30", "Timeout": 1}, "install timed out after 1 s"),
    ],
)
def test_failed_install_stops_the_deployment(tmp_path, capsys, install, message):
    build, root = tmp_path / "build", tmp_path / "root"
    write_component(build, "a", {"Install": install, "Run": "exec sleep 300"})
    started = time.monotonic()
    assert cli_main(["deploy-local", str(build), "--root", str(root)]) == 1
    assert time.monotonic() - started < 20
    err = capsys.readouterr().err
    assert message in err and str(root / "logs" / "a.log") in err
    assert not (root / "deploy-local.pid").exists()


def test_run_that_keeps_failing_is_broken(tmp_path):
    build = tmp_path / "build"
    write_component(build, "a", {"Run": "exit 3", "Recover": "echo recovered >> {work:path}/recover.txt"})
    plan = plan_deployment(build, options(tmp_path))
    nucleus = LocalNucleus(plan, out=io.StringIO())
    nucleus.deploy()
    watcher = threading.Thread(target=nucleus.supervise)
    watcher.start()
    try:
        wait_for(lambda: nucleus.tracked[0].state is State.BROKEN)
    finally:
        nucleus.stop_requested.set()
        watcher.join()
    nucleus.stop()
    assert nucleus.tracked[0].errors == 3
    assert nucleus.out.getvalue().count("ERRORED") == 2
    assert (tmp_path / "root" / "work" / "a" / "recover.txt").read_text() == "recovered\n" * 2  # before each restart


def test_one_deploy_local_per_root(tmp_path):
    root = tmp_path / "root"
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        root.mkdir()
        (root / "deploy-local.pid").write_text(f"{sleeper.pid}\n")
        with pytest.raises(ConflictException, match="already running"):
            claim_root(root)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert claim_root(root).read_text() == f"{os.getpid()}\n"


# -- the whole path: build -> deploy-local -> a gRPC client made from the repo's proto ------------------------


def tiny_model_case(tmp_path: Path):
    from tests.conftest import make_tiny_autoencoder
    from tests.packager.edge.conftest import defective_image, edge_spec_dict, normal_image

    model, spec = tmp_path / "tiny.onnx", tmp_path / "spec.json"
    make_tiny_autoencoder(model)
    spec.write_text(json.dumps(edge_spec_dict()))
    return (
        ["--model", str(model), "--model-spec", str(spec)],
        [(normal_image(), False), (defective_image(), True)],
        "scratch",
    )


def tiny_fleet_case(tmp_path: Path):
    """One component for a Jetson and an x86 PC: deploy-local here runs the x86 manifest, with the agent's CPU flavour."""
    model_args, images, class_name = tiny_model_case(tmp_path)
    return [*model_args, "--target-device", "jetson_xavier", "--target-platform", "LINUX/X86_64"], images, class_name


def example_model_case(tmp_path: Path):
    import numpy as np
    from PIL import Image

    from packager.example_model import example_model_paths

    model, spec = example_model_paths()
    if not model.exists():
        pytest.skip("packager/example_model/model.onnx is not built in this checkout")
    images = REPO / "packager" / "example_model" / "images"
    cases = []
    for name, anomalous in (("normal_01.png", False), ("defect_scratch_01.png", True)):
        with Image.open(images / name) as image:
            cases.append((np.asarray(image.convert("RGB"), np.uint8), anomalous))
    return [], cases, json.loads(spec.read_text())["classes"][0]["name"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    [tiny_model_case, example_model_case, tiny_fleet_case],
    ids=["tiny-model", "example-model", "jetson-and-x86-fleet"],
)
def test_build_deploy_and_detect_over_grpc(tmp_path, case):
    import grpc
    import numpy as np

    from packager.edge import edge_agent_pb2 as pb
    from packager.edge import edge_agent_pb2_grpc as pb_grpc
    from tests.packager.edge.conftest import bitmap, wait_for_status

    model_args, images, class_name = case(tmp_path)
    build, root, component = tmp_path / "gg", tmp_path / "root", "com.acme.EdgeDemo"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "packager",
            "build",
            *model_args,
            "--output",
            str(build),
            "--component-name",
            component,
            "--benchmark-runs",
            "2",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PACKAGER_HOME": str(tmp_path / "packager-home")},
    )  # build's jobs go there
    assert built.returncode == 0, built.stderr
    recipe = yaml.safe_load((build / "recipes" / f"{component}-1.0.0.yaml").read_text())
    [AGENT_COMPONENT] = recipe["ComponentDependencies"]  # the plain agent, or the fleet's with a manifest per flavour
    address = f"unix://{tmp_path}/agent.sock"
    update = json.dumps({AGENT_COMPONENT: {"MERGE": {"Socket": address}}})
    process = subprocess.Popen(
        deploy_local(str(build), "--root", str(root), "--update-config", update),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(
            lambda: states(root) == {AGENT_COMPONENT: "RUNNING", component: "FINISHED"} or process.poll() is not None,
            timeout=300,
        )
        assert process.poll() is None, process.stdout.read()
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.EdgeAgentStub(channel)
            grpc.channel_ready_future(channel).result(timeout=60)
            listed = wait_for(
                lambda: [
                    (m.model_component, m.lookout_vision_model_arn)
                    for m in stub.ListModels(pb.ListModelsRequest()).models
                ]
            )
            assert len(listed) == 1 and listed[0][0] == component
            assert re.fullmatch(r"arn:aws:lookoutvision:[a-z0-9-]+:\d{12}:model/[\w-]+/\d+", listed[0][1]), listed
            for image, anomalous in images:
                assert stub.StartModel(pb.StartModelRequest(model_component=component)).status == pb.STARTING
                assert wait_for_status(stub, component, pb.RUNNING).status == pb.RUNNING
                result = stub.DetectAnomalies(
                    pb.DetectAnomaliesRequest(model_component=component, bitmap=bitmap(image))
                )
                result = result.detect_anomaly_result
                assert result.is_anomalous is anomalous, (result.anomaly_score, result.anomaly_threshold)
                assert (result.anomaly_mask.width, result.anomaly_mask.height) == (image.shape[1], image.shape[0])
                assert len(result.anomaly_mask.byte_data) == image.size
                assert [a.name for a in result.anomalies] == ["background", class_name]
                assert sum(a.pixel_anomaly.total_percentage_area for a in result.anomalies) == pytest.approx(
                    1.0, abs=1e-5
                )
                painted = np.frombuffer(result.anomaly_mask.byte_data, np.uint8).reshape(image.shape)
                colour = tuple(int(result.anomalies[1].pixel_anomaly.hex_color[i : i + 2], 16) for i in (1, 3, 5))
                assert np.all(painted == colour, axis=-1).mean() == pytest.approx(
                    result.anomalies[1].pixel_anomaly.total_percentage_area, abs=1e-6
                )
                assert stub.StopModel(pb.StopModelRequest(model_component=component)).status == pb.STOPPING
                assert wait_for_status(stub, component, pb.STOPPED).status == pb.STOPPED
        stop = subprocess.run(
            deploy_local("--stop", "--root", str(root)), cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert stop.returncode == 0, stop.stderr
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert not (tmp_path / "agent.sock").exists()
    assert (
        list((root / "work" / AGENT_COMPONENT / "models").glob("*.json")) == []
    )  # the model's Shutdown unregistered it


def test_startup_skipif_and_shutdown(tmp_path):
    build = tmp_path / "build"
    write_component(
        build,
        "a",
        {
            "Install": {"Script": "exit 1", "SkipIf": "exists {work:path}"},  # prepare made the work path: skipped
            "Startup": {"Script": "echo started > {work:path}/startup.txt", "Timeout": 5},
            "Run": "echo never > {work:path}/run.txt",  # Startup takes Run's place, as in the nucleus
            "Shutdown": "echo stopped > {work:path}/shutdown.txt",
        },
    )
    plan = plan_deployment(build, options(tmp_path))
    nucleus = LocalNucleus(plan, out=io.StringIO())
    nucleus.deploy()
    work = plan.work_path(plan.components[0])
    assert nucleus.tracked[0].state is State.RUNNING and nucleus.tracked[0].process is None
    assert (work / "startup.txt").read_text() == "started\n" and not (work / "run.txt").exists()
    nucleus.stop()
    assert (work / "shutdown.txt").read_text() == "stopped\n"
    assert states(plan.root) == {"a": "STOPPED"}


def _group_alive(pgid: int) -> bool:
    from packager.greengrass.local.nucleus import _group_members

    return bool(_group_members(pgid))


@pytest.mark.parametrize("cleanup", ["stop", "next-deploy"])
def test_components_left_by_a_killed_deploy_local_are_stopped(tmp_path, cleanup):
    build, root = tmp_path / "build", tmp_path / "root"
    write_two_components(build)
    write_component(build, "forker", {"Run": "sleep 300 & sleep 300 & wait"})  # the group outlives its shell's children
    process = subprocess.Popen(deploy_local(str(build), "--root", str(root)), cwd=REPO, stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: set(states(root).values()) == {"RUNNING"} and len(states(root)) == 3)
        groups = {name: c["pid"] for name, c in read_state(root)["components"].items()}
    finally:
        process.kill()  # SIGKILL: deploy-local cannot stop anything
        process.wait()
    assert all(_group_alive(pgid) for pgid in groups.values())
    if cleanup == "stop":
        done = subprocess.run(
            deploy_local("--stop", "--root", str(root)), cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert "stopped what one left running: forker, app, lib" in done.stdout  # dependents first
        assert states(root) == {"lib": "STOPPED", "app": "STOPPED", "forker": "STOPPED"}
    else:
        again = subprocess.Popen(
            deploy_local(str(build), "--root", str(root)), cwd=REPO, stdout=subprocess.PIPE, text=True
        )
        try:
            assert "left running by a deploy-local that was killed" in again.stdout.readline()
            wait_for(lambda: set(states(root).values()) == {"RUNNING"} and len(states(root)) == 3)
            assert all(c["pid"] not in groups.values() for c in read_state(root)["components"].values())
        finally:
            again.send_signal(signal.SIGINT)
            assert again.wait(timeout=60) == 0
    assert not any(_group_alive(pgid) for pgid in groups.values())


def test_a_recorded_pid_now_used_by_another_process_is_left_alone(tmp_path):
    from packager.greengrass.local.nucleus import STATE_FILE, stop_orphans

    stranger = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        root = tmp_path / "root"
        root.mkdir()
        (root / STATE_FILE).write_text(
            json.dumps(
                {
                    "components": {
                        "a": {
                            "version": "1.0.0",
                            "state": "RUNNING",
                            "pid": stranger.pid,
                            "pid_start": "1",
                            "log": "a.log",
                        }
                    }
                }
            )
        )
        assert stop_orphans(root) == []
        assert stranger.poll() is None
        assert states(root) == {"a": "STOPPED"}
    finally:
        stranger.kill()
        stranger.wait()


def test_bootstrap_runs_once_per_version_before_install(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # as a user who is not root
    build = tmp_path / "build"
    lifecycle = {
        "Bootstrap": {"Script": "echo boot >> {work:path}/../boot.txt; exit 100", "RequiresPrivilege": True},
        "Install": "echo install >> {work:path}/../boot.txt",
    }
    write_component(build, "a", lifecycle)
    for _ in range(2):  # the second deploy of the same version skips Bootstrap, as the nucleus does
        nucleus = LocalNucleus(plan_deployment(build, options(tmp_path)), out=io.StringIO())
        nucleus.deploy()
        nucleus.stop()
    write_component(build, "a", lifecycle, version="1.1.0")
    (build / "recipes" / "a-1.0.0.yaml").unlink()
    nucleus = LocalNucleus(plan_deployment(build, options(tmp_path)), out=io.StringIO())
    nucleus.deploy()
    nucleus.stop()
    assert (tmp_path / "root" / "work" / "boot.txt").read_text() == "boot\ninstall\ninstall\nboot\ninstall\n"
    log = (tmp_path / "root" / "logs" / "a.log").read_text()
    assert "bootstrap asked for a nucleus restart (exit 100): deploy-local has none to restart, and goes on" in log
    assert (
        log.count("bootstrap has RequiresPrivilege, which the nucleus runs as root; deploy-local runs it as uid 1000")
        == 2
    )
    assert "install has RequiresPrivilege" not in log


def test_bootstrap_asking_for_a_reboot_stops_and_the_next_deploy_goes_on_from_install(tmp_path):
    build = tmp_path / "build"
    write_component(build, "a", {"Bootstrap": "exit 101", "Install": "echo installed > {work:path}/installed.txt"})
    nucleus = LocalNucleus(plan_deployment(build, options(tmp_path)), out=io.StringIO())
    with pytest.raises(
        StepFailed,
        match=r"a: its Bootstrap step asks for a device reboot \(exit 101\)\. Reboot, then run "
        r"deploy-local again: it goes on from Install",
    ):
        nucleus.deploy()
    work = tmp_path / "root" / "work" / "a"
    assert not (work / "installed.txt").exists()
    nucleus = LocalNucleus(plan_deployment(build, options(tmp_path)), out=io.StringIO())
    nucleus.deploy()
    nucleus.stop()
    assert (work / "installed.txt").read_text() == "installed\n"


def test_a_failing_bootstrap_stops_the_deployment(tmp_path):
    build = tmp_path / "build"
    write_component(build, "a", {"Bootstrap": "exit 7", "Install": "echo installed > {work:path}/installed.txt"})
    nucleus = LocalNucleus(plan_deployment(build, options(tmp_path)), out=io.StringIO())
    with pytest.raises(StepFailed, match="a: bootstrap failed with exit code 7"):
        nucleus.deploy()
    assert not (tmp_path / "root" / "work" / "a" / "installed.txt").exists()
    assert not (tmp_path / "root" / "bootstrapped.json").exists()


# -- names and versions never leave the root (issue 15 item 2) -------------------------------------------------


def _hostile_recipe(build: Path, name: str, version: str) -> None:
    """A recipe whose ComponentName/ComponentVersion try to become path parts, with a ZIP to unarchive."""
    data = zip_bytes([("f.txt", b"planted")])
    recipe = {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": version,
        "Manifests": [
            {
                "Platform": {"os": "linux"},
                "Lifecycle": {"Run": "true"},
                "Artifacts": [{"Uri": "s3://BUCKET_NAME/x/model.zip", "Digest": digest(data), "Unarchive": "ZIP"}],
            }
        ],
    }
    (build / "recipes").mkdir(parents=True)
    (build / "recipes" / "hostile.yaml").write_text(yaml.safe_dump(recipe))
    source = Path(f"{build}/artifacts/{name}/{version}/model.zip")  # an absolute name stays under build here
    os.makedirs(source.parent, exist_ok=True)
    source.write_bytes(data)


@pytest.mark.parametrize(
    "name, version, field",
    [
        ("../evil", "1.0.0", "ComponentName"),
        ("ABSOLUTE", "1.0.0", "ComponentName"),
        ("..", "1.0.0", "ComponentName"),
        ("com.x", "../../../../../..", "ComponentVersion"),
        ("com.x", "1.0.0/../../..", "ComponentVersion"),
        ("com.x", "..", "ComponentVersion"),
        ("a" * 129, "1.0.0", "ComponentName"),
        ("com.x", "1.0.1234567", "ComponentVersion"),
        (["list"], "1.0.0", "ComponentName"),
        ("com.x", 1.0, "ComponentVersion"),
    ],
)
def test_names_and_versions_that_would_leave_the_root_are_refused(tmp_path, name, version, field):
    base = tmp_path / "d1" / "d2" / "d3" / "d4" / "d5" / "d6"
    build, root = base / "build", base / "root"
    victim = tmp_path / "d1" / "d2" / "d3" / "d4" / "model"  # what version ../../../../../.. unarchives over
    victim.mkdir(parents=True)
    (victim / "keep.txt").write_text("mine")
    name = str(tmp_path / "abs-name") if name == "ABSOLUTE" else name
    _hostile_recipe(
        build, str(name) if isinstance(name, str) else "x", str(version) if isinstance(version, str) else "1"
    )
    if not isinstance(name, str) or not isinstance(version, str):  # YAML can carry any type
        recipe = yaml.safe_load((build / "recipes" / "hostile.yaml").read_text())
        recipe.update(ComponentName=name, ComponentVersion=version)
        (build / "recipes" / "hostile.yaml").write_text(yaml.safe_dump(recipe))
    before = sorted(p for p in tmp_path.rglob("*") if build not in p.parents)

    with pytest.raises(ValidationException) as caught:
        plan = plan_deployment(build, DeployOptions(root=root))
        for component in plan.components:
            prepare_component(plan, component)

    assert caught.value.field == field and "hostile.yaml" in caught.value.message
    assert (victim / "keep.txt").read_text() == "mine" and sorted(victim.iterdir()) == [victim / "keep.txt"]
    assert sorted(p for p in tmp_path.rglob("*") if build not in p.parents) == before  # nothing made anywhere
    assert not (tmp_path / "abs-name").exists()


def test_a_symlink_inside_the_root_cannot_lead_out_of_it(tmp_path):
    build, root, outside = tmp_path / "build", tmp_path / "root", tmp_path / "outside"
    write_component(build, "a", {"Run": "true"}, files={"model.zip": zip_bytes([("f.txt", b"x")])})
    outside.mkdir()
    (root / "packages").mkdir(parents=True)
    (root / "packages" / "artifacts").symlink_to(outside)
    plan = plan_deployment(build, DeployOptions(root=root))
    with pytest.raises(ValidationException, match="would leave the deploy-local root"):
        prepare_component(plan, plan.components[0])
    assert list(outside.iterdir()) == []


def test_the_cli_refuses_a_hostile_name_in_one_line(tmp_path, capsys):
    build = tmp_path / "build"
    _hostile_recipe(build, "../evil", "1.0.0")
    assert cli_main(["deploy-local", str(build), "--root", str(tmp_path / "root")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("error: ValidationException:")
        and "ComponentName '../evil'" in err
        and len(err.splitlines()) == 1
    )
    assert not (tmp_path / "evil").exists() and not (tmp_path / "logs").exists()
