"""The pure loss: float32, detached teacher, masks, 4-D states, no NaN on zero tokens."""

import pytest
import torch
import torch.nn.functional as F
from helpers import reference_grad

from layersync_hooks import layersync_loss, token_similarity
from layersync_hooks.errors import ShapeMismatchError


def test_matches_reference_formula():
    """-weight * mean per-token cosine, computed here in float64 as the reference."""
    student, teacher = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    expected = F.cosine_similarity(student.double(), teacher.double(), dim=-1).mean()
    assert torch.allclose(layersync_loss(student, teacher, weight=0.2).double(), -0.2 * expected, atol=1e-6)


def test_teacher_gets_no_gradient():
    """Gradients reach the student only."""
    student, teacher = torch.randn(2, 5, 8, requires_grad=True), torch.randn(2, 5, 8, requires_grad=True)
    layersync_loss(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0 and teacher.grad is None


def test_float32_for_half_inputs():
    """bf16/fp16 activations give a float32 loss close to the float32 one."""
    student, teacher = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    for dtype in (torch.float16, torch.bfloat16):
        value = token_similarity(student.to(dtype), teacher.to(dtype))
        assert value.dtype == torch.float32
        assert torch.allclose(value, token_similarity(student, teacher), atol=1e-2)


def test_zero_tokens_are_finite():
    """All-zero fp16 tokens count as similarity 0 with finite gradients."""
    student = torch.zeros(1, 4, 8, dtype=torch.float16, requires_grad=True)
    teacher = torch.zeros(1, 4, 8, dtype=torch.float16)
    loss = layersync_loss(student, teacher)
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(student.grad).all()


def test_identical_tokens_give_one_never_more():
    """Similarity of a tensor with itself is 1, clamped so that rounding never takes it above; its opposite gives
    -1."""
    x = torch.randn(3, 64, 33) * 1e3
    value = token_similarity(x, x).item()
    assert value <= 1.0 and value == pytest.approx(1.0, abs=1e-6)
    assert token_similarity(x, -x).item() == pytest.approx(-1.0, abs=1e-6)


def test_video_states_are_flattened():
    """(B, T, P, D) equals the (B, T*P, D) result."""
    student, teacher = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 4, 8)
    assert torch.equal(
        token_similarity(student, teacher), token_similarity(student.flatten(1, 2), teacher.flatten(1, 2))
    )


def test_mask_selects_tokens():
    """A mask averages over the tokens it marks, across the batch."""
    student, teacher = torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    mask = torch.tensor([[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    expected = F.cosine_similarity(student, teacher, dim=-1)[mask].mean()
    assert torch.allclose(token_similarity(student, teacher, mask=mask), expected, atol=1e-6)
    with pytest.raises(ShapeMismatchError, match=r"mask has shape \(2, 5\)"):
        token_similarity(student, teacher, mask=mask[:, :5])


def test_shape_mismatch_names_both_shapes():
    """Student and teacher with different token counts or widths is a clear error."""
    with pytest.raises(ShapeMismatchError, match=r"\(2, 256, 64\).*\(2, 64, 64\)"):
        token_similarity(torch.randn(2, 256, 64), torch.randn(2, 64, 64))


def test_float32_inside_autocast():
    """Inside a bfloat16 autocast region the similarity is still computed in float32."""
    student, teacher = torch.randn(2, 16, 32), torch.randn(2, 16, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = token_similarity(student, teacher)
    assert value.dtype == torch.float32
    assert abs(value.item() - reference_grad(student, teacher)[0].item()) < 1e-6


def test_a_second_backward_through_the_term_is_a_clear_error():
    """The term's backward scales its one gradient buffer in place; a second backward (retain_graph) would read a
    scaled buffer, so it is refused with what to do instead."""
    student = torch.randn(2, 8, 16, requires_grad=True)
    term = layersync_loss(student * 1.0, torch.randn(2, 8, 16))
    term.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backpropagated a second time.*build a new term"):
        term.backward()
