"""Presets (layersync_hooks/presets/): one per released model of the table of model facts, following the paper
heuristic for that model's real block count; loadable by name; the docs table is generated from them."""

import re
from pathlib import Path

import diffusers
import pytest
import torch

from layersync_hooks import LayerSync, LayerSyncConfig, recommend_pair
from layersync_hooks.capture import list_blocks
from layersync_hooks.commands.demo.train import DEFAULT_PRESET, build_model
from layersync_hooks.commands.layouts import layout_rows, presets_markdown
from layersync_hooks.config import PRESETS, presets
from layersync_hooks.layouts import RELEASED, layout_for

FAMILIES = [name for name in presets() if name != DEFAULT_PRESET]


def released(name):
    """The one released model of the table a preset is written for."""
    (found,) = [(cls, r) for cls, rows in RELEASED.items() for r in rows if r.preset == name]
    return found


def test_every_listed_family_has_a_preset():
    """The families the docs name each have a preset (plus the demo's)."""
    assert {"flux", "flux2", "sd3", "pixart_sigma", "sana", "wan", "qwen_image", "hunyuan_video", "ltx_video",
            "cosmos", "hidream", "lumina2", "demo"} <= set(presets())  # fmt: skip


@pytest.mark.parametrize("name", FAMILIES)
def test_preset_follows_the_paper_heuristic_for_its_released_model(name):
    """Each preset names one released model of the table, and picks `recommend_pair` for that model's real block
    count (the class built at that size on the meta device); it loads by name and by path alike."""
    cls, model = released(name)
    (row,) = [r for r in layout_rows() if r.name == cls and r.preset == name]
    config = LayerSyncConfig.from_preset(name)
    assert config == LayerSyncConfig.load(name) == LayerSyncConfig.from_json(PRESETS / f"{name}.json")
    assert config.enabled and config.weight > 0 and config.pairs == (recommend_pair(row.depth),)
    with torch.device("meta"):
        built = getattr(diffusers, cls)(**(model.config or {}))
    layersync = LayerSync(built, name)
    assert (layersync.student.depth, layersync.teacher.depth) == recommend_pair(row.depth)
    layersync.remove()


def test_demo_preset_fits_the_demo_model():
    """The `demo` preset, what `layersync-hooks demo` uses without --config, is the heuristic pair for the demo's own
    model, and attaches to it."""
    model = build_model(0)
    depth = len(list_blocks(model, layout_for(model)))
    assert LayerSyncConfig.from_preset(DEFAULT_PRESET).pairs == (recommend_pair(depth),)
    LayerSync(model, DEFAULT_PRESET).remove()


@pytest.mark.slow
def test_docs_presets_table_is_the_generated_one():
    """The presets table of docs/configuration.md is `layersync-hooks layouts --presets`."""
    page = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text()
    carried = re.search(r"<!-- presets:start -->\n(.*?)\n<!-- presets:end -->", page, flags=re.S).group(1)
    assert carried == presets_markdown(layout_rows()), "paste `layersync-hooks layouts --presets` into the page"
