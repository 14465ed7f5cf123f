"""torch.compile and hooks: refuse to attach where a whole-model compile would silently skip the hooks.

Hooks registered before `torch.compile(model)` (or `model.compile()`) runs are traced into the compiled
forward. Hooks registered after its first call never run: Dynamo does not guard on them
(`torch._dynamo.config.skip_nnmodule_hook_guards`). Regional compilation (`compile_repeated_blocks`,
`block.compile()`) calls block hooks outside the compiled blocks, so any order works there.
"""

from __future__ import annotations

import sys
import warnings
from typing import Callable

from torch import nn

from .blocks import wrappers
from .errors import CompiledModelError


def _has_compiled_code(module: nn.Module) -> bool:
    """Whether torch.compile already holds compiled code for this module class's `forward`."""
    dynamo = sys.modules.get("torch._dynamo")  # never imported: nothing was ever compiled
    entries = getattr(getattr(dynamo, "eval_frame", None), "_debug_get_cache_entry_list", None)
    return entries is not None and bool(entries(type(module).forward.__code__))


def check_not_compiled_yet(model: nn.Module) -> None:
    """Raise if `model` is compiled whole and its compiled code already ran; warn if only its class's has.

    The compiled code belongs to the class's `forward`, so it is shared by every instance of the class.
    """
    chain = wrappers(model)
    compiled = any(type(m).__name__ == "OptimizedModule" or getattr(m, "_compiled_call_impl", None) is not None
                   for m in chain)
    if not any(_has_compiled_code(m) for m in chain):
        return
    name = type(chain[-1]).__name__
    fix = ("Attach before the first compiled call (right after loading, before `accelerator.prepare`), compile "
           "the blocks only (`model.compile_repeated_blocks()`), or call `torch._dynamo.reset()` first.")
    if compiled:
        raise CompiledModelError(
            f"Cannot attach hooks to {name}: it was compiled whole with torch.compile and its compiled code has "
            f"already run, and compiled code never calls hooks added later, so nothing would be captured. {fix}"
        )
    warnings.warn(f"{name}.forward already has torch.compile code in this process: if this model runs through a "
                  f"compiled wrapper, the hooks attached now will never run. {fix}", stacklevel=3)


def not_compiled_alone(hook: Callable) -> Callable:
    """Let Dynamo trace `hook` inside a compiled model forward, but never compile it as a frame of its own.

    Under regional compilation a block's compiled `_call_impl` hands each hook to Dynamo as a separate frame;
    every hook closure (one per block, same code) would get its own compiled entry, and past
    `torch._dynamo.config.recompile_limit` blocks `fullgraph=True` fails. Run as plain Python, it costs nothing.
    """
    from torch._dynamo import eval_frame  # already imported by diffusers; about 2 s otherwise, once

    if hasattr(eval_frame, "skip_code"):  # private API: without it, up to `recompile_limit` hooked blocks work
        eval_frame.skip_code(hook.__code__)
    return hook
