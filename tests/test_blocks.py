"""Block addressing, wrappers, the generic fallback, custom layouts, and the attach-time errors."""

import gc
import logging
import re

import pytest
import torch
from tiny_models import build, prediction
from torch import nn

from layersync_hooks import BlockCapture, BlockLayout, LayerSync, register_layout
from layersync_hooks.capture import unwrap
from layersync_hooks.errors import BlockIndexError, LayerSyncConfigError, UnknownModelError
from layersync_hooks.layouts import unregister_layout


@pytest.mark.parametrize(
    "ref,path",
    [
        (1, "transformer_blocks.0"),
        (0, "transformer_blocks.0"),
        (2, "transformer_blocks.1"),
        (3, "single_transformer_blocks.0"),
        (5, "single_transformer_blocks.2"),
        (-1, "single_transformer_blocks.2"),
        (-5, "transformer_blocks.0"),
        ("single_transformer_blocks.1", "single_transformer_blocks.1"),
    ],
)
def test_depths_count_over_stacks_in_forward_order(ref, path):
    """Flux depths run over the double then the single stack, 1-based; 0 is the first; negative from the end."""
    model, _ = build("Flux")  # 2 double + 3 single blocks
    with BlockCapture(model, blocks=[ref]) as capture:
        assert capture.blocks[0].path == path


@pytest.mark.parametrize("teacher", [6, -6, 60])
def test_depth_out_of_range(teacher):
    """A depth past either end names the model, its stacks and the valid range."""
    model, _ = build("Flux")
    with pytest.raises(
        BlockIndexError,
        match=(
            rf"LayerSync could not find layer: `teacher_block={teacher}` is out of range for FluxTransformer2DModel, "
            r"which has 5 blocks \(transformer_blocks: 2, single_transformer_blocks: 3\)\. Use a depth in 1\.\.5"
        ),
    ):
        LayerSync(model, student_block=1, teacher_block=teacher)


def test_unknown_path():
    """A path that is not a block lists the stacks and example paths."""
    model, _ = build("Flux")
    with pytest.raises(
        BlockIndexError,
        match=r"LayerSync could not find layer: `student_block='blocks.3'`.*"
        r"'transformer_blocks.0', 'single_transformer_blocks.0'",
    ):
        LayerSync(model, student_block="blocks.3", teacher_block=4)


@pytest.mark.parametrize("student,teacher", [(-1, 2), ("single_transformer_blocks.0", 3), (4, "transformer_blocks.1")])
def test_teacher_not_deeper_after_resolution(student, teacher):
    """Mixed depth forms are compared after resolution, naming both blocks."""
    model, _ = build("Flux")
    with pytest.raises(LayerSyncConfigError, match=r"must be deeper.*depth \d+\).*depth \d+\)"):
        LayerSync(model, student_block=student, teacher_block=teacher)


def test_teacher_chosen_by_heuristic_and_logged(caplog):
    """Omitted teacher: about twice the student depth, outside the last 20%, with a log line."""
    model, _ = build("Flux")  # 5 blocks: last allowed depth is 4
    with caplog.at_level(logging.INFO, logger="layersync_hooks"):
        layersync = LayerSync(model, student_block=1)
    assert layersync.teacher.depth == 2
    assert "teacher_block not given: chose depth 2" in caplog.text
    assert LayerSync(model, student_block=2).teacher.depth == 4
    with pytest.raises(BlockIndexError, match=r"no teacher fits after student_block=4.*Pass `teacher_block`"):
        LayerSync(model, student_block=4)


def test_student_missing_and_bad_weight_at_attach():
    """Bad config values fail in the constructor, before any step."""
    model, _ = build("PixArt")
    with pytest.raises(LayerSyncConfigError, match="needs a student block"):
        LayerSync(model)
    with pytest.raises(LayerSyncConfigError, match="> 0 that float32 can hold .*, got 0"):
        LayerSync(model, student_block=1, teacher_block=2, weight=0)
    with pytest.raises(LayerSyncConfigError, match="Unknown LayerSync config key 'layersync_weight'"):
        LayerSync.from_config(model, {"layersync_enabled": True, "layersync_weight": 0.2})


def test_model_without_block_stack():
    """A model with no ModuleList of blocks gets an error with the `layout=` fix."""
    with pytest.raises(UnknownModelError, match=r"found no transformer block stack in `Linear`.*layout=BlockLayout"):
        LayerSync(nn.Linear(4, 4), student_block=1, teacher_block=2)


