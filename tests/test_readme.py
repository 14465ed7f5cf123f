"""The README's code runs as written, and its tables say what the package does."""

import re
from pathlib import Path

from layersync_hooks import LAYOUTS
from layersync_hooks.config import KEY_ALIASES

README = (Path(__file__).parents[1] / "README.md").read_text()


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_python_blocks_run_in_order(capsys):
    """Every ```python block of the README runs, in order, in one namespace (the quickstart first)."""
    blocks = python_blocks()
    assert len(blocks) >= 4 and "LayerSync(transformer, student_block=4" in blocks[0]
    namespace = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert "layersync_similarity" in capsys.readouterr().out


def test_readme_names_every_config_key_and_layout():
    """The config table lists every accepted key; the models table lists every built-in layout."""
    for key in KEY_ALIASES:
        assert key in README, key
    for name in LAYOUTS:
        assert f"`{name}`" in README, name


def test_readme_test_command_matches_ci():
    """CI installs and tests exactly as the README says."""
    ci = (Path(__file__).parents[1] / ".ci" / "run").read_text()
    for command in ("pip install torch==2.13.0", 'pip install -e ".[test]"', "pytest"):
        assert command in README and command in ci
