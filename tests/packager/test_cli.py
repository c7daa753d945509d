import subprocess
import sys

import pytest

from packager.cli import _command_table, build_parser, main
from packager.errors import ModelImportError


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "packager", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


@pytest.fixture
def packager_home(tmp_path, monkeypatch):
    """build registers models and starts jobs under $PACKAGER_HOME; these bad inputs must fail before it is even made."""
    home = tmp_path / "packager-home"
    monkeypatch.setenv("PACKAGER_HOME", str(home))
    yield home
    assert not home.exists(), "a build that fails its checks must record nothing"


def test_top_level_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in _command_table():
        assert command.name in result.stdout


@pytest.mark.parametrize("name", [c.name for c in _command_table()])
def test_every_command_has_help(name, capsys):
    parser = build_parser(_command_table())
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args([name, "--help"])
    assert exit_info.value.code == 0
    assert "usage: python -m packager " + name in capsys.readouterr().out


def test_corrupt_onnx_is_one_line_and_nonzero(tmp_path, packager_home):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx file at all")
    result = run_cli("build", "--model", str(bad), "--output", str(tmp_path / "out"))
    assert result.returncode == ModelImportError.exit_code
    errors = [line for line in result.stderr.splitlines() if not line.startswith("... ")]
    assert len(errors) == 1
    assert errors[0].startswith(f"error: ValidationException: {bad}: not a valid ONNX model")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_output_name_is_one_line(tmp_path, tiny_model, packager_home, capsys):
    import json

    from tests.conftest import tiny_spec_dict

    spec = tiny_spec_dict()
    spec["outputs"][0]["name"] = "image_score"
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    code = main(
        ["build", "--model", str(tiny_model[0]), "--model-spec", str(spec_path), "--output", str(tmp_path / "out")]
    )
    assert code == ModelImportError.exit_code
    errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("... ")]
    assert len(errors) == 1 and "'image_score'" in errors[0]


def test_bad_component_name_names_the_flag(capsys, tiny_model, tmp_path, packager_home):
    code = main(
        ["build", "--model", str(tiny_model[0]), "--component-name", "no spaces allowed", "--output", str(tmp_path)]
    )
    assert code == 2
    assert "--component-name" in capsys.readouterr().err
