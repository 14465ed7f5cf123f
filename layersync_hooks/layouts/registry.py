"""Which layout a model gets: an explicit `layout=`, then `register_layout`, then the diffusers table, then the
model's single block stack. Lookups follow the class's MRO, so subclasses (and the classes FSDP2 derives from a
model's class) find their parent's layout. No match is an error, never a guess.
"""

from __future__ import annotations

import logging
from typing import Optional, Union

from torch import nn

from ..errors import LayerSyncConfigError, UnknownModelError, UnsupportedModelError
from .table import LAYOUTS
from .types import BlockLayout

logger = logging.getLogger(__name__)

_REGISTERED: dict[str, BlockLayout] = {}


def register_layout(model_class: Union[type, str], layout: BlockLayout) -> None:
    """Register (or override) the layout of a model class, by class or class name.

    Example:
        ```python
        >>> register_layout("MyDiT", BlockLayout(stacks=("blocks",)))
        ```
    """
    name = model_class if isinstance(model_class, str) else model_class.__name__
    if not isinstance(layout, BlockLayout):
        raise LayerSyncConfigError(f"`register_layout` needs a BlockLayout, got {type(layout).__name__}.")
    _REGISTERED[name] = layout
    logger.info("Registered the LayerSync layout of %s: %s", name, [s.path for s in layout.stacks])


def unregister_layout(model_class: Union[type, str]) -> None:
    """Forget a layout added with `register_layout` (the built-in table is unchanged)."""
    _REGISTERED.pop(model_class if isinstance(model_class, str) else model_class.__name__, None)


def lookup_layout(model_class: type) -> Optional[BlockLayout]:
    """The registered or built-in layout of a class or its nearest base class, or None.

    A key is a class name (`"FluxTransformer2DModel"`) or, for classes outside diffusers whose name other
    packages reuse, a qualified one (`"diffsynth.models.wan_video_dit.WanModel"`), which is looked up first.
    """
    for cls in model_class.__mro__:
        for name in (f"{cls.__module__}.{cls.__qualname__}", cls.__name__):
            for table in (_REGISTERED, LAYOUTS):
                if name in table:
                    return table[name]
    return None


def find_single_stack(model: nn.Module) -> Optional[str]:
    """The one top-level ModuleList of two or more same-class blocks, if the model has exactly one.

    Raises `UnknownModelError` when there are several, since picking one would be a guess.
    """
    found: list[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) < 2:
            continue
        if len({type(block) for block in module}) != 1 or any(name.startswith(f + ".") for f in found):
            continue
        found.append(name)
    if len(found) > 1:
        stacks = ", ".join(f"{p!r} ({len(model.get_submodule(p))})" for p in found)
        raise UnknownModelError(
            f"No block layout is registered for `{type(model).__name__}`, and it has several block stacks: "
            f"{stacks}. Pass `layout=BlockLayout(stacks=({found[0]!r},))` with the stacks to number, in "
            "forward order, or call `register_layout(...)` once for the class."
        )
    return found[0] if found else None


def layout_for(model: nn.Module, layout: Optional[BlockLayout] = None) -> BlockLayout:
    """The layout to use for `model`: the explicit one, else the table's, else its single block stack."""
    if layout is not None:
        if not isinstance(layout, BlockLayout):
            raise LayerSyncConfigError(f"`layout` must be a BlockLayout, got {type(layout).__name__}.")
        return layout
    found = lookup_layout(type(model))
    if found is not None:
        reason = found.unsupported or (found.check(model) if found.check is not None else None)
        if reason is not None:
            raise UnsupportedModelError(
                f"LayerSync cannot align the image tokens of `{type(model).__name__}`: {reason} If you know which "
                "blocks and tokens to align, pass `layout=BlockLayout(...)` to override the table."
            )
        return found
    stack = find_single_stack(model)
    if stack is None:
        raise UnknownModelError(
            f"LayerSync found no transformer block stack in `{type(model).__name__}`: no layout is registered "
            "for it and it has no nn.ModuleList of two or more blocks of one class. Pass "
            '`layout=BlockLayout(stacks=("blocks",))` naming its ModuleList of blocks, or call '
            f'`register_layout({type(model).__name__!r}, BlockLayout(stacks=("blocks",)))`.'
        )
    logger.info("No layout registered for %s; using its only block stack %r.", type(model).__name__, stack)
    return BlockLayout(stacks=(stack,))
