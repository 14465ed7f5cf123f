"""The ground truth for a layout, measured without LayerSync: which rows of which block outputs feed the prediction.

Plain forward hooks on every block of every stack record each call (positional and keyword arguments) and its raw
output object during the training forward of a `Setup` (tests/with_trainers/real_models.py or
tests/trainer_models.py). Two measurements per block output element, per sample:

- receiving: the rows through which a random linear function of the compared part of the prediction (the part the
  trainer's loss compares with the noisy target) has a non-zero gradient. Attention mixes tokens, so in an inner
  block every row that any target token attends to receives gradient; rows that do not (masked padding) do not.
- target: the same, with every attention replaced by "each token keeps its own value"
  (`scaled_dot_product_attention` returns `v`; cross-attention, whose queries and keys differ in length, returns
  zeros), so no token mixes with another: the rows that receive gradient are then exactly the positions of the
  noisy-target tokens themselves, in every block and every stack. This is the set a layout must name.
  (Keep a cross-attention's key length different from its query length in the tiny inputs.)

Calls made while autograd runs backward (checkpoint recomputes) are counted, not recorded: a checkpoint around the
block module (Framepack, Qwen-Image, Kandinsky 5) runs its pre-hooks again; non-reentrant early stop ends the
recompute before any forward hook.

    python tests/with_trainers/truth.py musubi.flux_kontext            # the real class (needs MUSUBI_TUNER_SRC)
    python tests/with_trainers/truth.py --stand-ins                    # every stand-in of tests/trainer_models.py
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F


@dataclass
class Element:
    """One tensor of a block's output: where it sits, its form, and its rows per sample."""

    index: tuple  # position in the output tuple, () for a plain tensor
    form: str  # "(B,N,D)", "(N,D)" (unbatched: one sample per call) or "None"
    shape: tuple
    receiving: list = field(default_factory=list)  # per sample: spans of rows with gradient
    target: list = field(default_factory=list)  # per sample: spans of the target tokens themselves


@dataclass
class BlockTruth:
    """Every call of one block during the training forward."""

    path: str
    depth: int  # 1-based, over the stacks in forward order
    calls: list = field(default_factory=list)  # (positional count, keyword names)
    elements: list = field(default_factory=list)  # Element per output element, per call (one call per sample: (N,D))


@dataclass
class Truth:
    stacks: dict  # stack path -> block count
    blocks: list
    recomputed: tuple  # (pre-hook, forward-hook) block calls made during backward (checkpoint recomputes)


def blocks_of(model, stacks):
    """(path, module) of every block, stacks in the given (forward) order."""
    found = []
    for stack in stacks:
        module = functools.reduce(getattr, stack.split("."), model)
        found += [(f"{stack}.{i}", block) for i, block in enumerate(module)]
    return found


def spans(mask):
    """'[a:b) [c:d)' for a 1-D bool mask; 'none' when empty."""
    row = mask.tolist()
    edges = [i for i in range(len(row) + 1) if (row[i - 1] if i else False) != (row[i] if i < len(row) else False)]
    return " ".join(f"[{a}:{b})" for a, b in zip(edges[::2], edges[1::2])) or "none"


def tensors_of(output, index=()):
    """(index, tensor or None) of every element of a block output (nested tuples/lists flattened)."""
    if isinstance(output, (tuple, list)):
        return [item for i, o in enumerate(output) for item in tensors_of(o, index + (i,))]
    return [(index, output if isinstance(output, torch.Tensor) else None)]


def objective(prediction, seed=0):
    """A random linear function of every compared value, so no position's gradient cancels."""
    if isinstance(prediction, (list, tuple)):
        return sum(objective(p, seed + i) for i, p in enumerate(prediction))
    weights = torch.randn(prediction.shape, generator=torch.Generator().manual_seed(seed))
    return (prediction.float() * weights).sum()


