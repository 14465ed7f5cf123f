"""The paper's experiment at micro scale: a small DiT trained with flow matching, with and without LayerSync.

    python benchmarks/convergence.py            # 3 seeds x 2 arms x 800 steps, 2 processes of 1 thread each
    python benchmarks/convergence.py --steps 2500 --eval-every 500 --out benchmarks/results/convergence_2500.json
    python benchmarks/convergence.py --weight 0.05 --reuse-baseline benchmarks/results/convergence.json \
        --out benchmarks/results/convergence_weight0.05.json  # another LayerSync setting, same baseline runs
    python benchmarks/convergence.py --report benchmarks/results/convergence.json   # its table and PNG again
    python benchmarks/convergence.py --report a.json b.json --out ab.json   # merge results of other seeds
    python benchmarks/convergence.py --steps 20 --eval-every 10 --seeds 0 --samples 60 --sample-steps 3 \
        --out /tmp/smoke.json                                 # a smoke run

One 800-step run with its 4 checkpoints took about 4 minutes on one core of a nearly idle 2-core AMD EPYC (load
average 2), so the default (6 runs, 2 at a time) takes about 15 minutes there; the 2500-step setting took 30
minutes on the idle machine.

Data: scikit-learn's bundled 8x8 digits (1797 images, 10 classes; offline), scaled to [-1, 1], split once into
1497 training and 300 held-out images. Model: diffusers `DiTTransformer2DModel` (patch 2, so 16 tokens; adaLN-zero;
10 classes plus the null class that label dropout trains), AdamW. Both arms of a seed share the initial weights,
the data order, the noise and times drawn, and the label dropout; the only difference is the LayerSync term.

At every checkpoint (the model in eval mode):
- held-out flow-matching loss at fixed noise levels t in {0.1, 0.3, 0.5, 0.7, 0.9} with fixed noise;
- linear-probe accuracy of every block: mean-pooled block output at t = 0.3 with the null label (so the label
  cannot leak in through the conditioning), logistic regression fitted on the training images, scored held out;
- sample quality: 400 class-conditional samples (20 Euler steps, no guidance), their Frechet distance to the real
  training images in the penultimate-layer features of a small MLP classifier trained on the real data
  (`fd`), the fraction of samples that classifier assigns to the requested class (`class_accuracy`), and the
  fraction of classes for which most samples are recognised (`coverage`).
Means and standard deviations over seeds go to the JSON file and a PNG of the curves.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, load, machine, save  # noqa: E402
from digits import CLASSES, classifier, digits, frechet  # noqa: E402
from report import plot, summarize, table  # noqa: E402

NOISE_LEVELS = (0.1, 0.3, 0.5, 0.7, 0.9)
PROBE_T = 0.3


def dit(args):
    from diffusers import DiTTransformer2DModel

    return DiTTransformer2DModel(
        in_channels=1,
        out_channels=1,
        sample_size=8,
        patch_size=2,
        num_layers=args.blocks,
        num_attention_heads=args.width // 32,
        attention_head_dim=32,
        norm_type="ada_norm_zero",
        num_embeds_ada_norm=CLASSES,
    )


def velocity(model, x, t, labels):
    return model(x, timestep=t * 1000, class_labels=labels).sample


@torch.no_grad()
def evaluate(model, data, features, args) -> dict:
    """Held-out flow loss, per-block linear probes, and sample quality, at one checkpoint."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_x, train_y, held_x, held_y = data
    model.eval()
    g = torch.Generator().manual_seed(1234)
    losses = {}
    for t in NOISE_LEVELS:
        noise = torch.randn(held_x.shape, generator=g)
        pred = velocity(model, (1 - t) * held_x + t * noise, torch.full((len(held_x),), t), held_y)
        losses[t] = F.mse_loss(pred, noise - held_x).item()

    outputs = {}
    hooks = [
        block.register_forward_hook(lambda m, a, out, i=i: outputs.__setitem__(i, out.mean(1)))
        for i, block in enumerate(model.transformer_blocks)
    ]
    pooled = []
    for x in (train_x, held_x):
        noisy = (1 - PROBE_T) * x + PROBE_T * torch.randn(x.shape, generator=g)
        velocity(model, noisy, torch.full((len(x),), PROBE_T), torch.full((len(x),), CLASSES))
        pooled.append([outputs[i].numpy() for i in range(len(hooks))])
    for hook in hooks:
        hook.remove()
    probe = [
        float(
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
            .fit(pooled[0][i], train_y.numpy())
            .score(pooled[1][i], held_y.numpy())
        )
        for i in range(len(hooks))
    ]

    labels = torch.arange(args.samples) % CLASSES
    x = torch.randn(args.samples, 1, 8, 8, generator=g)
    for k in range(args.sample_steps, 0, -1):  # Euler from t=1 (noise) to t=0 (data); v = noise - data
        t = k / args.sample_steps
        x = x - velocity(model, x, torch.full((len(x),), t), labels) / args.sample_steps
    x = x.clamp(-1, 1)
    predicted = features[-1](features[:-1](x)).argmax(1)
    recognised = [(predicted[labels == c] == c).float().mean().item() for c in range(CLASSES)]
    model.train()
    return {
        "heldout_loss": float(np.mean(list(losses.values()))),
        "heldout_loss_by_t": losses,
        "probe": probe,
        "fd": frechet(features[:-1](train_x).numpy(), features[:-1](x).numpy()),
        "class_accuracy": float(np.mean(recognised)),
        "coverage": float(np.mean([r > 0.5 for r in recognised])),
    }


