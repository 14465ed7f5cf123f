"""A linear probe of the student and teacher blocks: how well a linear classifier reads the shape class from a
block's tokens. LayerSync acts on the student block's representation; the probe shows it beside the loss.

The probe images are PROBE_IMAGES of the demo's shapes, drawn for the probe alone (never trained or validated on)
and split once into PROBE_FOLDS folds: the same images, noise and folds at every evaluation and in both runs of
`--compare`, so the numbers compare across steps and runs. Each image is noised to t = PROBE_T with fixed noise
and run through the model in eval mode with an empty caption (all-zero caption tokens, so that the class reaches
the blocks only through the image, never through cross-attention). A block's tokens are mean-pooled into one
vector per image. Each fold is scored by a ridge classifier (least squares on one-hot classes, in closed form)
fitted on the other folds; the probe is the share of images classified right, every image scored once. Chance
is 1/6.

This is the student-block probe of `benchmarks/convergence.py` made cheap enough for every evaluation: a closed
form instead of a logistic regression, and 256 forwards (the folds score all of them, where a single split would
score a part: on the demo's features, 4 folds of 256 images gave a probe that differed less between two image
sets than a 256/256 split did, 2.2 against 3.2 points, for half the forwards).
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple, Optional

import torch

from ... import LayerSync
from .data import CAPTION_CHANNELS, CAPTION_TOKENS, CLASSES, _generator, draw_shapes
from .sample import predict_velocity

PROBE_IMAGES, PROBE_FOLDS = 256, 4
PROBE_T = 0.3  # mostly image, some noise: the level of the convergence benchmark's probe
# Ridge penalty per image on standardized features: a mild one, so that 128 features fitted on 192 images do not
# just memorize them (of 0.001, 0.01, 0.1 and 1, the one that read the most from the demo's blocks).
RIDGE = 0.01
CHANCE = 1 / len(CLASSES)


class ProbeImages(NamedTuple):
    """The probe's images (PROBE_IMAGES, 3, 16, 16), their fixed noise and their classes."""

    images: torch.Tensor
    noise: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def draw(cls, *, seed: int) -> ProbeImages:
        """The probe images of `seed`: other images than the training and validation sets of the same seed."""
        images, labels = draw_shapes(PROBE_IMAGES, seed=seed + 20_011)
        return cls(images, torch.randn(images.shape, generator=_generator(seed, 6)), labels)

    def noisy(self) -> torch.Tensor:
        """The images at t = PROBE_T, `(1 - t) image + t noise`, as in training."""
        return (1 - PROBE_T) * self.images + PROBE_T * self.noise


def ridge_accuracy(
    fit: torch.Tensor, fit_labels: torch.Tensor, test: torch.Tensor, test_labels: torch.Tensor, *, ridge: float = RIDGE
) -> float:
    """Accuracy on (`test`, `test_labels`) of a ridge classifier fitted on (`fit`, `fit_labels`): features
    (n, d) standardized with the fit split's mean and spread, one-hot targets, weights
    `(X^T X + ridge * n * I)^-1 X^T Y` in float64, the class of the largest output."""
    classes = int(max(fit_labels.max(), test_labels.max())) + 1
    fit, test = fit.double(), test.double()
    mean, spread = fit.mean(0), fit.std(0).clamp_min(1e-12)  # a constant feature stays 0, not NaN
    x, x_test = (fit - mean) / spread, (test - mean) / spread
    targets = torch.nn.functional.one_hot(fit_labels, classes).double()
    bias = targets.mean(0)
    gram = x.T @ x + ridge * len(x) * torch.eye(x.shape[1], dtype=x.dtype)
    weights = torch.linalg.solve(gram, x.T @ (targets - bias))
    predicted = (x_test @ weights + bias).argmax(1)
    return (predicted == test_labels).double().mean().item()


@torch.no_grad()
def pooled_tokens(
    model, blocks: dict, images: ProbeImages, layersync: Optional[LayerSync], device, chunk: int = 128
) -> dict:
    """Each block's output tokens mean-pooled per image, (images, width) float32, by name (`blocks`: name ->
    module). The model runs in eval mode with LayerSync (if attached) paused and an empty caption, as validation
    runs."""
    pooled = {name: [] for name in blocks}
    hooks = [
        module.register_forward_hook(lambda _module, _args, output, name=name: pooled[name].append(output.mean(1)))
        for name, module in blocks.items()
    ]
    noisy = images.noisy()
    model.eval()
    try:
        with layersync.paused() if layersync is not None else contextlib.nullcontext():  # nothing to capture
            for start in range(0, len(noisy), chunk):
                x = noisy[start : start + chunk].to(device)
                empty = torch.zeros(len(x), CAPTION_TOKENS, CAPTION_CHANNELS, device=device)
                predict_velocity(model, x, torch.full((len(x),), PROBE_T, device=device), empty)
    finally:
        for hook in hooks:
            hook.remove()
        model.train()
    return {name: torch.cat(parts).float().cpu() for name, parts in pooled.items()}


def probe_accuracy(features: torch.Tensor, labels: torch.Tensor, *, folds: int = PROBE_FOLDS) -> float:
    """Cross-validated accuracy of `ridge_accuracy` on (`features`, `labels`): the images in `folds` contiguous
    folds, each scored by a classifier fitted on the others."""
    correct = 0.0
    for test in torch.arange(len(features)).chunk(folds):
        fit = torch.ones(len(features), dtype=torch.bool)
        fit[test] = False
        correct += ridge_accuracy(features[fit], labels[fit], features[test], labels[test]) * len(test)
    return correct / len(features)


def linear_probe(model, images: ProbeImages, layersync: LayerSync, device) -> dict[str, float]:
    """`linear_probe_student` and `linear_probe_teacher`: the probe's accuracy on the first pair's student
    and teacher blocks (every process computes it: FSDP needs all of them in each forward)."""
    blocks = {"student": layersync.student.module, "teacher": layersync.teacher.module}
    features = pooled_tokens(model, blocks, images, layersync, device)
    return {f"linear_probe_{name}": probe_accuracy(x, images.labels) for name, x in features.items()}
