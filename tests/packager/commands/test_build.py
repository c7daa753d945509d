"""`build` over the jobs path: register (reusing identical versions), start a job with build-only options, wait, summarise."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from packager.cli import main
from packager.errors import CompilationError
from packager.service.jobs import api
from tests.packager.service.jobs.support import (  # noqa: F401  (fixtures)
    REPO_ROOT,
    S3_BUCKET,
    hold_worker_slot,
    home,
    s3_server,
    wait_until,
)


def _jobs(project: str = "default") -> list[dict]:
    return api.list_model_packaging_jobs(ProjectName=project)["ModelPackagingJobs"]


def _describe(name: str, project: str = "default") -> dict:
    return api.describe_model_packaging_job(ProjectName=project, JobName=name)["ModelPackagingDescription"]


@pytest.mark.parametrize(
    "argv,flag,words",
    [
        (["--s3-output", "bucket/prefix"], "--s3-output", ["s3://BUCKET"]),
        (["--s3-output", "s3://a/models"], "--s3-output", ["Bucket", "length greater than or equal to 3"]),
        (["--s3-output", "s3://bucket/bad prefix"], "--s3-output", ["Prefix"]),
        (["--tag", "no-equals-sign"], "--tag", ["KEY=VALUE"]),
        (["--tag", "team=a", "--tag", "team=b"], "--tag", ["duplicate", "team"]),
        (["--tag", "bad{key}=x"], "--tag", ["Key"]),
        (["--client-token", "not_allowed!"], "--client-token", ["ClientToken"]),
        (["--project-name", "has space"], "--project-name", ["ProjectName"]),
        (["--component-version", "1.0"], "--component-version", ["1.0"]),
        (["--component-description", "no <angle> brackets"], "--component-description", ["ComponentDescription"]),
        (["--benchmark-runs", "0"], "--benchmark-runs", ["at least 1"]),
    ],
)
def test_bad_flags_fail_before_anything_is_recorded(home, tiny_model, capsys, argv, flag, words):
    code = main(["build", "--model", str(tiny_model[0]), "--model-spec", str(tiny_model[1]), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith(f"error: ValidationException: {flag}"), err
    for word in words:
        assert word in err[0]
    assert not home.exists(), "nothing may be registered or started for a request with a bad flag"


def test_s3_output_tags_and_token_become_the_jobs_configuration(home, tiny_model, tmp_path, monkeypatch, capsys):
    """--s3-output turns registration on; the job's Configuration is service-shaped, build's own options are not in it."""
    from packager.commands import build

    monkeypatch.setattr(build, "wait_for_build_job", lambda project, name: (_ for _ in ()).throw(KeyboardInterrupt))
    with hold_worker_slot(home, monkeypatch):
        code = main(
            [
                "build",
                "--model",
                str(tiny_model[0]),
                "--model-spec",
                str(tiny_model[1]),
                "--project-name",
                "demo",
                "--s3-output",
                "s3://my-bucket/models/",
                "--tag",
                "team=vision",
                "--tag",
                "stage=",
                "--client-token",
                "tok-1",
                "--output",
                str(tmp_path / "gg"),
                "--benchmark-runs",
                "3",
                "--device-rpc",
                "127.0.0.1:9190",
            ]
        )
        assert code == 130
        [listed] = _jobs("demo")
        job = _describe(listed["JobName"], "demo")
    assert job["ModelPackagingConfiguration"] == {
        "Greengrass": {
            "ComponentName": "com.example.AnomalyDetector",
            "ComponentVersion": "1.0.0",
            "S3OutputLocation": {"Bucket": "my-bucket", "Prefix": "models"},
            "Tags": [{"Key": "team", "Value": "vision"}, {"Key": "stage", "Value": ""}],
        }
    }
    shown = json.dumps(job, default=str)
    assert (
        "OutputDir" not in shown and "BenchmarkRuns" not in shown and "9190" not in shown and str(tmp_path) not in shown
    )
    import sqlite3

    with sqlite3.connect(home / "store.sqlite3") as db:
        register, extensions = db.execute("SELECT register, extensions FROM jobs").fetchone()
    assert register == 1
    assert json.loads(extensions) == {
        "BenchmarkRuns": 3,
        "Register": True,
        "OutputDir": str(tmp_path / "gg"),
        "Device": {"Host": "127.0.0.1", "Port": 9190, "Key": None},
    }
    err = capsys.readouterr().err
    assert f"job {listed['JobName']} goes on in the background" in err
    assert f"describe-model-packaging-job --project-name demo --job-name {listed['JobName']}" in err


def test_no_register_and_local_only_builds_register_nothing(home, tiny_model, tmp_path, monkeypatch):
    from packager.commands import build

    monkeypatch.setattr(build, "wait_for_build_job", lambda project, name: (_ for _ in ()).throw(KeyboardInterrupt))
    with hold_worker_slot(home, monkeypatch):
        assert (
            main(
                [
                    "build",
                    "--model",
                    str(tiny_model[0]),
                    "--model-spec",
                    str(tiny_model[1]),
                    "--output",
                    str(tmp_path),
                    "--s3-output",
                    "s3://my-bucket",
                    "--no-register",
                ]
            )
            == 130
        )
        assert (
            main(
                [
                    "build",
                    "--model",
                    str(tiny_model[0]),
                    "--model-spec",
                    str(tiny_model[1]),
                    "--output",
                    str(tmp_path),
                    "--component-name",
                    "com.example.Local",
                    "--no-register",
                ]
            )
            == 130
        )
        import sqlite3

        with sqlite3.connect(home / "store.sqlite3") as db:
            rows = db.execute("SELECT component_name, register, configuration FROM jobs ORDER BY seq").fetchall()
    assert [(name, register) for name, register, _ in rows] == [
        ("com.example.AnomalyDetector", 0),
        ("com.example.Local", 0),
    ]
    assert "S3OutputLocation" not in json.loads(rows[1][2])["Greengrass"]


def test_ctrl_c_while_waiting_leaves_the_job_running(home, tiny_model, tmp_path, monkeypatch):
    """A real SIGINT to a real build: it exits 130 naming the job, whose worker goes on (here: waiting for its slot)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with hold_worker_slot(home, monkeypatch):
        env["PACKAGER_MAX_WORKERS"] = "1"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "packager",
                "build",
                "--model",
                str(tiny_model[0]),
                "--model-spec",
                str(tiny_model[1]),
                "--output",
                str(tmp_path / "gg"),
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            # A test run started as a background job without job control (`nohup .ci/run &`) ignores SIGINT, and
            # so would the build, which Python leaves ignored: the build waited out the timeout in such a run.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            seen = ""
            while "... started job" not in seen:
                line = proc.stderr.readline()
                assert line, f"build ended before starting its job: {seen}"
                seen += line
            name = seen.split("... started job ")[1].split()[0]
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                state = _process_state(proc.pid)
                proc.kill()
                pytest.fail(f"build still running 60 s after SIGINT ({state}); its stderr: {_available(proc.stderr)}")
        err = proc.stderr.read()  # the build has exited; its worker writes to its own log, not to this pipe
        assert proc.returncode == 130, err
        assert f"interrupted: job {name} goes on in the background" in err and "Traceback" not in err
        assert _describe(name)["Status"] == "CREATED"  # its worker is alive, still waiting for the slot this test holds


