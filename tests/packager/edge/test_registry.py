from __future__ import annotations

import json

import pytest

from packager.edge import registry
from packager.edge.registry import ModelRegistration


def test_add_scan_remove(tmp_path):
    model_dir = tmp_path / "compiled"
    added = registry.add(tmp_path / "reg", ModelRegistration("com.acme.A", "1.2.3", model_dir, "arn:aws:x"))
    assert json.loads(added.read_text())["format"] == registry.REGISTRATION_FORMAT
    assert registry.scan(tmp_path / "reg") == {
        "com.acme.A": ModelRegistration("com.acme.A", "1.2.3", model_dir.resolve(), "arn:aws:x")
    }
    assert registry.remove(tmp_path / "reg", "com.acme.A") is True
    assert registry.remove(tmp_path / "reg", "com.acme.A") is False
    assert registry.scan(tmp_path / "reg") == {}


@pytest.mark.parametrize("name", ["..", ".hidden", "a/b", "", "x" * 129, "spaces here"])
def test_component_names_that_are_not_greengrass_names_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match="component name"):
        registry.add(tmp_path, ModelRegistration(name, "1.0.0", tmp_path))


def test_broken_files_are_skipped_not_fatal(tmp_path):
    registry.add(tmp_path, ModelRegistration("good", "1.0.0", tmp_path))
    (tmp_path / "garbage.json").write_text("{not json")
    (tmp_path / "other.json").write_text(
        json.dumps({"format": registry.REGISTRATION_FORMAT, "component": "mismatch", "version": "1", "model_dir": "/x"})
    )
    assert list(registry.scan(tmp_path)) == ["good"]
    assert registry.scan(tmp_path / "missing") == {}


def test_cli_adds_and_removes(tmp_path, capsys):
    model_dir = tmp_path / "compiled"
    model_dir.mkdir()
    assert (
        registry.main(
            [
                "add",
                "--registry",
                str(tmp_path / "r"),
                "--component",
                "m",
                "--version",
                "1.0.0",
                "--model-dir",
                str(model_dir),
            ]
        )
        == 2
    )  # no manifest.json: not a compiled model
    (model_dir / "manifest.json").write_text("{}")
    assert (
        registry.main(
            [
                "add",
                "--registry",
                str(tmp_path / "r"),
                "--component",
                "m",
                "--version",
                "1.0.0",
                "--model-dir",
                str(model_dir),
            ]
        )
        == 0
    )
    assert "m" in registry.scan(tmp_path / "r")
    assert registry.main(["remove", "--registry", str(tmp_path / "r"), "--component", "m"]) == 0
    assert registry.scan(tmp_path / "r") == {}
    assert "not a compiled model directory" in capsys.readouterr().err
