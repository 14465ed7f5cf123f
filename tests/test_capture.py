"""The capture engine: one capture per training forward, whatever else calls the blocks."""

import contextlib
import copy
import functools
import gc

import pytest
import torch
import torch.nn.functional as F
import torch.utils.checkpoint as checkpoint

from layersync_hooks import BlockCapture, LayerSync, MissingActivationsError
from tiny_models import build, prediction


class CountingDict(dict):
    """Counts stores into the engine's buffer: one per captured block per forward."""

    stores = 0

    def __setitem__(self, key, value):
        self.stores += 1
        super().__setitem__(key, value)


def spy(layersync):
    engine = layersync._capture._engine
    engine.buffer = CountingDict()
    return engine.buffer


def hook_calls(model, path):
    """Count every call of a block's forward hook, to show the scenario really re-runs blocks."""
    calls = []
    model.get_submodule(path).register_forward_hook(lambda *a: calls.append(torch.is_grad_enabled()))
    return calls


MODES = {
    "none": None,
    "default": "default",
    "reentrant": functools.partial(checkpoint.checkpoint, use_reentrant=True),
    "no_early_stop": "no_early_stop",
}


def train_step(family, mode):
    model, inputs = build(family)
    if mode != "none":
        function = MODES[mode]
        model.enable_gradient_checkpointing(None if isinstance(function, str) else function)
    layersync = LayerSync(model, student_block=2, teacher_block=-2)
    buffer = spy(layersync)
    calls = hook_calls(model, layersync.student.path)
    stop = checkpoint.set_checkpoint_early_stop(False) if mode == "no_early_stop" else contextlib.nullcontext()
    with stop:
        pred = prediction(model, inputs)
        loss = F.mse_loss(pred, torch.zeros_like(pred)) + layersync.loss()
        loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.item(), grads, buffer.stores, calls


@pytest.mark.parametrize("mode", ["default", "reentrant", "no_early_stop"])
@pytest.mark.parametrize("family", ["Flux", "SD3", "PixArt", "HunyuanVideo", "Wan"])
def test_checkpointing_modes_give_one_capture_and_identical_gradients(family, mode):
    """Under every gradient-checkpointing mode: two stores (student, teacher) and the no-checkpoint gradients."""
    base_loss, base_grads, base_stores, _ = train_step(family, "none")
    loss, grads, stores, calls = train_step(family, mode)
    assert base_stores == stores == 2
    if mode in ("reentrant", "no_early_stop"):
        assert len(calls) == 2, "the block's forward hook should fire again during backward in this mode"
    assert abs(loss - base_loss) < 1e-6
    assert grads.keys() == base_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], base_grads[name], atol=1e-6, rtol=1e-5, msg=name)


def test_hooks_never_change_outputs():
    """The model's output is bit-identical with LayerSync attached, removed, and never attached."""
    model, inputs = build("Flux")
    before = prediction(model, inputs)
    layersync = LayerSync(model, student_block=2, teacher_block=4)
    during = prediction(model, inputs)
    layersync.loss()
    layersync.remove()
    assert torch.equal(before, during) and torch.equal(before, prediction(model, inputs))


def test_stray_forwards_do_not_replace_the_capture():
    """Eval, no-grad, paused and EMA-copy forwards between the training forward and loss() are ignored."""
    model, inputs = build("PixArt")
    ema = copy.deepcopy(model)
    layersync = LayerSync(model, student_block=1, teacher_block=3)
    pred = prediction(model, inputs)
    captured = layersync._capture._engine.buffer[layersync.student.path][0]
    with torch.no_grad():
        prediction(model, inputs)
    model.eval()
    prediction(model, inputs)
    model.train()
    with layersync.paused():
        prediction(model, inputs)
    ema_copy = copy.deepcopy(model)  # copied with the hooks: they must ignore it
    prediction(ema_copy, inputs)
    prediction(ema, inputs)
    assert layersync._capture._engine.buffer[layersync.student.path][0] is captured
    (pred.mean() + layersync.loss()).backward()


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
    model.eval()
    prediction(model, inputs)
    with pytest.raises(MissingActivationsError, match=r"eval mode.*model.train\(\)"):
        layersync.loss()
    model.train()
    with layersync.paused():
        prediction(model, inputs)
    with pytest.raises(MissingActivationsError, match="paused"):
        layersync.loss()
    prediction(model, inputs)
    layersync.loss()
    with pytest.raises(MissingActivationsError, match="already used"):
        layersync.loss()


def test_buffer_released_after_loss_and_at_rearm():
    """The captured outputs are freed once the loss is built, and at the next training forward if never used."""
    model, inputs = build("PixArt")
    layersync = LayerSync(model, student_block=1, teacher_block=3)
    engine = layersync._capture._engine
    prediction(model, inputs)
    first = engine.buffer[layersync.student.path][0]
    prediction(model, inputs)  # forward without loss(): the re-arm must drop the first capture
    assert engine.buffer[layersync.student.path][0] is not first
    layersync.loss()
    assert not engine.buffer and engine.model_call is None


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


def hook_counts(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._forward_hooks_with_kwargs)
               + len(m._forward_hooks_always_called) + len(m._forward_pre_hooks_with_kwargs) for m in model.modules())


def test_remove_leaves_no_hook():
    """remove() (or leaving the `with` block) takes every hook off every module, and is idempotent."""
    model, inputs = build("Flux")
    assert hook_counts(model) == 0
    with LayerSync(model, student_block=2, teacher_block=4) as layersync:
        assert hook_counts(model) > 0
    assert hook_counts(model) == 0
    layersync.remove()
    assert "removed" in repr(layersync)


def test_captures_share_hooks_and_buffer():
    """Two users of the same blocks share one hook per block and one stored output; each gets its tokens."""
    model, inputs = build("PixArt")
    layersync = LayerSync(model, student_block=1, teacher_block=3)
    repa = BlockCapture(model, blocks=[1])
    assert repa._engine is layersync._capture._engine
    assert len(model.transformer_blocks[0]._forward_hooks) == 1
    buffer = spy(layersync)
    prediction(model, inputs)
    assert buffer.stores == 2
    activations = repa.pop()
    assert set(activations) == {"transformer_blocks.0"}
    assert activations["transformer_blocks.0"].hidden.shape == (2, 16, 8)
    assert "transformer_blocks.0" in buffer  # still held for LayerSync
    layersync.loss()
    assert not buffer
    layersync.remove()
    assert len(model.transformer_blocks[0]._forward_hooks) == 1  # still used by the other capture
    repa.remove()
    assert hook_counts(model) == 0


def test_capture_paused_for_one_user_only():
    """Pausing one user does not stop the capture for another."""
    model, inputs = build("PixArt")
    layersync = LayerSync(model, student_block=1, teacher_block=3)
    other = BlockCapture(model, blocks=[3])
    with layersync.paused():
        prediction(model, inputs)
    assert other.pop()["transformer_blocks.2"].hidden.dim() == 3
    with pytest.raises(MissingActivationsError):
        layersync.loss()
