"""LayerSync's own work measured alone, with little noise: its loss term, and the hook calls of a paused step."""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from common import sync
from memory import peak_bytes
from torch import nn

WEIGHT = 0.2


def straightforward_loss(student, teacher, *, weight):
    """The formula written plainly (the package's loss before it was fused), for comparison only."""
    target = F.normalize(teacher.detach().float(), dim=-1, eps=1e-6)
    student = student.float()
    cosine = (student * target).sum(-1) / student.norm(dim=-1).clamp_min(1e-6)
    return -weight * cosine.clamp(-1.0, 1.0).mean()


def loss_alone(loss_fns: dict, shape, dtype, device, repeats: int = 30) -> dict:
    """Each loss function alone on tensors of the student's shape: forward, backward, and adding its gradient to
    the student's (as autograd does). The functions alternate, so that background load hits them alike; median
    time over the repetitions, and each one's own peak memory."""
    student = torch.randn(shape, dtype=dtype, device=device, requires_grad=True)
    teacher, upstream = torch.randn(shape, dtype=dtype, device=device), torch.randn(shape, dtype=dtype, device=device)

    def once(loss_fn):
        (grad,) = torch.autograd.grad(loss_fn(student, teacher, weight=WEIGHT), student)
        upstream.add_(grad)

    samples = {name: [] for name in loss_fns}
    for repeat in range(repeats + 3):
        for name, loss_fn in loss_fns.items():
            sync(device)
            start = time.perf_counter()
            once(loss_fn)
            sync(device)
            if repeat >= 3:
                samples[name].append(time.perf_counter() - start)
    return {
        name: {
            "ms": statistics.median(samples[name]) * 1e3,
            "peak_bytes": peak_bytes(lambda f=loss_fn: once(f), device),
        }
        for name, loss_fn in loss_fns.items()
    }


class _IdentityBlocks(nn.Module):
    """Twelve blocks that do nothing: a forward that costs only its module calls and hooks."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Identity() for _ in range(12))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def hooks_alone_us(repeats: int = 2000) -> float:
    """Microseconds that LayerSync's hooks add to one forward when attached but paused (or when nothing is
    captured): the root's pre-hook and forward hook and two block hooks, timed on 12 identity blocks."""
    from layersync_hooks import LayerSync

    model = _IdentityBlocks().train()
    x = torch.randn(2, 4, 8, requires_grad=True)

    def per_call():
        start = time.perf_counter()
        for _ in range(repeats):
            model(x)
        return (time.perf_counter() - start) / repeats

    plain, paused = [], []
    layersync = LayerSync(model, student_block=3, teacher_block=6)
    for _ in range(7):  # alternate, so that background load hits both alike
        with layersync.paused():
            paused.append(per_call())
        layersync.remove()
        plain.append(per_call())
        layersync = LayerSync(model, student_block=3, teacher_block=6)
    layersync.remove()
    return (statistics.median(paused) - statistics.median(plain)) * 1e6
