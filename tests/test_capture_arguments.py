"""The capture keeps a block's output and only the call arguments its token rule declares, nothing more.

Keeping a whole block call would keep the block's input activations alive until the loss is built: for Flux's
single blocks a whole text+image stream, 1.1 student activations of extra peak memory in the overhead benchmark.
"""

import pytest
from tiny_models import build, prediction

from layersync_hooks import BlockLayout, LayerSync, Stack
from layersync_hooks.errors import LayerSyncConfigError
from layersync_hooks.layouts import Span


class ReadsUndeclared:
    """A user rule that reads a block argument without declaring it in `block_args`."""

    reads_inputs = True

    def __call__(self, hidden, inputs):
        inputs.block_arg("temb")
        return hidden, None


def test_undeclared_block_argument_is_a_clear_error():
    model, inputs = build("PixArt")
    layout = BlockLayout(stacks=(Stack("transformer_blocks", rule=ReadsUndeclared()),))
    LayerSync(model, student_block=1, teacher_block=2, layout=layout)
    with pytest.raises(LayerSyncConfigError, match=r"block argument 'temb' without declaring it.*block_args"):
        prediction(model, inputs)  # the pair is folded in the forward, where the rule runs


class Declares(Span):
    block_args = ("no_such_argument",)


def test_declared_argument_the_block_lacks_fails_at_attach():
    model, _ = build("PixArt")
    layout = BlockLayout(stacks=(Stack("transformer_blocks", rule=Declares(4)),))
    with pytest.raises(LayerSyncConfigError, match=r"'no_such_argument'.*BasicTransformerBlock.forward takes"):
        LayerSync(model, student_block=1, teacher_block=2, layout=layout)
