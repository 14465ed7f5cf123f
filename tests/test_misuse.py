"""Nothing silent, nothing lost: misuse that used to train on a wrong setting, or fail far from its cause, is a clear
error where it can first be known; interrupted forwards, copies and saves leave nothing stale."""

import argparse
import copy
import io
import pickle

import diffusers
import pytest
import torch
from helpers import hook_count
from packaging.version import Version
from tiny_models import build, prediction

from layersync_hooks import BlockCapture, BlockLayout, LayerSync, LayerSyncConfig, LayerSyncError, recommend_pair
from layersync_hooks.capture import wrappers
from layersync_hooks.errors import LayerSyncConfigError, MissingActivationsError
from layersync_hooks.schedule import WeightSchedule


# -- a student that cannot learn -----------------------------------------------------------------------------------
def lora_on(model, blocks):
    """LoRA on some blocks only, the base frozen (diffusers' `--lora_layers`)."""
    peft = pytest.importorskip("peft")
    model.requires_grad_(False)
    targets = [f"transformer_blocks.{i}.attn1.{name}" for i in blocks for name in ("to_q", "to_k", "to_v")]
    peft.inject_adapter_in_model(
        peft.LoraConfig(r=2, lora_alpha=2, init_lora_weights="gaussian", target_modules=targets), model
    )


def test_student_before_every_trained_block_is_an_error_naming_the_trained_depths():
    """LoRA on blocks 3-4 only and a student at depth 1: no gradient path, so loss() says which blocks train."""
    model, inputs = build("PixArt")  # 4 blocks
    lora_on(model, [2, 3])
    layersync = LayerSync(model, student_block=1, teacher_block=4)
    prediction(model, inputs)
    with pytest.raises(LayerSyncError, match=r"student transformer_blocks.0 \(depth 1\) gets no gradient.*depths 3-4"):
        layersync.loss()


def test_everything_frozen_is_an_error():
    """A model with nothing to train runs no training forward: the first loss() says so, and why."""
    model, inputs = build("PixArt")
    model.requires_grad_(False)
    layersync = LayerSync(model, student_block=2, teacher_block=4)
    prediction(model, inputs)
    with pytest.raises(MissingActivationsError, match=r"PixArtTransformer2DModel was not captured because nothing"):
        layersync.loss()


def test_frozen_student_after_a_trained_block_still_learns():
    """A frozen student passes its gradient on to trained blocks before it: not an error."""
    model, inputs = build("PixArt")
    lora_on(model, [0])
    layersync = LayerSync(model, student_block=2, teacher_block=4)
    (prediction(model, inputs).mean() + layersync.loss()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora" in n)


# -- the same module twice -----------------------------------------------------------------------------------------
def test_a_module_at_two_positions_is_refused_at_attach():
    """One module object at two positions of a stack: its hook cannot tell the calls apart (cosine 1, zero grad)."""
    model, _ = build("PixArt")
    model.transformer_blocks[3] = model.transformer_blocks[1]
    with pytest.raises(LayerSyncError, match=r"'transformer_blocks.1' \(depth 2\) is the same module object as \['tr"):
        LayerSync(model, student_block=2, teacher_block=4)
    with pytest.raises(LayerSyncError, match="same module object"):
        BlockCapture(model, blocks=[4])
    LayerSync(model, student_block=1, teacher_block=3).remove()  # blocks that appear once are fine


# -- values that the constructor refuses, through every other door -------------------------------------------------
@pytest.mark.parametrize("state", [{"step": -1}, {"step": 2.5}, {"step": True}, {"step": "3"}, {}, {"steps": 3}])
def test_a_restored_state_cannot_bring_a_bad_step(state):
    """A negative (or non-integer, or absent) step would give a negative weight: refused by load_state_dict."""
    model, _ = build("PixArt")
    layersync = LayerSync(model, student_block=1, teacher_block=3, warmup_steps=4)
    with pytest.raises(LayerSyncConfigError, match=r"`step`, the optimizer steps done, as an integer >= 0"):
        layersync.load_state_dict(state)
    assert layersync.step == 0 and layersync.weight > 0


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), 1e39, -1.0, "0.2"])
def test_a_schedule_refuses_what_the_config_refuses(weight):
    """WeightSchedule checks its weight like the config does."""
    with pytest.raises(LayerSyncConfigError, match="float32 can hold"):
        WeightSchedule(weight)


def test_a_restored_state_with_other_weight_warns_and_keeps_the_config():
    """A state saved with another weight restores the step only, and says so."""
    model, _ = build("PixArt")
    layersync = LayerSync(model, student_block=1, teacher_block=3, weight=0.2)
    with pytest.warns(UserWarning, match="with weight 0.5 into one on .* with weight 0.2"):
        layersync.load_state_dict({**layersync.state_dict(), "step": 5, "weight": 0.5})
    assert layersync.step == 5 and layersync.weight == 0.2


