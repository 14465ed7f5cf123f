"""The probe's report: the matrices as safetensors and JSON, a heatmap PNG, and the printed recommendation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ..capture import describe
from ..pairs import last_teacher_depth
from .measure import ProbeResult

# What `save_report` writes into its folder.
REPORT_FILES = ("similarity.safetensors", "similarity.json", "similarity.png")


def _plain(matrix: torch.Tensor) -> list:
    """Rounded nested lists for JSON; NaN (blocks of different shapes) becomes null."""
    return [[None if math.isnan(v) else round(v, 4) for v in row] for row in matrix.tolist()]


def config_keys(student: int, teacher: int) -> dict:
    return {"layersync_enabled": True, "layersync_student_block": student, "layersync_teacher_block": teacher}


def save_report(result: ProbeResult, output_dir: str | Path) -> list[Path]:
    """Write `similarity.safetensors`, `similarity.json` and `similarity.png`; return their paths."""
    from safetensors.torch import save_file

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    best = result.recommendations[0]
    paths = [output_dir / name for name in REPORT_FILES]
    save_file(
        {
            "cosine": result.cosine.mean(0).contiguous(),
            "cka": result.cka.mean(0).contiguous(),
            "cosine_per_level": result.cosine.contiguous(),
            "cka_per_level": result.cka.contiguous(),
            "noise_levels": torch.tensor(result.noise_levels),
            "depths": torch.tensor([block.depth for block in result.blocks]),
        },
        str(paths[0]),
        metadata={
            "model": result.model_name,
            "recommended": f"{best.student},{best.teacher}",
            "blocks": json.dumps([block.path for block in result.blocks]),
        },
    )
    report = {
        "model": result.model_name,
        "noise_levels": [None if math.isnan(level) else level for level in result.noise_levels],
        "blocks": [{"depth": block.depth, "path": block.path} for block in result.blocks],
        "recommended": [
            {
                "student": r.student,
                "teacher": r.teacher,
                "cosine": round(r.cosine, 4),
                "cka": round(r.cka, 4),
                "reasons": list(r.reasons),
                "config": config_keys(r.student, r.teacher),
            }
            for r in result.recommendations
        ],
        "cosine": _plain(result.cosine.mean(0)),
        "cka": _plain(result.cka.mean(0)),
    }
    paths[1].write_text(json.dumps(report, indent=1) + "\n")
    plot_heatmap(result, paths[2])
    return paths


def plot_heatmap(result: ProbeResult, path: str | Path) -> None:
    """Cosine and CKA side by side; the recommended pair boxed in red, the others circled; the decoder hatched."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    n = len(result.blocks)
    last = last_teacher_depth(n)
    figure, axes = plt.subplots(1, 2, figsize=(12, 5.4), constrained_layout=True)
    panels = (("mean per-token cosine", result.cosine.mean(0)), ("linear CKA", result.cka.mean(0)))
    for axis, (title, matrix) in zip(axes, panels):
        low = float(matrix.nan_to_num(1.0).min())  # the data's own range: residual streams keep values near 1
        image = axis.imshow(
            matrix.numpy(),
            origin="lower",
            cmap="viridis",
            vmin=min(low, 0.999),
            vmax=1.0,
            extent=(0.5, n + 0.5, 0.5, n + 0.5),
        )
        figure.colorbar(image, ax=axis, shrink=0.85)
        for block in result.blocks[1:]:  # stack boundaries (Flux: double -> single stream)
            if block.stack is not result.blocks[block.depth - 2].stack:
                axis.axvline(block.depth - 0.5, color="white", lw=1)
                axis.axhline(block.depth - 0.5, color="white", lw=1)
        if last < n:
            axis.axhspan(last + 0.5, n + 0.5, facecolor="none", edgecolor="white", hatch="//", lw=0)
        for rank, r in enumerate(result.recommendations):
            style = (
                dict(marker="s", ms=12, mfc="none", mec="red", mew=2.5)
                if rank == 0
                else dict(marker="o", ms=8, mfc="none", mec="white", mew=1.5)
            )
            axis.plot(r.student, r.teacher, **style)
        best = result.recommendations[0]
        axis.annotate(
            f"{best.student} <- {best.teacher}",
            (best.student, best.teacher),
            xytext=(9, -14),
            textcoords="offset points",
            color="red",
            fontweight="bold",
        )
        axis.set(title=title, xlabel="student (depth)", ylabel="teacher (depth)")
    levels = ", ".join("given" if math.isnan(level) else f"{level:g}" for level in result.noise_levels)
    figure.suptitle(
        f"{result.model_name}: target-token similarity of every block pair (noise levels {levels}); "
        f"hatched: last 20% (decoder)",
        fontsize=10,
    )
    figure.savefig(path, dpi=110)
    plt.close(figure)


def print_report(result: ProbeResult) -> None:
    """The recommended pair with its reasons and config keys, then the alternatives."""
    best, *others = result.recommendations
    print(f"\n{result.model_name}: {describe(result.blocks)}")
    print(
        f"Recommended: student {best.student} <- teacher {best.teacher} "
        f"({result.blocks[best.student - 1].path} <- {result.blocks[best.teacher - 1].path})"
    )
    for reason in best.reasons:
        print(f"  - {reason}")
    print(f"  config: {json.dumps(config_keys(best.student, best.teacher))}")
    for r in others:
        print(f"Also: student {r.student} <- teacher {r.teacher} (cosine {r.cosine:.3f}, CKA {r.cka:.3f})")
