"""Capture block activations of the training forward with native forward hooks.

One engine per model root holds the root's two hooks, one hook per block (shared by every `BlockCapture` on that
model) and one buffer. The root's forward pre-hook arms the buffer for a training forward (train mode, grad
enabled, not paused, not during backward); the root's forward hook disarms it. Block hooks store the raw output
object of the first call inside that window and return None, so outputs are never changed. Slicing and upcasting
happen only in `pop()`, after the forward returned: under reentrant checkpointing the hook runs under no_grad and
only that exact output object later receives a `grad_fn`. docs/how-it-works.md walks through it.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import torch
from torch import nn

from ..errors import LayerSyncError, MissingActivationsError, copy_refused
from ..layouts import BlockLayout, layout_for
from .arguments import argument_picker
from .blocks import Block, list_blocks, resolve, unwrap
from .compiled import check_not_compiled_yet, checkpointing_hint
from .selection import Activation, select
from .torch_internals import check_torch, in_backward, never_compiled_alone, remove_hook

logger = logging.getLogger(__name__)


class Stored(NamedTuple):
    """One block's raw output from the training forward, and the block arguments its token rule reads."""

    output: Any
    block_arguments: Optional[dict[str, Any]]


class _Hook:
    """A hook that calls into its engine.

    Copied with its module (`copy.deepcopy(model)` for an EMA copy, pickling for `torch.save(model)`), it becomes
    `_Inert`: a copy must never capture and must stay picklable. A deep copy is also reported to the engine, which
    takes the inert entries off the copy at its next training forward or at `remove()`.
    """

    def __init__(self, engine: _Engine, module: nn.Module, function: Callable, *bound: Any):
        self.engine, self.module = engine, weakref.ref(module)
        self.function, self.bound = function, bound
        self.id: Optional[int] = None  # the hook's key in the module's hook dicts, set once registered

    def __call__(self, *args):
        return self.function(*self.bound, *args)

    def __deepcopy__(self, memo):
        copied = memo.get(id(self.module()))  # deepcopy records the module's copy before copying its hook dicts
        if copied is not None:
            self.engine.copies.append((weakref.ref(copied), self.id))
        return _Inert(self.id)

    def __reduce__(self):
        return _Inert, (self.id,)


class _Inert:
    """What a copy of the model holds in place of a LayerSync hook: it does nothing and removes itself when called."""

    def __init__(self, hook_id: Optional[int]):
        self.hook_id = hook_id

    def __call__(self, module, *args):
        remove_hook(module, self.hook_id)
        return None


def _skip_reason(trainer: nn.Module, active: bool) -> Optional[str]:
    """Why a call of the training module is not a training forward to capture, or None when it is one."""
    if not active:
        return "capture was paused"
    if not trainer.training:
        return "the model was in eval mode (call `model.train()` before the training forward)"
    if not torch.is_grad_enabled():
        return "gradients were disabled (torch.no_grad() or torch.inference_mode())"
    if in_backward():
        return "it ran during backward"
    return None


