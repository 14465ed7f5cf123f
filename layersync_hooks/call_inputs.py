"""What a token rule may read from a training forward: the model's arguments and the block arguments it declares.

The capture keeps a reference to the model's call when a rule reads it (`reads_inputs = True`), and of each
block call only the arguments its rule lists in `block_args`: never the whole call, whose tensors include the
block's input activations.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Optional

from torch import nn

from .errors import LayerSyncConfigError


def bind_call(module: nn.Module, call) -> dict[str, Any]:
    """The arguments of one `module(*args, **kwargs)` call by name, defaults included."""
    args, kwargs = call if call is not None else ((), {})
    # The class's forward, not the instance's: accelerate and diffusers hooks patch `module.forward` with
    # `(*args, **kwargs)` wrappers that hide the names.
    bound = inspect.signature(type(module).forward).bind_partial(module, *args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def argument_picker(module: nn.Module, names: tuple[str, ...]) -> Callable[[tuple, dict], dict[str, Any]]:
    """A function that picks the named arguments out of one call of `module`, positional or keyword.

    The capture keeps only these, never the whole call: that would keep the block's input activations alive
    until the loss is built (for Flux's single blocks, a whole text+image stream). Positions are resolved here,
    once, so the hook does no signature binding.
    """
    parameters = list(inspect.signature(type(module).forward).parameters.values())[1:]  # without `self`
    where = {}
    for name in names:
        index = next((i for i, p in enumerate(parameters) if p.name == name), None)
        if index is None:
            raise LayerSyncConfigError(
                f"A token rule reads the block argument {name!r}, but {type(module).__name__}.forward takes "
                f"{[p.name for p in parameters]}. Fix the rule's `block_args` or the layout."
            )
        default = parameters[index].default
        where[name] = (index, None if default is inspect.Parameter.empty else default)

    def pick(args: tuple, kwargs: dict) -> dict[str, Any]:
        return {name: kwargs[name] if name in kwargs else args[i] if i < len(args) else default
                for name, (i, default) in where.items()}

    return pick


class CallInputs:
    """What a token rule may read: the model's training-forward arguments, and the block arguments it declared.

    Under diffusers gradient checkpointing blocks receive positional arguments only, so arguments are bound to
    names through the signature, never read from `kwargs` alone.
    """

    def __init__(self, model: nn.Module, model_call, block_arguments: Optional[dict[str, Any]] = None):
        self.model = model  # rules read patch sizes and flags from `model.config`
        self._model_call = model_call
        self._model_arguments: Optional[dict[str, Any]] = None
        self._block_arguments = block_arguments or {}

    def model_arg(self, name: str) -> Any:
        """An argument of the model's forward, by name (its default when not passed)."""
        if self._model_arguments is None:
            self._model_arguments = bind_call(self.model, self._model_call)
        return self._model_arguments.get(name)

    def block_arg(self, name: str) -> Any:
        """An argument of this block's forward, by name; the rule must list it in its `block_args`."""
        if name not in self._block_arguments:
            raise LayerSyncConfigError(
                f"A token rule read the block argument {name!r} without declaring it; the capture kept "
                f"{sorted(self._block_arguments)}. Give the rule `block_args = ({name!r},)`."
            )
        return self._block_arguments[name]


def rule_block_args(rule: Any) -> tuple[str, ...]:
    """The block arguments a token rule, and the rules and count sources inside it, declare in `block_args`."""
    names = list(getattr(rule, "block_args", ()))
    if dataclasses.is_dataclass(rule) and not isinstance(rule, type):
        for field in dataclasses.fields(rule):
            names += rule_block_args(getattr(rule, field.name))
    return tuple(dict.fromkeys(names))
