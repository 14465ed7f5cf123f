"""Which layout a model gets: an explicit `layout=`, then `register_layout`, then the table, then the model's single
block stack. No match is an error, never a guess.

The table's keys are diffusers class names and, for classes outside diffusers (the trainers' own, DiffSynth-Studio's),
qualified names. A bare name applies to diffusers' class of that name and its subclasses (a user's subclass, the class
FSDP2 derives from the model's); musubi-tuner's `QwenImageTransformer2DModel` is another class and does not get it. A
qualified name applies to its own class only: a subclass may order its tokens otherwise (kohya sd-scripts' `Chroma`
subclasses its `Flux` but puts the image first), so it needs a row of its own, and without one it is told so.
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
    """Register (or override) the layout of a model class and its subclasses, by class, class name or qualified name.

    Example:
        ```python
        >>> register_layout("MyDiT", BlockLayout(stacks=("blocks",)))
        ```
    """
    name = model_class if isinstance(model_class, str) else qualified_name(model_class)
    if not isinstance(layout, BlockLayout):
        raise LayerSyncConfigError(f"`register_layout` needs a BlockLayout, got {type(layout).__name__}.")
    _REGISTERED[name] = layout
    logger.info("Registered the LayerSync layout of %s: %s", name, [s.path for s in layout.stacks])


def unregister_layout(model_class: Union[type, str]) -> None:
    """Forget a layout added with `register_layout` (the built-in table is unchanged)."""
    _REGISTERED.pop(model_class if isinstance(model_class, str) else qualified_name(model_class), None)


def qualified_name(cls: type) -> str:
    """'library.flux_models.Flux': the module and qualified name of a class."""
    return f"{cls.__module__}.{cls.__qualname__}"


def own_class(model_class: type) -> type:
    """The model's own class: FSDP2 derives `FSDP<Name>` from it (in a torch module), which is not the model's."""
    return next(cls for cls in model_class.__mro__ if not cls.__module__.startswith("torch."))


def lookup_layout(model_class: type) -> Optional[BlockLayout]:
    """The registered or built-in layout of a class, or None.

    Registered names (bare or qualified) apply to the class and its subclasses; the table's bare names to diffusers'
    classes and their subclasses; the table's qualified names to their own class only (see the module's docstring).
    """
    own = own_class(model_class)
    for cls in own.__mro__:
        qualified, bare = qualified_name(cls), cls.__name__
        for name in (qualified, bare):
            if name in _REGISTERED:
                return _REGISTERED[name]
        if qualified in LAYOUTS and cls is own:
            return LAYOUTS[qualified]
        if bare in LAYOUTS and cls.__module__.startswith("diffusers."):
            return LAYOUTS[bare]
    return None


def _row_of_a_base(model_class: type) -> Optional[str]:
    """The qualified key of a base class with a row of its own, which a subclass does not inherit."""
    return next((qualified_name(c) for c in own_class(model_class).__mro__[1:] if qualified_name(c) in LAYOUTS), None)


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
    base = _row_of_a_base(type(model))
    if base is not None:
        name = type(model).__name__
        raise UnknownModelError(
            f"No block layout is registered for `{qualified_name(own_class(type(model)))}`. It subclasses `{base}`, "
            f"which has one, but a subclass may order its tokens otherwise (kohya sd-scripts' `Chroma` subclasses its "
            f"`Flux` and puts the image first), so LayerSync does not reuse it. If {name}'s blocks and tokens are "
            f"those of its base, call `register_layout({name}, LAYOUTS[{base!r}])`; otherwise pass "
            "`layout=BlockLayout(...)`."
        )
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
