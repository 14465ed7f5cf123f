"""Each core family: loss and gradients equal an independent hand computation, by depth and by path."""

import copy

import pytest
import torch
import torch.nn.functional as F
from tiny_models import build, prediction

from layersync_hooks import LayerSync

# Written from each class's diffusers source, independently of the package's table:
# family -> its stacks in forward order, each with the tuple element holding the image (None: plain tensor).
EXPECTED = {
    "Flux": [("transformer_blocks", 1), ("single_transformer_blocks", 1)],
    "SD3": [("transformer_blocks", 1)],
    "PixArt": [("transformer_blocks", None)],
    "Sana": [("transformer_blocks", None)],
    "Wan": [("blocks", None)],
    "QwenImage": [("transformer_blocks", 1)],
    "HunyuanVideo": [("transformer_blocks", 0), ("single_transformer_blocks", 0)],
    "Cosmos": [("transformer_blocks", None)],
    "DiT": [("transformer_blocks", None)],  # no table row: found by the single-stack fallback
}
WEIGHT = 0.2


def hand_blocks(model, family):
    """[(path, element)] for every block in forward order: index i is depth i + 1."""
    return [
        (f"{path}.{i}", element) for path, element in EXPECTED[family] for i in range(len(model.get_submodule(path)))
    ]


def hand_loss(model, inputs, student, teacher):
    """-weight * mean cosine of the image tokens, from hooks written here, in float64."""
    outputs = {}
    handles = [
        model.get_submodule(path).register_forward_hook(
            lambda module, args, output, path=path: outputs.setdefault(path, output)
        )
        for path, _ in (student, teacher)
    ]
    torch.manual_seed(0)  # DiT drops class labels at random in train mode
    prediction(model, inputs)
    for handle in handles:
        handle.remove()
    (s_path, s_element), (t_path, t_element) = student, teacher
    s = outputs[s_path] if s_element is None else outputs[s_path][s_element]
    t = outputs[t_path] if t_element is None else outputs[t_path][t_element]
    return -WEIGHT * F.cosine_similarity(s.double(), t.detach().double(), dim=-1).mean()


def grads(model):
    return {name: (p.grad if p.grad is not None else torch.zeros_like(p)) for name, p in model.named_parameters()}


@pytest.mark.parametrize("by", ["depth", "path"])
@pytest.mark.parametrize("family", list(EXPECTED))
def test_loss_and_gradients_match_hand_computation(family, by):
    """LayerSync.loss() and its parameter gradients equal the hand computation to 1e-5."""
    model, inputs = build(family)
    reference = copy.deepcopy(model)
    blocks = hand_blocks(model, family)
    s_depth, t_depth = 2, len(blocks) - 1
    student, teacher = blocks[s_depth - 1], blocks[t_depth - 1]
    refs = (s_depth, t_depth) if by == "depth" else (student[0], teacher[0])

    layersync = LayerSync(model, student_block=refs[0], teacher_block=refs[1], weight=WEIGHT)
    assert (layersync.student.path, layersync.teacher.path) == (student[0], teacher[0])
    torch.manual_seed(0)
    prediction(model, inputs)
    loss = layersync.loss()
    loss.backward()

    expected = hand_loss(reference, inputs, student, teacher)
    expected.backward()
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert abs(loss.item() - expected.item()) < 1e-5
    ours, theirs = grads(model), grads(reference)
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("family", list(EXPECTED))
def test_gradient_reaches_student_and_below_only(family):
    """The LayerSync gradient reaches the student block and all before it, and nothing after it."""
    model, inputs = build(family)
    blocks = hand_blocks(model, family)
    s_depth = 2
    layersync = LayerSync(model, student_block=s_depth, teacher_block=len(blocks))
    prediction(model, inputs)
    layersync.loss().backward()

    def grad_norm(path):
        return sum(float(p.grad.abs().sum()) for p in model.get_submodule(path).parameters() if p.grad is not None)

    for depth, (path, _) in enumerate(blocks, start=1):
        if depth <= s_depth:
            assert grad_norm(path) > 0, f"no LayerSync gradient in {path} (depth {depth} <= student)"
        else:
            assert grad_norm(path) == 0, f"LayerSync gradient leaked into {path} (depth {depth} > student)"
