"""bf16 and fp16: autocast and half weights match fp32, padded tokens stay finite, similarity never exceeds 1."""

import diffusers
import pytest
import torch
from tiny_models import TINY, build, prediction
from torch import nn

from layersync_hooks import BlockLayout, LayerSync, Stack, token_similarity

HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


def layersync_gradient(family, dtype=None, how=None):
    """The LayerSync term (student 2 <- teacher -2) and its gradient on every parameter, in float32."""
    model, inputs = build(family)
    if how == "weights":
        model = model.to(dtype)
        inputs = {k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in inputs.items()}
    layersync = LayerSync(model, student_block=2, teacher_block=-2)
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=how == "autocast"):
        prediction(model, inputs)
    term = layersync.loss()
    term.backward()
    gradient = torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).float().flatten() for p in model.parameters()]
    )
    return term, gradient


@pytest.mark.parametrize("how", ["autocast", "weights"])
@pytest.mark.parametrize("precision", list(HALF))
@pytest.mark.parametrize("family", ["Flux", "PixArt", "HunyuanVideo"])
def test_half_precision_matches_fp32(family, precision, how):
    """Autocast or half weights: a float32 finite term within 1e-4 of fp32, gradients within 10% (cosine > 0.995)."""
    reference, reference_gradient = layersync_gradient(family)
    term, gradient = layersync_gradient(family, HALF[precision], how)
    assert term.dtype == torch.float32 and torch.isfinite(term) and torch.isfinite(gradient).all()
    assert abs(term.item() - reference.item()) < 1e-4
    assert (gradient - reference_gradient).norm() / reference_gradient.norm() < 0.1
    assert torch.cosine_similarity(gradient, reference_gradient, dim=0) > 0.995


class PaddedDiT(nn.Module):
    """Blocks that zero the padded tokens, as masked video or variable-length models do."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(16, 16) for _ in range(4))

    def forward(self, x, mask):
        for block in self.blocks:
            x = block(x) * mask[..., None]
        return x


def real_tokens(hidden, inputs):
    return hidden, inputs.model_arg("mask").bool()


real_tokens.reads_inputs = True


@pytest.mark.parametrize("rule", [None, real_tokens])
def test_fp16_padded_tokens_are_finite(rule):
    """fp16 all-zero padded tokens give a finite loss and gradients, counted as 0 or masked out by a token rule."""
    torch.manual_seed(0)
    model = PaddedDiT().to(torch.float16)
    x, mask = torch.randn(2, 6, 16, dtype=torch.float16), torch.ones(2, 6, dtype=torch.float16)
    mask[0, 3:] = 0
    mask[1] = 0  # a sample that is all padding
    layout = BlockLayout(stacks=(Stack("blocks", rule=rule),))
    layersync = LayerSync(model, student_block=1, teacher_block=3, layout=layout)
    model(x, mask)
    term = layersync.loss()
    term.backward()
    assert torch.isfinite(term) and all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    real = 3 / (6 if rule is None else 3)  # share of real tokens in the mean
    assert -1 <= term.item() / 0.2 / real <= 1


def test_fp16_zero_student_token_against_a_real_teacher_has_finite_gradient():
    """A zero student token (padding) whose teacher token is not zero gets no gradient, not an fp16 overflow."""
    student = torch.zeros(1, 4, 8, dtype=torch.float16)
    student[0, 0] = 1.0  # one real token beside three zero ones
    student.requires_grad_(True)
    teacher = torch.randn(1, 4, 8).half()
    token_similarity(student, teacher).backward()
    assert torch.isfinite(student.grad).all()
    assert student.grad[0, 1:].abs().sum() == 0 and student.grad[0, 0].abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 300.0])
def test_similarity_never_exceeds_one(dtype, scale):
    """Identical tokens give exactly 1 (never more), at any scale, even where fp16 squares would overflow."""
    x = (torch.randn(2, 64, 256) * scale).to(dtype)
    assert token_similarity(x, x).item() == 1.0
    assert -1 <= token_similarity(x, torch.randn_like(x)).item() <= 1


@pytest.mark.parametrize("precision", list(HALF))
def test_adaln_zero_init_similarity_is_one_not_more(precision):
    """A DiT with adaLN-zero gates (every block the identity, as at the paper's init) logs exactly 1 in half."""
    class_name, config, inputs = TINY["DiT"]
    model = getattr(diffusers, class_name)(**config)
    for block in model.transformer_blocks:
        nn.init.zeros_(block.norm1.linear.weight)  # the adaLN-zero init of the original DiT code
        nn.init.zeros_(block.norm1.linear.bias)
    model = model.to(HALF[precision])
    layersync = LayerSync(model, student_block=1, teacher_block=3)
    inputs = {k: v.to(HALF[precision]) if v.is_floating_point() else v for k, v in inputs(2).items()}
    prediction(model, inputs)
    layersync.loss()
    assert layersync.metrics()["layersync_similarity"] == 1.0
