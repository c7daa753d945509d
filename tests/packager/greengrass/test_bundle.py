import base64
import hashlib
import json
import shlex
import zipfile
from pathlib import Path

import jsonschema
import pytest
import yaml

from packager.build.pipeline import PackagingRequest, run_packaging
from packager.edge import AGENT_VERSION
from packager.errors import ValidationException
from packager.greengrass.bundle import AGENT_COMPONENT, ComponentIdentity, S3Location, agent_bundle, bundle
from packager.greengrass.local.deploy import version_satisfies
from packager.greengrass.recipe import MAX_RECIPE_BYTES, validate_recipe
from targets import get_target, host_target


@pytest.fixture(scope="module")
def packaged(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("gg")
    work = tmp_path_factory.mktemp("work")
    request = PackagingRequest(
        model_path=tiny_model[0],
        spec_path=tiny_model[1],
        target=host_target(),
        component_name="com.acme.Tiny",
        component_version="3.0.0",
        output_dir=out,
        benchmark_runs=3,
        work_dir=work,
    )
    return request, run_packaging(request)


def _lower(value):
    if isinstance(value, dict):
        return {k.lower(): _lower(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lower(v) for v in value]
    return value


@pytest.mark.slow
def test_layout_is_gdks(packaged):
    _, result = packaged
    b = result.bundle
    assert b.recipe_path == b.root / "recipes" / "com.acme.Tiny-3.0.0.yaml"
    assert b.artifacts[0].path == b.root / "artifacts" / "com.acme.Tiny" / "3.0.0" / "model.zip"


@pytest.mark.slow
def test_recipe_validates_against_gdk_schema(packaged):
    _, result = packaged
    recipe = yaml.safe_load(result.bundle.recipe_path.read_text())
    schema = json.loads(open("packager/data/greengrass-recipe.schema.json").read())
    jsonschema.validate(_lower(recipe), schema)
    assert recipe["RecipeFormatVersion"] == "2020-01-25"
    assert len(result.bundle.recipe_path.read_bytes()) < MAX_RECIPE_BYTES
    manifest = recipe["Manifests"][0]
    assert manifest["Platform"] == {"os": "linux", "architecture": "amd64"}
    assert {"Run", "Shutdown"} <= set(manifest["Lifecycle"])
    artifact = manifest["Artifacts"][0]
    assert artifact["Unarchive"] == "ZIP" and artifact["Algorithm"] == "SHA-256" and "Permission" in artifact


@pytest.mark.slow
def test_digest_is_base64_sha256_of_the_zip_bytes(packaged):
    _, result = packaged
    recipe = yaml.safe_load(result.bundle.recipe_path.read_text())
    data = result.bundle.artifacts[0].path.read_bytes()
    assert recipe["Manifests"][0]["Artifacts"][0]["Digest"] == base64.b64encode(hashlib.sha256(data).digest()).decode()


@pytest.mark.slow
def test_zip_holds_library_params_spec_and_runner_and_the_report_lies_beside_it(packaged):
    _, result = packaged
    with zipfile.ZipFile(result.bundle.artifacts[0].path) as archive:
        names = archive.namelist()
        assert names == sorted(names)
        assert {
            "compiled/model.so",
            "compiled/params.bin",
            "compiled/spec.json",
            "compiled/manifest.json",
            "requirements.txt",
            "lookout_edge/classify.py",
            "lookout_edge/model_runner.py",
        } <= set(names)
        assert "benchmark.json" not in names, "a per-build report inside the ZIP would change its digest every build"
        assert all(info.date_time == (1980, 1, 1, 0, 0, 0) for info in archive.infolist())
    [report_path] = result.bundle.reports
    assert report_path == result.bundle.artifacts[0].path.parent / "benchmark.json"
    report = json.loads(report_path.read_text())
    assert report["tvm"]["runs"] == 3 and report["ratio_tvm_to_ort"] > 0


@pytest.mark.slow
def test_same_inputs_give_byte_identical_zip(packaged, tmp_path):
    """Rebuild the bundle from the same inputs: same bytes, same digest."""
    request, result = packaged
    from compilers.frontends.intake import import_model
    from compilers.model import CompileOptions
    from compilers.tvm_compile import compile_model

    first = result.bundle.artifacts[0].path.read_bytes()
    imported = import_model(request.model_path, request.spec_path)
    artifact = compile_model(imported, request.target, CompileOptions(work_dir=tmp_path / "work"))
    again = bundle(
        artifact, result.benchmark, request.target, ComponentIdentity("com.acme.Tiny", "3.0.0"), tmp_path / "gg"
    )
    assert again.artifacts[0].path.read_bytes() == first
    assert again.artifacts[0].sha256_b64 == result.bundle.artifacts[0].sha256_b64


@pytest.mark.slow
def test_s3_location_sets_artifact_uri(packaged, tmp_path):
    request, result = packaged
    from compilers.frontends.intake import import_model
    from compilers.model import CompileOptions
    from compilers.tvm_compile import compile_model

    artifact = compile_model(
        import_model(request.model_path, request.spec_path), request.target, CompileOptions(work_dir=tmp_path / "w")
    )
    b = bundle(
        artifact,
        result.benchmark,
        request.target,
        ComponentIdentity("com.acme.Tiny", "3.0.0"),
        tmp_path / "gg",
        S3Location("my-bucket", "models/line1"),
    )
    assert b.artifacts[0].uri == "s3://my-bucket/models/line1/com.acme.Tiny/3.0.0/model.zip"
    assert "s3://my-bucket/models/line1/com.acme.Tiny/3.0.0/model.zip" in b.recipe_text


@pytest.mark.slow
@pytest.mark.parametrize(
    "field, value",
    [
        ("ComponentName", "bad name!"),
        ("ComponentName", "x" * 129),
        ("ComponentVersion", "1.0"),
        ("ComponentVersion", "1234567.0.0"),
    ],
)
def test_recipe_rejects_names_the_service_rejects(packaged, field, value):
    _, result = packaged
    recipe = yaml.safe_load(result.bundle.recipe_text)
    recipe[field] = value
    with pytest.raises(ValidationException, match=field):
        validate_recipe(recipe)


@pytest.mark.slow
def test_recipe_over_16kb_is_rejected(packaged):
    _, result = packaged
    recipe = yaml.safe_load(result.bundle.recipe_text)
    recipe["ComponentDescription"] = "x" * (MAX_RECIPE_BYTES + 1)
    with pytest.raises(ValidationException, match="recipe"):
        validate_recipe(recipe)


@pytest.mark.slow
def test_model_component_depends_on_the_agent_and_registers_with_it(packaged):
    _, result = packaged
    recipe = yaml.safe_load(result.bundle.recipe_text)
    requirement = recipe["ComponentDependencies"][AGENT_COMPONENT]
    assert requirement["DependencyType"] == "HARD" and version_satisfies(
        AGENT_VERSION, requirement["VersionRequirement"]
    )
    run = recipe["Manifests"][0]["Lifecycle"]["Run"]["Script"]
    assert "lookout_edge.registry add" in run and f"{{{AGENT_COMPONENT}:work:path}}/models" in run
    assert [d.component_name for d in result.bundle.dependencies] == [AGENT_COMPONENT]
    assert (
        result.bundle.dependencies[0].recipe_path
        == result.bundle.root / "recipes" / f"{AGENT_COMPONENT}-{AGENT_VERSION}.yaml"
    )


def test_agent_component_is_schema_valid_and_serves_lookouts_socket(tmp_path):
    agent = agent_bundle(host_target(), tmp_path)
    recipe = yaml.safe_load(agent.recipe_path.read_text())
    schema = json.loads(open("packager/data/greengrass-recipe.schema.json").read())
    jsonschema.validate(_lower(recipe), schema)
    validate_recipe(recipe)
    assert len(agent.recipe_path.read_bytes()) < MAX_RECIPE_BYTES
    assert (
        recipe["ComponentConfiguration"]["DefaultConfiguration"]["Socket"]
        == "unix:///tmp/aws.iot.lookoutvision.EdgeAgent.sock"
    )
    lifecycle = recipe["Manifests"][0]["Lifecycle"]
    assert "--system-site-packages" in lifecycle["Install"]["Script"]
    assert '--socket "{configuration:/Socket}"' in lifecycle["Run"]["Script"]
    assert "--inference-threads {configuration:/InferenceThreads}" in lifecycle["Run"]["Script"]
    assert recipe["ComponentConfiguration"]["DefaultConfiguration"]["InferenceThreads"] == 0  # TVM's own choice
    assert agent.artifacts[0].path == tmp_path / "artifacts" / AGENT_COMPONENT / AGENT_VERSION / "edge_agent.zip"
    with zipfile.ZipFile(agent.artifacts[0].path) as archive:
        names = set(archive.namelist())
        assert {
            "lookout_edge/agent.py",
            "lookout_edge/edge_agent_pb2.py",
            "lookout_edge/edge_agent_pb2_grpc.py",
            "lookout_edge/edge_agent.proto",
            "requirements.txt",
        } <= names
        requirements = archive.read("requirements.txt").decode().split()
    assert any(r.startswith("apache-tvm==") for r in requirements)
    assert any(r.startswith("grpcio>=") for r in requirements) and any(r.startswith("protobuf>=") for r in requirements)


def test_agent_bytes_do_not_depend_on_the_build(tmp_path):
    first = agent_bundle(host_target(), tmp_path / "a")
    second = agent_bundle(host_target(), tmp_path / "b", S3Location("bucket", "p"))
    assert first.artifacts[0].path.read_bytes() == second.artifacts[0].path.read_bytes()
    assert second.artifacts[0].uri == f"s3://bucket/p/{AGENT_COMPONENT}/{AGENT_VERSION}/edge_agent.zip"


def test_cpu_and_jetson_agents_are_separate_components(tmp_path):
    """Their Install steps differ, so sharing one name and version would make the second publish a conflict."""
    from packager.greengrass.bundle import agent_bundle
    from targets import get_target

    cpu = agent_bundle(host_target(), tmp_path / "cpu")
    jetson = agent_bundle(get_target("jetson_xavier"), tmp_path / "jetson")
    assert cpu.component_name == AGENT_COMPONENT
    assert jetson.component_name == f"{AGENT_COMPONENT}.cuda-10.2.trt-7.1.3"
    assert cpu.artifacts[0].sha256_b64 != jetson.artifacts[0].sha256_b64 or cpu.recipe_text != jetson.recipe_text


def test_the_model_arn_reaches_the_agents_registration(tmp_path):
    from packager.edge import registry
    from packager.greengrass.bundle import model_lifecycle
    from targets import host_target

    arn = "arn:aws:lookoutvision:us-east-1:123456789012:model/line3/2"
    run = model_lifecycle(ComponentIdentity("com.acme.Tiny", "3.0.0", model_arn=arn), host_target())["Run"]["Script"]
    assert (
        "--model-arn"
        not in model_lifecycle(ComponentIdentity("com.acme.Tiny", "3.0.0"), host_target())["Run"]["Script"]
    )
    (tmp_path / "model" / "compiled").mkdir(parents=True)
    (tmp_path / "model" / "compiled" / "manifest.json").write_text("{}")
    run = run.replace("{artifacts:decompressedPath}", str(tmp_path)).replace(
        f"{{{AGENT_COMPONENT}:work:path}}", str(tmp_path / "agent")
    )
    assert registry.main(shlex.split(run)[3:]) == 0  # what follows "python3 -m lookout_edge.registry"
    assert registry.scan(tmp_path / "agent" / "models")["com.acme.Tiny"].model_arn == arn


def test_large_incompressible_entries_are_stored_and_the_rest_deflated():
    """Deflating weights costs seconds and saves little; the choice depends on the bytes only, so it is reproducible."""
    import io
    import zipfile

    import numpy as np

    from packager.greengrass.bundle import reproducible_zip

    weights = np.random.default_rng(0).standard_normal(1 << 20).astype(np.float32).tobytes()  # 4 MiB of floats
    code = b"\x7fELF" + b"mov rax, rbx; ret\n" * (1 << 18)
    data = reproducible_zip([("compiled/params.bin", weights), ("compiled/model.so", code), ("small.txt", b"x" * 100)])
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        kinds = {info.filename: info.compress_type for info in archive.infolist()}
        assert archive.read("compiled/params.bin") == weights and archive.read("compiled/model.so") == code
    assert kinds == {
        "compiled/params.bin": zipfile.ZIP_STORED,
        "compiled/model.so": zipfile.ZIP_DEFLATED,
        "small.txt": zipfile.ZIP_DEFLATED,
    }
    assert reproducible_zip([("compiled/params.bin", weights)]) == reproducible_zip([("compiled/params.bin", weights)])


def test_cached_zip_reuses_the_same_entries_zip_and_remakes_a_damaged_one(tmp_path, monkeypatch):
    from packager.greengrass import bundle as bundle_module

    def cached_zip(entries, cache_dir) -> bytes:
        archive = bundle_module.cached_zip(entries, cache_dir)
        return archive if isinstance(archive, bytes) else archive.read_bytes()

    entries = [("compiled/params.bin", bytes(range(256)) * 4096), ("requirements.txt", b"numpy\n")]
    made = []
    real = bundle_module.reproducible_zip
    monkeypatch.setattr(bundle_module, "reproducible_zip", lambda e: made.append(1) or real(e))
    first = cached_zip(entries, tmp_path / "archives")
    assert cached_zip(entries, tmp_path / "archives") == first == real(entries) and len(made) == 1
    [cached] = (tmp_path / "archives").glob("*.zip")
    damaged = bytearray(first)
    damaged[len(first) // 2] ^= 0xFF
    cached.write_bytes(bytes(damaged))
    assert cached_zip(entries, tmp_path / "archives") == first and len(made) == 2, "damage is caught"
    other = cached_zip([*entries[:1], ("requirements.txt", b"numpy<3\n")], tmp_path / "archives")
    assert other != first and len(made) == 3
    assert bundle_module.cached_zip(entries, None) == first and len(made) == 4, "no cache: the bytes"


def test_a_hits_known_digests_find_its_zip_without_reading_the_compiled_files(tmp_path, monkeypatch):
    """After a compile cache hit the compiled files' digests are known (the cache checked them): the archive cache's
    ZIP is found by them, and the files are read only when it is not there or a digest is not theirs."""
    from compilers.model import CompiledArtifact
    from packager.greengrass import bundle as bundle_module

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    files = {"params.bin": bytes(range(256)) * 4096, "model.so": b"\x7fELF library", "manifest.json": b"{}"}
    for name, data in files.items():
        (model_dir / name).write_bytes(data)
    target = get_target("LINUX/X86_64")

    def artifact(digests: dict) -> CompiledArtifact:
        return CompiledArtifact(
            model_dir,
            target.name,
            "cpu",
            *(model_dir / n for n in ("model.so", "params.bin", "manifest.json")),
            compile_seconds=0.0,
            tuning_trials=0,
            tuning_records_applied=0,
            from_cache=True,
            file_sha256=digests,
        )

    cache = tmp_path / "archives"
    made = bundle_module.model_archive(artifact({}), target, cache)  # not known: read, zipped, kept
    expected = bundle_module.reproducible_zip(bundle_module.archive_entries(artifact({}), target))
    assert made.read_bytes() == expected
    known = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    read, real_entries = [], bundle_module.archive_entries
    monkeypatch.setattr(bundle_module, "archive_entries", lambda *a: read.append(1) or real_entries(*a))
    assert bundle_module.model_archive(artifact(known), target, cache) == made and read == []
    wrong = {**known, "params.bin": hashlib.sha256(b"other").hexdigest()}
    assert bundle_module.model_archive(artifact(wrong), target, cache) == made and read == [1], "read when not theirs"


def test_an_archive_given_as_a_file_is_linked_with_the_digest_of_its_bytes(tmp_path):
    """The archive cache's ZIP (a worker's bundle) and a job's ZIP (the fleet's) are linked into the bundle, not read
    and written again; the recipe's digest is that of the bytes."""
    from packager.greengrass import bundle as bundle_module
    from packager.greengrass.bundle import ComponentIdentity, TargetBuild, bundle_targets
    from tests.packager.commands.test_build_fleet import _report

    entries = [("compiled/params.bin", bytes(range(256)) * 8192), ("requirements.txt", b"numpy\n")]
    cached = bundle_module.cached_zip(entries, tmp_path / "archives")
    assert isinstance(cached, Path) and cached.read_bytes() == bundle_module.reproducible_zip(entries)
    report = _report("LINUX/X86_64", None)  # what bundling writes beside the ZIP; its figures do not matter
    made = bundle_targets(
        [TargetBuild(get_target("LINUX/X86_64"), cached, report)],
        ComponentIdentity("com.acme.Linked", "1.0.0"),
        tmp_path / "gg",
    )
    [artifact] = made.artifacts
    assert artifact.path.samefile(cached) and artifact.size == cached.stat().st_size
    digest = base64.b64encode(hashlib.sha256(cached.read_bytes()).digest()).decode()
    assert artifact.sha256_b64 == digest and f"Digest: {digest}" in made.recipe_text


def test_a_digest_the_job_reported_is_used_while_the_file_keeps_its_size(tmp_path):
    """A fleet's component takes each target's digest from its job's result instead of reading the ZIP again; a file
    whose size is no longer the one reported is hashed."""
    from packager.greengrass.bundle import ComponentIdentity, TargetBuild, bundle_targets
    from tests.packager.commands.test_build_fleet import _report

    archive = tmp_path / "model.zip"
    archive.write_bytes(b"PK" + bytes(1000))
    reported = "cmVwb3J0ZWQgYnkgdGhlIGpvYg=="  # not the bytes' digest, so the test tells which one was used
    actual = base64.b64encode(hashlib.sha256(archive.read_bytes()).digest()).decode()
    report = _report("LINUX/X86_64", None)

    def digest(known) -> str:
        made = bundle_targets(
            [TargetBuild(get_target("LINUX/X86_64"), archive, report, known_digest=known)],
            ComponentIdentity("com.acme.Reported", "1.0.0"),
            tmp_path / f"gg-{len(list(tmp_path.iterdir()))}",
        )
        return made.artifacts[0].sha256_b64

    assert digest((reported, 1002)) == reported
    assert digest((reported, 999)) == actual, "the file changed size since the job reported it"
    assert digest(None) == actual
