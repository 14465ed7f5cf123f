"""A token rule that selects nothing is loud: at once, in the training forward, for an empty slice; for an empty
mask at the first loss() of the run (one host sync, once) and at every metrics() after it."""

import pytest
import torch
from tiny_models import build, prediction

from layersync_hooks import BlockLayout, LayerSync, LayerSyncError, Stack


def test_empty_slice_raises_before_backward():
    """A rule that keeps no token fails in the training forward, where the pair is folded, naming the stack, instead
    of a NaN loss."""
    model, inputs = build("PixArt")
    layout = BlockLayout(stacks=(Stack("transformer_blocks", rule=lambda hidden, _: (hidden[:, :0], None)),))
    LayerSync(model, student_block=1, teacher_block=3, layout=layout)
    with pytest.raises(LayerSyncError, match=r"rule of 'transformer_blocks' .* selected no tokens from 'transformer_"):
        prediction(model, inputs)


def flux_without_targets():
    model, inputs = build("Flux")
    wrong = dict(inputs, img_ids=inputs["img_ids"].clone())
    wrong["img_ids"][:, 0] = 1  # every image token marked as a context image
    return model, inputs, wrong


def test_flux_ids_unlike_the_pipeline_raise_at_the_first_loss():
    """Flux ids whose first column is never 0 mark no target token: the first loss() raises, so a script that
    never calls metrics() does not train without LayerSync."""
    model, _, wrong = flux_without_targets()
    layersync = LayerSync(model, student_block=2, teacher_block=4)
    prediction(model, wrong)
    with pytest.raises(LayerSyncError, match=r"no target token in 100% of the samples in the first training.*img_ids"):
        layersync.loss()


def test_flux_ids_unlike_the_pipeline_later_raise_at_metrics():
    """After a first step with targets, steps without any stay finite (no host sync), and metrics() raises."""
    model, inputs, wrong = flux_without_targets()
    layersync = LayerSync(model, student_block=2, teacher_block=4)
    prediction(model, inputs)
    layersync.loss()
    layersync.metrics()
    prediction(model, wrong)
    term = layersync.loss()
    assert torch.isfinite(term) and term.item() == 0
    with pytest.raises(LayerSyncError, match=r"selected no target token in 100% of the samples since the last"):
        layersync.metrics()


def test_some_samples_without_targets_warn():
    """A mask that empties some samples warns with their share; the other samples still train."""
    model, inputs = build("PixArt")

    def first_sample_only(hidden, _):
        mask = torch.zeros(hidden.shape[:2], dtype=torch.bool)
        mask[0] = True
        return hidden, mask

    layout = BlockLayout(stacks=(Stack("transformer_blocks", rule=first_sample_only),))
    layersync = LayerSync(model, student_block=1, teacher_block=3, layout=layout)
    prediction(model, inputs)
    with pytest.warns(UserWarning, match=r"no target token in 50% of the samples in the first training forward"):
        assert layersync.loss().item() != 0
    with pytest.warns(UserWarning, match=r"no target token in 50% of the samples since the last metrics"):
        assert set(layersync.metrics()) == {"layersync_loss", "layersync_similarity"}
