"""The demo's image set, drawn by the package itself: no downloads, the same images for the same seed.

Six classes of coloured shapes on 16x16 RGB images in [-1, 1] (disk, square, ring, plus, stripes, checkers),
each with a random position, size, colour and background. Class labels become fixed random "caption" tokens,
standing in for a frozen text encoder's output. Batches are a pure function of (seed, step), so a run resumed
from a checkpoint, a run split over processes and a run with gradient accumulation see the same global batch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

CLASSES = ("disk", "square", "ring", "plus", "stripes", "checkers")
IMAGE_SIZE = 16
CAPTION_TOKENS = 4
CAPTION_CHANNELS = 32


def _generator(*seed: int) -> torch.Generator:
    # One independent stream per (seed, purpose, step): a stable mix of the parts, not Python's salted hash.
    value = 0
    for part in seed:
        value = (value * 1_000_003 + int(part)) % (2**63 - 1)
    return torch.Generator().manual_seed(value)


def draw_shapes(count: int, *, seed: int, size: int = IMAGE_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` images (count, 3, size, size) in [-1, 1] and their class labels (count,), fixed by `seed`."""
    g = _generator(seed, 1)
    labels = torch.randint(len(CLASSES), (count,), generator=g)
    grid = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    y, x = grid.view(1, size, 1), grid.view(1, 1, size)
    center = 0.3 + 0.4 * torch.rand(count, 2, 1, 1, generator=g)  # keep shapes mostly inside the frame
    radius = 0.18 + 0.14 * torch.rand(count, 1, 1, generator=g)
    dy, dx = y - center[:, 0], x - center[:, 1]
    distance = (dx**2 + dy**2).sqrt()
    period = 2 * radius.view(count, 1, 1) / 1.5
    shapes = {
        "disk": distance < radius,
        "square": torch.maximum(dx.abs(), dy.abs()) < radius * 0.85,
        "ring": (distance < radius) & (distance > radius * 0.55),
        "plus": ((dx.abs() < radius * 0.3) & (dy.abs() < radius)) | ((dy.abs() < radius * 0.3) & (dx.abs() < radius)),
        "stripes": torch.remainder(y.expand(count, size, size), period) < period / 2,
        "checkers": (torch.remainder(x, period) < period / 2) ^ (torch.remainder(y, period) < period / 2),
    }
    mask = torch.stack([shapes[name].expand(count, size, size) for name in CLASSES], 1)
    mask = mask[torch.arange(count), labels].unsqueeze(1).float()
    foreground = 0.4 + 0.6 * torch.rand(count, 3, 1, 1, generator=g)
    background = 0.3 * torch.rand(count, 3, 1, 1, generator=g)
    images = mask * foreground + (1 - mask) * background
    return images * 2 - 1, labels


def caption_table(*, seed: int) -> torch.Tensor:
    """Fixed random caption tokens per class, (classes, CAPTION_TOKENS, CAPTION_CHANNELS)."""
    return torch.randn(len(CLASSES), CAPTION_TOKENS, CAPTION_CHANNELS, generator=_generator(seed, 2))


class Batch(NamedTuple):
    """One (micro-)batch for flow matching: clean images, noise, times in (0, 1) and caption tokens."""

    images: torch.Tensor
    noise: torch.Tensor
    t: torch.Tensor
    captions: torch.Tensor

    def to(self, device) -> Batch:
        return Batch(*(tensor.to(device) for tensor in self))

    def slice(self, start: int, stop: int) -> Batch:
        return Batch(*(tensor[start:stop] for tensor in self))


class ShapesData:
    r"""
    The training and validation sets of the demo, and the batch of every step.

    Args:
        seed (`int`): Fixes the images, the captions and every batch's draws.
        train_size (`int`, defaults to 4096): Number of training images.
        val_size (`int`, defaults to 256): Number of held-out images, with fixed noise and evenly spaced times.
    """

    def __init__(self, *, seed: int, train_size: int = 4096, val_size: int = 256):
        self.seed = seed
        self.images, self.labels = draw_shapes(train_size, seed=seed)
        self.captions = caption_table(seed=seed)
        val_images, val_labels = draw_shapes(val_size, seed=seed + 10_007)
        noise = torch.randn(val_images.shape, generator=_generator(seed, 3))
        t = (torch.arange(val_size, dtype=torch.float32) + 0.5) / val_size  # every noise level, evenly
        self.val = Batch(val_images, noise, t, self.captions[val_labels])

    def sampling_inputs(self, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed noise (per_class * classes, 3, size, size) and captions for the sample grid, sample-major (every
        class once, then again): the same for every evaluation step and for both runs of `--compare`."""
        count = per_class * len(CLASSES)
        noise = torch.randn(count, 3, IMAGE_SIZE, IMAGE_SIZE, generator=_generator(self.seed, 5))
        return noise, self.captions[torch.arange(len(CLASSES)).repeat(per_class)]

    def global_batch(self, step: int, size: int) -> Batch:
        """The `size` samples of optimizer step `step` (0-based), the same on every process and every run."""
        g = _generator(self.seed, 4, step)
        index = torch.randint(len(self.images), (size,), generator=g)
        images = self.images[index]
        noise = torch.randn(images.shape, generator=g)
        t = torch.rand(size, generator=g)
        return Batch(images, noise, t, self.captions[self.labels[index]])

    def micro_batches(
        self, step: int, *, rank: int, batch_size: int, num_processes: int, accumulation: int
    ) -> list[Batch]:
        """This process's share of the global batch of `step`: one micro-batch per accumulation micro-step."""
        batch = self.global_batch(step, batch_size * num_processes * accumulation)
        starts = [(micro_step * num_processes + rank) * batch_size for micro_step in range(accumulation)]
        return [batch.slice(start, start + batch_size) for start in starts]