def _available(stream) -> str:
    """What a pipe holds now, without waiting for its writers to close it."""
    os.set_blocking(stream.fileno(), False)
    try:
        return os.read(stream.fileno(), 1 << 20).decode(errors="replace")
    except BlockingIOError:
        return ""


def _process_state(pid: int) -> str:
    """The state, kernel wait channel, signal masks and children of a live process, from /proc."""
    proc = Path(f"/proc/{pid}")
    status = dict(line.split(":\t", 1) for line in (proc / "status").read_text().splitlines() if ":\t" in line)
    children = (proc / "task" / str(pid) / "children").read_text().split()
    signals = ", ".join(f"{mask} {status.get(mask)}" for mask in ("SigBlk", "SigIgn", "SigCgt"))  # SIGINT is bit 1
    return f"state {status.get('State')}, wchan {(proc / 'wchan').read_text()}, {signals}, children {children}"


@pytest.mark.slow
def test_failed_job_exits_with_its_error_class_code(home, tiny_model, tmp_path, monkeypatch, capsys):
    """The worker fails with CompilationError (no cross linker on its PATH): build prints that one line and exits 10."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    code = main(
        [
            "build",
            "--model",
            str(tiny_model[0]),
            "--model-spec",
            str(tiny_model[1]),
            "--target-platform",
            "LINUX/ARM64",
            "--output",
            str(tmp_path / "gg"),
        ]
    )
    errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("... ")]
    assert code == CompilationError.exit_code == 10
    assert errors == [errors[0]] and errors[0].startswith("error: InternalServerException: ")
    assert "aarch64-linux-gnu-gcc" in errors[0] and "apt-get install -y gcc-aarch64-linux-gnu" in errors[0]
    assert _jobs()[0]["Status"] == "FAILED"
    assert not (tmp_path / "gg" / "recipes").exists()


@pytest.mark.slow
def test_build_twice_reuses_the_model_version_and_overwrites_the_bundle(home, tiny_model, tmp_path, capsys):
    out = tmp_path / "gg"
    argv = [
        "build",
        "--model",
        str(tiny_model[0]),
        "--model-spec",
        str(tiny_model[1]),
        "--output",
        str(out),
        "--benchmark-runs",
        "3",
    ]
    artifact = out / "artifacts" / "com.example.AnomalyDetector" / "1.0.0" / "model.zip"
    assert main(argv) == 0
    first = capsys.readouterr()
    measured_on = [json.loads((artifact.parent / "benchmark.json").read_text())["device"]]
    assert main(argv) == 0, "a local-only build of the same component version may be repeated"
    second = capsys.readouterr()
    measured_on.append(json.loads((artifact.parent / "benchmark.json").read_text())["device"])
    # The job's worker runs one build: after a hit nothing compiles there, so it loads TVM's runtime library alone.
    assert measured_on == [f"host {platform.machine()}", f"host {platform.machine()} (TVM runtime library)"]
    for summary in (first.out, second.out):
        assert "component:   com.example.AnomalyDetector 1.0.0" in summary
        assert f"recipe:      {out}/recipes/com.example.AnomalyDetector-1.0.0.yaml" in summary
        assert "TVM/ORT:     " in summary and "x\n" in summary.split("TVM/ORT:")[1][:20]
    assert "... compiling for LINUX/X86_64" in first.err and "model version 1 of project default" in second.err
    assert "compile cache hit" not in first.err and "... compile cache hit" in second.err
    assert (home / "compile-cache").is_dir()
    assert main([*argv, "--no-cache"]) == 0
    assert "compile cache hit" not in capsys.readouterr().err, "--no-cache compiles afresh"
    assert [m["ModelVersion"] for m in api.list_models(ProjectName="default")["Models"]] == ["1"]
    jobs = _jobs()
    assert [j["Status"] for j in jobs] == ["SUCCEEDED"] * 3 and {j["ModelVersion"] for j in jobs} == {"1"}
    with zipfile.ZipFile(artifact) as archive:
        assert "benchmark.json" not in archive.namelist(), "the per-build report lives beside the artifact"
    report = json.loads((artifact.parent / "benchmark.json").read_text())
    assert report["tvm"]["runs"] == 3 and f"({artifact.stat().st_size} bytes)" in second.out
    recipe = yaml.safe_load((out / "recipes" / "com.example.AnomalyDetector-1.0.0.yaml").read_text())
    assert recipe["Manifests"][0]["Artifacts"][0]["Uri"].startswith("s3://BUCKET_NAME/")
    assert not (api.job_dir(home, "default", jobs[0]["JobName"]) / "greengrass-build").exists()


@pytest.mark.slow
def test_build_uploads_to_s3_output(home, tiny_model, tmp_path, s3_server, capsys):
    code = main(
        [
            "build",
            "--model",
            str(tiny_model[0]),
            "--model-spec",
            str(tiny_model[1]),
            "--output",
            str(tmp_path / "gg"),
            "--benchmark-runs",
            "2",
            "--s3-output",
            f"s3://{S3_BUCKET}/edge",
            "--no-register",
            "--tag",
            "team=vision",
            "--component-version",
            "3.1.4",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    keys = sorted(o["Key"] for o in s3_server.list_objects_v2(Bucket=S3_BUCKET)["Contents"])
    assert (
        "edge/com.example.AnomalyDetector/3.1.4/model.zip" in keys
        and "edge/com.example.AnomalyDetector/3.1.4/recipe.yaml" in keys
    )
    report = s3_server.get_object(Bucket=S3_BUCKET, Key="edge/com.example.AnomalyDetector/3.1.4/benchmark.json")[
        "Body"
    ].read()
    assert (
        report
        == (tmp_path / "gg" / "artifacts" / "com.example.AnomalyDetector" / "3.1.4" / "benchmark.json").read_bytes()
    )
    recipe = (tmp_path / "gg" / "recipes" / "com.example.AnomalyDetector-3.1.4.yaml").read_text()
    assert f"s3://{S3_BUCKET}/edge/com.example.AnomalyDetector/3.1.4/model.zip" in recipe
    assert "component:   com.example.AnomalyDetector 3.1.4" in captured.out and "registered:" not in captured.out
    again = main(
        [
            "build",
            "--model",
            str(tiny_model[0]),
            "--model-spec",
            str(tiny_model[1]),
            "--output",
            str(tmp_path / "gg2"),
            "--s3-output",
            f"s3://{S3_BUCKET}/edge",
            "--no-register",
            "--component-version",
            "3.1.4",
        ]
    )
    assert (
        again == 3
        and "error: ConflictException: component com.example.AnomalyDetector version 3.1.4 was already produced"
        in capsys.readouterr().err
    ), "a published component version is immutable"


@pytest.mark.slow
def test_compile_cache_flag_puts_the_cache_there(home, tiny_model, tmp_path, monkeypatch, capsys):
    argv = [
        "build",
        "--model",
        str(tiny_model[0]),
        "--model-spec",
        str(tiny_model[1]),
        "--output",
        str(tmp_path / "gg"),
        "--benchmark-runs",
        "2",
        "--compile-cache",
        str(tmp_path / "ci-cache"),
    ]
    assert main(argv) == 0
    assert "compile cache hit" not in capsys.readouterr().err
    assert [p for p in (tmp_path / "ci-cache").iterdir() if not p.name.startswith(".")] and not (
        home / "compile-cache"
    ).exists()
    monkeypatch.setenv("PACKAGER_HOME", str(tmp_path / "another-home"))  # a CI runner with only the cache restored
    assert main(argv) == 0
    assert "... compile cache hit" in capsys.readouterr().err


@pytest.mark.slow
def test_same_model_and_target_give_the_same_digest_in_fresh_homes(home, tiny_model, tmp_path, monkeypatch, capsys):
    """Two builds, each in its own empty $PACKAGER_HOME (so nothing is cached): the same artifact bytes and digest,
    and each build's own timings beside the artifact."""
    runs = []
    for name in ("first", "second"):
        monkeypatch.setenv("PACKAGER_HOME", str(tmp_path / f"home-{name}"))
        out = tmp_path / f"gg-{name}"
        assert (
            main(
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
                ]
            )
            == 0
        ), capsys.readouterr().err
        summary = capsys.readouterr().out
        artifacts = out / "artifacts" / "com.example.AnomalyDetector" / "1.0.0"
        runs.append(
            (
                summary.split("digest:")[1].splitlines()[0].strip(),
                (artifacts / "model.zip").read_bytes(),
                (out / "recipes" / "com.example.AnomalyDetector-1.0.0.yaml").read_text(),
                json.loads((artifacts / "benchmark.json").read_text()),
            )
        )
    (digest1, zip1, recipe1, report1), (digest2, zip2, recipe2, report2) = runs
    assert zip1 == zip2 and digest1 == digest2 and recipe1 == recipe2
    assert report1["tvm"]["runs"] == report2["tvm"]["runs"] == 3


