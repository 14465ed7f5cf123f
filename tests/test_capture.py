"""The capture engine: one capture per training forward, whatever else calls the blocks."""

import gc

import pytest
import torch
from helpers import hook_count
from tiny_models import build, prediction

from layersync_hooks import BlockCapture, LayerSync
from layersync_hooks.errors import MissingActivationsError


def test_hooks_never_change_outputs():
    """The model's output is bit-identical with LayerSync attached, removed, and never attached."""
    model, inputs = build("Flux")
    before = prediction(model, inputs)
    layersync = LayerSync(model, student_block=2, teacher_block=4)
    during = prediction(model, inputs)
    layersync.loss()
    layersync.remove()
    assert torch.equal(before, during) and torch.equal(before, prediction(model, inputs))


def test_missing_activations_errors_say_why():
    """loss() without a captured forward is a clear error naming the block and the reason."""
    model, inputs = build("PixArt")
    layersync = LayerSync(model, student_block=1, teacher_block=3)
    with pytest.raises(MissingActivationsError, match=r"'transformer_blocks.0'.*No training forward"):
        layersync.loss()
    with torch.no_grad():
        prediction(model, inputs)
    with pytest.raises(MissingActivationsError, match="gradients were disabled"):
        layersync.loss()
    model.requires_grad_(False)  # a frozen model under grad (a reference pass): nothing to train
    prediction(model, inputs)
    with pytest.raises(MissingActivationsError, match="nothing it ran needs a gradient"):
        layersync.loss()
    model.requires_grad_(True)
    with layersync.paused():
        prediction(model, inputs)
    with pytest.raises(MissingActivationsError, match="paused"):
        layersync.loss()
    prediction(model, inputs)
    layersync.loss()
    with pytest.raises(MissingActivationsError, match="already used"):
        layersync.loss()


def test_memory_is_flat_over_200_steps_with_validation():
    """200 training steps with validation passes leave the number of live tensors unchanged."""
    model, inputs = build("PixArt")
    layersync = LayerSync(model, student_block=1, teacher_block=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def live_tensors():
        gc.collect()
        return sum(isinstance(o, torch.Tensor) for o in gc.get_objects())

    counts = {}
    for step in range(200):
        pred = prediction(model, inputs)
        loss = pred.float().pow(2).mean() + layersync.loss()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 10 == 0:
            with torch.no_grad():
                prediction(model, inputs)
            prediction(model, inputs)  # a training forward that is never used
        layersync.metrics()
        if step in (20, 199):
            counts[step] = live_tensors()
    assert counts[199] <= counts[20]


def test_remove_leaves_no_hook():
    """remove() (or leaving the `with` block) takes every hook off every module, and is idempotent."""
    model, inputs = build("Flux")
    assert hook_count(model) == 0
    with LayerSync(model, student_block=2, teacher_block=4) as layersync:
        assert hook_count(model) > 0
    assert hook_count(model) == 0
    layersync.remove()
    assert "removed" in repr(layersync)


def test_capture_paused_for_one_user_only():
    """Pausing one user does not stop the capture for another."""
    model, inputs = build("PixArt")
    layersync = LayerSync(model, student_block=1, teacher_block=3)
    other = BlockCapture(model, blocks=[3])
    with layersync.paused():
        prediction(model, inputs)
    (activations,) = other.pop()
    assert activations["transformer_blocks.2"].hidden.dim() == 3
    with pytest.raises(MissingActivationsError):
        layersync.loss()
