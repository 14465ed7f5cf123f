"""The LayerSync loss on activations you already hold (arXiv 2510.12581, eq. 2).

    L_LS = - mean_{b,n} < h_s[b,n] / |h_s[b,n]| , stopgrad(h_t[b,n]) / |h_t[b,n]| >

Computed in float32 whatever the activation dtype, so fp16/bf16 zero or padding tokens give 0, not NaN.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .errors import ShapeMismatchError

# Tokens whose norm is below EPS count as zero vectors: their similarity is 0 and their gradient finite.
EPS = 1e-6


def flatten_tokens(hidden: torch.Tensor) -> torch.Tensor:
    """(B, T, P, D) video states -> (B, T*P, D); (B, N, D) unchanged."""
    return hidden.flatten(1, 2) if hidden.dim() == 4 else hidden


def token_similarity(student: torch.Tensor, teacher: torch.Tensor, *,
                     mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    r"""
    Mean per-token cosine similarity of student and (detached) teacher tokens, as a float32 0-dim tensor.

    Args:
        student (`torch.Tensor`): (B, N, D) or (B, T, P, D) student activations; gradients flow into them.
        teacher (`torch.Tensor`): Same shape; always detached.
        mask (`torch.Tensor`, *optional*): (B, N) (or (B, T, P)) bool, True for the tokens that count.
    """
    student, teacher = flatten_tokens(student), flatten_tokens(teacher)
    if student.shape != teacher.shape or student.dim() != 3:
        raise ShapeMismatchError(
            f"LayerSync compares tokens one to one, but the student tokens have shape {tuple(student.shape)} "
            f"and the teacher tokens {tuple(teacher.shape)}. Choose blocks with the same number of tokens "
            "and channels (in a UNet: the same resolution level)."
        )
    target = F.normalize(teacher.detach().float(), dim=-1, eps=EPS)
    student = student.float()
    cosine = (student * target).sum(-1) / student.norm(dim=-1).clamp_min(EPS)
    cosine = cosine.clamp(-1.0, 1.0)  # rounding can reach 1 + 1e-7; a similarity above 1 is meaningless
    if mask is None:
        return cosine.mean()
    if mask.numel() != cosine.numel():
        raise ShapeMismatchError(
            f"The token mask has shape {tuple(mask.shape)}, but the tokens are {tuple(cosine.shape)} (batch, tokens)."
        )
    mask = mask.reshape(cosine.shape).to(cosine.dtype)
    return (cosine * mask).sum() / mask.sum().clamp_min(1.0)


def layersync_loss(student: torch.Tensor, teacher: torch.Tensor, *, weight: float = 1.0,
                   mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    r"""
    The weighted LayerSync term `-weight * token_similarity(student, teacher)`, to add to the task loss.

    Example:
        ```python
        >>> loss = mse + layersync_loss(h_student, h_teacher, weight=0.2)
        ```
    """
    return -weight * token_similarity(student, teacher, mask=mask)
