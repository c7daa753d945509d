"""What a device needs to run a compiled model, and the Install step that provides it."""

from __future__ import annotations

from targets.catalog import Target


def pip_requirements(target: Target) -> list[str]:
    """Lines of the artifact's requirements.txt."""
    return [r for r in target.runtime_needs if "==" in r or r.isidentifier()]


def install_script(target: Target, archive_root: str, venv: str) -> str:
    """The recipe's Install script: a venv with the TVM runtime and the agent's dependencies."""
    return (f"python3 -m venv {venv} && {venv}/bin/python -m pip install --disable-pip-version-check -q "
            f"-r {archive_root}/requirements.txt")
