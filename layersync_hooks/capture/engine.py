"""`BlockCapture`: the target tokens of chosen blocks from each recorded forward, through native forward hooks.

A capture owns its hooks, as baukit's `Trace` does: a forward pre-hook and an always-called forward hook on the
training module (the model, or an outer module whose forward runs the model's blocks) and a forward hook per block.
The pre-hook asks the capture's gate (`gates.py`) whether the call is one to record and opens a record; each block
hook stores the raw output object of the block's first call inside it and returns None, so outputs never change;
the forward hook closes the record. When every block has run, the capture hands their tokens to the `fold`
function it was given, inside the forward, and keeps what `fold` returns instead of the outputs: nothing it holds
keeps an activation alive longer than autograd would. `pop()` hands the records over. Nothing calls back into the
capture. docs/how-it-works.md walks through it.

Under reentrant checkpointing a block's hook runs under no_grad, and only the exact output object later receives a
`grad_fn`: the capture stores that object and cuts tokens out of it only later (when the last block has run, or at
`pop()`). The last block's own tokens reach `fold` before that block has returned (LayerSync's teacher: detached
anyway).
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
from .block_arguments import argument_picker
from .blocks import Block, list_blocks, resolve, unwrap
from .compiled import check_not_compiled_yet, checkpointing_hint
from .gates import Gate, tensors, training_forward
from .selection import Activation, select
from .torch_internals import check_torch, in_backward, never_compiled_alone, remove_hook

logger = logging.getLogger(__name__)


class Stored(NamedTuple):
    """One block's raw output, and the block arguments its token rule reads."""

    output: Any
    block_arguments: Optional[dict[str, Any]]


class _Record:
    """One recorded forward: the raw outputs stored so far, the model's call (for token rules that read its
    arguments), and, once every block has run and been folded, what `fold` returned."""

    def __init__(self, model_call: Optional[tuple[tuple, dict]]):
        self.stored: Optional[dict[str, Stored]] = {}  # None once folded
        self.model_call = model_call
        self.folded: Any = None
        self.graph: Optional[weakref.ref] = None  # alive while the forward's graph is (None: no graph to watch)
        self.backpropagated = False  # a backward ran through its graph before pop() took it: it is over


class _GraphWatch:
    """A backward hook on a recorded forward's outputs. It lives on their graph nodes, so it lives exactly as long as
    the graph does (the record holds it weakly), and it notes when a backward goes through them."""

    def __init__(self, record: _Record):
        self.record = weakref.ref(record)
        record.graph = weakref.ref(self)

    def __call__(self, grad: torch.Tensor) -> None:
        record = self.record()
        if record is not None:
            record.backpropagated = True


class _Hook:
    """A hook bound to its capture.

    Copied with its module (`copy.deepcopy(model)` for an EMA copy, pickling for `torch.save(model)`), it becomes
    `_Inert`: a copy must never capture and must stay picklable. A deep copy is also reported to the capture, which
    takes the inert hooks off the copy at its next recorded forward or at `remove()`.
    """

    def __init__(self, capture: BlockCapture, module: nn.Module, function: Callable, *bound: Any):
        self.capture, self.module = capture, weakref.ref(module)
        self.function, self.bound = function, bound
        self.id: Optional[int] = None  # the hook's key in the module's hook dicts, set once registered

    def __call__(self, *args):
        return self.function(*self.bound, *args)

    def __deepcopy__(self, memo):
        copied = memo.get(id(self.module()))  # deepcopy records the module's copy before copying its hook dicts
        if copied is not None:
            self.capture._copies.append((weakref.ref(copied), self.id))
        return _Inert(self.id)

    def __reduce__(self):
        return _Inert, (self.id,)


class _Inert:
    """What a copy of the model holds in place of a capture's hook: it does nothing and removes itself when called."""

    def __init__(self, hook_id: Optional[int]):
        self.hook_id = hook_id

    def __call__(self, module, *args):
        remove_hook(module, self.hook_id)
        return None


