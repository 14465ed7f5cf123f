"""The paper's pair heuristic, written once: which student and teacher depths to try on a model of N blocks.

From the SiT-XL/2 ablation of arXiv 2510.12581 (28 blocks, FID at 100K iterations): 8 <- 16 and 6 <- 18 helped
most, 6 <- 9 was too close (a real gap matters), 15 <- 23 put the teacher in the last blocks, which act as a
decoder. So: the teacher outside the last 20% of blocks, the student past the very first blocks, the teacher
about twice as deep as the student. `LayerSync` uses it for an omitted `teacher_block`, the `layouts` command for
its suggested pair, and the probe for its candidates.
"""

from __future__ import annotations

from typing import Optional

from .errors import LayerSyncConfigError

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
