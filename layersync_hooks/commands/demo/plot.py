"""Training curves of one or more demo runs in one PNG: flow-matching loss, validation loss, similarity."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

PANELS = (
    ("loss", "train flow-matching loss (smoothed)"),
    ("val_loss", "validation flow-matching loss"),
    ("layersync_similarity", "student-teacher cosine similarity (smoothed)"),
)


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average over `window` points (the first points average what exists so far)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_runs(runs: Mapping[str, list[Mapping[str, float]]], path: Path, *, title: str = "") -> Path:
    """Draw each run's curves (one colour per run) into `path`; returns `path`."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.4))
    for (key, label), ax in zip(PANELS, axes):
        for name, history in runs.items():
            rows = [row for row in history if key in row]
            if not rows:
                continue
            steps, values = [row["step"] for row in rows], [row[key] for row in rows]
            if key != "val_loss":  # per-step values are noisy; validation points are not
                values = smooth(values, max(1, len(values) // 25))
            ax.plot(steps, values, label=name, marker="o" if key == "val_loss" else None, markersize=3)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if key != "layersync_similarity":
            ax.set_yscale("log")
    axes[0].legend()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