def run(args, seed: int, with_layersync: bool, features) -> dict:
    """One training run; returns its checkpoints."""
    from threadpoolctl import threadpool_limits

    from layersync_hooks import LayerSync

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)  # numpy/scipy BLAS too: the probes thrash with more threads than cores
    data = digits()
    train_x, train_y = data[0], data[1]
    torch.manual_seed(seed)  # initial weights and label dropout: the same in both arms
    model = dit(args).train()
    layersync = (
        LayerSync(model, student_block=args.student, teacher_block=args.teacher, weight=args.weight)
        if with_layersync
        else None
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    order_g, noise_g = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 10_000)
    checkpoints, order, start, task = [], torch.empty(0, dtype=torch.long), time.time(), 0.0
    for step in range(1, args.steps + 1):
        if len(order) < args.batch:
            order = torch.cat([order, torch.randperm(len(train_x), generator=order_g)])
        index, order = order[: args.batch], order[args.batch :]
        x0, labels = train_x[index], train_y[index]
        noise, t = torch.randn(x0.shape, generator=noise_g), torch.rand(len(x0), generator=noise_g)
        tt = t.view(-1, 1, 1, 1)
        loss = F.mse_loss(velocity(model, (1 - tt) * x0 + tt * noise, t, labels), noise - x0)
        task += loss.detach()
        if layersync is not None:
            loss = loss + layersync.loss()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % args.eval_every == 0 or step == args.steps:
            since = step - (checkpoints[-1]["step"] if checkpoints else 0)  # the last interval may be shorter
            point = {"step": step, "train_loss": float(task) / since, **evaluate(model, data, features, args)}
            point.update(layersync.metrics() if layersync is not None else {})
            checkpoints.append(point)
            task = 0.0
            print(
                f"seed {seed} {'layersync' if with_layersync else 'baseline '} step {step}: heldout "
                f"{point['heldout_loss']:.4f} probe@student {point['probe'][args.student - 1]:.3f} "
                f"fd {point['fd']:.2f} ({time.time() - start:.0f}s, load {load()[0]})",
                file=sys.stderr,
                flush=True,
            )
    return {"seed": seed, "layersync": with_layersync, "seconds": time.time() - start, "checkpoints": checkpoints}


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--width", type=int, default=128, help="hidden size (heads of 32 channels)")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--student", type=int, default=2)
    parser.add_argument("--teacher", type=int, default=5)
    parser.add_argument("--weight", type=float, default=0.2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--samples", type=int, default=400, help="samples per checkpoint for FD and class accuracy")
    parser.add_argument("--sample-steps", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (processes)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument(
        "--reuse-baseline",
        type=Path,
        default=None,
        help="take the baseline runs from this earlier result (same baseline settings)",
    )
    parser.add_argument("--out", type=Path, default=None, help="the JSON result (default: results/convergence.json)")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of the curves (default: --out with .png)")
    parser.add_argument(
        "--report",
        type=Path,
        nargs="+",
        default=None,
        help="only summarize and plot earlier results again (several: merged, e.g. other seeds)",
    )
    args = parser.parse_args(argv)
    for name, minimum in (
        ("steps", 1),
        ("eval_every", 1),
        ("batch", 1),
        ("blocks", 2),
        ("samples", 10),
        ("sample_steps", 1),
        ("jobs", 1),
        ("threads", 1),
    ):
        if getattr(args, name) < minimum:
            parser.error(f"--{name.replace('_', '-')} must be >= {minimum}, got {getattr(args, name)}.")
    if args.width < 32 or args.width % 32:
        parser.error(f"--width must be a multiple of 32 (heads of 32 channels), got {args.width}; e.g. 128.")
    if not 1 <= args.student < args.teacher <= args.blocks:
        parser.error(f"Need 1 <= --student < --teacher <= --blocks, got {args.student}, {args.teacher}, {args.blocks}.")
    return args


# Settings that change the baseline arm; LayerSync's own settings (pair, weight) do not.
BASELINE_KEYS = ("steps", "eval_every", "batch", "blocks", "width", "lr", "samples", "sample_steps")


def reused_baselines(args) -> list[dict]:
    """The baseline runs of an earlier result with the same baseline settings (`--reuse-baseline`)."""
    if args.reuse_baseline is None:
        return []
    earlier = json.loads(args.reuse_baseline.read_text())
    different = {
        k: (earlier["config"][k], getattr(args, k)) for k in BASELINE_KEYS if earlier["config"][k] != getattr(args, k)
    }
    if different:
        raise SystemExit(
            f"--reuse-baseline {args.reuse_baseline} was run with other baseline settings "
            f"(earlier, now): {different}. Run the baseline again, without --reuse-baseline."
        )
    return [r for r in earlier["runs"] if not r["layersync"] and r["seed"] in args.seeds]


# Settings that may differ between results merged by --report (they do not change what a run computes).
RUN_ONLY_KEYS = ("seeds", "jobs", "threads", "out", "plot", "report", "reuse_baseline")


def report_again(paths: list[Path], out: Path, plot_path: Optional[Path] = None) -> int:
    """Summarize, tabulate and plot earlier results again, without training (`--report`). Several results with
    the same settings (other seeds) are merged into one."""
    results = [json.loads(path.read_text()) for path in paths]
    for path, other in zip(paths[1:], results[1:]):
        different = {
            k
            for k in set(other["config"]) | set(results[0]["config"])
            if k not in RUN_ONLY_KEYS and other["config"].get(k) != results[0]["config"].get(k)
        }
        if different:
            raise SystemExit(f"--report cannot merge {path} into {paths[0]}: they differ in {sorted(different)}.")
    result = results[0]
    runs = {(r["seed"], r["layersync"]): r for other in results for r in other["runs"]}
    result["runs"] = [runs[key] for key in sorted(runs)]
    result["config"]["seeds"] = sorted({seed for seed, _ in runs})
    result["merged_from"] = [other["command"] for other in results] if len(results) > 1 else None
    args = argparse.Namespace(**result["config"])
    result["summary"] = summarize(result["runs"], args)
    save(result, out)
    plot(result["summary"], plot_path or out.with_suffix(".png"), args)
    print(table(result["summary"]))
    return 0


def main(argv=None) -> int:
    args = parse(argv)
    if args.report:
        return report_again(args.report, args.out or args.report[0], args.plot)
    args.out = args.out or RESULTS / "convergence.json"
    started, info = time.time(), machine(torch.device("cpu"))
    data = digits()
    features = classifier(data[0], data[1])
    with torch.no_grad():
        classifier_accuracy = (features(data[2]).argmax(1) == data[3]).float().mean().item()
        real_fd = frechet(features[:-1](data[0]).numpy(), features[:-1](data[2]).numpy())
    runs = reused_baselines(args)
    jobs = [
        (seed, arm)
        for seed in args.seeds
        for arm in (False, True)
        if not any(r["seed"] == seed and r["layersync"] == arm for r in runs)
    ]
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        runs += list(pool.map(run, *zip(*[(args, seed, arm, features) for seed, arm in jobs])))
    summary = summarize(runs, args)
    result = {
        "command": " ".join(["python", "benchmarks/convergence.py", *(argv if argv is not None else sys.argv[1:])]),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": info,
        "loadavg_end": load(),
        "minutes": (time.time() - started) / 60,
        "classifier_heldout_accuracy": classifier_accuracy,
        "fd_real_heldout_vs_train": real_fd,
        "summary": summary,
        "runs": runs,
    }
    save(result, args.out)
    plot(summary, args.plot or args.out.with_suffix(".png"), args)
    print(table(summary))
    print(
        f"classifier held-out accuracy {classifier_accuracy:.3f}; FD of 300 real held-out images {real_fd:.2f}; "
        f"{result['minutes']:.1f} min; wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
