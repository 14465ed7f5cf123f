"""Training curves of one or more demo runs in one PNG: flow-matching loss, validation loss, similarity, and the
linear probe of the student and teacher blocks."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from .linear_probe import CHANCE

# (keys drawn in the panel, title); a panel of several keys draws the first solid, the others dashed.
PANELS = (
    (("loss",), "train flow-matching loss (smoothed)"),
    (("val_loss",), "validation flow-matching loss"),
    (("layersync_similarity",), "student-teacher cosine similarity (smoothed)"),
    (("linear_probe_student", "linear_probe_teacher"), "linear probe: student (solid), teacher (dashed)"),
)
EVALUATED = ("val_loss", "linear_probe_student", "linear_probe_teacher")  # one point per evaluation, not smoothed
LOG_SCALE = ("loss", "val_loss")


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
    """Draw each run's curves (one colour per run) into `path`, a panel per entry of PANELS; returns `path`."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.4))
    for (keys, label), ax in zip(PANELS, axes):
        for colour, (name, history) in enumerate(runs.items()):
            for key, style in zip(keys, ("-", "--")):
                rows = [row for row in history if key in row]
                if not rows:
                    continue
                steps, values = [row["step"] for row in rows], [row[key] for row in rows]
                if key not in EVALUATED:  # per-step values are noisy; evaluation points are not
                    values = smooth(values, max(1, len(values) // 25))
                marker = "o" if key in EVALUATED else None
                ax.plot(steps, values, style, color=f"C{colour}", label=name if style == "-" else None,
                        marker=marker, markersize=3)  # fmt: skip
        if keys[0].startswith("linear_probe"):  # an accuracy: drawn on its whole scale, with chance marked
            ax.axhline(CHANCE, color="grey", linewidth=0.8, linestyle=":")
            ax.annotate("chance", (0.02, CHANCE), xycoords=("axes fraction", "data"), va="bottom", color="grey")
            ax.set_ylim(0, 1)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if keys[0] in LOG_SCALE:
            ax.set_yscale("log")
    if axes[0].lines:  # the run names, once
        axes[0].legend()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
