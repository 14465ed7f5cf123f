"""The gradient-probe proof of a layout row, for any model and training forward (the trainers' classes, their
stand-ins): the rows of a student block's latent stream that get LayerSync's gradient are exactly the rows through
which the compared prediction depends on the last block, per sample and per DiT call.

The last block's rows with a gradient from a random linear function of the compared prediction are the target tokens
(after the last block nothing mixes tokens). The student's rows with a gradient from `LayerSync.loss()` are the tokens
LayerSync aligns; they must be the same tokens, in order (a student stream that holds fewer tokens, the image alone,
holds them from its start), and the term must equal the cosine over them computed here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from layersync_hooks import LayerSync
from layersync_hooks.capture import list_blocks
from layersync_hooks.layouts import lookup_layout

WEIGHT = 0.5


def stream(output, element):
    """A block output's latent stream as the block returned it."""
    return output[element] if isinstance(output, (tuple, list)) else output


def batched(tensor):
    """`(B, N, ...)`: unbatched `(N, D)` tokens are one sample."""
    return tensor.unsqueeze(0) if tensor.dim() == 2 else tensor


def receiving(objective, tensors):
    """Per tensor, (B, N) bool: the rows through which `objective` has a non-zero gradient."""
    grads = torch.autograd.grad(objective, tensors, retain_graph=True, allow_unused=True)
    return [batched(torch.zeros_like(t) if g is None else g).abs().sum(-1) > 0 for t, g in zip(tensors, grads)]


def objective_of(prediction, seed=0):
    """A random linear function of every compared value, so no row's gradient cancels (a list: per sample)."""
    if isinstance(prediction, (list, tuple)):
        return sum(objective_of(p, seed + i) for i, p in enumerate(prediction))
    weights = torch.randn(prediction.shape, generator=torch.Generator().manual_seed(seed))
    return (prediction.float() * weights).sum()


def compact(truth, length):
    """The target positions of a stream of `length` tokens that holds them first, in order."""
    return torch.arange(length)[None] < truth.sum(1, keepdim=True)


def spans(mask):
    """'[a:b) [c:d)' per row, for failure messages."""
    rows = []
    for row in mask.tolist():
        edges = [i for i in range(len(row) + 1) if (row[i - 1] if i else False) != (row[i] if i < len(row) else False)]
        rows.append(" ".join(f"[{a}:{b})" for a, b in zip(edges[::2], edges[1::2])) or "none")
    return "; ".join(rows)


def prove(setup, name: str, *, checkpointing: bool) -> int:
    """Prove the layout of `setup.model` on its training forward, each stack's first block against the last block;
    returns how many DiT calls the forward made. `setup` is a trainer_models / real_models `Setup`."""
    model = setup.model
    if checkpointing:
        setup.checkpointing()
    layout = lookup_layout(type(model))
    assert layout is not None, f"{name}: no layout for {type(model).__qualname__}"
    assert [s.path for s in layout.stacks] == list(setup.stacks), name
    blocks = list_blocks(model, layout)
    firsts = {}
    for block in blocks:
        firsts.setdefault(block.stack.path, block)
    teacher = blocks[-1]
    pairs = [(first, teacher) for first in firsts.values() if first is not teacher]
    syncs = [LayerSync(model, student_block=s.path, teacher_block=t.path, weight=WEIGHT) for s, t in pairs]
    outputs = {b.path: [] for b in blocks}
    handles = [
        b.module.register_forward_hook(lambda m, a, out, b=b: outputs[b.path].append(stream(out, b.stack.output)))
        for b in blocks
    ]
    try:
        prediction = setup.forward()
    finally:
        for handle in handles:
            handle.remove()
    calls = len(outputs[teacher.path])
    objective = objective_of(prediction)
    truths = receiving(objective, outputs[teacher.path])
    for (student, _), sync in zip(pairs, syncs):
        assert len(outputs[student.path]) == calls, f"{name}: {student.path} ran {len(outputs[student.path])} times"
        loss = sync.loss()
        aligned = receiving(loss, outputs[student.path])
        cosines = []
        for call, (got, truth) in enumerate(zip(aligned, truths)):
            assert truth.any(1).all(), f"{name}: some sample has no target row in {teacher.path} (call {call})"
            expected = truth if got.shape == truth.shape else compact(truth, got.shape[1])
            assert torch.equal(got, expected), (
                f"{name} {student.path} <- {teacher.path} (call {call}): LayerSync aligns {spans(got)}, the target "
                f"is {spans(expected)}"
            )
            s, t = batched(outputs[student.path][call]), batched(outputs[teacher.path][call])
            cosines += [F.cosine_similarity(s[b, expected[b]].double(), t[b, truth[b]].detach().double(), dim=-1)
                        for b in range(truth.shape[0])]  # fmt: skip
        assert abs(loss.item() + WEIGHT * torch.cat(cosines).mean().item()) < 1e-5, name
        sync.remove()
    return calls
