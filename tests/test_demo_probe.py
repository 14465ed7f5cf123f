"""The demo's linear probe of the student and teacher blocks: right on cases with a known answer, written into the
metrics and drawn in the curves; and `--compare`, which interleaves its two runs, equals the runs trained alone."""

import csv
import json

import numpy as np
import pytest
import torch
from launch import reset_accelerate
from PIL import Image
from safetensors.torch import load_file

from layersync_hooks.commands.cli import main
from layersync_hooks.commands.demo.data import CLASSES, ShapesData
from layersync_hooks.commands.demo.linear_probe import (
    PROBE_FOLDS,
    PROBE_IMAGES,
    ProbeImages,
    probe_accuracy,
    ridge_accuracy,
)
from layersync_hooks.commands.demo.plot import PANELS, plot_runs

STEPS = 3
TINY = ["--steps", str(STEPS), "--eval-every", str(STEPS), "--batch-size", "4", "--report-to", "none"]
PROBE_KEYS = ("linear_probe_student", "linear_probe_teacher")
# matplotlib's first two colours: run 1 and run 2 of a plot
RUN_COLOURS = ((31, 119, 180), (255, 127, 14))
pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # a new Accelerator per test


def test_separable_features_give_accuracy_one():
    """Features that hold the class in one direction each (plus noise dimensions) are read perfectly."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(len(CLASSES), (PROBE_IMAGES,), generator=g)
    features = torch.cat([torch.eye(len(CLASSES))[labels] * 3, torch.randn(PROBE_IMAGES, 128, generator=g)], 1)
    features += 0.1 * torch.randn(features.shape, generator=g)
    assert probe_accuracy(features, labels) == 1.0


def test_random_labels_give_chance():
    """Labels drawn independently of the features: the accuracy is 1/6 within sampling noise."""
    g = torch.Generator().manual_seed(1)
    features, labels = torch.randn(6000, 64, generator=g), torch.randint(len(CLASSES), (6000,), generator=g)
    assert abs(probe_accuracy(features, labels) - 1 / len(CLASSES)) < 0.017  # 3.5 standard errors of 6000 draws
    many = probe_accuracy(features[:PROBE_IMAGES], labels[:PROBE_IMAGES])  # the demo's size, 128 features
    assert abs(many - 1 / len(CLASSES)) < 0.08


def test_every_fold_is_scored_by_a_classifier_fitted_on_the_others():
    """Each image is tested once, by a fit that never saw it: a class that only one fold holds is never read."""
    labels = torch.arange(PROBE_IMAGES) % 2
    labels[: PROBE_IMAGES // PROBE_FOLDS] = 2  # class 2 lives in the first fold only
    features = torch.nn.functional.one_hot(labels, 3).float()
    accuracy = probe_accuracy(features, labels)
    assert accuracy == pytest.approx(1 - 1 / PROBE_FOLDS)  # the other folds are read perfectly


def test_a_constant_feature_is_not_nan():
    """A feature with no spread (a dead channel) is ignored, not a NaN that breaks every prediction."""
    labels = torch.arange(60) % 2
    features = torch.stack([labels.float(), torch.ones(60)], 1)
    assert ridge_accuracy(features[:30], labels[:30], features[30:], labels[30:]) == 1.0


def test_probe_images_are_fixed_and_held_out():
    """The probe images and noise are a function of the seed, none of them a training or validation image, with
    every class in every fold."""
    images, again = ProbeImages.draw(seed=0), ProbeImages.draw(seed=0)
    assert all(torch.equal(a, b) for a, b in zip(images, again)) and images.images.shape == (PROBE_IMAGES, 3, 16, 16)
    assert not torch.equal(images.images, ProbeImages.draw(seed=1).images)
    data = ShapesData(seed=0)
    for other in (data.images, data.val.images):
        assert torch.cdist(images.images.flatten(1), other.flatten(1)).min() > 0.1
    assert torch.cdist(data.images[:8].flatten(1), data.images.flatten(1)).min() == 0  # the check can fail
    for fold in images.labels.chunk(PROBE_FOLDS):
        assert set(fold.tolist()) == set(range(len(CLASSES)))


def colour_columns(path, colour, tolerance=40):
    """The share of the PNG's columns, per quarter of its width, that hold a pixel near `colour`."""
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    near = (np.abs(pixels - np.array(colour)).sum(-1) < tolerance).any(0)
    return [near[q * len(near) // 4 : (q + 1) * len(near) // 4].mean() for q in range(4)]


def test_the_probe_has_its_own_panel(tmp_path):
    """The probe's curves are drawn in the fourth panel (the right quarter of the PNG) and nowhere else."""
    assert len(PANELS) == 4 and PANELS[3][0] == PROBE_KEYS
    probe_only = [{"step": s, "linear_probe_student": 0.3 + s / 100, "linear_probe_teacher": 0.5} for s in (1, 2)]
    path = plot_runs({"run": probe_only}, tmp_path / "probe.png")
    assert colour_columns(path, RUN_COLOURS[0])[:3] == [0, 0, 0] and colour_columns(path, RUN_COLOURS[0])[3] > 0.1
    loss_only = [{"step": s, "loss": 1.0 / s} for s in (1, 2)]
    assert colour_columns(plot_runs({"run": loss_only}, tmp_path / "loss.png"), RUN_COLOURS[0])[3] == 0


def history(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())["history"]


def test_compare_writes_and_draws_the_probe_and_equals_the_runs_alone(tmp_path, one_thread):
    """`--compare` (the two runs interleaved) writes the probe of both blocks at each evaluation into metrics.json,
    metrics.csv and compare.json, draws it in curves.png and compare.png, times its steps; and every number and
    weight equals those of each run trained alone."""
    assert main(["demo", "--compare", *TINY, "--output-dir", str(tmp_path / "both")]) == 0
    for name, flags in (("layersync", []), ("baseline", ["--no-layersync"])):
        reset_accelerate()
        assert main(["demo", *flags, *TINY, "--output-dir", str(tmp_path / "alone")]) == 0
        together, alone = tmp_path / "both" / name, tmp_path / "alone" / name
        assert history(together) == history(alone)
        weights = [load_file(d / "model" / "diffusion_pytorch_model.safetensors") for d in (together, alone)]
        assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[1])
        evaluated = [row for row in history(together) if "val_loss" in row]
        assert [row["step"] for row in evaluated] == [STEPS]
        assert all(1 / len(CLASSES) < row[key] <= 1 for row in evaluated for key in PROBE_KEYS)
        with open(together / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        assert [float(rows[-1][key]) for key in PROBE_KEYS] == [evaluated[0][key] for key in PROBE_KEYS]
        summary = json.loads((together / "metrics.json").read_text())
        assert summary["timing"]["method"].startswith("interleaved") and summary["timing"]["probe_share"] > 0
        assert colour_columns(together / "curves.png", RUN_COLOURS[0])[3] > 0  # one evaluation: a point each
    compared = json.loads((tmp_path / "both" / "compare.json").read_text())
    for name in ("layersync", "baseline"):
        assert compared[name]["linear_probe_student"] == history(tmp_path / "both" / name)[-1]["linear_probe_student"]
        assert compared[name]["step_cpu_seconds_median"] > 0
    assert compared["timing"]["step_cpu_seconds_ratio"] > 0
    image = tmp_path / "both" / "compare.png"
    assert any(colour_columns(image, colour)[3] > 0 for colour in RUN_COLOURS)  # the runs' points may overlap
