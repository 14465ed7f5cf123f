"""The convergence benchmark's report: means and spreads over seeds, a table, and a PNG of the curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

METRICS = ("heldout_loss", "probe_student", "probe_best", "fd", "class_accuracy", "coverage", "train_loss")


def _stats(values) -> dict:
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}


def _scalars(point: dict, args) -> dict:
    """The scalar metrics of one checkpoint; the probes of the student block and of the best block."""
    return {
        **{k: point[k] for k in METRICS if k in point},
        "probe_student": point["probe"][args.student - 1],
        "probe_best": max(point["probe"]),
    }


def summarize(runs: list[dict], args) -> dict:
    """Per arm and checkpoint, mean and standard deviation over seeds of every metric; and `delta`, the
    LayerSync-minus-baseline difference of the same seed (both arms share data, noise and initial weights)."""
    by_arm = {
        arm: sorted((r for r in runs if r["layersync"] == (arm == "layersync")), key=lambda r: r["seed"])
        for arm in ("baseline", "layersync")
    }
    summary = {arm: [] for arm in (*by_arm, "delta")}
    for i, point in enumerate(by_arm["baseline"][0]["checkpoints"]):
        at = {arm: [_scalars(r["checkpoints"][i], args) for r in arm_runs] for arm, arm_runs in by_arm.items()}
        for arm, points in at.items():
            summary[arm].append(
                {
                    "step": point["step"],
                    **{k: _stats([p[k] for p in points]) for k in METRICS},
                    "probe_by_block": [
                        _stats([r["checkpoints"][i]["probe"][b] for r in by_arm[arm]]) for b in range(args.blocks)
                    ],
                }
            )
        summary["delta"].append(
            {
                "step": point["step"],
                **{
                    k: _stats([ours[k] - base[k] for ours, base in zip(at["layersync"], at["baseline"])])
                    for k in METRICS
                },
            }
        )
    return summary


def table(summary: dict) -> str:
    keys = ("heldout_loss", "probe_student", "probe_best", "fd", "class_accuracy")
    rows = ["step  arm       " + "".join(f"{k:>20}" for k in keys)]
    for base, ours, delta in zip(summary["baseline"], summary["layersync"], summary["delta"]):
        for arm, p in (("baseline", base), ("layersync", ours), ("delta", delta)):
            cells = "".join(f"{p[k]['mean']:>11.4f} ± {p[k]['std']:<6.4f}" for k in keys)
            rows.append(f"{p['step']:<6}{arm:<10}{cells}")
    return "\n".join(rows)


def plot(summary: dict, path: Path, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("heldout_loss", "held-out flow-matching loss"),
        ("probe_student", f"linear probe, block {args.student}"),
        ("probe_best", "linear probe, best block"),
        ("fd", "Frechet distance (classifier features)"),
    )
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for axis, (key, title) in zip(axes, panels):
        for arm, color in (("baseline", "tab:gray"), ("layersync", "tab:blue")):
            steps = [p["step"] for p in summary[arm]]
            mean = np.array([p[key]["mean"] for p in summary[arm]])
            std = np.array([p[key]["std"] for p in summary[arm]])
            axis.plot(steps, mean, color=color, marker="o", label=arm)
            axis.fill_between(steps, mean - std, mean + std, color=color, alpha=0.2)
        axis.set_yscale("log" if key == "fd" else "linear")
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("step")
    axes[0].legend()
    figure.suptitle(
        f"DiT {args.blocks} blocks x {args.width} on 8x8 digits; LayerSync {args.student} <- "
        f"{args.teacher}, weight {args.weight}; mean ± std over {len(args.seeds)} seeds",
        fontsize=10,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