class _Engine:
    """The hooks and buffer of one model root, shared by all its `BlockCapture`s."""

    _by_root: weakref.WeakKeyDictionary[nn.Module, _Engine] = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, root: nn.Module, trainer: nn.Module) -> _Engine:
        if root not in cls._by_root:
            cls._by_root[root] = cls(root, trainer)
        engine = cls._by_root[root]
        if engine.trainer() is not trainer:
            raise LayerSyncError(
                f"{type(root).__name__} is already captured for the training forward of "
                f"{type(engine.trainer()).__name__}; every capture of one model must name the same training module."
            )
        return engine

    def __init__(self, root: nn.Module, trainer: nn.Module):
        # Weak references only: the hooks live in the modules' hook dicts and must not keep the model alive.
        self.root = weakref.ref(root)
        # The module whose forward is the training forward: the model itself, or an outer training module that
        # calls the model's blocks without calling the model's own forward (DiffSynth-Studio).
        self.trainer = weakref.ref(trainer)
        self.users: list[BlockCapture] = []
        self.root_handles: tuple = ()
        self.block_handles: dict[str, Any] = {}  # path -> the block's hook handle
        self.modules: dict[str, weakref.ref] = {}  # path -> the block module, for identity checks
        self.pickers: dict[str, Callable] = {}  # path -> picks the block arguments its token rule reads
        self.reads_model = False  # whether any token rule reads the model's call arguments
        self.armed = False
        self.buffer: dict[str, Stored] = {}
        self.pending: dict[str, set[BlockCapture]] = {}  # path -> the users yet to take it in this forward
        self.model_call: Optional[tuple[tuple, dict]] = None
        self.forwards = 0
        self.last_skip: Optional[str] = None
        self.copies: list[tuple[weakref.ref, int]] = []  # (a deep copy of a hooked module, the inert hook's id)

    # -- users and hooks ---------------------------------------------------------------------------------
    def add(self, user: BlockCapture) -> None:
        root, trainer = self.root(), self.trainer()
        if not self.users:
            self.root_handles = (
                _register(trainer.register_forward_pre_hook, _Hook(self, trainer, self._on_training_call),
                          with_kwargs=True),
                _register(trainer.register_forward_hook, _Hook(self, trainer, self._on_training_return),
                          with_kwargs=True, always_call=True),
            )  # fmt: skip
            if trainer is not root:  # the model's own call, for token rules that read its arguments
                hook = _Hook(self, root, self._on_model_call)
                self.root_handles += (_register(root.register_forward_pre_hook, hook, with_kwargs=True),)
        for block in user.blocks:
            if block.path not in self.block_handles:
                self.modules[block.path] = weakref.ref(block.module)
                self.block_handles[block.path] = _register(
                    block.module.register_forward_hook,
                    _Hook(self, block.module, self._on_block_output, block.path),
                    with_kwargs=True,
                )
                logger.debug("Hooked %s.%s (depth %d)", type(root).__name__, block.path, block.depth)
        self.users.append(user)
        self._update_reads()

    def discard(self, user: BlockCapture) -> None:
        if user not in self.users:
            return
        self.users.remove(user)
        wanted = {block.path for other in self.users for block in other.blocks}
        for path in [p for p in self.block_handles if p not in wanted]:
            self.block_handles.pop(path).remove()
            self.modules.pop(path)
            self.buffer.pop(path, None)
        self._update_reads()
        self.purge_copies()
        if not self.users:
            for handle in self.root_handles:
                handle.remove()
            self.root_handles = ()
            self._disarm()
            root = self.root()
            if root is not None:
                self._by_root.pop(root, None)

    def purge_copies(self) -> None:
        """Take the inert hooks off the deep copies made of hooked modules (an EMA copy carries no stale hook)."""
        for copied, hook_id in self.copies:
            if copied() is not None:
                remove_hook(copied(), hook_id)
        self.copies.clear()

    def _disarm(self) -> None:
        self.buffer.clear()
        self.pending = {}
        self.model_call, self.armed = None, False

    def _update_reads(self) -> None:
        blocks = {b.path: b for u in self.users for b in u.blocks}.values()
        self.pickers = {b.path: argument_picker(b.module, b.stack.block_args) for b in blocks if b.stack.block_args}
        self.reads_model = any(b.stack.reads_inputs for b in blocks)

    # -- hooks ---------------------------------------------------------------------------------------------
    def _on_training_call(self, module, args, kwargs):
        if module is not self.trainer():
            return None
        if self.copies:
            self.purge_copies()
        if self.armed and not in_backward():
            # The previous forward never returned: a BaseException (KeyboardInterrupt, SystemExit) skips the
            # root's always-call hook, which only runs for an Exception. Its half-captured blocks must not pair
            # with this forward's: start from a clean buffer, whatever happened.
            self._disarm()
        active = [user for user in self.users if not user.is_paused]
        self.last_skip = _skip_reason(module, bool(active))
        if self.last_skip is not None:
            return None
        # A new training forward: release the previous one's activations, even if nobody took them.
        self._disarm()
        for user in active:
            for block in user.blocks:
                self.pending.setdefault(block.path, set()).add(user)
        self.model_call = (args, kwargs) if self.reads_model and module is self.root() else None
        self.forwards += 1
        self.armed = True
        return None

    def _on_training_return(self, module, args, kwargs, output):
        if module is self.trainer():
            self.armed = False
        return None

    def _on_model_call(self, module, args, kwargs):
        """With an outer training module: keep the model's first call inside the training forward."""
        if self.armed and self.reads_model and self.model_call is None and module is self.root():
            self.model_call = (args, kwargs)
        return None

    def _on_block_output(self, path, module, args, kwargs, output):
        if self.armed and path in self.pending and path not in self.buffer and self.modules[path]() is module:
            picker = self.pickers.get(path)
            self.buffer[path] = Stored(output, picker(args, kwargs) if picker is not None else None)
            for user in list(self.pending[path]):
                if user.on_stored is not None:
                    user.on_stored(path)
        return None

    # -- taking activations --------------------------------------------------------------------------------
    def ready(self, user: BlockCapture) -> bool:
        """Whether the last training forward left `user` something to take."""
        return not self.armed and any(user in self.pending.get(path, ()) for path in self.buffer)

    def stored(self, user: BlockCapture, paths: Sequence[str]) -> bool:
        return all(path in self.buffer and user in self.pending.get(path, ()) for path in paths)

    def peek(self, user: BlockCapture, paths: Sequence[str], caller: str) -> dict[str, Stored]:
        missing = [path for path in paths if not self.stored(user, [path])]
        if missing:
            raise MissingActivationsError(self._explain(caller, missing, user))
        return {path: self.buffer[path] for path in paths}

    def take(self, user: BlockCapture, paths: Sequence[str], caller: str) -> dict[str, Stored]:
        paths = list(dict.fromkeys(paths))
        taken = self.peek(user, paths, caller)
        for path in paths:
            self.pending[path].discard(user)
            if not self.pending[path]:
                del self.buffer[path]  # the last user took it: release the graph it pins
        return taken

    def call_of_model(self) -> Optional[tuple[tuple, dict]]:
        """The model's call, for token rules; let go once the buffer is empty."""
        model_call = self.model_call
        if not self.buffer:
            self.model_call = None
        return model_call

    def _explain(self, caller: str, missing: list[str], user: BlockCapture) -> str:
        model = type(self.trainer()).__name__
        names = ", ".join(repr(p) for p in missing)
        if self.armed:
            why = f"The forward of {model} has not returned yet (or an exception stopped it)."
        elif self.last_skip is not None:
            why = f"The last call of {model} was not captured because {self.last_skip}."
        elif self.forwards == 0:
            why = (
                f"No training forward of {model} has run since the hooks were attached. (A model compiled "
                "whole with torch.compile before attaching never runs hooks added later.)"
            )
        elif all(user in self.pending.get(p, ()) for p in missing):
            hint = checkpointing_hint(self.root())
            why = hint or f"The last training forward of {model} did not call {names}."
        else:
            why = "Its activations were already used since the last training forward."
        return (
            f"`{caller}` found no activations from {names}. {why} Run the model's training forward "
            f"before calling `{caller}`, once per forward."
        )


