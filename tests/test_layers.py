"""Who may use whom (STYLE.md, issue 13): every import points down a floor, and no module imports itself back.

Imports inside functions count too: a lazy import of our own code is still an arrow between rooms."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("packager", "compilers", "targets")

# Floors, from the top down. A module may import its own floor's rooms (a room is the first two name parts, such as
# packager.service) only through the rules below, and any lower floor freely.
FLOORS = (
    ("packager", "packager.__main__", "packager.cli", "packager.commands"),  # the CLI; packager.client() is the facade
    ("packager.service",),  # the jobs service, its REST server and client
    ("packager.build",),  # the build pipeline: compile, check, benchmark, bundle, publish
    ("packager.greengrass",),  # components: bundle, recipe, publish, deploy-local
    ("compilers", "targets", "packager.example_model"),
    ("packager.errors", "packager.home", "packager.processes", "packager.service_model", "packager.edge"),
)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            # `from a import b` uses module a.b when there is one, else names in a
            candidates = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                found.add(candidate)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def floor(module: str) -> int:
    best = None
    for index, rooms in enumerate(FLOORS):
        for room in rooms:
            if (module == room or module.startswith(room + ".")) and (best is None or len(room) > len(best[1])):
                best = (index, room)
    assert best is not None, f"{module} is on no floor: add its room to FLOORS"
    return best[0]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_every_import_points_down():
    upward = sorted(
        f"{source} -> {target}"
        for source, targets in graph().items()
        for target in targets
        if floor(target) < floor(source)
    )
    assert upward == []


def test_compilers_and_targets_use_only_the_ground_floor_of_packager():
    allowed = ("packager.errors", "packager.edge")
    reaching_up = sorted(
        f"{source} -> {target}"
        for source, targets in graph().items()
        for target in targets
        if source.split(".")[0] in ("compilers", "targets")
        and target.split(".")[0] == "packager"
        and not any(target == room or target.startswith(room + ".") for room in allowed)
    )
    assert reaching_up == []
