"""Every row of the layout table aligns exactly the noisy-target tokens, proven by gradients on tiny real models.

The gradient probe: the positions of the last block's stream
that receive gradient from the model's predicted sample are the target tokens, whatever order anyone assumed. The
positions of a student block's stream that receive gradient from `LayerSync.loss()` are the tokens LayerSync
aligns. The two must be equal, row by row, and the loss must equal a cosine computed here over those positions.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Callable, Optional

import pytest
import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from layout_proof import spans
from tiny_models import TINY, build, enable_checkpointing, prediction

from layersync_hooks import BlockCapture, BlockLayout, LayerSync
from layersync_hooks.capture import list_blocks
from layersync_hooks.errors import LayerSyncConfigError, ShapeMismatchError
from layersync_hooks.layouts import LAYOUTS, lookup_layout

WEIGHT = 0.5


@dataclass(frozen=True)
class Case:
    """What this test knows about a tiny model, written from the reference, independently of the table.

    streams: (stack path, tuple element holding the image or None, form) in forward order; form is "bnd", "sbd"
        (sequence-first) or "bchw" (convolutional).
    target: the part of the predicted sample the pipeline keeps (Kontext drops its context image).
    levels: blocks at several resolutions (UNets): pairs stay within one resolution.
    checkpointing: the gradient-checkpointing function to use, "default", or None where the class has none.
    offsets: where the target starts in a stack's stream shorter than the last block's, when not at 0.
    """

    streams: tuple
    target: Optional[Callable] = None
    levels: bool = False
    checkpointing: Optional[object] = "default"
    offsets: dict = field(default_factory=dict)


def stacks(*paths, element=None, form="bnd"):
    return tuple((path, element, form) for path in paths)


KWARGS_SAFE = functools.partial(torch.utils.checkpoint.checkpoint, use_reentrant=False)  # reference gotcha 4
FIRST_16 = lambda pred, inputs: pred[:, :16]  # noqa: E731  the target image before the condition image
DOUBLE_SINGLE = ("transformer_blocks", "single_transformer_blocks")
UNET = (
    "down_blocks.*.attentions.*.transformer_blocks",
    "mid_block.attentions.*.transformer_blocks",
    "up_blocks.*.attentions.*.transformer_blocks",
)

CASES = {
    # joint-attention MMDiTs: (text, image)
    "Flux": Case(stacks(*DOUBLE_SINGLE, element=1)),
    "FluxKontext": Case(stacks(*DOUBLE_SINGLE, element=1), target=FIRST_16),
    "Flux2": Case(stacks("transformer_blocks", element=1) + stacks("single_transformer_blocks")),
    "Flux2Refs": Case(stacks("transformer_blocks", element=1) + stacks("single_transformer_blocks"), target=FIRST_16),
    "Flux3": Case(stacks("mode_blocks.image") + stacks("single_transformer_blocks", element=1)),
    "Flux3Edit": Case(stacks("mode_blocks.image") + stacks("single_transformer_blocks", element=1)),
    "Chroma": Case(stacks("transformer_blocks", element=1) + stacks("single_transformer_blocks")),
    "SD3": Case(stacks("transformer_blocks", element=1)),
    "SD35": Case(stacks("transformer_blocks", element=1)),
    "AuraFlow": Case(stacks("joint_transformer_blocks", element=1) + stacks("single_transformer_blocks")),
    "LongCatImage": Case(stacks(*DOUBLE_SINGLE, element=1)),
    "LongCatImageEdit": Case(stacks(*DOUBLE_SINGLE, element=1), target=FIRST_16),
    "Ovis": Case(stacks(*DOUBLE_SINGLE, element=1)),
    "Bria": Case(stacks(*DOUBLE_SINGLE, element=1)),
    "BriaFiboEdit": Case(
        stacks("transformer_blocks", element=1) + stacks("single_transformer_blocks"), target=FIRST_16
    ),
    "QwenImage": Case(stacks("transformer_blocks", element=1)),
    "QwenImageEdit": Case(stacks("transformer_blocks", element=1), target=FIRST_16),
    "QwenImageLayered": Case(stacks("transformer_blocks", element=1), target=FIRST_16),
    "Krea2": Case(stacks("transformer_blocks")),
    # (image, text)
    "HunyuanVideo": Case(stacks(*DOUBLE_SINGLE, element=0)),
    "HunyuanVideo15": Case(stacks("transformer_blocks", element=0)),
    "HunyuanVideoFramepack": Case(stacks(*DOUBLE_SINGLE, element=0)),
    "HunyuanImage": Case(stacks(*DOUBLE_SINGLE, element=0), checkpointing=KWARGS_SAFE),
    "MotifVideo": Case(stacks(*DOUBLE_SINGLE, element=0)),
    "HiDream": Case(stacks("double_stream_blocks", element=0) + stacks("single_stream_blocks")),
    "HiDreamWide": Case(stacks("double_stream_blocks", element=0) + stacks("single_stream_blocks")),
    "HiDreamPacked": Case(stacks("double_stream_blocks", element=0) + stacks("single_stream_blocks")),
    "CogVideoX": Case(stacks("transformer_blocks", element=0)),
    "ConsisID": Case(stacks("transformer_blocks", element=0)),
    "CogView3Plus": Case(stacks("transformer_blocks", element=0)),
    "CogView4": Case(stacks("transformer_blocks", element=0)),
    "GlmImage": Case(stacks("transformer_blocks", element=0)),
    "EasyAnimate": Case(stacks("transformer_blocks", element=0)),
    "Mochi": Case(stacks("transformer_blocks", element=0)),
    "JoyImageEdit": Case(stacks("double_blocks", element=0), target=lambda pred, inputs: pred[:, -1]),
    "JoyImageEditPlus": Case(stacks("double_blocks", element=0), target=lambda pred, inputs: pred[:, :4]),
    "LTX2": Case(stacks("transformer_blocks", element=0)),
    "Kandinsky6": Case(stacks("visual_transformer_blocks", element=0)),
    # the image tokens alone
    "PixArt": Case(stacks("transformer_blocks")),
    "DiT": Case(stacks("transformer_blocks")),
    "Transformer2D": Case(stacks("transformer_blocks")),
    "Sana": Case(stacks("transformer_blocks")),
    "SanaVideo": Case(stacks("transformer_blocks")),
    "SanaWM": Case(stacks("blocks")),
    "Wan": Case(stacks("blocks")),
    "WanVACE": Case(stacks("blocks")),
    "WanAnimate": Case(stacks("blocks"), target=lambda pred, inputs: pred[:, :, 1:]),
    "WanAnimate2": Case(stacks("blocks"), checkpointing=KWARGS_SAFE),
    "SanaWMRefiner": Case(stacks("transformer_blocks"), checkpointing=None),
    "SkyReelsV2": Case(stacks("blocks")),
    "ChronoEdit": Case(stacks("blocks")),
    "AnyFlow": Case(stacks("blocks")),
    "Cosmos": Case(stacks("transformer_blocks")),
    "LTX": Case(stacks("transformer_blocks")),
    "Allegro": Case(stacks("transformer_blocks")),
    "HunyuanDiT": Case(stacks("blocks"), checkpointing=None),
    "LuminaNext": Case(stacks("layers"), checkpointing=None),
    "NucleusMoE": Case(stacks("transformer_blocks")),
    "PRX": Case(stacks("blocks")),
    "Kandinsky5Video": Case(stacks("visual_transformer_blocks")),
    "Kandinsky5Image": Case(stacks("visual_transformer_blocks")),
    "Kandinsky6SR": Case(stacks("visual_transformer_blocks")),
    "AceStep": Case(stacks("layers")),
    "LongCatAudioDiT": Case(stacks("blocks"), checkpointing=None),
    "Latte": Case(stacks("transformer_blocks")),
    # joint single streams with the target inside
    "Lumina2": Case(stacks("noise_refiner", "layers")),
    "ZImage": Case(stacks("noise_refiner", "layers")),
    # the refiner holds [condition image (8x8 -> 16 tokens, padded to 32); target], the layers [captions; images]
    "ZImageOmni": Case(stacks("noise_refiner", "layers"), offsets={"noise_refiner": 32}),
    "OmniGen": Case(stacks("layers")),
    "ErnieImage": Case(stacks("layers", form="sbd")),
    "BriaFibo2": Case(stacks("noise_refiner", "layers")),
    "QwenImage21": Case(stacks("transformer_blocks"), target=lambda pred, inputs: pred[:, -16:]),
    "Ideogram4": Case(stacks("layers"), target=lambda pred, inputs: pred[inputs["indicator"] == 2]),
    "MiniMaxH3": Case(stacks("transformer_blocks")),
    "Helios": Case(stacks("blocks")),
    "StableAudio": Case(stacks("transformer_blocks")),
    "StableAudio3": Case(stacks("transformer_blocks")),
    "MiniMaxMusic3": Case(stacks("transformer_blocks")),
    # UNets: blocks in nested lists, one resolution per level
    "SDXL": Case(stacks(*UNET), levels=True),
    "Kolors": Case(stacks(*UNET), levels=True),
    "StableCascade": Case(stacks("down_blocks.*", "up_blocks.*", form="bchw"), levels=True),
}


class DenseAttention:
    """Kandinsky 6 SR's processor with plain attention: FlexAttention has no CPU backward; token roles are unchanged."""

    def __call__(self, attn, hidden_states, rotary_emb, sparse_params):
        from diffusers.models.transformers.transformer_kandinsky6_sr import apply_rotary

        heads = lambda x: x.unflatten(-1, (attn.num_heads, -1))  # noqa: E731
        query = apply_rotary(attn.query_norm(heads(attn.to_query(hidden_states))), rotary_emb)
        key = apply_rotary(attn.key_norm(heads(attn.to_key(hidden_states))), rotary_emb)
        value = heads(attn.to_value(hidden_states))
        out = F.scaled_dot_product_attention(*(x.transpose(1, 2) for x in (query, key, value))).transpose(1, 2)
        return attn.out_layer(out.flatten(2, 3))