# Dynamo inlines the hooks into a whole-model graph; under regional compilation they run as plain Python, never
# as compiled frames of their own (one per hooked block would reach the recompile limit).
for _code in (_Hook.__call__, _Engine._on_training_call, _Engine._on_training_return, _Engine._on_model_call,
              _Engine._on_block_output):  # fmt: skip
    never_compiled_alone(_code)


def _check_called_once(block: Block, blocks: Sequence[Block]) -> None:
    """One module object at two positions of the stacks runs twice per forward, and one hook cannot tell the two
    calls apart: a student and teacher on it would compare a block with itself (cosine 1, zero gradient)."""
    others = [other.path for other in blocks if other.module is block.module and other.path != block.path]
    if others:
        raise LayerSyncError(
            f"Block {block.path!r} (depth {block.depth}) is the same module object as {others}: the model calls it "
            "at each of these positions, and a hook on it cannot tell which call is which. Choose a block whose "
            "module appears once in the stacks."
        )


def _register(register: Callable, hook: _Hook, **options) -> Any:
    handle = register(hook, **options)
    hook.id = handle.id
    return handle


class BlockCapture:
    r"""
    The target-token activations of any set of blocks, from each training forward. LayerSync is built on it;
    other representation regularizers (REPA- or CREPA-style) can use it directly. Captures of the same model
    share one hook per block and one buffer.

    Args:
        model (`nn.Module`): The model (a diffusers transformer; DDP, FSDP, compile and PEFT wrappers are unwrapped).
        blocks (`Sequence[int | str]`): 1-based depths (0 = first block, negative from the end) or block paths.
        layout (`BlockLayout`, *optional*): Overrides the layout table for this model.
        training_module (`nn.Module`, *optional*): The module whose forward is the training forward, when the
            training loop never calls `model`'s own forward (DiffSynth-Studio calls the DiT's blocks from its
            training module). Defaults to `model`.
        on_stored (`callable`, *optional*): `on_stored(path)` is called inside the training forward each time a
            block of this capture is stored, e.g. to fold what is needed of it early and `release` the rest.

    Example:
        ```python
        >>> capture = BlockCapture(transformer, blocks=[8, 16])
        >>> model_pred = transformer(**inputs).sample
        >>> activations = capture.pop()      # {"transformer_blocks.7": Activation(hidden, mask), ...}
        ```
    """

    def __init__(
        self,
        model: nn.Module,
        blocks: Sequence[Union[int, str, Block]],
        *,
        layout: Optional[BlockLayout] = None,
        training_module: Optional[nn.Module] = None,
        on_stored: Optional[Callable[[str], None]] = None,
    ):
        check_torch()
        check_not_compiled_yet(model)
        root = unwrap(model)
        self.model_name = type(root).__name__
        self.layout = layout_for(root, layout)
        self.all_blocks = list_blocks(root, self.layout)
        chosen: dict[str, Block] = {}
        for ref in blocks:
            block = (
                ref
                if isinstance(ref, Block)
                else resolve(ref, self.all_blocks, name="block", model_name=self.model_name)
            )
            chosen.setdefault(block.path, block)
        if not chosen:
            raise LayerSyncError("`BlockCapture` needs at least one block, got none.")
        self.blocks: tuple[Block, ...] = tuple(chosen.values())
        for block in self.blocks:
            _check_called_once(block, self.all_blocks)
        self._paused = 0
        self.on_stored = on_stored
        trainer = unwrap(training_module) if training_module is not None else root
        self._engine: Optional[_Engine] = _Engine.of(root, trainer)
        self._engine.add(self)

    @property
    def is_paused(self) -> bool:
        """Whether a `paused()` block is open: this capture takes nothing from the forwards inside it."""
        return self._paused > 0

    @property
    def attached(self) -> bool:
        """Whether the hooks are in place (until `remove()`)."""
        return self._engine is not None

    @property
    def has_activations(self) -> bool:
        """Whether a training forward has left activations of every block that `pop()` has not taken yet."""
        return self._engine is not None and self._engine.ready(self)

    def pop(
        self, blocks: Optional[Sequence[str]] = None, *, caller: str = "BlockCapture.pop()"
    ) -> dict[str, Activation]:
        """The target tokens of each block (or of the block paths given) from the last training forward; releases
        them. Call once per forward."""
        engine = self._require_engine(caller)
        paths = [b.path for b in self.blocks] if blocks is None else list(blocks)
        stored = engine.take(self, paths, caller)
        return self._select(stored, engine.call_of_model())

    def peek(self, blocks: Sequence[str], *, caller: str = "BlockCapture.peek()") -> dict[str, Activation]:
        """The target tokens of these block paths from the current training forward, without releasing them."""
        engine = self._require_engine(caller)
        return self._select(engine.peek(self, list(blocks), caller), engine.model_call)

    def release(self, blocks: Sequence[str]) -> None:
        """Give up these block paths' outputs of the current training forward (freed once no capture needs them)."""
        engine = self._require_engine("BlockCapture.release()")
        engine.take(self, [path for path in blocks if engine.stored(self, [path])], "BlockCapture.release()")

    def is_stored(self, blocks: Sequence[str]) -> bool:
        """Whether the current training forward has stored these block paths, not yet taken."""
        return self._engine is not None and self._engine.stored(self, list(blocks))

    @property
    def forwards(self) -> int:
        """How many training forwards were captured so far (tells one forward's outputs from the next's)."""
        return self._engine.forwards if self._engine is not None else 0

    def _require_engine(self, caller: str) -> _Engine:
        if self._engine is None:
            raise LayerSyncError(f"`{caller}` was called after `remove()`; the hooks are gone.")
        return self._engine

    def _select(self, stored: dict[str, Stored], model_call) -> dict[str, Activation]:
        blocks = {b.path: b for b in self.blocks}
        return {path: select(blocks[path], *item, self._engine.root(), model_call) for path, item in stored.items()}

    @contextlib.contextmanager
    def paused(self):
        """Capture nothing inside this block (validation, reference passes, sampling)."""
        self._paused += 1
        try:
            yield self
        finally:
            self._paused -= 1

    def remove(self) -> None:
        """Remove this capture's hooks (those shared with another capture stay until it is removed too)."""
        if self._engine is not None:
            self._engine.discard(self)
            self._engine = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()

    def __deepcopy__(self, memo):
        raise copy_refused(self)

    def __reduce_ex__(self, protocol):
        raise copy_refused(self)

    def __repr__(self):
        blocks = ", ".join(f"{b.path} (depth {b.depth})" for b in self.blocks)
        state = "removed" if self._engine is None else "paused" if self._paused else "attached"
        return f"BlockCapture({self.model_name}: {blocks}; {state})"
