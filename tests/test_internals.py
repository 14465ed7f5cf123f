"""Tests that read the package's private state on purpose: the engine's buffer and stores, the loss's chunk size,
a package function replaced by one with a host sync. Every other test uses the public API only.
"""

import contextlib
import copy
import functools
import json

import pytest
import torch
import torch.nn.functional as F
import torch.utils.checkpoint as checkpoint
from test_capture import hook_calls, hook_counts
from test_host_sync import HostSync, training_step
from test_loss import reference_grad
from tiny_models import build, prediction

import layersync_hooks.loss as loss_module
from layersync_hooks import BlockCapture, LayerSync, token_similarity
from layersync_hooks.errors import LayerSyncConfigError


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
def test_internal_checkpointing_modes_give_one_capture_and_identical_gradients(family, mode):
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


def test_internal_stray_forwards_do_not_replace_the_capture():
    """Eval, no-grad, paused and EMA-copy forwards between the training forward and loss() are ignored: nothing is
    stored or folded again (the training forward's pair was folded in it), and the term is that forward's."""
    model, inputs = build("PixArt")
    ema = copy.deepcopy(model)
    layersync = LayerSync(model, student_block=1, teacher_block=3)
    buffer = spy(layersync)
    pred = prediction(model, inputs)
    folded = dict(layersync._folded)
    stray = dict(inputs, hidden_states=inputs["hidden_states"] * 2)
    with torch.no_grad():
        prediction(model, stray)
    model.eval()
    prediction(model, stray)
    model.train()
    with layersync.paused():
        prediction(model, stray)
    ema_copy = copy.deepcopy(model)  # copied with the hooks: they must ignore it
    prediction(ema_copy, stray)
    prediction(ema, stray)
    assert buffer.stores == 2 and layersync._folded.keys() == folded.keys()
    assert layersync._folded[0].cosine is folded[0].cosine
    (pred.mean() + layersync.loss()).backward()


def test_internal_buffer_released_after_loss_and_at_rearm():
    """The captured outputs are freed once taken, and at the next training forward if never used; LayerSync holds
    nothing of a forward after it (its pair folded, both blocks released) but that forward's folded values."""
    model, inputs = build("PixArt")
    capture = BlockCapture(model, blocks=[1, 3])
    engine = capture._engine
    prediction(model, inputs)
    first = engine.buffer["transformer_blocks.0"][0]
    prediction(model, inputs)  # forward without pop(): the re-arm must drop the first capture
    assert engine.buffer["transformer_blocks.0"][0] is not first
    capture.pop()
    assert not engine.buffer and engine.model_call is None
    capture.remove()
    layersync = LayerSync(model, student_block=1, teacher_block=3)
    prediction(model, inputs)
    assert not layersync._capture._engine.buffer and layersync.has_activations
    first = layersync._folded[0]
    prediction(model, inputs)
    assert layersync._folded[0] is not first
    layersync.loss()
    assert not layersync._folded and not layersync.has_activations


def test_internal_captures_share_hooks_and_buffer():
    """Two users of the same blocks share one hook per block and one stored output; each gets its tokens."""
    model, inputs = build("PixArt")
    layersync = LayerSync(model, student_block=1, teacher_block=3)
    repa = BlockCapture(model, blocks=[1])
    assert repa._engine is layersync._capture._engine
    assert len(model.transformer_blocks[0]._forward_hooks) == 1
    buffer = spy(layersync)
    prediction(model, inputs)
    assert buffer.stores == 2
    assert set(buffer) == {"transformer_blocks.0"}  # LayerSync released both blocks, held on for the other user
    activations = repa.pop()
    assert set(activations) == {"transformer_blocks.0"}
    assert activations["transformer_blocks.0"].hidden.shape == (2, 16, 8)
    assert not buffer
    layersync.loss()
    layersync.remove()
    assert len(model.transformer_blocks[0]._forward_hooks) == 1  # still used by the other capture
    repa.remove()
    assert hook_counts(model) == 0


def kept(capture):
    """path -> what the capture keeps besides the raw output, after one training forward."""
    return {path: extra for path, (_, extra) in capture._engine.buffer.items()}


def test_internal_rules_that_read_model_arguments_keep_no_block_arguments():
    model, inputs = build("Flux")  # img_ids marks the target: a model argument
    capture = BlockCapture(model, blocks=[1, -1])  # a double block and a single block
    prediction(model, inputs)
    assert kept(capture) == {"transformer_blocks.0": None, "single_transformer_blocks.2": None}
    assert all(a.hidden.isfinite().all() for a in capture.pop().values())


@pytest.mark.parametrize("checkpointing", [False, True])
def test_internal_declared_block_arguments_are_kept_alone_and_by_name(checkpointing):
    model, inputs = build("BriaFibo2")  # its `layers` rule reads each block's `noise_mask`
    if checkpointing:  # diffusers then passes block arguments positionally
        model.enable_gradient_checkpointing()
    model.train()
    capture = BlockCapture(model, blocks=["layers.0", "layers.1"])
    prediction(model, inputs)
    assert set(kept(capture)) == {"layers.0", "layers.1"}
    for path, extra in kept(capture).items():
        assert list(extra) == ["noise_mask"], path
        assert extra["noise_mask"].dtype == torch.bool or not extra["noise_mask"].is_floating_point()
    capture.remove()
    layersync = LayerSync(model, student_block="layers.0", teacher_block="layers.1")
    prediction(model, inputs)
    assert torch.isfinite(layersync.loss())


