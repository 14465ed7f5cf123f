"""`layersync-hooks layouts`: the classes of the layout table, their stacks, depths and a recommended pair.

Block counts are those of the real models: each class is built with its default config (or a released model's,
where the default is not one) on the meta device, which allocates nothing, and its blocks are counted. Where the
default config cannot be built, the counts come from the `__init__` defaults. `--markdown` prints the table that
docs/supported-models.md carries between its `layouts` markers; a test keeps the two equal.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import logging
from dataclasses import dataclass
from typing import Optional

import torch

from ..capture import list_blocks
from ..heuristic import recommend_pair
from ..layouts import LAYOUTS

logger = logging.getLogger(__name__)

# Released models whose config is not the class default: (label, init kwargs). Only the block layout matters.
REFERENCE_CONFIGS = {
    "UNet2DConditionModel": (
        "SDXL, Kolors",
        dict(
            block_out_channels=(320, 640, 1280),
            attention_head_dim=(5, 10, 20),
            transformer_layers_per_block=(1, 2, 10),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        ),
    ),
    "LatteTransformer3DModel": (
        "Latte-1",
        dict(
            num_layers=28,
            sample_size=64,
            patch_size=2,
            in_channels=4,
            num_attention_heads=16,
            attention_head_dim=72,
            caption_channels=4096,
        ),
    ),
}
# Classes whose default config cannot be built (required sizes default to None): the `__init__` argument that
# holds each stack's block count.
INIT_COUNTS = {
    "EasyAnimateTransformer3DModel": ("num_layers",),
    "HiDreamImageTransformer2DModel": ("num_layers", "num_single_layers"),
    "HunyuanDiT2DModel": ("num_layers",),
    "LatteTransformer3DModel": ("num_layers",),
    "LuminaNextDiT2DModel": ("num_layers",),
    "OmniGenTransformer2DModel": ("num_layers",),
    "Transformer2DModel": ("num_layers",),
}


# Classes outside diffusers (their package may not be installed): the released model's block count per stack.
OUTSIDE_DIFFUSERS = {
    "diffsynth.models.wan_video_dit.WanModel": ("DiffSynth-Studio, Wan 2.1 14B", {"blocks": 40}),
}


@dataclass
class LayoutRow:
    """One row of the listing: a class of the table, at one model size."""

    name: str
    label: str  # the model the counts describe
    stacks: list  # (Stack, block count or None)
    unsupported: Optional[str] = None

    @property
    def depth(self) -> Optional[int]:
        counts = [count for _, count in self.stacks]
        return None if None in counts or not counts else sum(counts)

    def pair(self) -> str:
        if self.depth is None or self.depth < 3:
            return "-"
        student, teacher = recommend_pair(self.depth)
        return f"{student} <- {teacher}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--markdown", action="store_true", help="print the Markdown table docs/supported-models.md carries"
    )


def run(args: argparse.Namespace) -> int:
    rows = layout_rows()
    print(markdown(rows) if args.markdown else text(rows))
    return 0


@functools.lru_cache(maxsize=1)
def layout_rows() -> tuple[LayoutRow, ...]:
    """Every class of the layout table (and its reference configs), with real block counts. Cached: it builds
    every class once (on the meta device), which takes seconds."""
    rows = []
    for name, layout in LAYOUTS.items():
        if layout.unsupported is not None:
            rows.append(LayoutRow(name, "", [], layout.unsupported))
            continue
        if name in OUTSIDE_DIFFUSERS:
            label, counts = OUTSIDE_DIFFUSERS[name]
            rows.append(LayoutRow(name, label, [(stack, counts.get(stack.path)) for stack in layout.stacks]))
            continue
        rows.append(LayoutRow(name, "default config", _count(name, layout, {})))
        if name in REFERENCE_CONFIGS:
            label, config = REFERENCE_CONFIGS[name]
            rows.append(LayoutRow(name, label, _count(name, layout, config)))
    return tuple(rows)


def _count(name: str, layout, config: dict) -> list:
    """(Stack, count) for the class built from `config` on the meta device, or from its `__init__` defaults."""
    import diffusers

    cls = getattr(diffusers, name, None)
    if cls is None:  # an older diffusers than the table's
        return [(stack, None) for stack in layout.stacks]
    try:
        with torch.device("meta"):
            blocks = list_blocks(cls(**config), layout)
        return [(stack, sum(block.stack is stack for block in blocks)) for stack in layout.stacks]
    except Exception as error:  # a config that needs explicit sizes: fall back to the __init__ defaults
        logger.debug("Could not build %s on the meta device (%s); reading __init__ defaults.", name, error)
    defaults = inspect.signature(cls.__init__).parameters
    counts = [defaults[key].default for key in INIT_COUNTS.get(name, ())]
    return [(stack, counts[i] if i < len(counts) else None) for i, stack in enumerate(layout.stacks)]


def describe_tokens(stack) -> str:
    """What a stack aligns: the tuple element of the block output and the token rule."""
    element = f"output[{stack.output}]" if stack.output else "output"
    return f"{element}, {'all tokens' if stack.rule is None else stack.rule}"


def _stacks_cell(row: LayoutRow) -> str:
    return ", ".join(f"`{stack.path}` ({'?' if n is None else n})" for stack, n in row.stacks)


def _tokens_cell(row: LayoutRow) -> str:
    return "; ".join(
        f"`{stack.path}`: {describe_tokens(stack)}" if len(row.stacks) > 1 else describe_tokens(stack)
        for stack, _ in row.stacks
    )


def markdown(rows: tuple[LayoutRow, ...]) -> str:
    """The docs table: supported classes, then the ones LayerSync refuses and why."""
    lines = [
        "| class | model | stacks in depth order (blocks) | target tokens | depths | student <- teacher |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.unsupported is None:
            depths = f"1..{r.depth}" if r.depth else "-"
            lines.append(f"| `{r.name}` | {r.label} | {_stacks_cell(r)} | {_tokens_cell(r)} | {depths} | {r.pair()} |")
    lines += ["", "| not supported | why |", "|---|---|"]
    lines += [f"| `{r.name}` | {r.unsupported} |" for r in rows if r.unsupported is not None]
    return "\n".join(lines)


def text(rows: tuple[LayoutRow, ...]) -> str:
    """One line per class for a terminal."""
    lines = []
    for r in rows:
        if r.unsupported is not None:
            lines.append(f"{r.name:42} not supported: {r.unsupported}")
            continue
        depths = f"depths 1..{r.depth}" if r.depth else "depths ?"
        stacks = ", ".join(f"{stack.path} ({'?' if n is None else n})" for stack, n in r.stacks)
        lines.append(f"{r.name:42} {r.label:15} {depths:14} pair {r.pair():9} {stacks}")
        lines += [f"{'':42}   {stack.path}: {describe_tokens(stack)}" for stack, _ in r.stacks if stack.rule]
    return "\n".join(lines)