def stream_of(output, element):
    """The raw stream tensor of a block output, as this test understands the family (a tensor is the stream: Flux's
    single blocks return one [text; image] tensor before diffusers 0.35, (text, image) after)."""
    return output if element is None or isinstance(output, torch.Tensor) else output[element]


def as_tokens(hidden, form):
    """(B, N, D) view of a stream (or of its gradient): sequence-first and convolutional streams transposed."""
    if form == "sbd":
        hidden = hidden.transpose(0, 1)
    elif form == "bchw":
        hidden = hidden.flatten(2).transpose(1, 2)
    return hidden.flatten(1, 2) if hidden.dim() == 4 else hidden


def receiving(objective, stream, form):
    """(B, N) bool: the token positions of `stream` through which `objective` has a non-zero gradient."""
    (grad,) = torch.autograd.grad(objective, stream, retain_graph=True)
    return as_tokens(grad, form).abs().sum(-1) > 0


def probe_objective(pred, seed=0):
    """A random linear function of every predicted value, so no position's gradient cancels."""
    if isinstance(pred, (list, tuple)):
        return sum(probe_objective(p, seed + i) for i, p in enumerate(pred))
    weights = torch.randn(pred.shape, generator=torch.Generator().manual_seed(seed))
    return (pred.float() * weights).sum()


