"""The package's shape: imports point one way, down the layers docs/how-it-works.md lists (no cycle), none hidden
in a function, a small public API."""

import ast
import importlib
import inspect
import re
from pathlib import Path

import layersync_hooks
from layersync_hooks import errors

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


# The layers, top to bottom: a module imports from its own layer and the layers below it, never from one above.
# The same order, with the same paths, is the parts table of docs/how-it-works.md.
LAYERS = (
    ("commands/",),
    ("integrations/",),
    ("probe/",),
    ("__init__.py",),
    ("layersync.py",),
    ("pairs.py", "metrics.py", "checkpoint.py", "flags.py"),
    ("capture/",),
    ("config.py", "schedule.py", "loss.py"),
    ("layouts/",),
    ("errors.py",),
)


def layer(name: str) -> int:
    """The layer of a module by dotted name (0 is the top); `__main__` sits above them all."""
    path = "__init__.py" if name == "layersync_hooks" else name.removeprefix("layersync_hooks.").replace(".", "/")
    for index, members in enumerate(LAYERS):
        if any(path == m.removesuffix(".py") or path.startswith(m) or path == m.rstrip("/") for m in members):
            return index
    assert name == "layersync_hooks.__main__", f"{name} is in no layer: add it to LAYERS"
    return -1


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


def test_imports_point_down_the_layers():
    """No module imports from a layer above its own: `capture/` never imports `layersync.py`, `layouts/` never
    imports `capture/`, and so on down the table."""
    upward = [
        f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)})"
        for name, path in modules().items()
        for target, _ in imports(name, path)
        if layer(target) < layer(name)
    ]
    assert not upward, upward


def test_layers_can_fail():
    """The layering check sees an upward import: a capture module importing LayerSync would be one."""
    assert layer("layersync_hooks.layersync") < layer("layersync_hooks.capture.engine")
    assert layer("layersync_hooks.capture.blocks") < layer("layersync_hooks.layouts.table")


def test_docs_parts_table_is_the_layering():
    """docs/how-it-works.md lists the same layers, in the same order, with the same paths, as LAYERS."""
    page = (PACKAGE.parent / "docs" / "how-it-works.md").read_text()
    table = page.split("## The parts", 1)[1]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| layer")]
    documented = tuple(tuple(re.findall(r"`([\w/.]+)`", row.rsplit("|", 2)[1])) for row in rows)
    assert documented == LAYERS


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
    for name in ("capture", "layouts", "probe", "integrations"):
        module = importlib.import_module(f"layersync_hooks.{name}")
        assert module.__all__, name
        for exported in module.__all__:
            assert hasattr(module, exported), f"layersync_hooks.{name}.{exported}"


def test_every_error_is_a_layersync_error_and_a_builtin_one():
    """Each error class subclasses `LayerSyncError` and, but for the base, the built-in error a user would catch."""
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__]
    assert len(classes) >= 8
    for cls in classes:
        assert issubclass(cls, errors.LayerSyncError), cls
        builtin = [base for base in cls.__mro__[1:] if base.__module__ == "builtins" and base is not object]
        assert cls is errors.LayerSyncError or builtin[0] is not Exception, cls


def test_version_is_written_once():
    """pyproject.toml reads the version from the package, and the CHANGELOG names it."""
    pyproject = (PACKAGE.parent / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and "version = {" not in pyproject.split("[tool.setuptools.dynamic]")[0]
    assert f"## {layersync_hooks.__version__}" in (PACKAGE.parent / "CHANGELOG.md").read_text()