@contextlib.contextmanager
def no_token_mixing(model):
    """Every `F.scaled_dot_product_attention` returns each query's own value (zeros for cross-attention), also
    where a module kept the function as an attribute (sd-scripts' Lumina `JointAttention.attention_processor`)."""
    real = F.scaled_dot_product_attention
    kept = [(m, name) for m in model.modules() for name, value in vars(m).items() if value is real]

    def keep_own(query, key, value, *args, **kwargs):
        if query.shape[-2] != key.shape[-2]:
            return torch.zeros(*query.shape[:-1], value.shape[-1], dtype=value.dtype)
        if value.dim() == 4 and value.shape[-3] != query.shape[-3]:  # grouped-query attention
            value = value.repeat_interleave(query.shape[-3] // value.shape[-3], dim=-3)
        return value.expand(*query.shape[:-1], value.shape[-1])

    F.scaled_dot_product_attention = keep_own
    for module, name in kept:
        setattr(module, name, keep_own)
    try:
        yield
    finally:
        F.scaled_dot_product_attention = real
        for module, name in kept:
            setattr(module, name, real)


def measure(setup):
    """Run the training forward with hooks; return (blocks, calls per block, raw outputs, gradient per output
    tensor, (pre-hook, forward-hook) calls during backward)."""
    blocks = blocks_of(setup.model, setup.stacks)
    calls = {path: [] for path, _ in blocks}
    outputs = {path: [] for path, _ in blocks}
    state = {"recording": True, "pre": 0, "post": 0}

    def pre(path, module, args, kwargs):
        if state["recording"]:
            calls[path].append((len(args), tuple(kwargs)))
        else:
            state["pre"] += 1

    def post(path, module, args, kwargs, output):
        if state["recording"]:
            outputs[path].append(output)
        else:
            state["post"] += 1

    handles = []
    for path, block in blocks:
        handles.append(block.register_forward_pre_hook(functools.partial(pre, path), with_kwargs=True))
        handles.append(block.register_forward_hook(functools.partial(post, path), with_kwargs=True))
    try:
        torch.manual_seed(0)
        compared = setup.forward()
        state["recording"] = False
        tensors = [t for path, _ in blocks for out in outputs[path] for _, t in tensors_of(out) if t is not None]
        grads = torch.autograd.grad(objective(compared), tensors, allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    return blocks, calls, outputs, dict(zip(map(id, tensors), grads)), (state["pre"], state["post"])


def rows_with_gradient(grad, tensor):
    """Per sample, the spans of rows of `tensor` with a non-zero gradient ((B,N,D): per b; (N,D): one sample)."""
    if grad is None:
        grad = torch.zeros_like(tensor)
    flags = grad.abs().flatten(tensor.dim() - 1 if tensor.dim() <= 2 else 2).sum(-1) > 0
    return [spans(flags)] if tensor.dim() == 2 else [spans(row) for row in flags]


def probe(setup, *, checkpointing=False):
    """The truth for every block of `setup`: its calls, output elements, receiving rows and target rows."""
    if checkpointing:
        setup.checkpointing()
    blocks, calls, outputs, grads, recomputed = measure(setup)
    with no_token_mixing(setup.model):
        _, _, tracked_outputs, tracked_grads, _ = measure(setup)
    result = []
    for depth, (path, _) in enumerate(blocks, start=1):
        truth = BlockTruth(path, depth, calls[path])
        for out, tracked in zip(outputs[path], tracked_outputs[path]):
            for (index, tensor), (_, twin) in zip(tensors_of(out), tensors_of(tracked)):
                if tensor is None:
                    truth.elements.append(Element(index, "None", ()))
                    continue
                form = "(N,D)" if tensor.dim() == 2 else "(B,N,D)" if tensor.dim() == 3 else f"{tensor.dim()}-D"
                truth.elements.append(
                    Element(
                        index,
                        form,
                        tuple(tensor.shape),
                        rows_with_gradient(grads.get(id(tensor)), tensor),
                        rows_with_gradient(tracked_grads.get(id(twin)), twin),
                    )
                )
        result.append(truth)
    stacks = {stack: sum(p.startswith(stack + ".") for p, _ in blocks) for stack in setup.stacks}
    return Truth(stacks, result, recomputed)


def convention(call):
    positional, keywords = call
    if not keywords:
        return f"positional ({positional})"
    named = ", ".join(keywords)
    return f"keywords ({named})" if not positional else f"{positional} positional + keywords ({named})"


def markdown(name, truth, qualname=""):
    """A per-block table: call, output element, form, shape, receiving rows and target rows per sample."""
    counts = ", ".join(f"{stack}: {n}" for stack, n in truth.stacks.items())
    lines = [
        f"### {name} {qualname}",
        "",
        f"stacks {counts}; hooks run again during backward (pre, forward): {truth.recomputed}",
        "",
    ]
    lines += ["| block | call | element | form | shape | receiving rows per sample | target rows per sample |"]
    lines += ["|---|---|---|---|---|---|---|"]
    for block in truth.blocks:
        call = "; ".join(sorted({convention(c) for c in block.calls}))
        for element in block.elements:
            index = "".join(f"[{i}]" for i in element.index) or "out"
            lines.append(
                f"| {block.path} | {call} | {index} | {element.form} | {element.shape} | "
                f"{' / '.join(element.receiving) or '-'} | {' / '.join(element.target) or '-'} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="builder names (default: all available)")
    parser.add_argument("--stand-ins", action="store_true", help="probe tests/trainer_models.py instead")
    args = parser.parse_args(argv)
    here = Path(__file__).resolve().parent
    sys.path[:0] = [str(here), str(here.parent)]
    torch.set_num_threads(1)
    if args.stand_ins:
        import trainer_models as source
    else:
        import real_models as source
    names = args.names or [n for n in source.BUILDERS if source.available(n.split(".")[0])]
    for name in names:
        for checkpointing in (False, True):
            setup = source.BUILDERS[name]()
            truth = probe(setup, checkpointing=checkpointing)
            qualname = f"`{type(setup.model).__module__}.{type(setup.model).__qualname__}`"
            print(markdown(f"{name}{' (checkpointing)' if checkpointing else ''}", truth, qualname))


if __name__ == "__main__":
    main()
