"""Issue 15 items 4-6: bad input gets a ValidationException naming the field, through packager.client(), the CLI
(a real `python -m packager` process) and the REST server over HTTP; never a traceback or a 500."""

from __future__ import annotations

import base64
import json
import subprocess

import pytest

import packager
from tests.conftest import tiny_spec_dict
from tests.packager.service.jobs.support import cli_argv, cli_env, gg_config, home  # noqa: F401  (fixture)
from tests.packager.service.server.test_server_rest import endpoint, signed_call  # noqa: F401  (fixture)

BAD_COMPILER_OPTIONS = [
    "{1: 2, 'a': 3}",
    "{[]: 1}",
    "{(1, 2): 3}",
    "[" * 5000 + "]" * 5000,
    "{'mcpu': " + "9" * 5000 + "}",
]


def _spec(mutate) -> dict:
    spec = tiny_spec_dict()
    mutate(spec)
    return spec


BAD_SPECS = {  # spec -> the field its error must name
    "string shape": (_spec(lambda s: s["input"].update(shape="1,3,64,64")), "input.shape"),
    "string threshold": (_spec(lambda s: s.update(image_threshold="0.5")), "image_threshold"),
    "input is a number": (_spec(lambda s: s.update(input=5)), "input"),
    "outputs as strings": (_spec(lambda s: s.update(outputs=["score", "anomaly_map"])), "outputs[0]"),
    "class without color": (_spec(lambda s: s.update(classes=[{"name": "scratch"}])), "classes[0].color"),
    "fractional dimension": (_spec(lambda s: s["input"].update(shape=[1, 3, 32.7, 32])), "input.shape[2]"),
    "boolean scale": (_spec(lambda s: s["preprocessing"].update(scale=True)), "preprocessing.scale"),
    "spec is a list": ([1, 2], None),
}


@pytest.fixture
def client(home):
    return packager.client()


@pytest.mark.parametrize(
    "options", BAD_COMPILER_OPTIONS, ids=["mixed-keys", "list-key", "tuple-key", "deep", "huge-int"]
)
def test_compiler_options_with_odd_keys_are_a_validation_error(client, options):
    with pytest.raises(client.exceptions.ValidationException) as caught:
        client.start_model_packaging_job(
            ProjectName="p",
            ModelVersion="1",
            Configuration=gg_config(TargetPlatform={"Os": "LINUX", "Arch": "X86_64"}, CompilerOptions=options),
        )
    assert "CompilerOptions" in caught.value.response["Error"]["Message"]


@pytest.mark.parametrize("options", BAD_COMPILER_OPTIONS[:2], ids=["mixed-keys", "list-key"])
def test_compiler_options_with_odd_keys_over_rest_and_cli(endpoint, home, options):  # noqa: F811
    body = json.dumps(
        {
            "ModelVersion": "1",
            "Configuration": gg_config(TargetPlatform={"Os": "LINUX", "Arch": "X86_64"}, CompilerOptions=options),
        }
    ).encode()
    status, headers, error = signed_call(endpoint, "POST", "/2020-11-20/projects/p/modelpackagingjobs", body)
    assert (status, headers["x-amzn-ErrorType"]) == (400, "ValidationException") and "CompilerOptions" in error[
        "Message"
    ]

    done = subprocess.run(
        cli_argv("build", "--compiler-options", options, "--target-platform", "LINUX/X86_64"),
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ValidationException:") and "CompilerOptions" in done.stderr


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"ProjectName": ' + b"7" * 5000 + b"}",
        b'{"a": ' + b'{"b": ' * 50 + b"1" + b"}" * 51,
    ],
    ids=["100000-deep", "5000-digits", "50-deep"],
)
def test_deep_and_huge_json_bodies_are_400(endpoint, body):  # noqa: F811
    status, headers, error = signed_call(endpoint, "POST", "/2020-11-20/projects", body)
    assert (status, headers["x-amzn-ErrorType"]) == (400, "ValidationException"), error
    assert len(error["Message"]) < 300


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_spec_with_wrong_types_is_refused_by_the_schema(client, tiny_model, tmp_path, case):
    spec, field = BAD_SPECS[case]
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(client.exceptions.ValidationException) as caught:
        client.register_model(ProjectName="p", ModelPath=tiny_model[0], SpecPath=path, CreateProject=True)
    message = caught.value.response["Error"]["Message"]
    assert field is None or field in message, message


