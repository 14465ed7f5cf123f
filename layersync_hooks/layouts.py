"""Where each model class keeps its blocks and which tokens of their outputs are the noisy target.

The table (`families.LAYOUTS`) is plain data keyed by class name and looked up along the model's MRO, so
subclasses (and the classes FSDP2 derives from a model's class) find their parent's layout. `register_layout` and
the `layout=` argument beat the table. Token rules live in `tokens.py`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch
from torch import nn

from .call_inputs import CallInputs, rule_block_args
from .errors import LayerSyncConfigError, UnknownModelError, UnsupportedModelError

logger = logging.getLogger(__name__)


# A token rule takes one block's latent stream as the block returned it (usually (B, N, D)) and returns the
# target tokens compacted to the front, (B, N', D), plus an optional (B, N') bool mask of the tokens that count.
# Rules that read the model's call arguments set `reads_inputs = True`, so that the capture keeps a reference to
# them only when needed; rules that read a block's arguments name them in `block_args`. See tokens.py.
TokenRule = Callable[[torch.Tensor, CallInputs], "tuple[torch.Tensor, Optional[torch.Tensor]]"]


@dataclass(frozen=True)
class Stack:
    r"""
    One `nn.ModuleList` of blocks.

    Args:
        path (`str`): Dotted path of the ModuleList from the model root, e.g. `"single_transformer_blocks"`. A `*`
            matches every child in order, for blocks in nested lists: a UNet's
            `"down_blocks.*.attentions.*.transformer_blocks"`.
        output (`int`, defaults to 0): Which element of a tuple output is the latent stream (Flux blocks return
            `(encoder_hidden_states, hidden_states)`, so 1). A block returning a plain tensor ignores it.
        tokens (`TokenRule`, *optional*): Selects the noisy-target tokens when the stream also carries text,
            register or condition tokens. `None` means every token of the stream is a target token.
        blocks (`tuple` of `str`, *optional*): Class names of the blocks to number, when the list mixes block
            kinds (Stable Cascade's res, timestep and attention blocks). Empty: every element is a block.
    """

    path: str
    output: int = 0
    tokens: Optional[TokenRule] = None
    blocks: tuple[str, ...] = ()

    def __post_init__(self):
        if not isinstance(self.path, str) or not self.path:
            raise LayerSyncConfigError(f"`Stack.path` must be a dotted module path, got {self.path!r}.")
        if isinstance(self.output, bool) or not isinstance(self.output, int):
            raise LayerSyncConfigError(f"`Stack.output` must be a tuple index (int), got {self.output!r}.")

    @property
    def reads_inputs(self) -> bool:
        return bool(getattr(self.tokens, "reads_inputs", False))

    @property
    def block_args(self) -> tuple[str, ...]:
        return rule_block_args(self.tokens)


@dataclass(frozen=True)
class BlockLayout:
    r"""
    The block stacks of one model class, in forward order. Depths count over them: with Flux's
    `transformer_blocks` (19) then `single_transformer_blocks` (38), depth 20 is `single_transformer_blocks.0`.

    Args:
        stacks (`tuple` of `Stack` or `str`): The stacks; a plain str is `Stack(path)`.
        unsupported (`str`, *optional*): Why LayerSync cannot align this class (raised when attaching).
        check (`callable`, *optional*): `check(model) -> reason or None`, for classes supported only in some
            configurations.

    Example:
        ```python
        >>> BlockLayout(stacks=("blocks",))
        >>> BlockLayout(stacks=(Stack("transformer_blocks", output=1), Stack("single_transformer_blocks", output=1)))
        ```
    """

    stacks: tuple[Union[Stack, str], ...] = ()
    unsupported: Optional[str] = None
    check: Optional[Callable[[nn.Module], Optional[str]]] = None

    def __post_init__(self):
        if self.unsupported is not None:
            return
        if isinstance(self.stacks, (str, Stack)) or not self.stacks:
            raise LayerSyncConfigError(
                f"`BlockLayout.stacks` must be a non-empty tuple of stacks, got {self.stacks!r}; "
                "write `BlockLayout(stacks=(\"blocks\",))` for one stack."
            )
        stacks = tuple(Stack(s) if isinstance(s, str) else s for s in self.stacks)
        paths = [s.path for s in stacks]
        if len(set(paths)) != len(paths):
            raise LayerSyncConfigError(f"`BlockLayout.stacks` lists a stack twice: {paths}.")
        object.__setattr__(self, "stacks", stacks)


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
    """The registered or built-in layout of a class or its nearest base class, or None."""
    from .families import LAYOUTS  # the table imports this module's dataclasses

    for cls in model_class.__mro__:
        for table in (_REGISTERED, LAYOUTS):
            if cls.__name__ in table:
                return table[cls.__name__]
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
            "`layout=BlockLayout(stacks=(\"blocks\",))` naming its ModuleList of blocks, or call "
            f"`register_layout({type(model).__name__!r}, BlockLayout(stacks=(\"blocks\",)))`."
        )
    logger.info("No layout registered for %s; using its only block stack %r.", type(model).__name__, stack)
    return BlockLayout(stacks=(stack,))
