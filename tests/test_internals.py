"""Tests that read the package's private state on purpose: a capture's records and stores, the loss's chunk size,
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
from helpers import HostSync, hook_calls, hook_count, reference_grad, training_step
from tiny_models import build, enable_checkpointing, prediction

import layersync_hooks.capture.engine as engine
import layersync_hooks.loss as loss_module
from layersync_hooks import BlockCapture, LayerSync, token_similarity
from layersync_hooks.errors import LayerSyncConfigError
from layersync_hooks.loss import align


class Stores(dict):
    """A record's store of raw outputs that counts what goes in: one per captured block per forward."""

    count = 0

    def __setitem__(self, key, value):
        Stores.count += 1
        super().__setitem__(key, value)


@pytest.fixture
def stores(monkeypatch):
    """Counts every block output any capture stores while the test runs."""
    Stores.count = 0
    original = engine._Record.__init__

    def counting(record, model_call):
        original(record, model_call)
        record.stored = Stores()

    monkeypatch.setattr(engine._Record, "__init__", counting)
    return Stores


def folded(layersync, pair=0):
    """What the pair's capture kept of the last training forward (its records are popped by loss())."""
    (record,) = layersync._captures[pair]._records
    return record


MODES = {
    "none": None,
    "default": "default",
    "reentrant": functools.partial(checkpoint.checkpoint, use_reentrant=True),
    "no_early_stop": "no_early_stop",
}


def train_step(family, mode, stores):
    model, inputs = build(family)
    if mode != "none":
        function = MODES[mode]
        enable_checkpointing(model, None if isinstance(function, str) else function)
    layersync = LayerSync(model, student_block=2, teacher_block=-2)
    stores.count = 0
    calls = hook_calls(model, layersync.student.path)
    stop = checkpoint.set_checkpoint_early_stop(False) if mode == "no_early_stop" else contextlib.nullcontext()
    with stop:
        pred = prediction(model, inputs)
        loss = F.mse_loss(pred, torch.zeros_like(pred)) + layersync.loss()
        loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.item(), grads, stores.count, calls


@pytest.mark.parametrize("mode", ["default", "reentrant", "no_early_stop"])
@pytest.mark.parametrize("family", ["Flux", "SD3", "PixArt", "HunyuanVideo", "Wan"])
def test_internal_checkpointing_modes_give_one_capture_and_identical_gradients(family, mode, stores):
    """Under every gradient-checkpointing mode: two stores (student, teacher) and the no-checkpoint gradients."""
    base_loss, base_grads, base_stores, _ = train_step(family, "none", stores)
    loss, grads, count, calls = train_step(family, mode, stores)
    assert base_stores == count == 2
    if mode in ("reentrant", "no_early_stop"):
        assert len(calls) == 2, "the block's forward hook should fire again during backward in this mode"
    assert abs(loss - base_loss) < 1e-6
    assert grads.keys() == base_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], base_grads[name], atol=1e-6, rtol=1e-5, msg=name)


def test_internal_stray_forwards_do_not_replace_the_capture(stores):
    """No-grad, paused and EMA-copy forwards between the training forward and loss() store nothing; a frozen model's
    forward under grad is dropped when it returns (only its output tells that nothing in it trains). The training
    forward's folded pair is kept as it was, and the term is that forward's."""
    model, inputs = build("PixArt")
    ema = copy.deepcopy(model)
    layersync = LayerSync(model, student_block=1, teacher_block=3)
    pred = prediction(model, inputs)
    first = folded(layersync)
    stray = dict(inputs, hidden_states=inputs["hidden_states"] * 2)
    with torch.no_grad():
        prediction(model, stray)
    with layersync.paused():
        prediction(model, stray)
    ema_copy = copy.deepcopy(model)  # copied with the hooks: they must ignore it
    prediction(ema_copy, stray)
    prediction(ema, stray)
    assert stores.count == 2
    model.requires_grad_(False)  # a frozen model under grad: a reference pass, nothing it runs trains
    prediction(model, stray)
    model.requires_grad_(True)
    assert folded(layersync) is first and first.stored is None
    (pred.mean() + layersync.loss()).backward()


def test_internal_outputs_released_after_pop_and_at_the_next_forward():
    """The captured outputs are freed once taken, and at the next training forward if never taken; a LayerSync pair
    keeps nothing of a forward but what it folded (both blocks' outputs released inside the forward)."""
    model, inputs = build("PixArt")
    capture = BlockCapture(model, blocks=[1, 3])
    prediction(model, inputs)  # its output let go of: the next training forward drops the record
    (first,) = capture._records
    kept = prediction(model, inputs)
    assert capture._records[0] is not first and capture.captured == 1
    also = prediction(model, inputs)  # the output of the last one is alive: two forwards are handed over
    assert capture.captured == 2 and kept is not also
    capture.pop()
    assert capture._records == [] and capture._open is None
    capture.remove()
    layersync = LayerSync(model, student_block=1, teacher_block=3)
    prediction(model, inputs)
    record = folded(layersync)
    assert record.stored is None and record.folded.trains and layersync.has_activations
    prediction(model, inputs)
    assert folded(layersync) is not record
    layersync.loss()
    assert layersync._captures[0]._records == [] and not layersync.has_activations