@pytest.mark.parametrize("case", ["string shape", "input is a number", "class without color", "fractional dimension"])
def test_spec_with_wrong_types_over_rest(endpoint, tiny_model, case):  # noqa: F811
    spec, field = BAD_SPECS[case]
    body = json.dumps(
        {"Model": base64.b64encode(tiny_model[0].read_bytes()).decode(), "Spec": spec, "CreateProject": True}
    ).encode()
    status, headers, error = signed_call(endpoint, "POST", "/x-packager/projects/p/models", body)
    assert (status, headers["x-amzn-ErrorType"]) == (400, "ValidationException"), error
    assert field in error["Message"]


@pytest.mark.parametrize("command", ["register-model", "build"])
@pytest.mark.parametrize("case", ["string threshold", "outputs as strings", "fractional dimension"])
def test_spec_with_wrong_types_from_the_cli(home, tiny_model, tmp_path, command, case):
    spec, field = BAD_SPECS[case]
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    args = (
        ["register-model", "--project-name", "p", "--create-project"]
        if command == "register-model"
        else ["build", "--output", str(tmp_path / "out")]
    )
    done = subprocess.run(
        cli_argv(
            *args, "--model", str(tiny_model[0]), "--spec" if command == "register-model" else "--model-spec", str(path)
        ),
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: ValidationException:") and field in errors[0], done.stderr


# -- item 5: register-model runs build's intake checks ----------------------------------------------------------


def _two_inputs(path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["anomaly_map"])],
        "two",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 8, 8]) for n in ("a", "b")],
        [helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)


def _one_op(path, op: str, domain: str = ""):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node(op, ["image"], ["anomaly_map"], domain=domain)],
        "one",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    opsets = [helper.make_opsetid("", 18)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    onnx.save(helper.make_model(graph, opset_imports=opsets), path)


JUNK_MODELS = {
    "empty file": (lambda p: p.write_bytes(b""), "no nodes"),
    "two-byte protobuf": (lambda p: p.write_bytes(b"\x08\x07"), "no nodes"),
    "two inputs": (_two_inputs, "exactly one image input"),
    "unsupported op": (lambda p: _one_op(p, "StringNormalizer"), "unsupported operator"),
    "custom-domain op": (lambda p: _one_op(p, "Frobnicate", "com.acme"), "custom domain"),
}


@pytest.mark.parametrize("case", sorted(JUNK_MODELS))
def test_register_model_refuses_what_build_refuses(client, tmp_path, case):
    write, reason = JUNK_MODELS[case]
    model = tmp_path / "junk.onnx"
    write(model)
    with pytest.raises(client.exceptions.ValidationException) as caught:
        client.register_model(ProjectName="p", ModelPath=model, CreateProject=True)
    assert reason in caught.value.response["Error"]["Message"]
    assert client.list_projects()["Projects"] == []  # nothing recorded, not even the project


def test_register_model_over_rest_refuses_a_two_byte_protobuf(endpoint, client):  # noqa: F811
    body = json.dumps({"Model": base64.b64encode(b"\x08\x07").decode(), "CreateProject": True}).encode()
    status, headers, error = signed_call(endpoint, "POST", "/x-packager/projects/p/models", body)
    assert (status, headers["x-amzn-ErrorType"]) == (400, "ValidationException") and "no nodes" in error["Message"]
    assert client.list_projects()["Projects"] == []


@pytest.mark.parametrize("value", ["no", "false", 0, 1, None, [], {}])
def test_create_project_must_be_a_json_boolean(endpoint, client, tiny_model, value):  # noqa: F811
    body = json.dumps({"Model": base64.b64encode(tiny_model[0].read_bytes()).decode(), "CreateProject": value}).encode()
    status, headers, error = signed_call(endpoint, "POST", "/x-packager/projects/p/models", body)
    assert (status, headers["x-amzn-ErrorType"]) == (400, "ValidationException"), error
    assert "CreateProject" in error["Message"]
    assert client.list_projects()["Projects"] == []


# -- item 6: limits on sizes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [[1, 3, 100_000, 100_000], [1, 3, 8192, 8192], [64, 3, 1024, 1024]])
def test_an_input_too_large_to_run_is_refused_at_intake(client, tmp_path, shape):
    from tests.conftest import make_tiny_autoencoder

    model = make_tiny_autoencoder(tmp_path / "tiny.onnx")
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(_spec(lambda s: (s["input"].update(shape=shape), s["preprocessing"].update(resize=shape[2:]))))
    )
    with pytest.raises(client.exceptions.ValidationException) as caught:
        client.register_model(ProjectName="p", ModelPath=model, SpecPath=spec, CreateProject=True)
    assert "input.shape" in caught.value.response["Error"]["Message"]


