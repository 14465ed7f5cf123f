"""The capture keeps a block's output and only the call arguments its token rule declares, nothing more.

Keeping a whole block call would keep the block's input activations alive until the loss is built: for Flux's
single blocks a whole text+image stream, 1.1 student activations of extra peak memory in the overhead benchmark.
"""

import pytest
import torch

from layersync_hooks import BlockLayout, LayerSync, LayerSyncConfigError, Stack
from layersync_hooks.tokens import Span
from tiny_models import build, prediction


def kept(layersync):
    """path -> what the capture keeps besides the raw output, after one training forward."""
    return {path: extra for path, (_, extra) in layersync._capture._engine.buffer.items()}


def test_rules_that_read_model_arguments_keep_no_block_arguments():
    model, inputs = build("Flux")  # img_ids marks the target: a model argument
    layersync = LayerSync(model, student_block=1, teacher_block=-1)  # a double block and a single block
    prediction(model, inputs)
    assert kept(layersync) == {layersync.student.path: None, layersync.teacher.path: None}
    assert torch.isfinite(layersync.loss())


@pytest.mark.parametrize("checkpointing", [False, True])
def test_declared_block_arguments_are_kept_alone_and_by_name(checkpointing):
    model, inputs = build("BriaFibo2")  # its `layers` rule reads each block's `noise_mask`
    if checkpointing:  # diffusers then passes block arguments positionally
        model.enable_gradient_checkpointing()
    model.train()
    layersync = LayerSync(model, student_block="layers.0", teacher_block="layers.1")
    prediction(model, inputs)
    for path, extra in kept(layersync).items():
        assert list(extra) == ["noise_mask"], path
        assert extra["noise_mask"].dtype == torch.bool or not extra["noise_mask"].is_floating_point()
    assert torch.isfinite(layersync.loss())


class ReadsUndeclared:
    """A user rule that reads a block argument without declaring it in `block_args`."""

    reads_inputs = True

    def __call__(self, hidden, inputs):
        inputs.block_arg("temb")
        return hidden, None


def test_undeclared_block_argument_is_a_clear_error():
    model, inputs = build("PixArt")
    layout = BlockLayout(stacks=(Stack("transformer_blocks", tokens=ReadsUndeclared()),))
    layersync = LayerSync(model, student_block=1, teacher_block=2, layout=layout)
    prediction(model, inputs)
    with pytest.raises(LayerSyncConfigError, match=r"block argument 'temb' without declaring it.*block_args"):
        layersync.loss()


class Declares(Span):
    block_args = ("no_such_argument",)


def test_declared_argument_the_block_lacks_fails_at_attach():
    model, _ = build("PixArt")
    layout = BlockLayout(stacks=(Stack("transformer_blocks", tokens=Declares(4)),))
    with pytest.raises(LayerSyncConfigError, match=r"'no_such_argument'.*BasicTransformerBlock.forward takes"):
        LayerSync(model, student_block=1, teacher_block=2, layout=layout)
