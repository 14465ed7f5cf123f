"""The demo's samples: Euler steps from fixed noise, a function of the seed, drawn into PNG grids cell by cell."""

import pytest
import torch
from helpers import read_cells

from layersync_hooks import LayerSync
from layersync_hooks.commands.demo.data import CLASSES, ShapesData
from layersync_hooks.commands.demo.sample import (
    SAMPLES_PER_CLASS,
    as_grid,
    sample,
    save_grid,
    to_uint8,
)
from layersync_hooks.commands.demo.train import DEFAULT_PRESET, build_model


@pytest.fixture(scope="module")
def model_and_layersync():
    torch.manual_seed(0)
    model = build_model(0)
    layersync = LayerSync(model, DEFAULT_PRESET)
    yield model, layersync
    layersync.remove()


def test_samples_are_a_function_of_the_seed(model_and_layersync):
    """The same seed gives the same pixels, another seed other noise; the model is left in training mode."""
    model, layersync = model_and_layersync
    data, other = ShapesData(seed=0, train_size=8, val_size=8), ShapesData(seed=1, train_size=8, val_size=8)
    first = sample(model, data, layersync, "cpu", steps=2)
    assert first.shape == (SAMPLES_PER_CLASS * len(CLASSES), 3, 16, 16) and first.dtype == torch.uint8
    assert torch.equal(first, sample(model, ShapesData(seed=0, train_size=8, val_size=8), layersync, "cpu", steps=2))
    assert not torch.equal(first, sample(model, other, layersync, "cpu", steps=2))
    assert model.training and torch.is_grad_enabled()


def test_sampling_is_euler_integration_of_the_velocity(model_and_layersync):
    """One Euler step from t = 1 is `noise - v(noise, 1)`, clipped to [-1, 1]; captions follow the classes."""
    model, layersync = model_and_layersync
    data = ShapesData(seed=0, train_size=8, val_size=8)
    noise, captions = data.sampling_inputs(SAMPLES_PER_CLASS)
    assert torch.equal(captions[len(CLASSES)], data.captions[0])  # sample-major: every class, then again
    model.eval()
    with torch.no_grad():
        velocity = model(
            noise,
            encoder_hidden_states=captions,
            timestep=torch.full((len(noise),), 1000.0),
            added_cond_kwargs={"resolution": None, "aspect_ratio": None},
        ).sample
    model.train()
    expected = to_uint8(noise - velocity)
    assert torch.equal(sample(model, data, layersync, "cpu", steps=1), expected)


def test_grid_png_holds_every_sample_in_its_cell(tmp_path):
    """Two panels of 2 x 6 samples side by side: the PNG's size and every cell's pixels are the samples'."""
    torch.manual_seed(0)
    left, right = (torch.randint(0, 256, (12, 3, 16, 16), dtype=torch.uint8) for _ in range(2))
    path = save_grid(
        tmp_path / "grid.png",
        [("left", as_grid(left)), ("right", as_grid(right))],
        row_labels=["sample 1", "sample 2"],
        column_labels=CLASSES,
    )
    cells = read_cells(path, SAMPLES_PER_CLASS, len(CLASSES), panels=2)
    assert torch.equal(cells[0], as_grid(left)) and torch.equal(cells[1], as_grid(right))
