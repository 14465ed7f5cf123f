"""Block-by-block similarity of target tokens (mean per-token cosine, linear CKA) and the pair it suggests.

The cosine is LayerSync's own measure: the mean over target tokens of cos(h_i[b, n], h_j[b, n]). Linear CKA
(Kornblith et al., 2019) compares the token representations of two blocks up to rotation and scale, on a
seeded subsample of tokens so that its token-by-token Gram matrices stay small.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..capture import Activation
from ..errors import LayerSyncError
from ..loss import EPS
from ..pairs import candidate_pairs, last_teacher_depth, recommend_pair

# Above this cosine a pair is already aligned: LayerSync has little left to pull (adaLN-zero at init gives 1).
ALIGNED = 0.95


def _tokens(activation: Activation) -> tuple[torch.Tensor, torch.Tensor]:
    """(B*N, D) float32 tokens and their (B*N,) bool mask of target tokens."""
    hidden = activation.hidden.detach().float()
    mask = activation.mask
    if mask is None:
        mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
    return hidden.reshape(-1, hidden.shape[-1]), mask.reshape(-1).to(hidden.device)


def _by_key(tokens: list[tuple[torch.Tensor, torch.Tensor]], key) -> list[torch.Tensor]:
    """Indices of blocks grouped by `key(hidden)`: only blocks of one group can be compared token by token
    (a UNet's resolution levels have different token counts and widths)."""
    groups: dict[tuple, list[int]] = {}
    for index, (hidden, _) in enumerate(tokens):
        groups.setdefault(key(hidden), []).append(index)
    return [torch.tensor(members) for members in groups.values()]


def cosine_matrix(activations: Sequence[Activation]) -> torch.Tensor:
    """(L, L) mean per-token cosine over the tokens that count in both blocks; NaN where shapes differ."""
    tokens = [_tokens(a) for a in activations]
    out = torch.full((len(tokens), len(tokens)), float("nan"))
    for members in _by_key(tokens, lambda hidden: tuple(hidden.shape)):
        # Sum over tokens of unit-vector dot products = one dot product of the flattened, masked unit tokens.
        units = torch.stack(
            [(F.normalize(tokens[i][0], dim=-1, eps=EPS) * tokens[i][1][:, None]).flatten() for i in members.tolist()]
        )
        masks = torch.stack([tokens[i][1] for i in members.tolist()]).float()
        mean = (units @ units.T) / (masks @ masks.T).clamp_min(1)
        out[members[:, None], members] = mean.clamp(-1, 1).cpu()
    return out


def linear_cka_matrix(activations: Sequence[Activation], *, max_tokens: int = 1024, seed: int = 0) -> torch.Tensor:
    """(L, L) linear CKA on at most `max_tokens` target tokens, the same ones in every block; NaN where the
    token counts differ."""
    tokens = [_tokens(a) for a in activations]
    out = torch.full((len(tokens), len(tokens)), float("nan"))
    for members in _by_key(tokens, lambda hidden: hidden.shape[0]):
        keep = torch.stack([tokens[i][1] for i in members.tolist()]).all(0).nonzero().flatten()
        if keep.numel() > max_tokens:
            order = torch.randperm(keep.numel(), generator=torch.Generator().manual_seed(seed))
            keep = keep[order[:max_tokens].to(keep.device)]
        grams = []
        for i in members.tolist():
            x = tokens[i][0][keep]
            x = x - x.mean(0, keepdim=True)
            gram = x @ x.T  # linear kernel on tokens: CKA = <K_i, K_j> / (|K_i| |K_j|) with centred features
            grams.append((gram / gram.norm().clamp_min(EPS)).flatten())
        grams = torch.stack(grams)
        out[members[:, None], members] = (grams @ grams.T).clamp(0, 1).cpu()
    return out


@dataclass(frozen=True)
class Recommendation:
    """A student/teacher pair (1-based depths), its measured similarity, and why it was chosen."""

    student: int
    teacher: int
    cosine: float
    cka: float
    reasons: tuple[str, ...]


def recommend(cosine: torch.Tensor, cka: torch.Tensor, *, top: int = 3) -> list[Recommendation]:
    """The `top` candidate pairs, closest to the paper's 8 <- 16 of 28 first (that pair itself where it fits),
    ties broken by the lower measured cosine (more left to align); each with its reasons."""
    n = cosine.shape[0]
    best = recommend_pair(n)
    # LayerSync compares tokens one to one: blocks with different token shapes (NaN) cannot form a pair.
    usable = {(s, t) for s in range(1, n) for t in range(s + 1, n + 1) if not cosine[s - 1, t - 1].isnan()}
    if not usable:
        raise LayerSyncError("No two blocks have target tokens of the same shape, so no pair can be aligned.")
    heuristic = [pair for pair in candidate_pairs(n) if pair in usable]
    pairs = sorted(
        heuristic or usable,
        key=lambda p: (abs(p[0] - best[0]) + abs(p[1] - best[1]), float(cosine[p[0] - 1, p[1] - 1]), p),
    )
    decoder = _decoder_start(cka)
    out = []
    for student, teacher in pairs[:top]:
        c, k = float(cosine[student - 1, teacher - 1]), float(cka[student - 1, teacher - 1])
        reasons = (
            _reasons(student, teacher, n, decoder)
            if heuristic
            else [
                "no pair that follows the paper heuristic has blocks whose target tokens have the same shape; "
                "this is the closest pair LayerSync can align"
            ]
        )
        reasons.append(f"measured: cosine {c:.3f}, linear CKA {k:.3f}")
        if c >= ALIGNED:
            reasons.append(
                f"cosine >= {ALIGNED}: already nearly aligned, so LayerSync pulls little (expected "
                "for untrained or adaLN-zero weights; probe trained weights for a meaningful map)"
            )
        out.append(Recommendation(student, teacher, c, k, tuple(reasons)))
    return out


def _reasons(student: int, teacher: int, n: int, decoder: Optional[int]) -> list[str]:
    """Why a pair that follows the heuristic was chosen, in the paper's terms."""
    last = last_teacher_depth(n)
    early = "past the first blocks (the paper: 8 of 28)" if student > 1 or n >= 8 else "too few blocks to skip one"
    late = (
        f"outside the last 20%, depths {last + 1}-{n}, which act as a decoder"
        if last < n
        else "too few blocks to keep a decoder out"
    )
    reasons = [
        f"student {student} of {n} ({student / n:.0%} deep): {early}",
        f"teacher {teacher} of {n} ({teacher / n:.0%} deep): {late}",
        f"gap of {teacher - student} blocks ({(teacher - student) / n:.0%} of the depth): a real gap "
        "(6 <- 9 of 28 was too close)",
    ]
    if decoder is not None and student < decoder <= teacher:
        reasons.append(
            f"blocks from depth {decoder} on have CKA >= 0.9 with the last block: the decoder may "
            f"start there; a teacher below {decoder} is safer"
        )
    return reasons


def _decoder_start(cka: torch.Tensor, threshold: float = 0.9) -> Optional[int]:
    """The first depth from which every block has CKA >= threshold with the last block (None: only the last)."""
    close = (cka[:, -1] >= threshold).tolist()
    start = len(close)
    while start > 1 and close[start - 2]:
        start -= 1
    return start if start < len(close) else None