def compact(positions, length, offset=0):
    """The target positions in a shorter stream of `length` tokens that holds them, in order, from `offset`."""
    counts = positions.sum(1, keepdim=True)
    index = torch.arange(length)[None] - offset
    return (index >= 0) & (index < counts)


def prepare(name, checkpointing):
    case = CASES[name]
    if checkpointing and case.checkpointing is None:
        pytest.skip(f"{TINY[name][0]} has no gradient checkpointing")
    model, inputs = build(name)
    if name == "Kandinsky6SR":
        for block in model.visual_transformer_blocks:
            block.self_attention.processor = DenseAttention()
    if checkpointing:
        enable_checkpointing(model, None if case.checkpointing == "default" else case.checkpointing)
    return case, model, inputs


def pairs_for(case, blocks, model, inputs):
    """(student, teacher) per stack: the stack's first block and the last block (of its resolution, in UNets)."""
    firsts = {}
    for block in blocks:
        firsts.setdefault(block.stack.path, block)
    if not case.levels:
        return [(first, blocks[-1]) for first in firsts.values() if first is not blocks[-1]]
    shapes = {}
    elements = {path: (element, form) for path, element, form in case.streams}
    hooks = [
        b.module.register_forward_hook(
            lambda m, a, out, b=b: shapes.update(
                {b.path: as_tokens(stream_of(out, elements[b.stack.path][0]), elements[b.stack.path][1]).shape}
            )
        )
        for b in blocks
    ]
    with torch.no_grad():
        prediction(model, inputs)
    for hook in hooks:
        hook.remove()
    return [(first, [b for b in blocks if shapes[b.path] == shapes[first.path]][-1]) for first in firsts.values()]


