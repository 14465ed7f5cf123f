"""Every private torch call the capture makes, in one file, each checked against the running torch.

Four things the capture needs have no public torch API:

- whether the current code runs inside a backward pass (`torch._C._current_graph_task_id`): checkpointing
  re-runs block forwards there, and those calls must not be captured;
- whether torch.compile already holds compiled code for a class's `forward` (Dynamo's cache entries): hooks added
  after a whole-model compiled call never run;
- how to keep Dynamo from compiling a hook as a frame of its own (`skip_code`), which regional compilation would
  otherwise do once per hooked block until `fullgraph=True` fails at the recompile limit;
- and, for an error message only, whether Dynamo broke a graph on the hooks' stores under checkpointing (its
  graph-break counters).

A private call does each; the package is tested with torch 2.13 (its declared floor) and 2.14.

And one private structure, the module hook dicts (`_forward_hooks` and friends): a hook copied with its model
(`copy.deepcopy`, pickling) removes itself from the copy's dicts, since no public handle exists for the copy.
If a torch release drops one of these, the functions below fail with a message naming it (or, where a fallback
exists, fall back), rather than misbehaving silently.
"""

from __future__ import annotations

import sys
from typing import Callable

import torch
from torch import nn

from ..errors import LayerSyncError

TESTED_TORCH = "2.13 and 2.14"

_graph_task_id = getattr(torch._C, "_current_graph_task_id", None)


def check_torch() -> None:
    """Raise at attach time, not inside a training forward, if this torch lacks what `in_backward` needs."""
    if _graph_task_id is None:
        raise LayerSyncError(
            f"This torch ({torch.__version__}) has no `torch._C._current_graph_task_id`, which LayerSync uses to "
            f"ignore gradient-checkpointing recomputation; it was tested with torch {TESTED_TORCH}."
        )


def in_backward() -> bool:
    """Whether autograd is running a backward pass right now (checkpoint recomputation runs there)."""
    # Not traceable by torch.compile (a graph break). Only a checkpointed root is called during backward, and a
    # compiled root recomputes inside its compiled graph without calling hooks, so compiled code skips the check.
    return not torch.compiler.is_compiling() and _graph_task_id() != -1


def has_compiled_code(module: nn.Module) -> bool:
    """Whether torch.compile already holds compiled code for this module class's `forward`."""
    dynamo = sys.modules.get("torch._dynamo")  # never imported: nothing was ever compiled
    entries = getattr(getattr(dynamo, "eval_frame", None), "_debug_get_cache_entry_list", None)
    return entries is not None and bool(entries(type(module).forward.__code__))


def never_compiled_alone(hook: Callable) -> Callable:
    """Let Dynamo trace `hook` inside a compiled model forward, but never compile it as a frame of its own."""
    from torch._dynamo import eval_frame  # already imported by diffusers; about 2 s otherwise, once

    if hasattr(eval_frame, "skip_code"):  # without it, up to `recompile_limit` hooked blocks still work
        eval_frame.skip_code(hook.__code__)
    return hook


def dynamo_broke_on_checkpoint_side_effects() -> bool:
    """Whether Dynamo broke a graph on a side effect inside activation checkpointing in this process (its
    graph-break counters record the reason, which names `skip_fwd_side_effects_in_bwd_under_checkpoint`)."""
    dynamo = sys.modules.get("torch._dynamo")
    counters = getattr(getattr(dynamo, "utils", None), "counters", None)
    breaks = counters.get("graph_break", {}) if isinstance(counters, dict) else {}
    return any("skip_fwd_side_effects_in_bwd_under_checkpoint" in str(reason) for reason in breaks)


_HOOK_DICTS = (
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
)


def remove_hook(module: nn.Module, hook_id: int) -> None:
    """Remove the hook registered under `hook_id` from `module`, as its `RemovableHandle.remove()` would.

    Safe while the module's hooks run: `Module._call_impl` iterates over a snapshot of its hook dicts.
    """
    for name in _HOOK_DICTS:
        getattr(module, name, {}).pop(hook_id, None)
