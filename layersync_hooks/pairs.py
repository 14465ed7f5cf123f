"""Student/teacher pairs: the paper's heuristic, written once, and the config's pairs resolved to a model's blocks.

From the SiT-XL/2 ablation of arXiv 2510.12581 (28 blocks, FID at 100K iterations): 8 <- 16 and 6 <- 18 helped
most, 6 <- 9 was too close (a real gap matters), 15 <- 23 put the teacher in the last blocks, which act as a
decoder. So: the teacher outside the last 20% of blocks, the student past the very first blocks, the teacher
about twice as deep as the student. `LayerSync` uses it for an omitted `teacher_block`, the `layouts` command for
its suggested pair, and the probe for its candidates.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

from torch import nn

from .capture import Block, describe, list_blocks, resolve
from .config import BlockRef, Pair
from .errors import BlockIndexError, LayerSyncConfigError
from .layouts import BlockLayout

logger = logging.getLogger(__name__)

# The share of the deepest blocks that act as a decoder: no teacher there.
DECODER_SHARE = 0.2


def last_teacher_depth(num_blocks: int) -> int:
    """The deepest teacher allowed: outside the last 20% of blocks, but at least depth 2 when there are 2 blocks."""
    return max(int(num_blocks * (1 - DECODER_SHARE)), min(num_blocks, 2))


def default_teacher(student_depth: int, num_blocks: int) -> Optional[int]:
    """About twice the student depth, never past `last_teacher_depth`; None when no deeper block fits."""
    teacher = min(2 * student_depth, last_teacher_depth(num_blocks))
    return teacher if teacher > student_depth else None


def recommend_pair(num_blocks: int) -> tuple[int, int]:
    """A student/teacher pair for a model of `num_blocks` blocks: 8 <- 16 on the paper's 28-block SiT-XL/2.

    Example:
        ```python
        >>> recommend_pair(28), recommend_pair(57), recommend_pair(2)
        ((8, 16), (16, 32), (1, 2))
        ```
    """
    if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks < 2:
        raise LayerSyncConfigError(
            f"A LayerSync pair needs a model with at least 2 blocks, got num_blocks={num_blocks!r}: the teacher "
            "must be deeper than the student."
        )
    student = max(1, round(num_blocks * 8 / 28))
    while default_teacher(student, num_blocks) is None:  # ends: student 1 always has teacher 2
        student -= 1
    return student, default_teacher(student, num_blocks)


def candidate_pairs(num_blocks: int) -> list[tuple[int, int]]:
    """Every pair the heuristic allows: teacher outside the last 20%, student past the first ~10% of blocks (for
    8 blocks or more), and a gap of at least a quarter of the depth."""
    last = last_teacher_depth(num_blocks)
    first = max(1, round(num_blocks * 0.1)) if num_blocks >= 8 else 1
    gap = max(1, round(num_blocks * 0.25))
    return [(s, t) for s in range(first, last) for t in range(s + gap, last + 1)]


def resolve_pairs(pairs: Sequence[Pair], model: nn.Module, layout: BlockLayout) -> tuple[tuple[Block, Block], ...]:
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
        logger.info("LayerSync teacher_block not given: chose depth %d (%s), about twice the student depth %d and "
                    "outside the last 20%% of %d blocks.", depth, teacher.path, student.depth, len(blocks))  # fmt: skip
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
