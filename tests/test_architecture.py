"""The package's shape: imports point one way (no cycle), none hidden in a function, a small public API."""

import ast
import importlib
from pathlib import Path

import layersync_hooks

PACKAGE = Path(layersync_hooks.__file__).parent
PUBLIC = {
    "Activation",
    "BlockCapture",
    "BlockLayout",
    "LayerSync",
    "LayerSyncConfig",
    "LayerSyncError",
    "Stack",
    "layersync_loss",
    "recommend_pair",
    "register_layout",
    "token_similarity",
}


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package is its `__init__`)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path) -> list[tuple[str, bool]]:
    """(imported package module, whether the import sits inside a function) for each import of `path`."""
    known = modules()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, inside) for alias in child.names if alias.name in known)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - child.level + 1] + ([base] if base else [])
                    )
                if base in known:
                    found.append((base, inside))
                # `from . import x`, `from .capture import engine`: a submodule imported by name
                found.extend(
                    (f"{base}.{alias.name}", inside) for alias in child.names if f"{base}.{alias.name}" in known
                )
            visit(child, inside)

    visit(ast.parse(path.read_text()), False)
    return found


def test_no_import_cycle_inside_the_package():
    """The module-level imports between the package's modules form no cycle."""
    graph = {
        name: {target for target, inside in imports(name, path) if not inside and target != name}
        for name, path in modules().items()
    }
    state: dict[str, str] = {}

    def visit(name, trail):
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                raise AssertionError(f"import cycle: {' -> '.join(trail[trail.index(target) :] + [target])}")
            if target not in state:
                visit(target, trail + [target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_no_function_level_import_of_the_package():
    """No module imports one of the package's modules inside a function (the way a cycle is dodged)."""
    hidden = [
        f"{name} imports {target}"
        for name, path in modules().items()
        for target, inside in imports(name, path)
        if inside
    ]
    assert not hidden, hidden


def test_public_api_is_a_dozen_names():
    """The top level exports exactly the public API; each subpackage's `__all__` names exist."""
    assert set(layersync_hooks.__all__) == PUBLIC
    for name in ("capture", "layouts", "probe", "integrations", "errors"):
        module = importlib.import_module(f"layersync_hooks.{name}")
        for exported in getattr(module, "__all__", []):
            assert hasattr(module, exported), f"layersync_hooks.{name}.{exported}"


def test_version_is_written_once():
    """pyproject.toml reads the version from the package, and the CHANGELOG names it."""
    pyproject = (PACKAGE.parent / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and "version = {" not in pyproject.split("[tool.setuptools.dynamic]")[0]
    assert f"## {layersync_hooks.__version__}" in (PACKAGE.parent / "CHANGELOG.md").read_text()
