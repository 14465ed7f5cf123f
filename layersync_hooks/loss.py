"""The LayerSync loss on activations you already hold (arXiv 2510.12581, eq. 2).

    L_LS = - mean_{b,n} < h_s[b,n] / |h_s[b,n]| , stopgrad(h_t[b,n]) / |h_t[b,n]| >

Computed in float32 whatever the activation dtype, so fp16/bf16 zero or padding tokens give 0, not NaN.

The per-token cosine is one autograd function that makes no full-size copy of either activation: it keeps
references to the student and teacher tensors (the model holds them anyway) and three floats per token, computes
the norms in float32 inside the reduction, the dot products in row chunks (upcasting one chunk at a time), and
writes the student gradient straight into its output. Its only full-size allocation is that gradient, which
autograd needs anyway.
"""

from __future__ import annotations

from typing import Iterator, Optional

import torch

from .errors import ShapeMismatchError

# Tokens whose norm is below EPS count as zero vectors: their similarity is 0 and their gradient finite.
EPS = 1e-6
# Row chunks are at most 1/_SPLITS of the tokens and _CHUNK elements, which bounds the float32 temporaries
# (the elementwise product, and the upcast of fp16/bf16 chunks) to a fraction of one activation; chunks below
# _MIN_CHUNK elements are not worth a Python loop iteration.
_SPLITS = 8
_MIN_CHUNK = 2**16
_CHUNK = 2**22


def flatten_tokens(hidden: torch.Tensor) -> torch.Tensor:
    """(B, T, P, D) video states -> (B, T*P, D); (B, N, D) unchanged."""
    return hidden.flatten(1, 2) if hidden.dim() == 4 else hidden


def _row_chunks(*tensors: torch.Tensor) -> Iterator[tuple[int, ...]]:
    """(first row, aligned (rows, D) views) of same-shape (B, N, D) tensors, in token order, without copies."""
    width = max(tensors[0].shape[-1], 1)
    try:
        groups = [tuple(x.view(-1, width) for x in tensors)]
    except RuntimeError:  # a slice of a longer joint sequence: view it sample by sample
        groups = list(zip(*(x.unbind(0) for x in tensors)))
    total = sum(group[0].shape[0] for group in groups)
    rows = max(1, min(max(-(-total // _SPLITS), _MIN_CHUNK // width), _CHUNK // width))
    first = 0
    for group in groups:
        for start in range(0, group[0].shape[0], rows):
            chunk = tuple(x[start : start + rows] for x in group)
            yield (first, *chunk)
            first += chunk[0].shape[0]


def _norms(x: torch.Tensor) -> torch.Tensor:
    """Per-token float32 norms (B*N,), clamped below at EPS; the upcast happens inside the reduction."""
    return torch.linalg.vector_norm(x, dim=-1, dtype=torch.float32).reshape(-1).clamp_min(EPS)


class _TokenCosine(torch.autograd.Function):
    """Per-token cosine (B*N,) in float32, clamped to [-1, 1]; gradient to the student only."""

    @staticmethod
    def forward(ctx, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        # float32 even inside a user's autocast region
        with torch.autocast(student.device.type, enabled=False):
            s_norm, t_norm = _norms(student), _norms(teacher)
            dot = torch.empty_like(s_norm)
            for first, s, t in _row_chunks(student, teacher):
                torch.sum(s.float() * t.float(), dim=-1, out=dot[first : first + len(s)])
            raw = dot.div_(s_norm * t_norm)
        # references to the activations (the model holds them anyway) and three floats per token
        ctx.save_for_backward(student, teacher, raw, s_norm, t_norm)
        return raw.clamp(-1.0, 1.0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        student, teacher, raw, s_norm, t_norm = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None
        # d cos / d s = t / (|s||t|) - cos * s / |s|^2. No gradient where a clamp bites: |cos| > 1 from rounding,
        # and |s| < EPS: a zero (padding) token has no direction to pull, and t / (EPS |t|) overflows fp16.
        upstream = grad_out * ((raw.abs() <= 1.0) & (s_norm > EPS))
        along_t = (upstream / (s_norm * t_norm)).unsqueeze(-1)
        along_s = (-upstream * raw / s_norm.square()).unsqueeze(-1)
        grad = torch.empty(student.shape, dtype=student.dtype, device=student.device)
        with torch.autocast(student.device.type, enabled=False):
            for first, s, t, g in _row_chunks(student, teacher, grad):
                rows = slice(first, first + len(s))
                if g.dtype == torch.float32:  # written in place: no temporary at all
                    torch.mul(t, along_t[rows], out=g).addcmul_(s, along_s[rows])
                else:
                    g.copy_(t.float().mul_(along_t[rows]).addcmul_(s.float(), along_s[rows]))
        return grad, None


def token_similarity(
    student: torch.Tensor, teacher: torch.Tensor, *, mask: Optional[torch.Tensor] = None
) -> torch.Tensor:
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
    cosine = _TokenCosine.apply(student, teacher.detach())
    if mask is None:
        return cosine.mean()
    if mask.numel() != cosine.numel():
        raise ShapeMismatchError(
            f"The token mask has shape {tuple(mask.shape)}, but the tokens are {tuple(student.shape[:2])} "
            "(batch, tokens)."
        )
    mask = mask.reshape(cosine.shape).to(cosine.dtype)
    return (cosine * mask).sum() / mask.sum().clamp_min(1.0)


def layersync_loss(
    student: torch.Tensor, teacher: torch.Tensor, *, weight: float = 1.0, mask: Optional[torch.Tensor] = None
) -> torch.Tensor:
    r"""
    The weighted LayerSync term `-weight * token_similarity(student, teacher)`, to add to the task loss.

    Example:
        ```python
        >>> loss = mse + layersync_loss(h_student, h_teacher, weight=0.2)
        ```
    """
    return -weight * token_similarity(student, teacher, mask=mask)