def test_internal_captures_own_their_hooks_and_share_no_copy():
    """Two captures of one block each own a hook on it and store the same output object (no copy); removing one
    leaves the other's hook and record as they were."""
    model, inputs = build("PixArt")
    one, other = BlockCapture(model, blocks=[1]), BlockCapture(model, blocks=[1, 2])
    assert len(model.transformer_blocks[0]._forward_hooks) == 2
    prediction(model, inputs)
    path = "transformer_blocks.0"
    assert one._records[0].stored[path].output is other._records[0].stored[path].output
    one.remove()
    assert len(model.transformer_blocks[0]._forward_hooks) == 1
    (activations,) = other.pop()
    assert set(activations) == {path, "transformer_blocks.1"} and activations[path].hidden.shape == (2, 16, 8)
    other.remove()
    assert hook_count(model) == 0


def kept(capture):
    """path -> the block arguments a capture keeps beside the raw output, after one training forward."""
    return {path: stored.block_arguments for path, stored in capture._records[-1].stored.items()}


def test_internal_rules_that_read_model_arguments_keep_no_block_arguments():
    model, inputs = build("Flux")  # img_ids marks the target: a model argument
    capture = BlockCapture(model, blocks=[1, -1])  # a double block and a single block
    prediction(model, inputs)
    assert kept(capture) == {"transformer_blocks.0": None, "single_transformer_blocks.2": None}
    (activations,) = capture.pop()
    assert all(a.hidden.isfinite().all() for a in activations.values())


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


def test_internal_a_shared_teacher_is_one_output_for_both_pairs(stores):
    """Pairs (1, 3) and (2, 3) share the teacher: each pair's capture hooks it and keeps a reference to the same
    output (no copy), folded and released inside the forward."""
    model, inputs = build("PixArt")
    layersync = LayerSync(model, pairs=[(1, 3), (2, 3)])
    assert len(model.transformer_blocks[2]._forward_hooks) == 2
    outputs = []
    model.transformer_blocks[2].register_forward_hook(lambda module, args, output: outputs.append(output))
    prediction(model, inputs)
    assert stores.count == 4 and len(outputs) == 1
    assert all(folded(layersync, pair).stored is None for pair in (0, 1))
    assert "student=transformer_blocks.1 (depth 2) <- teacher=transformer_blocks.2 (depth 3)" in repr(layersync)
    with pytest.raises(LayerSyncConfigError, match="name the same blocks twice"):
        LayerSync(model, pairs=[(1, 3), ("transformer_blocks.0", "transformer_blocks.2")])


@pytest.mark.parametrize("family", ["Flux", "PixArt"])
def test_internal_teacher_is_released_inside_the_forward(family):
    """Once a pair's teacher block has run, the pair is folded, connected to the student's graph, and both outputs
    are released while the forward still runs; the term and its gradient equal the computation after the forward."""
    model, inputs = build(family)
    layersync = LayerSync(model, student_block=1, teacher_block=3)
    seen = []
    last = model.get_submodule(layersync._blocks[-1].path)
    handle = last.register_forward_hook(lambda *args: seen.append(layersync._captures[0]._open.stored))
    prediction(model, inputs)
    handle.remove()
    assert seen == [None]  # at the last block the pair holds no block output
    term = layersync.loss()
    term.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    layersync.remove()
    capture = BlockCapture(model, [1, 3])  # no fold: the outputs kept, the tokens cut after the forward
    prediction(model, inputs)
    ((student, teacher),) = (tuple(tokens.values()) for tokens in capture.pop())
    mask = (
        student.mask if teacher.mask is None else teacher.mask if student.mask is None else student.mask & teacher.mask
    )
    expected = -0.2 * loss_module.mean_cosine(*align(student.hidden, teacher.hidden, mask=mask)[:2])
    expected.backward()
    torch.testing.assert_close(term, expected, rtol=1e-6, atol=1e-7)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, model.get_parameter(name).grad, rtol=1e-5, atol=1e-7, msg=name)


def test_internal_runner_report_keeps_nothing_on_other_processes(tmp_path):
    """The runner's own report is written by the main process; the others open no window on LayerSync's totals (and
    so never read them back from the device). The main process averages its micro-batches' terms, and its window
    leaves what `metrics()` reads untouched."""
    from layersync_hooks.integrations.accelerate import _Report

    model, inputs = build("PixArt")
    layersync = LayerSync(model, student_block=1, teacher_block=3)
    other = _Report(layersync, tmp_path / "other.jsonl", every=1, main=False)
    main = _Report(layersync, tmp_path / "main.jsonl", every=2, main=True)
    assert other.window is None and main.window.shared
    terms = []
    for scale in (1.0, 0.5):
        prediction(model, dict(inputs, hidden_states=inputs["hidden_states"] * scale))
        terms.append(layersync.loss().item())
        layersync.meter.share()  # the runner's backward, at each optimizer step
        other.step(0)
        main.step(0)
    assert not (tmp_path / "other.jsonl").exists()
    row = json.loads((tmp_path / "main.jsonl").read_text())
    assert row["layersync_loss"] == pytest.approx(sum(terms) / 2) and terms[0] != pytest.approx(terms[1])
    assert layersync.metrics()["layersync_loss"] == pytest.approx(sum(terms) / 2)
    layersync.remove()