class BlockCapture:
    r"""
    The target tokens of a set of blocks, from each training forward. LayerSync is built on it (one capture per
    student/teacher pair); other representation regularizers (REPA- or CREPA-style) can use it directly.

    Args:
        model (`nn.Module`): The model (DDP, FSDP, compile and PEFT wrappers are unwrapped).
        blocks (`Sequence[int | str]`): 1-based depths (0 = first block, negative from the end) or block paths.
        layout (`BlockLayout`, *optional*): Overrides the layout table for this model.
        training_module (`nn.Module`, *optional*): The module whose forward is the training forward, when the
            training loop never calls `model`'s own forward (DiffSynth-Studio calls the DiT's blocks from its
            training module). Defaults to `model`.
        gate (`Gate`, defaults to `training_forward`): Which forwards to record (`capture/gates.py`): training
            forwards (gradients enabled, an output that depends on something that trains, in train or eval mode), or
            `any_forward`.
        fold (`callable`, *optional*): `fold({path: Activation}) -> value`, called inside the forward once every
            block has run; the capture keeps the value instead of the blocks' outputs, and `pop()` returns it.

    Example:
        ```python
        >>> capture = BlockCapture(transformer, blocks=[8, 16])
        >>> model_pred = transformer(**inputs).sample
        >>> (activations,) = capture.pop()  # one entry per recorded forward: {"transformer_blocks.7": Activation}

    Every training forward since the last `pop()` is handed over (a trainer may run several before one backward:
    one per sample, or micro-batches); one whose graph a backward has already gone through is dropped.
        ```
    """

    def __init__(
        self,
        model: nn.Module,
        blocks: Sequence[Union[int, str, Block]],
        *,
        layout: Optional[BlockLayout] = None,
        training_module: Optional[nn.Module] = None,
        gate: Gate = training_forward,
        fold: Optional[Callable[[dict[str, Activation]], Any]] = None,
    ):
        check_torch()
        check_not_compiled_yet(model)
        root = unwrap(model)
        self._name = type(root).__name__
        self.all_blocks = list_blocks(root, layout_for(root, layout))
        chosen: dict[str, Block] = {}
        for ref in blocks:
            block = (
                ref if isinstance(ref, Block) else resolve(ref, self.all_blocks, name="block", model_name=self._name)
            )
            chosen.setdefault(block.path, block)
        if not chosen:
            raise LayerSyncError("`BlockCapture` needs at least one block, got none.")
        self.blocks: tuple[Block, ...] = tuple(chosen.values())
        for block in self.blocks:
            _check_called_once(block, self.all_blocks)
        # The fold is plain eager code: under regional compilation a hook runs as an eager frame inside a compiled
        # block call, and Dynamo would otherwise try to compile `fold` as a frame of its own.
        self._gate, self._fold = gate, torch.compiler.disable(fold) if fold is not None else None
        self._root = weakref.ref(root)
        self._trainer = weakref.ref(unwrap(training_module) if training_module is not None else root)
        # the block arguments each token rule reads: picked at hook time, by position resolved once here
        self._pickers = {
            b.path: argument_picker(b.module, b.stack.block_args) for b in self.blocks if b.stack.block_args
        }
        self._reads_model = any(b.stack.reads_inputs for b in self.blocks)
        self._paused = 0
        self._open: Optional[_Record] = None  # the forward running now
        self._opener: Optional[weakref.ref] = None  # the module whose call opened it: its return closes it
        self._records: list[_Record] = []  # recorded forwards not yet popped, oldest first
        self._why_none = (
            f"No training forward of {self._name} has run since the hooks were attached. (A model compiled whole "
            "with torch.compile before attaching never runs hooks added later.)"
        )
        self._outside = 0  # block calls with gradients outside any call of the training module, since the last pop()
        self._copies: list[tuple[weakref.ref, int]] = []  # (a deep copy of a hooked module, the inert hook's id)
        self._handles: Optional[list] = self._register()

    def _register(self) -> list:
        handles = []
        # The model's call opens a record; so does the training module's, when one is given: DiffSynth-Studio's runs
        # the blocks itself and never calls the model, while a wrapper such as sd-scripts' DeepSpeedWrapper is
        # never called and the model is. Nested, the outer call opens the record and the inner one is kept.
        for module in dict.fromkeys((self._trainer(), self._root())):
            handles += [
                _register(module.register_forward_pre_hook, _Hook(self, module, self._on_call), with_kwargs=True),
                _register(module.register_forward_hook, _Hook(self, module, self._on_return), with_kwargs=True,
                          always_call=True),
            ]  # fmt: skip
        for block in self.blocks:
            hook = _Hook(self, block.module, self._on_block_output, block.path)
            handles.append(_register(block.module.register_forward_hook, hook, with_kwargs=True))
            logger.debug("Hooked %s.%s (depth %d)", self._name, block.path, block.depth)
        return handles

    # -- hooks ---------------------------------------------------------------------------------------------------
    def _on_call(self, module, args, kwargs):
        if in_backward():  # checkpointing recomputes a recorded forward: nothing to record
            return None
        if self._copies:
            self._purge_copies()
        record = self._open
        if record is not None and self._opener() is not module:  # the model inside the training module's call
            if self._reads_model and module is self._root() and record.model_call is None:
                record.model_call = (args, kwargs)
            return None
        # An open record here means the last forward never returned: a BaseException (KeyboardInterrupt,
        # SystemExit) skips the always-called hook. Its blocks must not pair with this forward's: dropped.
        self._open = None
        reason = "capture was paused" if self._paused else self._gate.at_call(module)
        if reason is not None:
            self._why_none = f"The last call of {self._name} was not captured because {reason}."
            return None
        self._drop_finished()  # what they hold could only pin memory
        self._open = _Record((args, kwargs) if self._reads_model and module is self._root() else None)
        self._opener = weakref.ref(module)
        return None

    def _on_block_output(self, path, module, args, kwargs, output):
        record = self._open
        if record is None and not self._paused and torch.is_grad_enabled() and not in_backward():
            self._outside += 1  # a block run with gradients outside the training module's forward: told at pop()
        if record is None or record.stored is None or path in record.stored:
            return None  # not recording, or not the block's first call in this forward
        picker = self._pickers.get(path)
        record.stored[path] = Stored(output, picker(args, kwargs) if picker is not None else None)
        # A whole-model compiled graph keeps its own schedule: fold at pop(), outside it.
        if self._fold is not None and len(record.stored) == len(self.blocks) and not torch.compiler.is_compiling():
            # Under reentrant checkpointing this hook runs under no_grad, while the earlier blocks' outputs already
            # have their grad_fn. Inside a non-reentrant checkpointed block, tensors saved here must not count as
            # the block's own: its recomputation, where nothing is recorded, would save fewer.
            with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(_keep, _keep):
                record.folded = self._fold(self._tokens(record))
            record.stored = None  # what fold returned replaces the outputs
        return None

    def _on_return(self, module, args, kwargs, output):
        if self._open is None or self._opener() is not module:
            return None  # not recording, or the inner call of a nested pair
        record, self._open = self._open, None
        missing = [b.path for b in self.blocks if b.path not in record.stored] if record.stored is not None else []
        if output is None:  # an always-called hook gets no output only when the forward raised
            self._why_none = f"An exception stopped the last training forward of {self._name}."
        elif missing:
            self._why_none = checkpointing_hint(self._root()) or (
                f"The last training forward of {self._name} did not call {', '.join(map(repr, missing))}."
            )
        elif (reason := self._gate.at_return(output)) is not None:
            self._why_none = f"The last call of {self._name} was not captured because {reason}."
        else:
            self._records.append(record)
            graph = [t for t in tensors(output) if t.requires_grad] if not torch.compiler.is_compiling() else []
            if graph:
                watch = _GraphWatch(record)
                for tensor in graph:
                    tensor.register_hook(watch)
        return None

    def _drop_finished(self) -> None:
        """When a new training forward starts, forget the earlier records that ended without `pop()`: a backward went
        through them (their graph is spent), or the script let go of their outputs (nothing will use them, and an
        unused forward must not pin its graph). Until then a record stays: a script may take the term after a
        backward that kept the graph, or after dropping its output."""
        kept = [
            record
            for record in self._records
            if not record.backpropagated and not (record.graph is not None and record.graph() is None)
        ]
        if len(kept) < len(self._records):
            self._why_none = (
                f"The training forwards of {self._name} recorded since the last call ended before it: a backward went "
                "through them, or their outputs were let go of before the next forward."
            )
        self._records = kept

    # -- taking the records ----------------------------------------------------------------------------------------
    @property
    def captured(self) -> int:
        """How many recorded forwards `pop()` would hand over."""
        return len(self._records)

    def pop(self) -> list:
        """What each forward recorded since the last call, oldest first, and releases it: per forward, `fold`'s
        value, or without `fold` the target tokens of each block (`{path: Activation}`). Called inside the training
        module's forward once every block has run, it hands that forward over too."""
        if self._handles is None:
            raise LayerSyncError("`BlockCapture.pop()` was called after `remove()`; the hooks are gone.")
        if self._open is not None and _complete(self._open, self.blocks):
            # Taken inside the training module's own forward, after every block has run (DiffSynth-Studio's
            # training modules add their losses there): the forward is recorded as far as the capture goes.
            self._records.append(self._open)
            self._open = None
        if not self._records:
            names = ", ".join(repr(b.path) for b in self.blocks)
            why = self._why_none
            if self._open is not None:
                why = f"The forward of {self._name} has not returned yet (or an exception stopped it)."
            if self._outside:
                why += (
                    f" Its blocks ran {self._outside} times with gradients outside any call of {self._name}: a "
                    "pipeline engine, or a training loop that calls the blocks itself, runs them. Pass "
                    "`training_module=` the module whose forward runs them."
                )
            raise MissingActivationsError(
                f"No activations from {names} to take. {why} Run the model's training forward before "
                "taking them (`LayerSync.loss()`, `BlockCapture.pop()`), once per backward."
            )
        records, self._records, self._outside = self._records, [], 0
        self._why_none = "Its activations were already used since the last training forward."
        return [self._taken(record) for record in records]

    def _taken(self, record: _Record) -> Any:
        """What the record hands over; it keeps nothing after (its graph may hold it a while longer)."""
        if record.stored is None:
            taken = record.folded
        else:
            tokens = self._tokens(record)
            taken = tokens if self._fold is None else self._fold(tokens)
        record.stored, record.folded, record.model_call = None, None, None
        return taken

    def _tokens(self, record: _Record) -> dict[str, Activation]:
        root = self._root()
        return {b.path: select(b, *record.stored[b.path], root, record.model_call) for b in self.blocks}

    # -- lifecycle -------------------------------------------------------------------------------------------------
    @property
    def attached(self) -> bool:
        """Whether the hooks are in place (until `remove()`)."""
        return self._handles is not None

    @contextlib.contextmanager
    def paused(self):
        """Record nothing inside this block (validation, reference passes, sampling)."""
        self._paused += 1
        try:
            yield self
        finally:
            self._paused -= 1

    def remove(self) -> None:
        """Remove every hook of this capture and release what it holds."""
        for handle in self._handles or ():
            handle.remove()
        self._handles, self._open, self._records = None, None, []
        self._purge_copies()

    def _purge_copies(self) -> None:
        """Take the inert hooks off the deep copies made of hooked modules (an EMA copy carries no stale hook)."""
        for copied, hook_id in self._copies:
            if copied() is not None:
                remove_hook(copied(), hook_id)
        self._copies.clear()

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
        state = "removed" if self._handles is None else "paused" if self._paused else "attached"
        return f"BlockCapture({self._name}: {blocks}; {state})"


# Dynamo inlines the hooks into a whole-model graph; under regional compilation they run as plain Python, never
# as compiled frames of their own (one per hooked block would reach the recompile limit).
for _code in (_Hook.__call__, BlockCapture._on_call, BlockCapture._on_return, BlockCapture._on_block_output):
    never_compiled_alone(_code)


def _complete(record: _Record, blocks: Sequence[Block]) -> bool:
    """Whether every block has run in this forward (folded, or each output stored)."""
    return record.stored is None or all(b.path in record.stored for b in blocks)


def _keep(tensor: torch.Tensor) -> torch.Tensor:
    """Saved-tensor hook that saves the tensor as autograd would without hooks."""
    return tensor


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