def test_a_graph_whose_own_input_is_too_large_is_refused_without_a_spec(client, tmp_path):
    from tests.conftest import make_tiny_autoencoder

    model = make_tiny_autoencoder(tmp_path / "huge.onnx", size=8192)
    with pytest.raises(client.exceptions.ValidationException) as caught:
        client.register_model(ProjectName="p", ModelPath=model, CreateProject=True)
    assert (
        "input.shape" in caught.value.response["Error"]["Message"]
        and "elements" in caught.value.response["Error"]["Message"]
    )


@pytest.mark.parametrize(
    "options, field",
    [
        ('{"tuning-trials": ' + "9" * 900 + "}", "tuning-trials"),
        ('{"num-cores": 100000000000}', "num-cores"),
        ('{"tuning-trials": 100001}', "tuning-trials"),
        ('{"mcpu": "' + "a" * 5000 + '"}', "mcpu"),
        ('{"mattr": ["+neon"' + ', "+neon"' * 100 + "]}", "mattr"),
        ('{"gpu-code": ' + "7" * 100 + "}", "gpu-code"),
    ],
    ids=["900-digit-trials", "1e11-cores", "trials-over-range", "5000-char-mcpu", "101-mattr", "100-digit-gpu-code"],
)
def test_compiler_option_values_have_ranges(client, options, field):
    with pytest.raises(client.exceptions.ValidationException) as caught:
        client.start_model_packaging_job(
            ProjectName="p",
            ModelVersion="1",
            Configuration=gg_config(TargetPlatform={"Os": "LINUX", "Arch": "X86_64"}, CompilerOptions=options),
        )
    message = caught.value.response["Error"]["Message"]
    assert field in message and len(message) < 400, message


def test_error_messages_cut_the_value_they_echo(client, endpoint):  # noqa: F811
    with pytest.raises(client.exceptions.ValidationException) as caught:
        client.describe_project(ProjectName="x" * 50_000_000)
    assert len(caught.value.response["Error"]["Message"]) < 400
    status, _, error = signed_call(
        endpoint, "POST", "/2020-11-20/projects", json.dumps({"ProjectName": "y" * 900_000}).encode()
    )
    assert status == 400 and len(error["Message"]) < 400 and "characters" in error["Message"]


def test_a_body_over_the_limit_is_413_before_it_is_read(endpoint):  # noqa: F811
    status, headers, error = signed_call(
        endpoint, "POST", "/2020-11-20/projects", json.dumps({"ProjectName": "p", "pad": "z" * (2 << 20)}).encode()
    )
    assert (status, headers["x-amzn-ErrorType"]) == (413, "RequestTooLargeException"), error


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_a_huge_content_length_is_answered_without_reading_the_body(endpoint, signed):  # noqa: F811
    """Headers that announce 1 GiB, and no body: the answer must come at once, not after 1 GiB."""
    import socket
    from urllib.parse import urlsplit

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from tests.packager.service.server.test_server_rest import ACCESS_KEY, SECRET_KEY

    host, port = urlsplit(endpoint).hostname, urlsplit(endpoint).port
    headers = {"Host": f"{host}:{port}", "Content-Type": "application/json"}
    if signed:
        request = AWSRequest(method="POST", url=f"{endpoint}/2020-11-20/projects", data=b"{}", headers=dict(headers))
        SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "lookoutvision", "us-east-1").add_auth(request)
        headers = dict(request.headers)
    headers["Content-Length"] = str(1 << 30)
    with socket.create_connection((host, port), timeout=10) as connection:
        connection.sendall(
            (
                "POST /2020-11-20/projects HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
            ).encode()
        )
        answer = connection.recv(65536).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413" if signed else "HTTP/1.1 403"), answer[:200]
    assert "Connection: close" in answer
