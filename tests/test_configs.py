"""Presets (layersync_hooks/presets/): one per family, valid for the real model size, following the paper heuristic;
loadable by name."""

import json
import re
from pathlib import Path

import diffusers
import pytest
import torch

from layersync_hooks import LayerSync, LayerSyncConfig, recommend_pair
from layersync_hooks.capture import list_blocks
from layersync_hooks.commands.demo.train import DEFAULT_CONFIG, MODEL_CONFIG
from layersync_hooks.config import PRESETS
from layersync_hooks.layouts import layout_for

CONFIGS = sorted(PRESETS.glob("*.json"))
FAMILIES = [path for path in CONFIGS if path.stem != "demo"]


def read(path):
    return json.loads(path.read_text())


def test_every_listed_family_has_a_config():
    """The families the docs name each have a preset (plus the demo's)."""
    names = {path.stem for path in CONFIGS}
    assert {
        "flux",
        "flux2",
        "sd3",
        "pixart_sigma",
        "sana",
        "wan",
        "qwen_image",
        "hunyuan_video",
        "ltx_video",
        "cosmos",
        "hidream",
        "lumina2",
        "demo",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_follows_the_paper_heuristic(path):
    """Each preset loads, is enabled, and picks `recommend_pair` for its model's block count."""
    data = read(path)
    config = LayerSyncConfig.from_json(path)
    assert config == LayerSyncConfig.load(path.stem) == LayerSyncConfig.from_preset(path.stem)  # by name too
    assert config.enabled and config.weight > 0
    assert config.pairs == (recommend_pair(data["_num_blocks"]),)
    assert data["_comment"] and hasattr(diffusers, data["_model_class"])


@pytest.mark.parametrize("path", FAMILIES, ids=lambda p: p.stem)
def test_config_blocks_exist_in_the_real_model(path):
    """The family's class, built at its real size on the meta device, has `_num_blocks` and both blocks."""
    data = read(path)
    cls = getattr(diffusers, data["_model_class"])
    with torch.device("meta"):
        model = cls(**data.get("_model_config", {}))
    assert len(list_blocks(model, layout_for(model))) == data["_num_blocks"]
    layersync = LayerSync.from_config(model, path)
    assert (layersync.student.depth, layersync.teacher.depth) == recommend_pair(data["_num_blocks"])
    layersync.remove()


def test_demo_config_is_the_embedded_default():
    """The `demo` preset is what `layersync-hooks demo` uses when --config is not given, for its model."""
    data = read(PRESETS / "demo.json")
    assert {k: v for k, v in data.items() if not k.startswith("_")} == DEFAULT_CONFIG
    assert data["_model_config"]["num_layers"] == MODEL_CONFIG["num_layers"] == data["_num_blocks"]


def test_docs_presets_table_matches_the_files():
    """Each preset row of docs/configuration.md states the file's block count, pair and weight."""
    page = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text()
    rows = re.findall(r"^\| [^|]+ \| `(\w+)\.json` \| (\d+) \| (\d+) <- (\d+) \| ([\d.]+) \|$", page, flags=re.M)
    assert {name for name, *_ in rows} == {path.stem for path in FAMILIES}
    for name, blocks, student, teacher, weight in rows:
        data = read(PRESETS / f"{name}.json")
        assert (int(blocks), int(student), int(teacher), float(weight)) == (
            data["_num_blocks"],
            data["layersync_student_block"],
            data["layersync_teacher_block"],
            data["layersync_lambda"],
        ), name