def test_two_negative_depths_count_from_the_end():
    """-4 and -2 on 4 blocks are depths 1 and 3: a valid pair, not 'teacher not deeper'; the config keeps them as
    given, to be resolved on the model."""
    model, _ = build("PixArt")
    assert len(BlockCapture(model, [1]).all_blocks) == 4
    layersync = LayerSync(model, student_block=-4, teacher_block=-2)
    assert (layersync.student.depth, layersync.teacher.depth) == (1, 3)
    assert LayerSyncConfig(pairs=[(-8, -4)]).pairs == ((-8, -4),)


def test_paper_code_names_turn_layersync_on():
    """The paper code has no switch: its names mean on, unless `layersync_enabled: false`; SimpleTuner's keys keep
    SimpleTuner's default (off, with a warning)."""
    assert LayerSyncConfig.from_dict({"encoder_depth": 8, "gt_encoder_depth": 16, "reg_weight": 0.2}).enabled
    assert not LayerSyncConfig.from_dict({"encoder_depth": 8, "layersync_enabled": False}).enabled
    with pytest.warns(UserWarning, match="SimpleTuner's default"):
        assert not LayerSyncConfig.from_dict({"layersync_student_block": 8}).enabled


def test_recommend_pair_never_gives_a_pair_layersync_refuses():
    """For every model size the recommended pair attaches; below 2 blocks it is an error, not (1, 1)."""
    for n in range(2, 80):
        student, teacher = recommend_pair(n)
        assert 1 <= student < teacher <= n, n
    with pytest.raises(LayerSyncConfigError, match="at least 2 blocks"):
        recommend_pair(1)


# -- interruption -------------------------------------------------------------------------------------------------
class Interrupt(BaseException):
    """A BaseException of a user's own (like KeyboardInterrupt, it is not an Exception)."""


@pytest.mark.parametrize("kind", [RuntimeError, KeyboardInterrupt, SystemExit, GeneratorExit, Interrupt])
def test_a_forward_stopped_by_any_exception_leaves_no_stale_capture(kind):
    """An exception raised inside a block stops the forward after the student was stored: the next training
    forward starts from a clean buffer, and its term equals a run that was never interrupted."""
    model, inputs = build("PixArt")
    layersync = LayerSync(model, student_block=1, teacher_block=3)

    def fail(module, args):
        raise kind("stop")

    handle = model.transformer_blocks[1].register_forward_pre_hook(fail)  # after the student, before the teacher
    with pytest.raises(kind):
        prediction(model, inputs)
    handle.remove()
    stopped = "has not returned yet" if kind is not RuntimeError else "An exception stopped"
    with pytest.raises(MissingActivationsError, match=stopped):
        layersync.loss()  # a loss() right after the interruption is an error, never a half-paired term
    changed = dict(inputs, hidden_states=inputs["hidden_states"] * 0.5)
    prediction(model, changed)
    term = layersync.loss()
    layersync.remove()
    clean = LayerSync(model, student_block=1, teacher_block=3)
    prediction(model, changed)
    torch.testing.assert_close(term, clean.loss(), rtol=0, atol=0)


# -- saving and copying -------------------------------------------------------------------------------------------
def test_an_attached_model_saves_and_loads_with_torch_save():
    """torch.save(model) while attached works; the loaded model carries no LayerSync hook once it runs."""
    model, inputs = build("PixArt")
    layersync = LayerSync(model, student_block=1, teacher_block=3)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    torch.testing.assert_close(prediction(loaded, inputs), prediction(model, inputs))
    assert hook_count(loaded) == 0
    layersync.loss()  # the original is still attached and captured its own forward


def test_a_deep_copy_taken_while_attached_carries_no_stale_hooks():
    """An EMA copy taken while attached never captures; after remove() it has no hook at all and can be saved."""
    model, inputs = build("PixArt")
    layersync = LayerSync(model, student_block=1, teacher_block=3)
    ema = copy.deepcopy(model)
    prediction(ema, inputs)
    with pytest.raises(MissingActivationsError):
        layersync.loss()  # the copy's forward was not captured
    layersync.remove()
    assert hook_count(model) == 0 and hook_count(ema) == 0
    torch.save(ema, io.BytesIO())


@pytest.mark.parametrize("how", [copy.copy, copy.deepcopy, pickle.dumps])
def test_copying_a_layersync_or_a_capture_is_a_clear_error(how):
    """A LayerSync or BlockCapture is a handle on hooks: a copy would misreport its state, so it is refused."""
    model, _ = build("PixArt")
    layersync = LayerSync(model, student_block=1, teacher_block=3)
    with pytest.raises(LayerSyncError, match=r"cannot be copied or pickled.*state_dict"):
        how(layersync)
    with pytest.raises(LayerSyncError, match="BlockCapture cannot be copied"):
        how(BlockCapture(model, blocks=[1]))
    assert layersync.state == "attached"


