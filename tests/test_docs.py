"""README.md and docs/*.md: every Python block runs as written, every link resolves, the tables say what the
package does."""

import contextlib
import io
import re
from pathlib import Path

import pytest

from layersync_hooks import BlockCapture, LayerSync, LayerSyncConfig
from layersync_hooks.config import SPELLINGS
from layersync_hooks.integrations import AutoAttach
from layersync_hooks.integrations.accelerate import _WRAPPED

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
PAGES = [
    README,
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "benchmarks" / "README.md",
    ROOT / "configs" / "README.md",
]


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


def test_readme_config_table_lists_every_key():
    """Every accepted spelling of every key is in a row of the README's config table, as code (`key` or `--key`),
    not merely somewhere in the prose."""
    rows = [line for line in README.read_text().splitlines() if line.startswith("| `layersync_")]
    for spelling in SPELLINGS:
        assert any(f"`{spelling}`" in row or f"`--{spelling}`" in row for row in rows), spelling


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


# -- counts and names the docs state, checked against their lists and the code --------------------------------------
NUMBERS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve".split())}
# A count word, then (in the same sentence) the colon or parenthesis that opens what it counts.
COUNT = re.compile(r"\b(" + "|".join(list(NUMBERS)[2:]) + r")\b([^.:(]{0,120}?)(:|\()", re.I)
SOURCES = [*PAGES, *sorted((ROOT / "layersync_hooks").rglob("*.py"))]


def top_level_items(text: str) -> list[str]:
    """`text` split at commas, semicolons, ' and ' and ' or ' outside parentheses and backticks."""
    items, current, depth, quoted, i = [], "", 0, False, 0
    while i < len(text):
        char = text[i]
        quoted ^= char == "`"
        if not quoted:
            depth += (char in "([{") - (char in ")]}")
        separator = next((s for s in (";", ",", " and ", " or ") if text.startswith(s, i)), None)
        if separator and depth == 0 and not quoted:
            items.append(current.strip())
            current, i = "", i + len(separator)
            continue
        current, i = current + char, i + 1
    return [item for item in [*items, current.strip()] if item]


def listed(text: str, opener: str):
    """How many things the list at the start of `text` holds: bullets on the next lines, backticked names to the end
    of the sentence (or the closing parenthesis), or `;`-separated parts in parentheses; None for prose."""
    if opener == ":" and re.match(r"[ \t]*\n(\s*\n)?\s*[-*] ", text):
        bullets = 0
        for line in text.split("\n")[1:]:
            if re.match(r"\s*[-*] ", line):
                bullets += 1
            elif bullets and (not line.strip() or not line.startswith(" ")):
                break
        return bullets
    if opener == "(":
        depth, end = 1, 0
        while depth and end < len(text):
            depth += (text[end] == "(") - (text[end] == ")")
            end += 1
        body = text[: end - 1]
    else:
        end = re.search(r"\.(\s|$)|\n\n", text)
        body = text[: end.start()] if end else text
    names = [item for item in top_level_items(body) if item.startswith("`")]
    if len(names) >= 2:
        return len(names)
    return len([part for part in body.split(";") if part.strip()]) if opener == "(" and ";" in body else None


def count_mismatches(text: str) -> list[str]:
    found = []
    for match in COUNT.finditer(text):
        number, items = NUMBERS[match.group(1).lower()], listed(text[match.end() :], match.group(3))
        if items is not None and items != number:
            found.append(f"{match.group(0)!r} counts {number} but lists {items}")
    return found


def test_count_words_match_their_lists():
    """'four methods: `a`, `b`, `c`, `d`': wherever a count word introduces a list (bullets, backticked names, or
    `;`-separated parts in parentheses), in the docs and in the package's docstrings, the list has that many."""
    assert count_mismatches("it wraps three methods: `prepare`, `prepare_model`, `backward` and `log`.")  # can fail
    assert count_mismatches("Two things:\n\n- one\n- two\n- three\n")
    assert not count_mismatches("two samples (one image; one video)")
    problems = [f"{source.relative_to(ROOT)}: {p}" for source in SOURCES for p in count_mismatches(source.read_text())]
    assert not problems, problems


def test_the_wrapped_methods_the_docs_list_are_the_runners():
    """The docs that list the `Accelerator` methods the runner wraps list exactly the ones it wraps."""
    for page in (README, ROOT / "docs" / "training-scripts.md"):
        sentence = re.search(r"(\w+) (?:`Accelerator` methods|methods of `accelerate.Accelerator`)[ :(](.*?)[.)]\s",
                             page.read_text(), flags=re.S)  # fmt: skip
        assert sentence, page.name
        assert NUMBERS[sentence.group(1)] == len(_WRAPPED), page.name
        assert set(re.findall(r"`(\w+)`", sentence.group(2))) >= set(_WRAPPED), page.name


# `name.attribute` in backticks in the docs, for the objects users hold: each must be an attribute of its class.
RECEIVERS = {"LayerSync": LayerSync, "layersync": LayerSync, "BlockCapture": BlockCapture, "capture": BlockCapture,
             "LayerSyncConfig": LayerSyncConfig, "config": LayerSyncConfig, "AutoAttach": AutoAttach,
             "auto": AutoAttach}  # fmt: skip


FILE_TYPES = {"json", "jsonl", "png", "csv", "md", "py", "yaml", "safetensors", "pkl"}


def test_api_names_the_docs_use_exist():
    """Every `layersync.loss()`, `LayerSync.register_with`, `capture.pop()`, `config.to_dict()`, ... the README and
    docs name is an attribute of the class it belongs to."""
    missing = []
    for page in PAGES:
        for receiver, name in re.findall(r"`(\w+)\.(\w+)(?![\w.])", page.read_text()):
            cls = RECEIVERS.get(receiver) if name not in FILE_TYPES else None  # `config.json` is a file
            instance_attribute = cls is AutoAttach and name in ("layersync", "skipped_backwards", "accelerator")
            if cls is not None and not hasattr(cls, name) and not instance_attribute:
                missing.append(f"{page.name}: {receiver}.{name}")
    assert not missing, missing
