"""The types of a layout: `Stack`, `BlockLayout`, the token-rule protocol, and what a rule reads (`CallInputs`).

A layout says where a model class keeps its blocks (stacks, in forward order) and which tokens of each block's
output are the noisy target (a token rule per stack). Rules are in `rules.py` (with their count sources in
`counts.py`), the diffusers table in `table.py`, the lookup in `registry.py`.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol, Union

import torch
from torch import nn

from ..errors import LayerSyncConfigError


class CallInputs:
    """What a token rule may read: the model's training-forward arguments, and the block arguments it declared.

    Under diffusers gradient checkpointing blocks receive positional arguments only, so arguments are bound to
    names through the signature, never read from `kwargs` alone.
    """

    def __init__(
        self,
        model: nn.Module,
        model_call: Optional[tuple[tuple, dict]],
        block_arguments: Optional[dict[str, Any]] = None,
    ):
        self.model = model  # rules read patch sizes and flags from `model.config`
        self._model_call = model_call
        self._model_arguments: Optional[dict[str, Any]] = None
        self._block_arguments = block_arguments or {}

    def model_arg(self, name: str) -> Any:
        """An argument of the model's forward, by name (its default when not passed)."""
        if self._model_arguments is None:
            args, kwargs = self._model_call if self._model_call is not None else ((), {})
            # The class's forward, not the instance's: accelerate and diffusers hooks patch `model.forward`
            # with `(*args, **kwargs)` wrappers that hide the names.
            bound = inspect.signature(type(self.model).forward).bind_partial(self.model, *args, **kwargs)
            bound.apply_defaults()
            self._model_arguments = dict(bound.arguments)
        return self._model_arguments.get(name)

    def block_arg(self, name: str) -> Any:
        """An argument of this block's forward, by name; the rule must list it in its `block_args`."""
        if name not in self._block_arguments:
            raise LayerSyncConfigError(
                f"A token rule read the block argument {name!r} without declaring it; the capture kept "
                f"{sorted(self._block_arguments)}. Give the rule `block_args = ({name!r},)`."
            )
        return self._block_arguments[name]


class TokenRule(Protocol):
    r"""
    Selects the noisy-target tokens of one block's latent stream.

    Called as `rule(hidden, inputs)` with the stream as the block returned it (usually `(B, N, D)`) and the
    call's `CallInputs`; returns the target tokens compacted to the front, `(B, N', D)`, and a `(B, N')` bool
    mask of the tokens that count, or None when all do. A rule that reads the model's arguments
    (`inputs.model_arg`) sets `reads_inputs = True`, so the capture keeps a reference to the model's call only
    when needed; one that reads a block's arguments (`inputs.block_arg`) names them in `block_args`, so the
    capture keeps those and never the block's input activations.
    """

    def __call__(self, hidden: torch.Tensor, inputs: CallInputs) -> tuple[torch.Tensor, Optional[torch.Tensor]]: ...


def rule_block_args(rule: Any) -> tuple[str, ...]:
    """The block arguments a token rule, and the rules and count sources inside it, declare in `block_args`."""
    names = list(getattr(rule, "block_args", ()))
    if dataclasses.is_dataclass(rule) and not isinstance(rule, type):
        for field in dataclasses.fields(rule):
            names += rule_block_args(getattr(rule, field.name))
    return tuple(dict.fromkeys(names))


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
        rule (`TokenRule`, *optional*): Selects the noisy-target tokens when the stream also carries text,
            register or condition tokens. `None` means every token of the stream is a target token.
        blocks (`tuple` of `str`, *optional*): Class names of the blocks to number, when the list mixes block
            kinds (Stable Cascade's res, timestep and attention blocks). Empty: every element is a block.
    """

    path: str
    output: int = 0
    rule: Optional[TokenRule] = None
    blocks: tuple[str, ...] = ()

    def __post_init__(self):
        if not isinstance(self.path, str) or not self.path:
            raise LayerSyncConfigError(f"`Stack.path` must be a dotted module path, got {self.path!r}.")
        if isinstance(self.output, bool) or not isinstance(self.output, int):
            raise LayerSyncConfigError(f"`Stack.output` must be a tuple index (int), got {self.output!r}.")
        if self.rule is not None and not callable(self.rule):
            raise LayerSyncConfigError(f"`Stack.rule` must be a token rule (a callable), got {self.rule!r}.")

    @property
    def reads_inputs(self) -> bool:
        """Whether the rule reads the model's call arguments."""
        return bool(getattr(self.rule, "reads_inputs", False))

    @property
    def block_args(self) -> tuple[str, ...]:
        """The block arguments the rule reads."""
        return rule_block_args(self.rule)


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
        level (`callable`, *optional*): `level(model, block_path) -> int`, the resolution level of a block, for
            models whose tokens change shape from level to level (UNets). A student and a teacher at different
            levels cannot be compared token by token and are refused when attaching.

    Example:
        ```python
        >>> BlockLayout(stacks=("blocks",))
        >>> BlockLayout(stacks=(Stack("transformer_blocks", output=1), Stack("single_transformer_blocks", output=1)))
        ```
    """

    stacks: tuple[Union[Stack, str], ...] = ()
    unsupported: Optional[str] = None
    check: Optional[Callable[[nn.Module], Optional[str]]] = None
    level: Optional[Callable[[nn.Module, str], int]] = None

    def __post_init__(self):
        if self.unsupported is not None:
            return
        if isinstance(self.stacks, (str, Stack)) or not self.stacks:
            raise LayerSyncConfigError(
                f"`BlockLayout.stacks` must be a non-empty tuple of stacks, got {self.stacks!r}; "
                'write `BlockLayout(stacks=("blocks",))` for one stack.'
            )
        stacks = tuple(Stack(s) if isinstance(s, str) else s for s in self.stacks)
        paths = [s.path for s in stacks]
        if len(set(paths)) != len(paths):
            raise LayerSyncConfigError(f"`BlockLayout.stacks` lists a stack twice: {paths}.")
        object.__setattr__(self, "stacks", stacks)


@dataclass(frozen=True)
class Released:
    r"""
    A released model of a class in the layout table, at its real size: what `layersync-hooks layouts` lists, and
    what a preset is written for.

    Args:
        label (`str`): The models it describes, e.g. `"Flux.1 [dev], [schnell], Kontext"`.
        config (`dict`, *optional*): The class's init arguments at that size; empty when the class default is it.
        blocks (`dict`, *optional*): Blocks per stack, for a class not built here (its package may be missing, or
            its config needs a checkpoint's data). Otherwise the class is built from `config` on the meta device and
            its blocks are counted.
        preset (`str`, *optional*): The name of the preset for this size (`LayerSync(model, "flux")`).
    """

    label: str
    config: Optional[dict] = None
    blocks: Optional[dict] = None
    preset: Optional[str] = None
