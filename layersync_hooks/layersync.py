"""`LayerSync`: the object users attach to their transformer. Config + layout + capture + loss."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from typing import Any, Mapping, Optional, Sequence, Union

import torch
import torch.distributed as dist
from torch import nn

from .blocks import Block, list_blocks, pick_pair, unwrap
from .capture import BlockCapture
from .config import BlockRef, LayerSyncConfig, Pair
from .errors import LayerSyncConfigError, LayerSyncError
from .layouts import BlockLayout, layout_for
from .loss import token_similarity
from .schedule import WeightSchedule, ends_optimizer_step

logger = logging.getLogger(__name__)


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

    def __init__(self, model: nn.Module, *, student_block: Optional[BlockRef] = None,
                 teacher_block: Optional[BlockRef] = None, pairs: Optional[Sequence[Pair]] = None,
                 weight: float = 0.2, warmup_steps: int = 0, stop_step: Optional[int] = None,
                 enabled: bool = True, layout: Optional[BlockLayout] = None):
        self.config = LayerSyncConfig(enabled=enabled, student_block=student_block, teacher_block=teacher_block,
                                      weight=weight, pairs=pairs, warmup_steps=warmup_steps, stop_step=stop_step)
        # A disabled config is not validated, so its schedule values may be anything: keep none.
        self.schedule = (WeightSchedule(self.config.weight, self.config.warmup_steps, self.config.stop_step)
                         if self.config.enabled else WeightSchedule(0.0))
        self.model = unwrap(model)
        self.step = 0  # optimizer steps (see schedule.py), saved by state_dict()
        self.pairs: tuple[tuple[Block, Block], ...] = ()
        self.student: Optional[Block] = None  # the first pair's blocks
        self.teacher: Optional[Block] = None
        self._capture: Optional[BlockCapture] = None
        self._removed = False
        self._sums: Optional[torch.Tensor] = None  # running (loss, similarity, per pair...) since metrics()
        self._weights = 0.0
        self._count = 0
        if not self.config.enabled:
            logger.info("LayerSync is disabled: no hooks registered, loss() is 0.")
            return
        self._layout = layout_for(self.model, layout)
        blocks = list_blocks(self.model, self._layout)
        name = type(self.model).__name__
        self.pairs = tuple(pick_pair(student, teacher, blocks, model_name=name)
                           for student, teacher in self.config.pairs)
        if len({(s.path, t.path) for s, t in self.pairs}) != len(self.pairs):
            raise LayerSyncConfigError(f"`pairs={list(self.config.pairs)}` name the same blocks twice; keep each once.")
        self.student, self.teacher = self.pairs[0]
        # Blocks shared by several pairs are hooked and captured once (BlockCapture keeps one per path).
        self._attach(model)
        for student, teacher in self.pairs:
            logger.info("LayerSync on %s: student %s (depth %d) <- teacher %s (depth %d), weight %g",
                        type(self.model).__name__, student.path, student.depth, teacher.path, teacher.depth,
                        self.config.weight)

    @classmethod
    def from_config(cls, model: nn.Module,
                    config: Union[LayerSyncConfig, Mapping[str, Any], str, os.PathLike, Any], *,
                    layout: Optional[BlockLayout] = None) -> "LayerSync":
        """Build from a `LayerSyncConfig`, a dict of seed/paper keys, a JSON path or argparse results."""
        config = LayerSyncConfig.load(config)
        return cls(model, pairs=config.pairs or None, weight=config.weight, warmup_steps=config.warmup_steps,
                   stop_step=config.stop_step, enabled=config.enabled, layout=layout)

    def _attach(self, model: Optional[nn.Module] = None) -> None:
        blocks = [block for pair in self.pairs for block in pair]
        self._capture = BlockCapture(model if model is not None else self.model, blocks, layout=self._layout)

    def _detach(self) -> None:
        if self._capture is not None:
            self._capture.remove()
            self._capture = None

    @property
    def stopped(self) -> bool:
        """Whether the schedule's `stop_step` has passed: the hooks are gone and `loss()` is 0."""
        return self.schedule.stopped(self.step)

    @property
    def weight(self) -> float:
        """The weight of the current optimizer step, after the warm-up and stop schedule."""
        return self.schedule.at(self.step)

    def loss(self) -> torch.Tensor:
        """The weighted LayerSync term of the last training forward, a 0-dim float32 tensor. No host sync."""
        if self._capture is None:
            if self.config.enabled and not self.stopped:
                raise LayerSyncError("`LayerSync.loss()` was called after `remove()`; the hooks are gone.")
            if self.config.enabled:
                self._count_step()
            parameter = next(self.model.parameters(), None)
            return torch.zeros((), device=parameter.device if parameter is not None else None)
        activations = self._capture.pop(caller="LayerSync.loss()")
        masks = [_both(activations[s.path].mask, activations[t.path].mask) for s, t in self.pairs]
        similarities = [token_similarity(activations[s.path].hidden, activations[t.path].hidden, mask=mask)
                        for (s, t), mask in zip(self.pairs, masks)]
        similarity = similarities[0] if len(similarities) == 1 else torch.stack(similarities).mean()
        weight = self.weight
        term = -weight * similarity
        per_pair = similarities if len(similarities) > 1 else []
        stats = torch.stack([term, similarity, _unaligned_share(masks, term), *per_pair]).detach()
        self._sums = stats if self._sums is None else self._sums + stats
        self._weights += weight
        self._count += 1
        self._count_step()
        return term

    def _count_step(self) -> None:
        if not ends_optimizer_step():
            return
        self.step += 1
        if self.stopped and self._capture is not None:
            self._detach()
            logger.info("LayerSync stopped after %d optimizer steps (stop_step): hooks removed.", self.step)

    def metrics(self, *, sync: bool = True) -> dict[str, float]:
        """`{"layersync_loss", "layersync_similarity"}`: means over the `loss()` calls since the last call.

        With several pairs, `layersync_similarity/8-16` (student and teacher depths) for each pair too; with a
        warm-up, `layersync_weight`. With several processes the values are averaged over ranks (an
        all-reduce), so call it on every rank, as diffusers scripts do with their `logs`; pass `sync=False` to
        read this rank's values only.
        """
        if self._count == 0:
            return {}
        values = self._sums / self._count
        if sync and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
            values = values / dist.get_world_size()
        loss, similarity, unaligned, *per_pair = values.tolist()
        self._check_aligned(unaligned)
        logs = {"layersync_loss": loss, "layersync_similarity": similarity}
        for (student, teacher), value in zip(self.pairs, per_pair):
            logs[f"layersync_similarity/{student.depth}-{teacher.depth}"] = value
        if self.config.warmup_steps:
            logs["layersync_weight"] = self._weights / self._count
        self._sums, self._weights, self._count = None, 0.0, 0
        return logs

    def _check_aligned(self, share: float) -> None:
        """Token rules read the model's inputs; inputs unlike the pipeline's can select no target token."""
        if share == 0:
            return
        rules = "; ".join(sorted({f"{b.stack.path}: {b.stack.tokens}" for pair in self.pairs for b in pair
                                  if b.stack.tokens is not None}))
        message = (f"LayerSync's token rules ({rules}) selected no target token in {share:.0%} of the samples since "
                   f"the last metrics(), so those samples got no LayerSync gradient. The rules read the model's "
                   "inputs: pass them as the family's diffusers pipeline builds them (e.g. Flux `img_ids[..., 0]` "
                   "is 0 on the target image), or give `layout=` a rule that fits your inputs.")
        if share >= 1:  # nothing was aligned at all: LayerSync is a silent no-op
            raise LayerSyncError(message)
        warnings.warn(message, stacklevel=3)

    @contextlib.contextmanager
    def paused(self):
        """Capture nothing inside this block, e.g. around validation or a reference forward."""
        with self._capture.paused() if self._capture is not None else contextlib.nullcontext():
            yield self

    def remove(self) -> None:
        """Remove every hook; the model behaves exactly as before attaching."""
        self._detach()
        self._removed = True

    def state_dict(self) -> dict[str, Any]:
        """For `accelerator.register_for_checkpointing(layersync)`: the optimizer step count and the blocks."""
        return {"step": self.step, **self._blocks_state(), "weight": self.config.weight}

    def _blocks_state(self) -> dict[str, Any]:
        if len(self.pairs) > 1:
            return {"pairs": [[s.path, t.path] for s, t in self.pairs]}
        return {"student": getattr(self.student, "path", None), "teacher": getattr(self.teacher, "path", None)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the state saved by `state_dict` (accelerate's `load_state`). Past `stop_step`, the hooks go."""
        saved = {key: state.get(key) for key in self._blocks_state()}
        if saved != self._blocks_state():
            warnings.warn(f"Restoring LayerSync state saved for blocks {saved} into one on {self._blocks_state()}.",
                          stacklevel=2)
        self.step = int(state["step"])
        if self.stopped:
            self._detach()
        elif self._capture is None and self.pairs and not self._removed:
            self._attach()  # resumed from before the stop step

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()

    def __repr__(self):
        if not self.pairs:
            return f"LayerSync({type(self.model).__name__}, disabled)"
        state = "stopped" if self.stopped else "removed" if self._capture is None else "attached"
        pairs = ", ".join(f"student={s.path} (depth {s.depth}) <- teacher={t.path} (depth {t.depth})"
                          for s, t in self.pairs)
        return f"LayerSync({type(self.model).__name__}, {pairs}, weight={self.config.weight}, {state})"


def _unaligned_share(masks: Sequence[Optional[torch.Tensor]], like: torch.Tensor) -> torch.Tensor:
    """The largest share of samples in which a pair's mask selects no token (0 without masks); no host sync."""
    shares = [(~mask.any(dim=1)).float().mean() for mask in masks if mask is not None]
    return torch.stack(shares).max() if shares else like.new_zeros(())


def _both(a: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Tokens that count in both masks (None = all tokens count)."""
    if a is None or b is None:
        return a if b is None else b
    return a & b
