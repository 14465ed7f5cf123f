"""torch.compile and hooks: refuse to attach where a whole-model compile would silently skip the hooks.

Hooks registered before `torch.compile(model)` (or `model.compile()`) runs are traced into the compiled
forward. Hooks registered after its first call never run: Dynamo does not guard on them
(`torch._dynamo.config.skip_nnmodule_hook_guards`). Regional compilation (`compile_repeated_blocks`,
`block.compile()`) calls block hooks outside the compiled blocks, so any order works there.
"""

from __future__ import annotations

import warnings
from typing import Optional

from torch import nn

from ..errors import CompiledModelError
from .blocks import wrappers
from .torch_internals import dynamo_broke_on_checkpoint_side_effects, has_compiled_code


def is_compiled_whole(model: nn.Module) -> bool:
    """Whether `model` (or a wrapper around it) is a whole-model `torch.compile` or `Module.compile()`."""
    return any(
        type(m).__name__ == "OptimizedModule" or getattr(m, "_compiled_call_impl", None) is not None
        for m in wrappers(model)
    )


def check_not_compiled_yet(model: nn.Module) -> None:
    """Raise if `model` is compiled whole and its compiled code already ran; warn if only its class's has.

    The compiled code belongs to the class's `forward`, so it is shared by every instance of the class.
    """
    chain = wrappers(model)
    if not any(has_compiled_code(m) for m in chain):
        return
    name = type(chain[-1]).__name__
    fix = (
        "Attach before the first compiled call (right after loading, before `accelerator.prepare`), compile "
        "the blocks only (`model.compile_repeated_blocks()`), or call `torch._dynamo.reset()` first."
    )
    if is_compiled_whole(model):
        raise CompiledModelError(
            f"Cannot attach hooks to {name}: it was compiled whole with torch.compile and its compiled code has "
            f"already run, and compiled code never calls hooks added later, so nothing would be captured. {fix}"
        )
    warnings.warn(
        f"{name}.forward already has torch.compile code in this process: if this model runs through a "
        f"compiled wrapper, the hooks attached now will never run. {fix}",
        stacklevel=3,
    )


def checkpointing_hint(model: nn.Module) -> Optional[str]:
    """Why a compiled, checkpointed forward stored nothing, when that is the cause; else None.

    Under gradient checkpointing a hook's store is a side effect inside each checkpointed block, which a
    whole-model compile drops unless Dynamo is told that it need not be replayed in the backward recomputation.
    """
    if not (getattr(model, "is_gradient_checkpointing", False) and dynamo_broke_on_checkpoint_side_effects()):
        return None
    from torch._dynamo import config  # imported already: the model ran compiled code

    if config.skip_fwd_side_effects_in_bwd_under_checkpoint:
        return None
    return (
        f"{type(model).__name__} runs compiled with gradient checkpointing, and Dynamo drops the hooks' stores "
        "inside checkpointed blocks unless told they need not be replayed in the backward recomputation. Set "
        "`torch._dynamo.config.skip_fwd_side_effects_in_bwd_under_checkpoint = True` before the first compiled "
        "call (LayerSync ignores that recomputation anyway), or compile the blocks only "
        "(`model.compile_repeated_blocks()`)."
    )