def _registered_files(home: Path) -> tuple[Path, Path]:
    import sqlite3

    with sqlite3.connect(home / "store.sqlite3") as db:
        model_file, spec_file = db.execute("SELECT model_file, spec_file FROM models").fetchone()
    return home / model_file, home / spec_file


def _build_without_waiting(monkeypatch, home: Path, *argv: str) -> None:
    from packager.commands import build

    monkeypatch.setattr(build, "wait_for_build_job", lambda project, name: (_ for _ in ()).throw(KeyboardInterrupt))
    with hold_worker_slot(home, monkeypatch):
        assert main(["build", *argv]) == 130


def test_a_spec_read_from_anomalib_metadata_is_registered_spelled_out(home, tmp_path, monkeypatch):
    """The job's worker sees only the stored files, so a spec intake derived (here from metadata.json) is stored with them."""
    from compilers.frontends.intake import import_model
    from tests.conftest import make_tiny_autoencoder

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
                    "transforms": [{"__class_fullname__": "Resize", "height": 64, "width": 64}],
                },
            }
        )
    )
    _build_without_waiting(monkeypatch, home, "--model", str(model), "--output", str(tmp_path / "gg"))
    stored_model, stored_spec = _registered_files(home)
    assert stored_model.read_bytes() == model.read_bytes()
    assert import_model(stored_model, stored_spec).spec == import_model(model).spec
    assert json.loads(stored_spec.read_text())["source"].startswith("anomalib")


