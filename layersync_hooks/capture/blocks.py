"""Find the blocks of a model: unwrap wrappers, enumerate stacks in forward order, resolve depths and paths."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

from torch import nn

from ..errors import BlockIndexError, UnknownModelError
from ..layouts import BlockLayout, Stack, layout_for

# Wrapper classes whose `.module` is the model (DDP, DataParallel, FSDP1, DeepSpeed's engine).
_MODULE_WRAPPERS = {"DistributedDataParallel", "DataParallel", "FullyShardedDataParallel", "DeepSpeedEngine"}


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP/FSDP (`.module`), `torch.compile` (`_orig_mod`) and PEFT (`get_base_model()`)."""
    return wrappers(model)[-1]


def wrappers(model: nn.Module) -> list[nn.Module]:
    """The model and each module it wraps, outermost first; the last one is `unwrap(model)`."""
    chain = [model]
    while True:
        if type(model).__name__ in _MODULE_WRAPPERS and isinstance(getattr(model, "module", None), nn.Module):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        elif _is_peft_model(model):
            model = model.get_base_model()
        else:
            return chain
        if any(model is seen for seen in chain):  # musubi-tuner's --compile sets `model._orig_mod = model`
            return chain
        chain.append(model)


def _is_peft_model(model: nn.Module) -> bool:
    peft = sys.modules.get("peft")  # only a model built with peft can be a PeftModel; never import it here
    return peft is not None and isinstance(model, peft.PeftModel)


@dataclass(frozen=True)
class Block:
    """One block: its path from the model root, its 1-based depth over all stacks, and its stack."""

    path: str
    depth: int
    stack: Stack
    module: nn.Module = field(compare=False, repr=False)


def list_blocks(model: nn.Module, layout: BlockLayout) -> list[Block]:
    """Every block of the layout's stacks, in forward order, numbered from depth 1."""
    blocks: list[Block] = []
    for stack in layout.stacks:
        lists = _block_lists(model, stack.path)
        if not lists and "*" not in stack.path:  # a pattern may match nothing in some configs (no mid block)
            raise UnknownModelError(
                f"The layout of `{type(model).__name__}` names the stack {stack.path!r}, but the model has no "
                f"nn.ModuleList there. Pass `layout=BlockLayout(stacks=(...))` with this model's block lists."
            )
        for list_path, modules in lists:
            for index, module in enumerate(modules):
                if not stack.blocks or type(module).__name__ in stack.blocks:
                    blocks.append(Block(f"{list_path}.{index}", len(blocks) + 1, stack, module))
    if not blocks:
        raise UnknownModelError(f"`{type(model).__name__}` has no blocks in {[s.path for s in layout.stacks]}.")
    return blocks


def _block_lists(model: nn.Module, path: str) -> list[tuple[str, nn.Module]]:
    """(path, ModuleList) for a stack path; each `*` matches every child in registration (= index) order."""
    found = [("", model)]
    for part in path.split("."):
        children = []
        for prefix, module in found:
            named = module.named_children() if part == "*" else [(part, module._modules.get(part))]
            children += [(f"{prefix}.{name}".lstrip("."), child) for name, child in named if child is not None]
        found = children
    return [(p, m) for p, m in found if isinstance(m, (nn.ModuleList, nn.Sequential))]


def block_classes(model: nn.Module, layout: Optional[BlockLayout] = None) -> list[str]:
    """The class names of a model's blocks, in depth order, each once: what FSDP wraps one by one
    (`fsdp_transformer_layer_cls_to_wrap`, comma-joined). The layout defaults to the model's."""
    blocks = list_blocks(model, layout if layout is not None else layout_for(model))
    return list(dict.fromkeys(type(block.module).__name__ for block in blocks))


def describe(blocks: Sequence[Block]) -> str:
    """'57 blocks (transformer_blocks: 19, single_transformer_blocks: 38)'."""
    counts: dict[str, int] = {}
    for block in blocks:
        counts[block.stack.path] = counts.get(block.stack.path, 0) + 1
    return f"{len(blocks)} blocks ({', '.join(f'{path}: {n}' for path, n in counts.items())})"


def resolve(ref: Union[int, str], blocks: Sequence[Block], *, name: str, model_name: str) -> Block:
    """The block named by a depth (1-based; 0 = first; negative from the end) or a path."""
    n = len(blocks)
    if isinstance(ref, int) and not isinstance(ref, bool):
        if -n <= ref <= n:
            return blocks[max(ref, 1) - 1] if ref >= 0 else blocks[n + ref]
        raise BlockIndexError(
            f"LayerSync could not find layer: `{name}={ref}` is out of range for {model_name}, which has "
            f"{describe(blocks)}. Use a depth in 1..{n} (or -{n}..-1 from the end)."
        )
    for block in blocks:
        if block.path == ref:
            return block
    firsts: dict[str, str] = {}
    for block in blocks:
        firsts.setdefault(block.stack.path, block.path)
    examples = ", ".join(f"'{path}'" for path in firsts.values())
    raise BlockIndexError(
        f"LayerSync could not find layer: `{name}={ref!r}` is not a block of {model_name}, which has "
        f"{describe(blocks)}. Use a path such as {examples} or a depth in 1..{n}."
    )
