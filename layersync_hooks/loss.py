"""The LayerSync loss on activations you already hold (arXiv 2510.12581, eq. 2).

    L_LS = - mean_{b,n} < h_s[b,n] / |h_s[b,n]| , stopgrad(h_t[b,n]) / |h_t[b,n]| >

Computed in float32 whatever the activation dtype, so fp16/bf16 zero or padding tokens give 0, not NaN.

A pair is first *folded* (`fold`): the per-token cosine and its gradient with respect to the student tokens,
computed at once without autograd and without a full-size copy of either activation (norms in float32 inside the
reductions, dot products in row chunks, the gradient written straight into its one buffer, which autograd would
need anyway). The term is then a tiny autograd function over the student tokens whose backward scales that
gradient in place. Nothing holds the teacher afterwards: LayerSync folds each pair inside the forward, as soon as
its teacher block has run, so the teacher's output is freed like any activation autograd does not keep.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple, Optional

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


class Folded(NamedTuple):
    """What the term and its gradient need of one student/teacher pair, computed without autograd.

    `cosine` is the per-token cosine (B*N,) in float32, clamped to [-1, 1]; `grad` its derivative with respect to
    the student tokens, (B, N, D) in the student's dtype (None when the student needs no gradient); `mask` the
    tokens that count. Holding it, not the teacher, lets the teacher's block output go as soon as it is folded.
    """

    cosine: torch.Tensor
    grad: Optional[torch.Tensor]
    mask: Optional[torch.Tensor]


def fold(student: torch.Tensor, teacher: torch.Tensor, *, mask: Optional[torch.Tensor] = None,
         with_grad: bool = True) -> Folded:  # fmt: skip
    """Fold a student and a (detached) teacher into the per-token cosine and its student gradient.

    Norms in float32 inside the reductions, dot products in row chunks (one chunk upcast at a time), the gradient
    written straight into its one full-size buffer: no copy of either activation is made.
    """
    student, teacher = flatten_tokens(student), flatten_tokens(teacher.detach())
    if student.shape != teacher.shape or student.dim() != 3:
        raise ShapeMismatchError(
            f"LayerSync compares tokens one to one, but the student tokens have shape {tuple(student.shape)} "
            f"and the teacher tokens {tuple(teacher.shape)}. Choose blocks with the same number of tokens "
            "and channels (in a UNet: the same resolution level)."
        )
    if mask is not None and mask.numel() != student.shape[0] * student.shape[1]:
        raise ShapeMismatchError(
            f"The token mask has shape {tuple(mask.shape)}, but the tokens are {tuple(student.shape[:2])} "
            "(batch, tokens)."
        )
    # float32 even inside a user's autocast region; values only, whatever the caller's grad mode
    with torch.no_grad(), torch.autocast(student.device.type, enabled=False):
        s_norm, t_norm = _norms(student), _norms(teacher)
        dot = torch.empty_like(s_norm)
        for first, s, t in _row_chunks(student, teacher):
            torch.sum(s.float() * t.float(), dim=-1, out=dot[first : first + len(s)])
        raw = dot.div_(s_norm * t_norm)
        grad = _student_grad(student, teacher, raw, s_norm, t_norm) if with_grad else None
    return Folded(raw.clamp(-1.0, 1.0), grad, mask)


def _student_grad(student, teacher, raw, s_norm, t_norm) -> torch.Tensor:
    """d cos / d s = t / (|s||t|) - cos * s / |s|^2, per token. No gradient where a clamp bites: |cos| > 1 from
    rounding, and |s| < EPS: a zero (padding) token has no direction to pull, and t / (EPS |t|) overflows fp16."""
    live = ((raw.abs() <= 1.0) & (s_norm > EPS)).float()
    along_t = (live / (s_norm * t_norm)).unsqueeze(-1)
    along_s = (-live * raw / s_norm.square()).unsqueeze(-1)
    grad = torch.empty(student.shape, dtype=student.dtype, device=student.device)
    for first, s, t, g in _row_chunks(student, teacher, grad):
        rows = slice(first, first + len(s))
        if g.dtype == torch.float32:  # written in place: no temporary at all
            torch.mul(t, along_t[rows], out=g).addcmul_(s, along_s[rows])
        else:
            g.copy_(t.float().mul_(along_t[rows]).addcmul_(s.float(), along_s[rows]))
    return grad


class _FoldedCosine(torch.autograd.Function):
    """The per-token cosine of a folded pair, connected to the student tokens; its backward scales the folded
    gradient by the upstream gradient, in place (the one full-size buffer, allocated when the pair was folded)."""

    @staticmethod
    def forward(ctx, student: torch.Tensor, cosine: torch.Tensor, grad: Optional[torch.Tensor]) -> torch.Tensor:
        ctx.save_for_backward(grad)
        ctx.used = False
        return cosine.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        if ctx.used:  # the buffer was scaled in place by the first backward
            raise RuntimeError(
                "LayerSync's term was backpropagated a second time (retain_graph): its first backward scaled the "
                "gradient buffer in place, which saves a full activation. Backpropagate it once; for a second "
                "gradient, run the forward again and build a new term with `loss()`."
            )
        (grad,) = ctx.saved_tensors
        if grad is None or not ctx.needs_input_grad[0]:
            return None, None, None
        ctx.used = True
        return grad.mul_(grad_out.reshape(*grad.shape[:2], 1).to(grad.dtype)), None, None


def connect(student: torch.Tensor, folded: Folded) -> torch.Tensor:
    """The per-token cosine (B*N,) of a folded pair, as a tensor whose gradient reaches `student`. It keeps the
    folded gradient, not the student tokens: once connected, the student's output can be freed too."""
    return _FoldedCosine.apply(flatten_tokens(student), folded.cosine, folded.grad)


class Aligned(NamedTuple):
    """One student/teacher pair of one forward, ready for the term: the per-token cosine (B*N,) in float32, connected
    to the student's graph when the student tokens need a gradient (`trains`), and the tokens that count (`mask`,
    (B, N) bool, or None for all)."""

    cosine: torch.Tensor
    mask: Optional[torch.Tensor]
    trains: bool


def align(student: torch.Tensor, teacher: torch.Tensor, *, mask: Optional[torch.Tensor] = None) -> Aligned:
    """Fold a pair and connect its cosine to the student's graph: afterwards neither block output is needed."""
    trains = student.requires_grad
    folded = fold(student, teacher, mask=mask, with_grad=trains)
    return Aligned(connect(student, folded) if trains else folded.cosine, folded.mask, trains)


def mean_cosine(cosine: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """The mean over the tokens that count (all without a mask), as a float32 0-dim tensor."""
    if mask is None:
        return cosine.mean()
    mask = mask.reshape(cosine.shape).to(cosine.dtype)
    return (cosine * mask).sum() / mask.sum().clamp_min(1.0)


def folded_similarity(student: torch.Tensor, folded: Folded) -> torch.Tensor:
    """The mean per-token cosine of a folded pair, as a float32 0-dim tensor whose gradient reaches `student`."""
    return mean_cosine(connect(student, folded), folded.mask)


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
    return folded_similarity(student, fold(student, teacher, mask=mask, with_grad=student.requires_grad))


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
