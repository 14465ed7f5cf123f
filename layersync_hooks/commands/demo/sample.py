"""What the demo's model makes: a fixed grid of samples, drawn by Euler steps along the learned velocity.

The noise and the captions depend only on the seed (`ShapesData.sampling_inputs`), so the grid of every
evaluation step, and of both runs of `--compare`, starts from the same noise: rows and panels compare directly.
The PNGs are pixel grids (each 16x16 sample scaled up 4x, nearest) with a title, row and column labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ... import LayerSync
from .data import CLASSES, ShapesData

SAMPLES_PER_CLASS = 2
# Euler steps from t = 1 (noise) to t = 0 (image). On the default run's final model 10 steps differ from 40 by
# 3.6/255 per pixel on average (20 steps: 1.5/255), invisible at this size, for half the cost of 20.
SAMPLE_STEPS = 10
_NO_CONDITIONS = {"resolution": None, "aspect_ratio": None}

# The grid layout, in pixels: every cell is at a fixed place, so the tests can crop each sample back out.
SCALE, PAD, GAP = 4, 2, 16
CELL = 16 * SCALE
TITLE_HEIGHT, HEADER_HEIGHT, LABEL_WIDTH = 16, 14, 72


def predict_velocity(model, x: torch.Tensor, t: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
    """The model's velocity `noise - image` at `x_t` and times `t` in [0, 1] (the timestep embedding takes 1000 t)."""
    return model(x, encoder_hidden_states=captions, timestep=t * 1000, added_cond_kwargs=_NO_CONDITIONS).sample


@torch.no_grad()
def sample(model, data: ShapesData, layersync: LayerSync, device, *, steps: int = SAMPLE_STEPS) -> torch.Tensor:
    """Integrate `x_{t - dt} = x_t - dt * v(x_t, t)` from the fixed noise at t = 1 down to t = 0, in eval mode and
    with LayerSync paused, as validation runs; returns uint8 images (count, 3, 16, 16), sample-major.

    Every process computes the same grid (FSDP needs every process in each forward); only the main one writes it.
    """
    noise, captions = data.sampling_inputs(SAMPLES_PER_CLASS)
    x, captions = noise.to(device), captions.to(device)
    model.eval()
    with layersync.paused():  # not a training forward: nothing to capture
        for i in range(steps):
            t = torch.full((len(x),), 1 - i / steps, device=device)
            x = x - predict_velocity(model, x, t, captions).float() / steps
    model.train()
    return to_uint8(x.cpu())


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] (clipped: a sample can overshoot) as uint8 in 0..255."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def as_grid(images: torch.Tensor) -> torch.Tensor:
    """Sample-major images (SAMPLES_PER_CLASS * classes, 3, h, w) as rows of classes (rows, classes, 3, h, w)."""
    return images.view(SAMPLES_PER_CLASS, len(CLASSES), *images.shape[1:])


def grid_size(rows: int, columns: int, panels: int = 1) -> tuple[int, int]:
    """(width, height) in pixels of a PNG of `panels` side by side, each of `rows` x `columns` samples."""
    width = LABEL_WIDTH + panels * columns * (CELL + PAD) + (panels - 1) * GAP
    return width, TITLE_HEIGHT + HEADER_HEIGHT + rows * (CELL + PAD)


def cell_origin(row: int, column: int, *, columns: int, panel: int = 0) -> tuple[int, int]:
    """(left, top) pixel of a sample's cell; the cell is CELL x CELL pixels."""
    left = LABEL_WIDTH + panel * (columns * (CELL + PAD) + GAP) + column * (CELL + PAD)
    return left, TITLE_HEIGHT + HEADER_HEIGHT + row * (CELL + PAD)


def save_grid(
    path: Path,
    panels: Sequence[tuple[str, torch.Tensor]],
    *,
    row_labels: Sequence[str],
    column_labels: Sequence[str],
) -> Path:
    """Write `panels` ((title, uint8 samples (rows, columns, 3, h, w)), side by side) as one PNG; returns `path`."""
    from PIL import Image, ImageDraw

    rows, columns = panels[0][1].shape[:2]
    canvas = Image.new("RGB", grid_size(rows, columns, len(panels)), "white")
    draw = ImageDraw.Draw(canvas)
    for panel, (title, cells) in enumerate(panels):
        left, top = cell_origin(0, 0, columns=columns, panel=panel)
        draw.text((left, 2), title, fill="black")
        for column in range(columns):
            draw.text(
                (cell_origin(0, column, columns=columns, panel=panel)[0], top - HEADER_HEIGHT),
                column_labels[column],
                fill="black",
            )
            for row in range(rows):
                pixels = cells[row, column].repeat_interleave(SCALE, 1).repeat_interleave(SCALE, 2)
                tile = Image.fromarray(pixels.permute(1, 2, 0).contiguous().numpy(), "RGB")
                canvas.paste(tile, cell_origin(row, column, columns=columns, panel=panel))
    for row, label in enumerate(row_labels):
        draw.text((2, cell_origin(row, 0, columns=columns)[1] + CELL // 2 - 6), label, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def save_run_samples(run_dir: Path, name: str, samples: dict[int, torch.Tensor]) -> list[Path]:
    """`samples.png` (the last step's grid: a row per sample, a column per class) and `samples_per_step.png`
    (a row per evaluation step, the same noise in each column); returns their paths."""
    last = max(samples)
    final = save_grid(
        run_dir / "samples.png",
        [(f"{name}, step {last} ({SAMPLE_STEPS} Euler steps)", as_grid(samples[last]))],
        row_labels=[f"sample {k + 1}" for k in range(SAMPLES_PER_CLASS)],
        column_labels=CLASSES,
    )
    steps = sorted(samples)
    per_step = save_grid(
        run_dir / "samples_per_step.png",
        [(f"{name}: the same noise and captions at every evaluation step", torch.stack([samples[s] for s in steps]))],
        row_labels=[f"step {s}" for s in steps],
        column_labels=CLASSES * SAMPLES_PER_CLASS,
    )
    return [final, per_step]


def save_compare_samples(path: Path, finals: dict[str, tuple[int, torch.Tensor]]) -> Path:
    """The runs' last grids side by side (`finals`: run name -> (step, samples)), from the same noise."""
    return save_grid(
        path,
        [(f"{name}, step {step}", as_grid(images)) for name, (step, images) in finals.items()],
        row_labels=[f"sample {k + 1}" for k in range(SAMPLES_PER_CLASS)],
        column_labels=CLASSES,
    )
