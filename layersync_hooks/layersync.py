"""`LayerSync`: the object users attach to their transformer. Config + layout + capture + loss."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
import weakref
from typing import Any, Mapping, NamedTuple, Optional, Sequence, Union

import torch
import torch.distributed as dist
from torch import nn

from .capture import Block, BlockCapture, describe, list_blocks, resolve, unwrap
from .config import BlockRef, LayerSyncConfig, Pair
from .errors import BlockIndexError, LayerSyncConfigError, LayerSyncError, copy_refused
from .heuristic import default_teacher
from .layouts import BlockLayout, layout_for
from .loss import Folded, connect, fold, mean_cosine
from .schedule import WeightSchedule, ends_optimizer_step

logger = logging.getLogger(__name__)

# LayerSync's own file in an accelerate checkpoint folder (`register_with`).
STATE_FILE = "layersync_state.json"


class LayerSync:
    r"""
    Adds LayerSync to the training of a transformer through forward hooks: the student block's target tokens
    are pulled, by cosine similarity, toward the deeper teacher block's detached tokens of the same forward.

    Attach it before `accelerator.prepare` (and before a whole-model `torch.compile`); call `loss()` once after
    each training forward and add it to the task loss before `accelerator.backward`.

    Args:
        model (`nn.Module`): The transformer (DDP, FSDP, `torch.compile` and PEFT wrappers are unwrapped).
        student_block (`int` or `str`): 1-based depth over the model's stacks (0 = first block, negative from
            the end) or a block path such as `"single_transformer_blocks.3"`.
        teacher_block (`int` or `str`, *optional*): A deeper block; omitted, about twice the student depth.
        pairs (`list` of `(student, teacher)`, *optional*): Several pairs instead of `student_block` and
            `teacher_block`; every pair counts, the term is `-weight` times their mean similarity.
        weight (`float`, defaults to 0.2): The paper's lambda.
        warmup_steps (`int`, defaults to 0): Ramp the weight linearly over this many optimizer steps.
        stop_step (`int`, *optional*): Remove the hooks after this many optimizer steps; `loss()` is 0 after.
        enabled (`bool`, defaults to `True`): When `False`, nothing is registered and `loss()` is 0.
        layout (`BlockLayout`, *optional*): Overrides the layout table for this model.
        training_module (`nn.Module`, *optional*): The module whose forward is the training forward, when the
            training loop never calls `model`'s own forward (DiffSynth-Studio's training module calls the DiT's
            blocks itself). Defaults to `model`.

    Example:
        ```python
        >>> layersync = LayerSync(transformer, student_block=8, teacher_block=16, weight=0.2)
        >>> model_pred = transformer(**inputs).sample
        >>> loss = F.mse_loss(model_pred, target) + layersync.loss()
        >>> accelerator.backward(loss)
        >>> logs.update(layersync.metrics())
        ```
    """

    add_arguments = staticmethod(LayerSyncConfig.add_arguments)

    def __init__(
        self,
        model: nn.Module,
        *,
        student_block: Optional[BlockRef] = None,
        teacher_block: Optional[BlockRef] = None,
        pairs: Optional[Sequence[Pair]] = None,
        weight: float = 0.2,
        warmup_steps: int = 0,
        stop_step: Optional[int] = None,
        enabled: bool = True,
        layout: Optional[BlockLayout] = None,
        training_module: Optional[nn.Module] = None,
    ):
        config = LayerSyncConfig(
            enabled=enabled,
            student_block=student_block,
            teacher_block=teacher_block,
            weight=weight,
            pairs=pairs,
            warmup_steps=warmup_steps,
            stop_step=stop_step,
        )
        self._attach(model, config, layout, training_module)

    @classmethod
    def from_config(
        cls,
        model: nn.Module,
        config: Union[LayerSyncConfig, Mapping[str, Any], str, os.PathLike, Any],
        *,
        layout: Optional[BlockLayout] = None,
        training_module: Optional[nn.Module] = None,
    ) -> LayerSync:
        """Build from a `LayerSyncConfig`, a dict of seed/paper keys, a JSON path or preset name, or argparse
        results."""
        layersync = cls.__new__(cls)
        layersync._attach(model, LayerSyncConfig.load(config), layout, training_module)
        return layersync

    def _attach(
        self,
        model: nn.Module,
        config: LayerSyncConfig,
        layout: Optional[BlockLayout],
        training_module: Optional[nn.Module],
    ) -> None:
        self.config = config
        # A disabled LayerSync has weight 0 at every step.
        self.schedule = (
            WeightSchedule(config.weight, config.warmup_steps, config.stop_step)
            if config.enabled
            else WeightSchedule(0.0)
        )
        self.model = unwrap(model)
        # The wrapper, if any (weakly: LayerSync must not keep a DDP or compiled wrapper alive): re-attaching
        # checks it for a whole-model compile.
        self._given_model = weakref.ref(model)
        self._training_module = weakref.ref(training_module) if training_module is not None else None
        self._step = 0  # optimizer steps (see schedule.py), saved by state_dict()
        self._targets_checked = False  # whether a loss() has checked that the token rules select tokens
        self._folded: dict[int, _FoldedPair] = {}  # pair index -> folded in the training forward numbered below
        self._folded_forward = -1
        self._removed = False
        self._capture: Optional[BlockCapture] = None
        self._reset_metrics()
        self.pairs: tuple[tuple[Block, Block], ...] = ()
        if not config.enabled:
            logger.info("LayerSync is disabled: no hooks registered, loss() is 0.")
            return
        self._layout = layout_for(self.model, layout)
        self.pairs = _resolve_pairs(config.pairs, self.model, self._layout)
        self._sync_hooks()
        for s, t in self.pairs:
            logger.info("LayerSync on %s: student %s (depth %d) <- teacher %s (depth %d), weight %g",
                        type(self.model).__name__, s.path, s.depth, t.path, t.depth, config.weight)  # fmt: skip

    # -- state ---------------------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """`"disabled"` (the config is off), `"attached"`, `"stopped"` (past `stop_step`) or `"removed"`.

        Only an attached LayerSync has hooks; `loss()`, `load_state_dict()` and `repr` all follow this.
        """
        if not self.config.enabled:
            return "disabled"
        if self._removed:
            return "removed"
        return "stopped" if self.schedule.stopped(self._step) else "attached"

    def _sync_hooks(self) -> None:
        """Hooks in place exactly while attached."""
        if self.state == "attached" and self._capture is None:
            blocks = [block for pair in self.pairs for block in pair]  # shared blocks are hooked once
            given = self._given_model()
            trainer = self._training_module() if self._training_module is not None else None
            self._capture = BlockCapture(
                given if given is not None else self.model,
                blocks,
                layout=self._layout,
                training_module=trainer,
                on_stored=self._fold_in_forward,
            )
        elif self.state != "attached" and self._capture is not None:
            self._capture.remove()
            self._capture = None

    @property
    def step(self) -> int:
        """Optimizer steps counted so far (saved by `state_dict`)."""
        return self._step

    @property
    def stopped(self) -> bool:
        """Whether the schedule's `stop_step` has passed: the hooks are gone and `loss()` is 0."""
        return self.state == "stopped"

    @property
    def weight(self) -> float:
        """The weight of the current optimizer step, after the warm-up and stop schedule."""
        return self.schedule.at(self._step)

    @property
    def has_activations(self) -> bool:
        """Whether a training forward has run whose term `loss()` has not built yet."""
        if self._capture is None:
            return False
        folded_now = bool(self._folded) and self._folded_forward == self._capture.forwards
        return folded_now or self._capture.has_activations

    @property
    def student(self) -> Optional[Block]:
        """The first pair's student block (None when disabled)."""
        return self.pairs[0][0] if self.pairs else None

    @property
    def teacher(self) -> Optional[Block]:
        """The first pair's teacher block (None when disabled)."""
        return self.pairs[0][1] if self.pairs else None

    # -- the term --------------------------------------------------------------------------------------------
    def loss(self) -> torch.Tensor:
        """The weighted LayerSync term of the last training forward, a 0-dim float32 tensor.

        No host sync, except once, at the first call of the run, for layouts whose token rules select tokens with
        a mask: a forward whose inputs select no target token at all (e.g. Flux position ids unlike the
        pipeline's) is an error there, not a silent zero term.
        """
        state = self.state
        if state == "removed":
            raise LayerSyncError("`LayerSync.loss()` was called after `remove()`; the hooks are gone.")
        if state != "attached":
            self._count_step()
            return torch.zeros((), device=self._device())
        folded = self._take_pairs()
        self._check_students_learn(folded)
        masks = [folded[i].folded.mask for i in range(len(self.pairs))]
        similarities = [mean_cosine(folded[i].cosine, masks[i]) for i in range(len(self.pairs))]
        similarity = similarities[0] if len(similarities) == 1 else torch.stack(similarities).mean()
        weight = self.weight
        term = -weight * similarity
        per_pair = similarities if len(similarities) > 1 else []
        unaligned = _unaligned_share(masks, term)
        if not self._targets_checked and any(mask is not None for mask in masks):
            self._check_aligned(float(unaligned), "in the first training forward")  # the one host sync
        self._targets_checked = True
        stats = torch.stack([term, similarity, unaligned, *per_pair]).detach()
        self._sums = stats if self._sums is None else self._sums + stats
        self._weights += weight
        self._count += 1
        self._count_step()
        return term

    def _take_pairs(self) -> dict[int, _FoldedPair]:
        """Every pair of the last training forward, folded and connected to its student's graph: those the forward
        folded, and the others (a whole-model compiled graph, a student without a grad_fn yet) from the buffer."""
        folded = self._folded if self._folded_forward == self._capture.forwards else {}
        self._folded = {}
        left = {path for i, pair in enumerate(self.pairs) for path in _paths_needed(pair, folded.get(i))}
        tokens = self._capture.pop(sorted(left), caller="LayerSync.loss()")
        for i, (student, teacher) in enumerate(self.pairs):
            if i in folded and folded[i].cosine is not None:
                continue
            hidden = tokens[student.path].hidden
            if i in folded:
                pair = folded[i].folded
            else:
                mask = _both(tokens[student.path].mask, tokens[teacher.path].mask)
                pair = fold(hidden, tokens[teacher.path].hidden, mask=mask, with_grad=hidden.requires_grad)
            folded[i] = _FoldedPair.connected(pair, hidden)
        return folded

    def _fold_in_forward(self, path: str) -> None:
        """Inside the training forward, when a block is stored: fold every pair whose student and teacher have both
        run, connect it to the student's graph, and release what no pair still needs, so both outputs are freed
        like any activation autograd does not keep (a Flux single-stream teacher would otherwise hold its whole
        text+image tensor, and a student that feeds only a `cat` its own output, until the loss)."""
        capture = self._capture
        if capture is None or torch.compiler.is_compiling():  # a whole-model graph keeps its own schedule: fold later
            return
        if self._folded_forward != capture.forwards:
            self._folded, self._folded_forward = {}, capture.forwards
        for i, (student, teacher) in enumerate(self.pairs):
            if i in self._folded or path not in (student.path, teacher.path):
                continue
            if not capture.is_stored([student.path, teacher.path]):
                continue
            # Under reentrant checkpointing the hook runs under no_grad, but the student's output, from an earlier
            # block, already has its grad_fn (without one yet, a checkpointed root, it connects at loss()). Inside a
            # non-reentrant checkpointed block, tensors saved here must not count as the block's own: its
            # recomputation, where nothing is captured, would save fewer.
            with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(_keep, _keep):
                try:
                    tokens = capture.peek([student.path, teacher.path], caller="LayerSync")
                    mask = _both(tokens[student.path].mask, tokens[teacher.path].mask)
                    pair = fold(tokens[student.path].hidden, tokens[teacher.path].hidden, mask=mask)
                except Exception:  # loss() folds it again and raises the error where users expect it
                    return
                self._folded[i] = _FoldedPair.connected(pair, tokens[student.path].hidden)
        needed = {p for i, pair in enumerate(self.pairs) for p in _paths_needed(pair, self._folded.get(i))}
        capture.release([p for pair in self.pairs for p in (pair[0].path, pair[1].path) if p not in needed])

    def _check_students_learn(self, folded: Mapping[int, _FoldedPair]) -> None:
        """A student whose tokens need no gradient (it and everything before it frozen) would train nothing."""
        frozen = [self.pairs[i][0] for i, pair in folded.items() if pair.cosine is None]
        if frozen:
            raise LayerSyncError(_no_gradient_message(frozen, self._capture.all_blocks, type(self.model).__name__))

    def _count_step(self) -> None:
        if ends_optimizer_step():
            self._step += 1
            if self.state == "stopped" and self._capture is not None:
                logger.info("LayerSync stopped after %d optimizer steps (stop_step): hooks removed.", self._step)
            self._sync_hooks()

    def _device(self) -> Optional[torch.device]:
        parameter = next(self.model.parameters(), None)
        return parameter.device if parameter is not None else None

    # -- metrics ---------------------------------------------------------------------------------------------
    def _reset_metrics(self) -> None:
        self._sums: Optional[torch.Tensor] = None  # running (loss, similarity, unaligned, per pair...) sums
        self._weights = 0.0
        self._count = 0

    def metrics(self, *, sync: bool = True) -> dict[str, float]:
        """`{"layersync_loss", "layersync_similarity"}`: means over the `loss()` calls since the last call.

        With several pairs, `layersync_similarity/8-16` (student and teacher depths) for each pair too; with a
        warm-up, `layersync_weight`. With several processes the values are averaged over every rank's calls (one
        all-reduce), so call it on every rank, as diffusers scripts do with their `logs`: every rank joins the
        same all-reduce whatever it did since its last call. `sync=False` reads this rank's values only.
        """
        if not self.pairs:
            return {}
        size = 3 + (len(self.pairs) if len(self.pairs) > 1 else 0)
        sums = self._sums if self._sums is not None else torch.zeros(size, device=self._device())
        totals = torch.cat([sums, sums.new_tensor([self._weights, self._count])])
        self._reset_metrics()
        if sync and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(totals, op=dist.ReduceOp.SUM)
        *values, weights, count = totals.tolist()
        if count == 0:
            return {}
        loss, similarity, unaligned, *per_pair = (value / count for value in values)
        self._check_aligned(unaligned)
        logs = {"layersync_loss": loss, "layersync_similarity": similarity}
        for (student, teacher), value in zip(self.pairs, per_pair):
            logs[f"layersync_similarity/{student.depth}-{teacher.depth}"] = value
        if self.config.warmup_steps:
            logs["layersync_weight"] = weights / count
        return logs

    def _check_aligned(self, share: float, when: str = "since the last metrics()") -> None:
        """Token rules read the model's inputs; inputs unlike the pipeline's can select no target token."""
        if share == 0:
            return
        rules = "; ".join(
            sorted({f"{b.stack.path}: {b.stack.rule}" for pair in self.pairs for b in pair if b.stack.rule is not None})
        )
        message = (
            f"LayerSync's token rules ({rules}) selected no target token in {share:.0%} of the samples {when}, "
            f"so those samples got no LayerSync gradient. The rules read the model's "
            "inputs: pass them as the family's diffusers pipeline builds them (e.g. Flux `img_ids[..., 0]` "
            "is 0 on the target image), or give `layout=` a rule that fits your inputs."
        )
        if share >= 1:  # nothing was aligned at all: LayerSync is a silent no-op
            raise LayerSyncError(message)
        warnings.warn(message, stacklevel=3)

    # -- lifecycle -------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def paused(self):
        """Capture nothing inside this block, e.g. around validation or a reference forward."""
        with self._capture.paused() if self._capture is not None else contextlib.nullcontext():
            yield self

    def remove(self) -> None:
        """Remove every hook; the model behaves exactly as before attaching."""
        self._removed = True
        self._sync_hooks()

    def register_with(self, accelerator: Any) -> tuple:
        """Keep LayerSync's step in accelerate's checkpoints: `save_state` writes `layersync_state.json` beside
        accelerate's files (main process only), and `load_state` reads it back when it is there.

        Unlike `accelerator.register_for_checkpointing(layersync)`, it changes nothing accelerate counts: a
        checkpoint written without LayerSync still resumes (at step 0), and one written with it resumes at its
        step. Returns the two hook handles (`handle.remove()` undoes it). A disabled LayerSync registers nothing.
        """
        if not self.config.enabled:
            return ()

        def save(models, weights, output_dir):
            if accelerator.is_main_process:  # no collective: save_state often runs on the main process only
                os.makedirs(output_dir, exist_ok=True)
                with open(os.path.join(output_dir, STATE_FILE), "w", encoding="utf-8") as f:
                    json.dump(self.state_dict(), f)

        def load(models, input_dir):
            path = os.path.join(input_dir, STATE_FILE)
            if not os.path.isfile(path):
                logger.info("No %s in %s (written without LayerSync): LayerSync starts at step 0.", STATE_FILE,
                            input_dir)  # fmt: skip
                state = {**self.state_dict(), "step": 0}  # the checkpoint's state: before LayerSync ran
            else:
                state = _read_state(path)
            self.load_state_dict(state)

        return accelerator.register_save_state_pre_hook(save), accelerator.register_load_state_pre_hook(load)

    def state_dict(self) -> dict[str, Any]:
        """For `save_state`: the optimizer step count, the blocks it aligns and the weight."""
        return {"step": self._step, "pairs": [[s.path, t.path] for s, t in self.pairs], "weight": self.config.weight}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the state saved by `state_dict` (accelerate's `load_state`). Past `stop_step`, the hooks go."""
        step = state.get("step") if isinstance(state, Mapping) else None
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise LayerSyncConfigError(
                f"A LayerSync state needs `step`, the optimizer steps done, as an integer >= 0; got "
                f"{state!r}. Pass a state saved by `LayerSync.state_dict()`."
            )
        saved = state.get("pairs", [[state.get("student"), state.get("teacher")]])  # also the 0.1.0 form
        ours = self.state_dict()
        if [list(pair) for pair in saved] != ours["pairs"] or state.get("weight", ours["weight"]) != ours["weight"]:
            warnings.warn(
                f"Restoring LayerSync state saved for blocks {saved} with weight {state.get('weight')} into one on "
                f"{ours['pairs']} with weight {ours['weight']}: the step count is restored, the config's blocks and "
                "weight are kept.",
                stacklevel=2,
            )
        self._step = step
        self._sync_hooks()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()

    def __deepcopy__(self, memo):
        raise copy_refused(self)

    def __reduce_ex__(self, protocol):
        raise copy_refused(self)

    def __repr__(self):
        name = type(self.model).__name__
        if not self.pairs:
            return f"LayerSync({name}, {self.state})"
        pairs = ", ".join(
            f"student={s.path} (depth {s.depth}) <- teacher={t.path} (depth {t.depth})" for s, t in self.pairs
        )
        return f"LayerSync({name}, {pairs}, weight={self.config.weight}, {self.state})"


def _read_state(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as error:  # a truncated or hand-edited file
        raise LayerSyncConfigError(
            f"Cannot read LayerSync's state {path} ({type(error).__name__}: {error}). Restore the file from the "
            "checkpoint, or delete it to resume with LayerSync at step 0."
        ) from None


def _keep(tensor: torch.Tensor) -> torch.Tensor:
    """Saved-tensor hook that saves the tensor as autograd would without hooks."""
    return tensor


class _FoldedPair(NamedTuple):
    """A pair folded in the forward: its `Folded` values, and its per-token cosine connected to the student's graph
    (None until the student has a grad_fn, or when it needs no gradient)."""

    folded: Folded
    cosine: Optional[torch.Tensor]

    @classmethod
    def connected(cls, folded: Folded, student: torch.Tensor) -> _FoldedPair:
        return cls(folded, connect(student, folded) if student.requires_grad else None)


def _paths_needed(pair: tuple[Block, Block], folded: Optional[_FoldedPair]) -> tuple[str, ...]:
    """The block paths `loss()` still needs of a pair: none once folded and connected, the student when only
    folded, both otherwise."""
    if folded is None:
        return pair[0].path, pair[1].path
    return () if folded.cosine is not None else (pair[0].path,)


def _resolve_pairs(pairs: Sequence[Pair], model: nn.Module, layout: BlockLayout) -> tuple[tuple[Block, Block], ...]:
    """The config's pairs as blocks of `model`: each checked, no pair twice, UNet pairs at one resolution level."""
    blocks = list_blocks(model, layout)
    resolved = tuple(_resolve_pair(student, teacher, blocks, type(model).__name__) for student, teacher in pairs)
    if len({(s.path, t.path) for s, t in resolved}) != len(resolved):
        raise LayerSyncConfigError(f"`pairs={list(pairs)}` name the same blocks twice; keep each once.")
    if layout.level is not None:
        for student, teacher in resolved:
            _check_same_level(student, teacher, model, layout.level)
    return resolved


def _resolve_pair(
    student_ref: BlockRef, teacher_ref: Optional[BlockRef], blocks: Sequence[Block], model_name: str
) -> tuple[Block, Block]:
    """Resolve a student and a deeper teacher; an omitted teacher is chosen by the paper heuristic and logged."""
    student = resolve(student_ref, blocks, name="student_block", model_name=model_name)
    if teacher_ref is not None:
        teacher = resolve(teacher_ref, blocks, name="teacher_block", model_name=model_name)
    else:
        depth = default_teacher(student.depth, len(blocks))
        if depth is None:
            raise BlockIndexError(
                f"LayerSync could not find layer: no teacher fits after student_block={student_ref!r} "
                f"(depth {student.depth}) in {model_name}, which has {describe(blocks)}: the teacher must be deeper "
                f"than the student and outside the last 20% of blocks. Pass `teacher_block` explicitly."
            )
        teacher = blocks[depth - 1]
        logger.info(
            "LayerSync teacher_block not given: chose depth %d (%s), about twice the student "
            "depth %d and outside the last 20%% of %d blocks.",
            depth,
            teacher.path,
            student.depth,
            len(blocks),
        )
    if teacher.depth <= student.depth:
        raise LayerSyncConfigError(
            f"`teacher_block` must be deeper than `student_block`, got student_block={student_ref!r} "
            f"({student.path}, depth {student.depth}), teacher_block={teacher_ref!r} "
            f"({teacher.path}, depth {teacher.depth}). An equal pair has exactly zero gradient."
        )
    return student, teacher


def _check_same_level(student: Block, teacher: Block, model: nn.Module, level) -> None:
    """In a UNet the tokens change shape from level to level; blocks of two levels cannot be compared."""
    levels = level(model, student.path), level(model, teacher.path)
    if levels[0] != levels[1]:
        raise LayerSyncConfigError(
            f"The student {student.path} (depth {student.depth}) works at resolution level {levels[0]} of "
            f"{type(model).__name__} and the teacher {teacher.path} (depth {teacher.depth}) at level {levels[1]}: "
            "their tokens differ in number and width, so they cannot be compared token by token. Choose a "
            "teacher at the student's level (`layersync-hooks layouts` lists the blocks)."
        )


def _no_gradient_message(frozen: Sequence[Block], blocks: Sequence[Block], model_name: str) -> str:
    trainable = [b for b in blocks if any(p.requires_grad for p in b.module.parameters())]
    students = ", ".join(f"{b.path} (depth {b.depth})" for b in frozen)
    if trainable:
        where = f"the blocks that train are at depths {_ranges([b.depth for b in trainable])}"
        fix = f"choose a student at depth {trainable[0].depth} or deeper (with a deeper teacher)"
    else:
        where = f"no block of {model_name} has a parameter that trains"
        fix = "train the blocks (or LoRA on them)"
    return (
        f"LayerSync's student {students} gets no gradient: neither it nor anything before it has a parameter "
        f"that trains, so the LayerSync term would change nothing. In this model {where}. To fix: {fix}, or "
        "train the student's block too (for LoRA, e.g. diffusers' `--lora_layers`)."
    )


def _ranges(depths: Sequence[int]) -> str:
    """'1-4, 9, 12-13' for sorted depths."""
    spans: list[list[int]] = []
    for depth in depths:
        if spans and depth == spans[-1][1] + 1:
            spans[-1][1] = depth
        else:
            spans.append([depth, depth])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _unaligned_share(masks: Sequence[Optional[torch.Tensor]], like: torch.Tensor) -> torch.Tensor:
    """The largest share of samples in which a pair's mask selects no token (0 without masks); no host sync."""
    shares = [(~mask.any(dim=1)).float().mean() for mask in masks if mask is not None]
    return torch.stack(shares).max() if shares else like.new_zeros(())


def _both(a: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Tokens that count in both masks (None = all tokens count)."""
    if a is None or b is None:
        return a if b is None else b
    return a & b
