"""Pick the block arguments a token rule declares out of one block call, at hook time.

The capture keeps only these, never the whole call: that would keep the block's input activations alive until
the loss is built (for Flux's single blocks, a whole text+image stream).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

from ..errors import LayerSyncConfigError


def argument_picker(module: nn.Module, names: tuple[str, ...]) -> Callable[[tuple, dict], dict[str, Any]]:
    """A function that picks the named arguments out of one call of `module`, positional or keyword.

    Positions are resolved here, once, so the hook does no signature binding. Under diffusers gradient
    checkpointing blocks receive positional arguments only, so both are looked up.
    """
    # The class's forward, not the instance's: accelerate and diffusers hooks patch `module.forward` with
    # `(*args, **kwargs)` wrappers that hide the names.
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
        return {
            name: kwargs[name] if name in kwargs else args[i] if i < len(args) else default
            for name, (i, default) in where.items()
        }

    return pick
