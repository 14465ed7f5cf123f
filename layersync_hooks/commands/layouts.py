"""`layersync-hooks layouts`: the classes of the layout table, their stacks, depths and a recommended pair.

Block counts are those of the released models (`layouts.RELEASED`): each class is built at a released size (or its
default config) on the meta device, which allocates nothing, and its blocks are counted; classes not built here
give their counts in the table. `--markdown` prints the table that docs/supported-models.md carries between its
`layouts` markers; a test checks that the page is the command's output.
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import dataclass
from typing import Optional

import torch

from ..capture import block_classes, list_blocks
from ..config import LayerSyncConfig
from ..errors import UsageError
from ..layouts import LAYOUTS, RELEASED, TRAINERS, BlockLayout, Released
from ..pairs import recommend_pair


@dataclass
class LayoutRow:
    """One row of the listing: a class of the table, at one model size."""

    name: str
    label: str  # the model the counts describe
    stacks: list  # (Stack, block count or None)
    unsupported: Optional[str] = None
    preset: Optional[str] = None  # the preset written for this size

    @property
    def trainer(self) -> Optional[str]:
        """The trainer whose own class this is (its qualified name's package), or None for diffusers' classes."""
        return TRAINERS.get(self.name.split(".")[0]) if "." in self.name else None

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
    parser.add_argument(
        "--presets", action="store_true", help="print the presets' Markdown table docs/configuration.md carries"
    )
    parser.add_argument(
        "--trainers",
        action="store_true",
        help="print the trainers' classes as the table docs/supported-models.md carries",
    )
    parser.add_argument(
        "--fsdp-wrap",
        metavar="CLASS",
        help="print the block classes of a diffusers model class, for accelerate's fsdp_transformer_layer_cls_to_wrap",
    )


def run(args: argparse.Namespace) -> int:
    if args.fsdp_wrap:
        print(fsdp_wrap(args.fsdp_wrap))
        return 0
    rows = layout_rows()
    if args.presets:
        print(presets_markdown(rows))
    elif args.trainers:
        print(trainers_markdown(rows))
    else:
        print(markdown(rows) if args.markdown else text(rows))
    return 0


@functools.lru_cache(maxsize=1)
def layout_rows() -> tuple[LayoutRow, ...]:
    """Every class of the layout table, one row per released size (or its default config), with real block
    counts. Cached: it builds every class once (on the meta device), which takes seconds."""
    rows = []
    for name, layout in LAYOUTS.items():
        if layout.unsupported is not None:
            rows.append(LayoutRow(name, "", [], layout.unsupported))
            continue
        for released in RELEASED.get(name, (Released("default config"),)):
            counts = block_counts(name, layout, released)
            rows.append(LayoutRow(name, released.label, counts, preset=released.preset))
    return tuple(rows)


def block_counts(name: str, layout: BlockLayout, released: Released) -> list:
    """(Stack, block count) of `released`: from the table, or by building the class on the meta device; a count is
    None where this diffusers lacks the class."""
    if released.blocks is not None:
        return [(stack, released.blocks.get(stack.path)) for stack in layout.stacks]
    import diffusers

    cls = getattr(diffusers, name, None)
    if cls is None:  # an older diffusers than the table's
        return [(stack, None) for stack in layout.stacks]
    with torch.device("meta"):
        blocks = list_blocks(cls(**(released.config or {})), layout)
    return [(stack, sum(block.stack is stack for block in blocks)) for stack in layout.stacks]


def fsdp_wrap(name: str) -> str:
    """`FluxTransformerBlock,FluxSingleTransformerBlock`: the classes of a model class's blocks, in depth order, as
    accelerate's `fsdp_transformer_layer_cls_to_wrap` takes them (the class built on the meta device)."""
    import diffusers

    cls = getattr(diffusers, name, None)
    layout = LAYOUTS.get(name)
    if not isinstance(cls, type) or layout is None or layout.unsupported is not None:
        raise UsageError(
            f"--fsdp-wrap takes a diffusers class of the layout table, got {name!r}. For any other model, in Python: "
            "`layersync_hooks.capture.block_classes(model)` (`layersync-hooks layouts` lists the classes)."
        )
    released = RELEASED.get(name, (Released("default config"),))[0]
    with torch.device("meta"):
        return ",".join(block_classes(cls(**(released.config or {})), layout))


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
    """The docs table of diffusers' classes: supported classes, then the ones LayerSync refuses and why."""
    lines = [
        "| class | model | stacks in depth order (blocks) | target tokens | depths | student <- teacher |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.unsupported is None and r.trainer is None:
            depths = f"1..{r.depth}" if r.depth else "-"
            lines.append(f"| `{r.name}` | {r.label} | {_stacks_cell(r)} | {_tokens_cell(r)} | {depths} | {r.pair()} |")
    lines += ["", "| not supported | why |", "|---|---|"]
    lines += [f"| `{r.name}` | {r.unsupported} |" for r in rows if r.unsupported is not None]
    return "\n".join(lines)


def trainers_markdown(rows: tuple[LayoutRow, ...]) -> str:
    """The docs table of the trainers' own classes, keyed by qualified name."""
    lines = [
        "| trainer | class | model | stacks in depth order (blocks) | target tokens | depths | student <- teacher |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.trainer is not None:
            depths = f"1..{r.depth}" if r.depth else "-"
            lines.append(f"| {r.trainer} | `{r.name}` | {r.label} | {_stacks_cell(r)} | {_tokens_cell(r)} | {depths} | "
                         f"{r.pair()} |")  # fmt: skip
    return "\n".join(lines)


def presets_markdown(rows: tuple[LayoutRow, ...]) -> str:
    """The presets' table: the released model each is for, its blocks, and the preset's pair and weight."""
    lines = ["| model | preset | blocks | student <- teacher | weight |", "|---|---|---|---|---|"]
    for r in rows:
        if r.preset is not None:
            config = LayerSyncConfig.from_preset(r.preset)
            pair = " <- ".join(map(str, config.pairs[0]))
            lines.append(f"| {r.label} | `{r.preset}` | {r.depth} | {pair} | {config.weight:g} |")
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
        label = f"{r.trainer}: {r.label}" if r.trainer else r.label
        lines.append(f"{r.name:42} {label:34} {depths:14} pair {r.pair():9} {stacks}")
        lines += [f"{'':42}   {stack.path}: {describe_tokens(stack)}" for stack, _ in r.stacks if stack.rule]
    return "\n".join(lines)
