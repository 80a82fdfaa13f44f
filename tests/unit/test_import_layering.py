"""Imports go one way (docs/architecture.md): a module of the server package imports only
modules of its own layer or a lower one, and the SDK imports nothing of the server. Read
with `ast` from the source, so imports inside functions (the lazy ones) count too."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "service"
CLIENTS = ROOT / "clients"

# top-level part of `referee.` -> layer; higher layers may import lower ones, never back.
LAYERS: dict[str, int] = {
    "__init__": 0, "errors": 0, "metrics": 0, "heap": 0,
    "scorers": 1, "examples": 1, "media": 1,
    "pipeline": 2, "cache": 2,
    "config": 3, "monitors": 3,
    "engine": 4, "batching": 4, "groups": 4, "admission": 4, "runner": 4, "state": 4,
    "gateway": 5, "http": 5, "grpc": 5, "protocols": 5, "ray": 5, "admin": 5,
    "eval": 5, "ui": 5,
    "cli": 6,
}  # fmt: skip
SDK_LAYER = 0  # referee_client: the wire schema and the SDK


def module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, base: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, relative ones resolved."""
    name = module_name(path, base)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                target = ".".join(parts + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from referee import engine` names a module (`__version__` is an attribute)
            if target == "referee":
                found += [
                    (node.lineno, f"referee.{alias.name}")
                    for alias in node.names
                    if (SERVICE / "referee" / alias.name).is_dir()
                    or (SERVICE / "referee" / f"{alias.name}.py").is_file()
                ]
    return found


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] == "referee_client":
        return SDK_LAYER
    if parts[0] != "referee":
        return None  # a third-party or standard-library module
    top = parts[1] if len(parts) > 1 else "__init__"
    if top not in LAYERS:
        raise AssertionError(f"referee.{top} has no layer: add it to LAYERS and the docs")
    return LAYERS[top]


def upward_imports() -> list[str]:
    problems = []
    for path in sorted((SERVICE / "referee").rglob("*.py")):
        own = layer_of(module_name(path, SERVICE))
        assert own is not None
        for line, target in imports(path, SERVICE):
            layer = layer_of(target)
            if layer is not None and layer > own:
                where = path.relative_to(ROOT)
                problems.append(f"{where}:{line}: layer {own} imports {target} (layer {layer})")
    return problems


def test_no_module_imports_a_higher_layer() -> None:
    assert upward_imports() == []


def test_scorers_and_pipeline_never_import_the_engine_or_an_edge() -> None:
    """The rule spelled out for the two packages the issue names, by module prefix."""
    banned = ("referee.engine", "referee.batching", "referee.http", "referee.grpc",
              "referee.ray", "referee.protocols", "referee.gateway", "referee.cli")  # fmt: skip
    for package in ("scorers", "pipeline", "cache"):
        for path in sorted((SERVICE / "referee" / package).rglob("*.py")):
            for line, target in imports(path, SERVICE):
                assert not target.startswith(banned), f"{path}:{line} imports {target}"


def test_the_sdk_imports_nothing_of_the_server() -> None:
    for path in sorted((CLIENTS / "referee_client").rglob("*.py")):
        for line, target in imports(path, CLIENTS):
            top = target.split(".")[0]
            assert top != "referee", f"{path.relative_to(ROOT)}:{line} imports {target}"


def test_the_checker_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    """The check would catch an upward import hidden in a function or written relatively."""
    package = tmp_path / "referee" / "scorers"
    package.mkdir(parents=True)
    (tmp_path / "referee" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    bad = package / "bad.py"
    bad.write_text("def f():\n    from ..engine import RewardEngine\n    import referee.http\n")
    found = [(line, target) for line, target in imports(bad, tmp_path)]
    assert found == [(2, "referee.engine"), (3, "referee.http")]
    assert all(layer_of(t) is not None and layer_of(t) > LAYERS["scorers"] for _, t in found)
