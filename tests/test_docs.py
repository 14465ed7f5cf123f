"""README.md and docs/*.md: every Python block runs as written, every link resolves, the tables say what the
package does."""

import contextlib
import io
import re
from pathlib import Path

import pytest

from layersync_hooks.config import KEY_ALIASES

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


def run_blocks(page: Path, namespace: dict) -> None:
    for block in python_blocks(page):
        exec(compile(block, str(page.relative_to(ROOT)), "exec"), namespace)


def test_readme_python_blocks_run_in_order(capsys):
    """Every ```python block of the README runs, in order, in one namespace (the quickstart first)."""
    assert len(python_blocks(README)) >= 2 and "LayerSync(transformer, student_block=4" in python_blocks(README)[0]
    run_blocks(README, {})
    assert "layersync_similarity" in capsys.readouterr().out


@pytest.mark.parametrize("page", [p for p in PAGES[1:] if python_blocks(p)], ids=lambda p: p.name)
def test_docs_python_blocks_run_in_order(page, tmp_path, monkeypatch):
    """Each page's ```python blocks run in order, after the README's quickstart (which they continue)."""
    monkeypatch.chdir(tmp_path)  # files a block writes (the runner's metrics) land here
    namespace: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(python_blocks(README)[0], "README.md", "exec"), namespace)
    run_blocks(page, namespace)


def test_links_resolve():
    """Every relative link and image of the README and the docs names a file of the repository."""
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


def test_readme_is_short():
    """The README is the pitch, the commands, the quickstart, the script edit, the config table and links."""
    assert len(README.read_text().splitlines()) <= 200


def test_readme_names_every_config_key():
    """The config table lists every accepted key."""
    for key in KEY_ALIASES:
        assert key in README.read_text(), key


def test_readme_test_command_matches_ci():
    """CI installs and tests exactly as the README says."""
    ci = (ROOT / ".ci" / "run").read_text()
    for command in ("pip install torch==2.13.0", 'pip install -e ".[test]"', "pytest"):
        assert command in README.read_text() and command in ci


def test_pages_named_by_the_code_exist():
    """Every docs page an error message or docstring of the package, benchmarks or examples names is a file."""
    for source in [*ROOT.glob("layersync_hooks/**/*.py"), *ROOT.glob("benchmarks/*.py"), *ROOT.glob("examples/*.py")]:
        for page in re.findall(r"\bdocs/[\w.-]+\.md\b", source.read_text()):
            assert (ROOT / page).is_file(), f"{source.relative_to(ROOT)} names {page}, which does not exist"