@pytest.mark.slow
def test_a_pytorch_model_is_registered_as_the_onnx_graph_intake_made(home, tmp_path, monkeypatch):
    from compilers.frontends.intake import import_model
    from tests.conftest import save_tiny_exported_program, tiny_spec_dict

    path = tmp_path / "net.pt2"
    save_tiny_exported_program(path)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(tiny_spec_dict()))
    _build_without_waiting(
        monkeypatch, home, "--model", str(path), "--model-spec", str(spec), "--output", str(tmp_path / "gg")
    )
    stored_model, stored_spec = _registered_files(home)
    assert stored_model.suffix == ".onnx" and stored_spec.read_bytes() == spec.read_bytes()
    assert stored_model.read_bytes() == import_model(path, spec).onnx_bytes


def test_tuning_trials_flag_becomes_the_compiler_option(tmp_path):
    import json

    from packager.cli import build_parser
    from packager.commands import build
    from packager.errors import ValidationException

    parser = build_parser((build.COMMAND,))
    args = parser.parse_args(["build", "--tuning-trials", "32", "--compiler-options", "{'mcpu': 'znver3'}"])
    request = build.build_request(args)
    assert json.loads(request.configuration["Greengrass"]["CompilerOptions"]) == {"mcpu": "znver3", "tuning-trials": 32}
    assert request.tuning_trials == 32 and args.compiler_options == "{'mcpu': 'znver3'}"  # args are left as given
    for bad in (["--tuning-trials", "-1"], ["--tuning-trials", "8", "--target-device", "jetson_xavier"]):
        with pytest.raises(ValidationException, match="--tuning-trials"):
            build.build_request(parser.parse_args(["build", *bad]))


@pytest.mark.slow
def test_build_shows_every_step_even_those_between_two_polls(home, tiny_model, tmp_path, capsys, monkeypatch):
    from packager.commands import build_jobs

    monkeypatch.setattr(build_jobs, "POLL_SECONDS", 5.0)  # most steps pass unseen by StatusMessage between two polls
    assert (
        main(
            [
                "build",
                "--model",
                str(tiny_model[0]),
                "--model-spec",
                str(tiny_model[1]),
                "--output",
                str(tmp_path / "gg"),
                "--benchmark-runs",
                "3",
            ]
        )
        == 0
    )
    steps = [line[4:] for line in capsys.readouterr().err.splitlines() if line.startswith("... ")]
    expected = [
        "importing ",
        "compiling for LINUX/X86_64",
        "checking outputs against ONNX Runtime",
        "benchmarking (3 runs each)",
        "bundling com.example.AnomalyDetector 1.0.0",
    ]
    found = [next(i for i, step in enumerate(steps) if step.startswith(prefix)) for prefix in expected]
    assert found == sorted(found), steps