# -- clear messages ---------------------------------------------------------------------------------------------
def test_malformed_json_names_the_file_and_the_line(tmp_path):
    """A JSON config with a syntax error names the file, the line and the column."""
    path = tmp_path / "layersync.json"
    path.write_text('{\n  "layersync_enabled": true,\n  "layersync_student_block": 8,\n}\n')
    with pytest.raises(LayerSyncConfigError, match=rf"'{path}' is not valid JSON: .* line 4, column 1"):
        LayerSyncConfig.from_json(path)


def test_argparse_shows_the_package_explanation_of_a_bad_value(capsys):
    """A script's parser prints why a pair or block is bad, not argparse's generic 'invalid value'."""
    parser = LayerSync.add_arguments(argparse.ArgumentParser(prog="train.py"))
    with pytest.raises(SystemExit):
        parser.parse_args(["--layersync_pairs", "8"])
    error = capsys.readouterr().err
    assert "--layersync_pairs" in error and "(student, teacher)" in error and "got '8'" in error
    with pytest.raises(SystemExit):
        parser.parse_args(["--layersync_student_block", " "])
    error = capsys.readouterr().err
    assert "--layersync_student_block" in error and "1-based depth" in error and "got ' '" in error


def test_compiled_checkpointed_forward_points_to_the_dynamo_flag():
    """A whole-model compile with checkpointing drops the hooks' stores unless Dynamo's flag is set: the error says
    to set it, not that the forward did not call the block."""
    if Version(diffusers.__version__) < Version("0.33"):  # its checkpointing traces whole: the stores survive
        pytest.skip(f"diffusers {diffusers.__version__}'s checkpointed blocks keep the hooks' stores when compiled")
    model, inputs = build("PixArt")
    model.enable_gradient_checkpointing()
    layersync = LayerSync(model, student_block=1, teacher_block=3)
    runner = torch.compile(model, backend="aot_eager")
    try:
        prediction(runner, inputs)
        with pytest.raises(MissingActivationsError, match="skip_fwd_side_effects_in_bwd_under_checkpoint = True"):
            layersync.loss()
    finally:
        torch._dynamo.reset()


def test_unsupported_layout_is_refused_with_its_reason():
    """A class the table refuses says why, in the error every entry point raises (BlockCapture, LayerSync)."""
    from layersync_hooks.errors import UnsupportedModelError

    if not hasattr(diffusers, "AnyFlowFARTransformer3DModel"):
        pytest.skip(f"diffusers {diffusers.__version__} has no AnyFlowFARTransformer3DModel")
    model = diffusers.AnyFlowFARTransformer3DModel(
        patch_size=(1, 2, 2), compressed_patch_size=(1, 4, 4), num_attention_heads=2, attention_head_dim=12,
        in_channels=4, out_channels=4, text_dim=16, freq_dim=256, ffn_dim=32, num_layers=2,
    )  # fmt: skip
    for attach in (lambda: LayerSync(model, student_block=1, teacher_block=2), lambda: BlockCapture(model, [1])):
        with pytest.raises(UnsupportedModelError, match="FlexAttention"):
            attach()
    BlockCapture(model, [1], layout=BlockLayout(stacks=("blocks",))).remove()


# -- engines and loops LayerSync cannot follow -------------------------------------------------------------------
def test_a_pipeline_parallel_module_is_refused_at_attach():
    """A module of a pipeline engine (DeepSpeed's PipelineModule, torch's pipelining) runs the student and the
    teacher in different processes and computes the loss itself: refused at attach, naming FSDP / ZeRO instead."""
    model, _ = build("PixArt")
    stage = type("PipelineModule", (torch.nn.Module,), {"__module__": "deepspeed.runtime.pipe.module"})()
    with pytest.raises(LayerSyncError, match=r"PipelineModule is a pipeline-parallel module.*FSDP or DeepSpeed ZeRO"):
        LayerSync(model, student_block=1, teacher_block=3, training_module=stage)


def test_blocks_run_outside_the_models_forward_are_named_in_the_error():
    """A loop that runs the blocks itself (a pipeline engine's stages, DiffSynth-style model functions) never calls
    the model's forward: loss() says the pair's two blocks ran outside it, and to pass `training_module=`."""
    model, inputs = build("PixArt")
    layersync = LayerSync(model, student_block=1, teacher_block=3)
    hidden = torch.randn(2, 16, 8)
    for block in model.transformer_blocks:
        hidden = block(hidden, encoder_hidden_states=torch.randn(2, 8, 8), timestep=torch.zeros(2, 6 * 8))
    with pytest.raises(MissingActivationsError, match=r"blocks ran 2 times with gradients outside.*training_module="):
        layersync.loss()


def test_a_model_that_names_itself_its_compiled_original_is_unwrapped():
    """musubi-tuner's --compile sets `model._orig_mod = model` ("for accelerator checks"): unwrapping stops there."""
    model, _ = build("PixArt")
    model.__dict__["_orig_mod"] = model
    assert wrappers(model) == [model]
    LayerSync(model, student_block=1, teacher_block=3).remove()
