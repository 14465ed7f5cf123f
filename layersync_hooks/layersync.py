"""`LayerSync`: the object users attach to their transformer. Config + layout + capture + loss."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from typing import Any, Mapping, Optional, Union

import torch
import torch.distributed as dist
from torch import nn

from .blocks import Block, default_teacher, describe, list_blocks, resolve, unwrap
from .capture import BlockCapture
from .config import BlockRef, LayerSyncConfig
from .errors import BlockIndexError, LayerSyncConfigError, LayerSyncError
from .layouts import BlockLayout, layout_for
from .loss import token_similarity

logger = logging.getLogger(__name__)


class LayerSync:
    r"""
    Adds LayerSync to the training of a transformer through forward hooks: the student block's target tokens
    are pulled, by cosine similarity, toward the deeper teacher block's detached tokens of the same forward.

    Attach it before `accelerator.prepare`; call `loss()` once after each training forward and add it to
    the task loss before `accelerator.backward`.

    Args:
        model (`nn.Module`): The transformer (DDP, FSDP, `torch.compile` and PEFT wrappers are unwrapped).
        student_block (`int` or `str`): 1-based depth over the model's stacks (0 = first block, negative from
            the end) or a block path such as `"single_transformer_blocks.3"`.
        teacher_block (`int` or `str`, *optional*): A deeper block; omitted, about twice the student depth.
        weight (`float`, defaults to 0.2): The paper's lambda.
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
                 teacher_block: Optional[BlockRef] = None, weight: float = 0.2, enabled: bool = True,
                 layout: Optional[BlockLayout] = None):
        self.config = LayerSyncConfig(enabled=enabled, student_block=student_block,
                                      teacher_block=teacher_block, weight=weight)
        self.model = unwrap(model)
        self.step = 0
        self.student: Optional[Block] = None
        self.teacher: Optional[Block] = None
        self._capture: Optional[BlockCapture] = None
        self._sums: Optional[torch.Tensor] = None  # running (loss, similarity) since the last metrics()
        self._count = 0
        if not self.config.enabled:
            logger.info("LayerSync is disabled: no hooks registered, loss() is 0.")
            return
        layout = layout_for(self.model, layout)
        self.student, self.teacher = self._pick_blocks(list_blocks(self.model, layout))
        self._capture = BlockCapture(self.model, [self.student, self.teacher], layout=layout)
        logger.info("LayerSync on %s: student %s (depth %d) <- teacher %s (depth %d), weight %g",
                    type(self.model).__name__, self.student.path, self.student.depth, self.teacher.path,
                    self.teacher.depth, self.config.weight)

    @classmethod
    def from_config(cls, model: nn.Module,
                    config: Union[LayerSyncConfig, Mapping[str, Any], str, os.PathLike, Any], *,
                    layout: Optional[BlockLayout] = None) -> "LayerSync":
        """Build from a `LayerSyncConfig`, a dict of seed/paper keys, a JSON path or argparse results."""
        config = LayerSyncConfig.load(config)
        return cls(model, student_block=config.student_block, teacher_block=config.teacher_block,
                   weight=config.weight, enabled=config.enabled, layout=layout)

    def _pick_blocks(self, blocks: list[Block]) -> tuple[Block, Block]:
        name = type(self.model).__name__
        student = resolve(self.config.student_block, blocks, name="student_block", model_name=name)
        if self.config.teacher_block is not None:
            teacher = resolve(self.config.teacher_block, blocks, name="teacher_block", model_name=name)
        else:
            depth = default_teacher(student.depth, len(blocks))
            if depth is None:
                raise BlockIndexError(
                    f"LayerSync could not find layer: no teacher fits after student_block={self.config.student_block!r} "
                    f"(depth {student.depth}) in {name}, which has {describe(blocks)}: the teacher must be deeper "
                    f"than the student and outside the last 20% of blocks. Pass `teacher_block` explicitly."
                )
            teacher = blocks[depth - 1]
            logger.info("LayerSync teacher_block not given: chose depth %d (%s), about twice the student "
                        "depth %d and outside the last 20%% of %d blocks.", depth, teacher.path, student.depth,
                        len(blocks))
        if teacher.depth <= student.depth:
            raise LayerSyncConfigError(
                f"`teacher_block` must be deeper than `student_block`, got student_block={self.config.student_block!r} "
                f"({student.path}, depth {student.depth}), teacher_block={self.config.teacher_block!r} "
                f"({teacher.path}, depth {teacher.depth}). An equal pair has exactly zero gradient."
            )
        return student, teacher

    def loss(self) -> torch.Tensor:
        """The weighted LayerSync term of the last training forward, a 0-dim float32 tensor. No host sync."""
        if self._capture is None:
            if self.config.enabled:
                raise LayerSyncError("`LayerSync.loss()` was called after `remove()`; the hooks are gone.")
            parameter = next(self.model.parameters(), None)
            return torch.zeros((), device=parameter.device if parameter is not None else None)
        activations = self._capture.pop(caller="LayerSync.loss()")
        student, teacher = activations[self.student.path], activations[self.teacher.path]
        similarity = token_similarity(student.hidden, teacher.hidden, mask=_both(student.mask, teacher.mask))
        term = -self.config.weight * similarity
        stats = torch.stack((term.detach(), similarity.detach()))
        self._sums = stats if self._sums is None else self._sums + stats
        self._count += 1
        self.step += 1
        return term

    def metrics(self, *, sync: bool = True) -> dict[str, float]:
        """`{"layersync_loss", "layersync_similarity"}`: means over the `loss()` calls since the last call.

        With several processes the values are averaged over ranks (an all-reduce), so call it on every rank,
        as diffusers scripts do with their `logs`; pass `sync=False` to read this rank's values only.
        """
        if self._count == 0:
            return {}
        values = self._sums / self._count
        if sync and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
            values = values / dist.get_world_size()
        self._sums, self._count = None, 0
        loss, similarity = values.tolist()
        return {"layersync_loss": loss, "layersync_similarity": similarity}

    @contextlib.contextmanager
    def paused(self):
        """Capture nothing inside this block, e.g. around validation or a reference forward."""
        with self._capture.paused() if self._capture is not None else contextlib.nullcontext():
            yield self

    def remove(self) -> None:
        """Remove every hook; the model behaves exactly as before attaching."""
        if self._capture is not None:
            self._capture.remove()
            self._capture = None

    def state_dict(self) -> dict[str, Any]:
        """For `accelerator.register_for_checkpointing(layersync)`: the step count and the blocks."""
        return {"step": self.step, "student": getattr(self.student, "path", None),
                "teacher": getattr(self.teacher, "path", None), "weight": self.config.weight}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the state saved by `state_dict` (accelerate's `load_state`)."""
        saved = (state.get("student"), state.get("teacher"))
        mine = (getattr(self.student, "path", None), getattr(self.teacher, "path", None))
        if saved != mine:
            warnings.warn(f"Restoring LayerSync state saved for blocks {saved} into one on {mine}.", stacklevel=2)
        self.step = int(state["step"])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()

    def __repr__(self):
        if self.student is None:
            return f"LayerSync({type(self.model).__name__}, disabled)"
        state = "removed" if self._capture is None else "attached"
        return (f"LayerSync({type(self.model).__name__}, student={self.student.path} (depth {self.student.depth}), "
                f"teacher={self.teacher.path} (depth {self.teacher.depth}), weight={self.config.weight}, {state})")


def _both(a: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Tokens that count in both masks (None = all tokens count)."""
    if a is None or b is None:
        return a if b is None else b
    return a & b