@pytest.mark.slow
@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointing"])
@pytest.mark.parametrize("name", list(CASES))
def test_layersync_aligns_exactly_the_target_tokens(name, checkpointing):
    """Student positions with LayerSync gradient == teacher positions with prediction gradient; loss == cosine."""
    case, model, inputs = prepare(name, checkpointing)
    blocks = list_blocks(model, lookup_layout(type(model)))
    assert [s.path for s in lookup_layout(type(model)).stacks] == [path for path, _, _ in case.streams]
    pairs = pairs_for(case, blocks, model, inputs)
    syncs = [LayerSync(model, student_block=s.path, teacher_block=t.path, weight=WEIGHT) for s, t in pairs]

    outputs, order = {}, []
    elements = {path: (element, form) for path, element, form in case.streams}

    def record(block, output):
        order.append(block.path)
        outputs.setdefault(block.path, stream_of(output, elements[block.stack.path][0]))

    for block in blocks:
        block.module.register_forward_hook(lambda module, args, output, block=block: record(block, output))
    torch.manual_seed(0)
    pred = prediction(model, inputs)
    assert list(dict.fromkeys(order)) == [b.path for b in blocks], "depths must follow the forward order"
    if case.target is not None:
        pred = case.target(pred, inputs)
    objective = probe_objective(pred)

    for (student, teacher), sync in zip(pairs, syncs):
        s_form, t_form = elements[student.stack.path][1], elements[teacher.stack.path][1]
        truth = receiving(objective, outputs[teacher.path], t_form)
        assert truth.any(1).all(), f"{teacher.path}: some row has no target token"
        loss = sync.loss()
        aligned = receiving(loss, outputs[student.path], s_form)
        offset = case.offsets.get(student.stack.path, 0)
        expected = truth if aligned.shape == truth.shape else compact(truth, aligned.shape[1], offset)
        assert torch.equal(aligned, expected), (
            f"{name} {student.path} <- {teacher.path}: LayerSync aligns {spans(aligned)}, "
            f"the target is {spans(expected)}"
        )
        s, t = as_tokens(outputs[student.path], s_form), as_tokens(outputs[teacher.path], t_form)
        cosines = [
            F.cosine_similarity(s[b, expected[b]].double(), t[b, truth[b]].detach().double(), dim=-1)
            for b in range(truth.shape[0])
        ]
        assert abs(loss.item() + WEIGHT * torch.cat(cosines).mean().item()) < 1e-5


def test_every_supported_row_is_probed():
    """Each diffusers class of the table that LayerSync supports has a case in the probe above; the classes outside
    diffusers (keyed by qualified name) are probed in tests/test_trainer_layouts.py and tests/with_diffsynth/."""
    probed = {TINY[name][0] for name in CASES}
    supported = {name for name, layout in LAYOUTS.items() if layout.unsupported is None and "." not in name}
    assert supported <= probed, sorted(supported - probed)


@pytest.mark.parametrize("family", ["SDXL", "Kolors"])
def test_unet_pair_across_resolution_levels_is_refused_at_attach(family):
    """A UNet student and teacher at two resolution levels fail at attach, naming both blocks and levels; every
    pair at one level attaches."""
    model, _ = build(family)
    blocks = BlockCapture(model, [1]).all_blocks
    shapes = {
        "SDXL": {"down_blocks.1": 1, "down_blocks.2": 2, "mid_block": 2, "up_blocks.0": 2, "up_blocks.1": 1},
        "Kolors": {"down_blocks.1": 1, "mid_block": 1, "up_blocks.0": 1},
    }[family]

    def level(block):
        return next(value for prefix, value in shapes.items() if block.path.startswith(prefix + "."))

    for student in blocks:
        for teacher in blocks[student.depth :]:
            if level(student) == level(teacher):
                LayerSync(model, student_block=student.path, teacher_block=teacher.path).remove()
                continue
            match = rf"student {re.escape(student.path)} .*level {level(student)}.*teacher {re.escape(teacher.path)}"
            with pytest.raises(LayerSyncConfigError, match=match + rf".*level {level(teacher)}"):
                LayerSync(model, student_block=student.path, teacher_block=teacher.path)


def test_pair_with_different_token_shapes_names_both_shapes():
    """A layout without levels still cannot compare blocks of two shapes: the training forward, where the pair is
    folded, names both token shapes."""
    model, inputs = build("SDXL")
    layout = BlockLayout(stacks=LAYOUTS["UNet2DConditionModel"].stacks)  # the table's stacks, without its levels
    layersync = LayerSync(
        model,
        student_block="down_blocks.1.attentions.0.transformer_blocks.0",
        teacher_block="down_blocks.2.attentions.0.transformer_blocks.0",
        layout=layout,
    )
    with pytest.raises(ShapeMismatchError, match=r"\(2, 64, 32\).*\(2, 16, 64\).*same resolution level"):
        prediction(model, inputs)
    layersync.remove()