class TwoStacks(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.ModuleList(nn.Linear(8, 8) for _ in range(3))
        self.decoder = nn.ModuleList(nn.Linear(8, 8) for _ in range(3))

    def forward(self, x):
        for block in [*self.encoder, *self.decoder]:
            x = block(x)
        return x


def test_several_stacks_need_a_layout():
    """With several candidate stacks and no layout, LayerSync refuses to guess and shows the fix."""
    with pytest.raises(UnknownModelError, match=r"several block stacks: 'encoder' \(3\), 'decoder' \(3\)"):
        LayerSync(TwoStacks(), student_block=1, teacher_block=2)


def test_explicit_layout_and_register_layout():
    """`layout=` and `register_layout` number blocks over the given stacks; user choice beats the table."""
    model = TwoStacks()
    layout = BlockLayout(stacks=("encoder", "decoder"))
    layersync = LayerSync(model, student_block=2, teacher_block=5, layout=layout)
    assert (layersync.student.path, layersync.teacher.path) == ("encoder.1", "decoder.1")
    model(torch.randn(2, 3, 8))
    assert layersync.loss().dim() == 0
    register_layout(TwoStacks, BlockLayout(stacks=("decoder",)))
    try:
        assert LayerSync(model, student_block=1, teacher_block=2).student.path == "decoder.0"
    finally:
        unregister_layout(TwoStacks)
    with pytest.raises(LayerSyncConfigError, match="at least|non-empty"):
        BlockLayout(stacks=())
    with pytest.raises(UnknownModelError, match=r"names the stack 'middle'"):
        LayerSync(model, student_block=1, teacher_block=2, layout=BlockLayout(stacks=("middle",)))


def test_generic_fallback_on_a_transformers_decoder():
    """A transformers decoder is found through its single `layers` stack and trains with LayerSync."""
    transformers = pytest.importorskip("transformers")
    LlamaConfig, LlamaModel = transformers.LlamaConfig, transformers.LlamaModel

    config = LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    model = LlamaModel(config)
    layersync = LayerSync(model, student_block=1, teacher_block=3)
    assert layersync.student.path == "layers.0"
    hidden = model(input_ids=torch.randint(0, 32, (2, 6))).last_hidden_state
    (hidden.mean() + layersync.loss()).backward()
    assert model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0


def test_unwraps_ddp_and_compile(tmp_path):
    """A model inside DDP (`.module`) or torch.compile (`_orig_mod`) resolves to the same blocks and trains."""
    import torch.distributed as dist

    model, inputs = build("PixArt")
    # A file rendezvous: a fixed TCP port can still be held by an earlier run and hang the test.
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(model)
        assert unwrap(torch.compile(ddp)) is model
        layersync = LayerSync(ddp, student_block=1, teacher_block=3)
        prediction(ddp, inputs).mean().add(layersync.loss()).backward()
        assert model.transformer_blocks[0].attn1.to_q.weight.grad is not None
        layersync.remove()
        del ddp, layersync  # DDP's reducer must go before its process group (its destructor can hang after)
        gc.collect()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("how", ["add_adapter", "get_peft_model"])
def test_lora_weights_receive_the_layersync_gradient(how):
    """With PEFT LoRA (diffusers `add_adapter` or `get_peft_model`) the LoRA weights get the LayerSync gradient."""
    peft = pytest.importorskip("peft")
    LoraConfig, get_peft_model = peft.LoraConfig, peft.get_peft_model

    model, inputs = build("Flux")
    model.requires_grad_(False)
    lora = LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=["to_q", "to_k", "to_v"])
    if how == "add_adapter":
        model.add_adapter(lora)
        wrapped = model
    else:
        wrapped = get_peft_model(model, lora)
    layersync = LayerSync(wrapped, student_block=2, teacher_block=4)
    assert layersync.model is model or layersync.model is wrapped.get_base_model()
    wrapped(**inputs, return_dict=False)
    layersync.loss().backward()
    student = re.compile(r"(^|\.)transformer_blocks\.1\..*lora_B")
    lora_grads = {n: p.grad for n, p in wrapped.named_parameters() if student.search(n)}
    assert lora_grads and all(g is not None and g.abs().sum() > 0 for g in lora_grads.values())
