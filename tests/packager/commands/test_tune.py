"""python -m packager tune: tune into the cache, list it, export and import records, and reject bad flags."""

import json
import re

import pytest

from packager.cli import build_parser
from packager.commands import tune
from packager.errors import PackagerError


def run_cli(*argv) -> int:
    args = build_parser((tune.COMMAND,)).parse_args(["tune", *argv])
    try:
        return args._run(args)
    except PackagerError as exc:
        return exc.exit_code


@pytest.mark.slow
def test_tune_then_list_export_and_import(tiny_model, tmp_path, capsys):
    model, spec = tiny_model
    cache = tmp_path / "cache"
    assert (
        run_cli(
            "--model",
            str(model),
            "--model-spec",
            str(spec),
            "--trials",
            "3",
            "--quiet",
            "--compiler-options",
            '{"num-cores": 2}',
            "--tuning-cache",
            str(cache),
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "3 trials in" in out and "0 task(s) already cached" in out
    assert (
        run_cli(
            "--model",
            str(model),
            "--model-spec",
            str(spec),
            "--trials",
            "3",
            "--quiet",
            "--compiler-options",
            '{"num-cores": 2}',
            "--tuning-cache",
            str(cache),
        )
        == 0
    )
    assert ": 0 trials in" in capsys.readouterr().out  # the second request is served from the cache
    assert run_cli("--list", "--tuning-cache", str(cache)) == 0
    listed = re.search(r"(\d+) records", capsys.readouterr().out)
    records = int(listed.group(1))
    assert 1 <= records <= 3  # the default, and what beat it in the final round
    exported = tmp_path / "records.json"
    assert run_cli("--export", str(exported), "--tuning-cache", str(cache)) == 0
    assert json.loads(exported.read_text())["format"] == "packager-tuning/1"
    assert run_cli("--import", str(exported), "--tuning-cache", str(tmp_path / "other")) == 0
    assert f"imported {records} new records" in capsys.readouterr().out


def test_bad_flags_are_validation_errors(tmp_path, capsys):
    assert run_cli("--rpc-key", "rpi4", "--tuning-cache", str(tmp_path)) == 2
    assert run_cli("--trials", "0", "--tuning-cache", str(tmp_path)) == 2
    assert run_cli("--import", str(tmp_path / "missing.json"), "--tuning-cache", str(tmp_path)) == 2