@pytest.fixture(params=["one chunk", "many chunks"])
def chunks(request, monkeypatch):
    """Run a test with the default row chunks (one, for small tensors) and with chunks of a few rows."""
    if request.param == "many chunks":
        monkeypatch.setattr(loss_module, "_MIN_CHUNK", 1)


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-6), (torch.bfloat16, 2e-5), (torch.float16, 2e-6)])
def test_internal_gradient_matches_float64_reference(dtype, atol, chunks):
    """The student gradient equals float64 autograd of the formula, for float32 and half activations."""
    student, teacher = torch.randn(3, 40, 24).to(dtype), torch.randn(3, 40, 24).to(dtype)
    mask = torch.rand(3, 40) > 0.3
    expected, expected_grad = reference_grad(student.float(), teacher.float(), mask)
    student.requires_grad_()
    value = token_similarity(student, teacher, mask=mask)
    value.backward()
    assert value.dtype == torch.float32 and student.grad.dtype == dtype
    assert abs(value.item() - expected.item()) < 1e-6
    torch.testing.assert_close(student.grad.double(), expected_grad, atol=atol, rtol=1e-2)


def test_internal_image_slice_of_a_joint_sequence(chunks):
    """Image tokens sliced out of a [text; image] stream (a non-contiguous view) give the contiguous result."""
    joint = torch.randn(3, 7 + 20, 16, requires_grad=True)
    teacher = torch.randn(3, 7 + 20, 16)[:, 7:]
    token_similarity(joint[:, 7:], teacher).backward()
    expected, expected_grad = reference_grad(joint[:, 7:], teacher)
    assert joint.grad[:, :7].abs().sum() == 0
    torch.testing.assert_close(joint.grad[:, 7:].double(), expected_grad, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("call", ["t.item()", "bool(t.sum() > 0)", "t[t > 0]", "t.tolist()"])
def test_internal_guard_catches_a_sync_added_to_the_package(call, monkeypatch):
    """The guard fails a step when package code gains a host sync (here in loss.py's `flatten_tokens`)."""
    source = (
        f"def flatten_tokens(hidden):\n    t = hidden.detach().flatten()[:1]\n    {call}\n    return original(hidden)\n"
    )
    namespace = {"original": loss_module.flatten_tokens}
    exec(compile(source, loss_module.__file__, "exec"), namespace)
    monkeypatch.setattr(loss_module, "flatten_tokens", namespace["flatten_tokens"])
    with pytest.raises(HostSync, match="loss.py"):
        training_step("DiT", False, monkeypatch)


def test_internal_shared_blocks_are_captured_once():
    """Pairs (1, 3) and (2, 3) share the teacher: three blocks hooked, three outputs stored per forward."""
    model, inputs = build("PixArt")
    layersync = LayerSync(model, pairs=[(1, 3), (2, 3)])
    buffer = spy(layersync)
    assert len(model.transformer_blocks[2]._forward_hooks) == 1
    prediction(model, inputs)
    assert buffer.stores == 3
    assert "student=transformer_blocks.1 (depth 2) <- teacher=transformer_blocks.2 (depth 3)" in repr(layersync)
    with pytest.raises(LayerSyncConfigError, match="name the same blocks twice"):
        LayerSync(model, pairs=[(1, 3), ("transformer_blocks.0", "transformer_blocks.2")])


@pytest.mark.parametrize("family", ["Flux", "PixArt"])
def test_internal_teacher_is_released_inside_the_forward(family):
    """Once a pair's teacher block has run, the pair is folded, connected to the student's graph, and both outputs
    leave the buffer while the forward still runs; the term and its gradient equal the unfolded computation."""
    model, inputs = build(family)
    layersync = LayerSync(model, student_block=1, teacher_block=3)
    sizes = []
    last = BlockCapture(model, [-1])
    last.on_stored = lambda path: sizes.append(set(layersync._capture._engine.buffer) - {path})
    prediction(model, inputs)
    assert sizes == [set()]  # at the last block LayerSync holds nothing in the buffer
    term = layersync.loss()
    term.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    last.remove()
    layersync.remove()
    reference = LayerSync(model, student_block=1, teacher_block=3)
    reference._capture.on_stored = None  # never fold in the forward: everything at loss()
    prediction(model, inputs)
    expected = reference.loss()
    expected.backward()
    torch.testing.assert_close(term, expected, rtol=1e-6, atol=1e-7)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, model.get_parameter(name).grad, rtol=1e-5, atol=1e-7, msg=name)


def test_internal_runner_report_keeps_nothing_on_other_processes(tmp_path):
    """The runner's own report is written by the main process; the others keep no sums (and so never read them
    back from the device at a report step). The main process averages its micro-batches' terms."""
    from layersync_hooks.integrations.accelerate import _Report

    model, _ = build("PixArt")
    layersync = LayerSync(model, student_block=1, teacher_block=3)
    other = _Report(layersync, tmp_path / "other.jsonl", every=1, main=False)
    other.add(torch.tensor(-0.1), 0.2)
    assert other.sums is None
    other.step()
    assert not (tmp_path / "other.jsonl").exists()
    main = _Report(layersync, tmp_path / "main.jsonl", every=2, main=True)
    for term in (-0.1, -0.14):
        main.add(torch.tensor(term), 0.2)
        main.step()
    row = json.loads((tmp_path / "main.jsonl").read_text())
    assert row["layersync_loss"] == pytest.approx(-0.12) and row["layersync_similarity"] == pytest.approx(0.6)
    layersync.remove()
