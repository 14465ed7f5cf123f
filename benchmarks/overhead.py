"""Step-time and peak-memory overhead of LayerSync, measured side by side in one process.

    python benchmarks/overhead.py --threads 1                        # every case, prints a table
    python benchmarks/overhead.py --threads 1 --rounds 30 --warmup 2 --json --save benchmarks/results/overhead_cpu.json
    python benchmarks/overhead.py --cases dit-tiny --rounds 3 --warmup 1     # a smoke run, seconds

Each case is one real diffusers model (random weights), one batch and one AdamW optimizer. Every round runs one
training step (forward, loss, backward, optimizer step) in each variant, in a shuffled order:

    baseline      no hooks
    layersync     LayerSync attached; its term is added to the loss
    paused        LayerSync attached, the step runs inside `layersync.paused()`
    capture_all   a forward hook on every block keeps its output, as `output_hidden_states`-style code does,
                  and the same LayerSync term is computed from the kept outputs

Hooks are attached and removed between steps, outside the timed region. After the warm-up rounds, a variant's
ratio is the median over rounds of (its step time / the baseline step time of the same round): load from other
processes that changes more slowly than one round cancels. Median wall-clock step times and process CPU times
are reported as well, and the machine's load average is recorded before and after each case.

`isolated_ratio` is a low-noise cross-check: the LayerSync term alone (its forward and backward on tensors of
the student's shape, plus accumulating its gradient into the student's) timed over many repetitions, added to
the median baseline step; `isolated_paused_ratio` likewise adds what the hooks cost when paused
(`hooks_alone_us`: per forward, timed on a model of identity blocks). `loss_alone` compares that term with the
formula written plainly (time and its own peak memory). Peak memory is measured once per variant, for the whole
step (`peak_bytes`) and for forward and backward alone (`forward_backward_peak_bytes`: where activations, not the
optimizer, set the high-water mark); see `memory.py` for how, on CPU and GPU.
On a shared machine pass `--threads 1`: with more threads than free cores every parallel region waits for a
descheduled thread, and step times vary several-fold. benchmarks/results/overhead_cpu.json (the second command,
on an otherwise idle 2-core machine) took 23 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from cases import CASES, build  # noqa: E402
from common import layersync_variant, load, machine, pick_device, save, sync  # noqa: E402
from isolated import WEIGHT, hooks_alone_us, loss_alone, straightforward_loss  # noqa: E402
from memory import peak_bytes  # noqa: E402

from layersync_hooks import BlockCapture, layersync_loss, recommend_pair  # noqa: E402
from layersync_hooks.capture import list_blocks  # noqa: E402
from layersync_hooks.layouts import layout_for  # noqa: E402

VARIANTS = ("baseline", "layersync", "paused", "capture_all")
HEADLINE = "dit-b"


class AllOutputs:
    """A forward hook on every block that keeps its latent-stream output, like `output_hidden_states`."""

    def __init__(self, blocks, student, teacher):
        self.outputs, self.student, self.teacher = {}, student, teacher
        self.handles = [b.module.register_forward_hook(self._keeper(b)) for b in blocks]

    def _keeper(self, block):
        def keep(module, args, output):
            self.outputs[block.path] = output[block.stack.output] if isinstance(output, tuple) else output

        return keep

    def loss(self) -> torch.Tensor:
        student, teacher = self.outputs[self.student.path], self.outputs[self.teacher.path]
        self.outputs = {}
        return layersync_loss(student.flatten(1, -2), teacher.flatten(1, -2), weight=WEIGHT)

    def remove(self):
        for handle in self.handles:
            handle.remove()


@contextlib.contextmanager
def attached(variant: str, model, blocks, pair):
    """The variant's hooks for one step; yields the callable that returns its loss term, or None."""
    if variant == "baseline":
        yield None
        return
    if variant == "capture_all":
        hooks = AllOutputs(blocks, blocks[pair[0] - 1], blocks[pair[1] - 1])
        try:
            yield hooks.loss
        finally:
            hooks.remove()
        return
    with layersync_variant(variant, model, pair, WEIGHT) as term:
        yield term


def train_step(model, inputs, target, optimizer, term, optimizer_step=True) -> None:
    """What a diffusers training script does per step, minus data loading and logging."""
    prediction = model(**inputs, return_dict=False)[0]
    loss = F.mse_loss(prediction.float(), target)
    if term is not None:
        loss = loss + term()
    loss.backward()
    if optimizer_step:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def time_rounds(run, rounds: int, warmup: int, seed: int) -> dict[str, dict[str, list[float]]]:
    """{variant: {"wall": [...], "cpu": [...]}} over the measured rounds, variants shuffled in each round."""
    order, times = list(VARIANTS), {v: {"wall": [], "cpu": []} for v in VARIANTS}
    rng = random.Random(seed)
    for index in range(warmup + rounds):
        rng.shuffle(order)
        for variant in order:
            wall, cpu = run(variant)
            if index >= warmup:
                times[variant]["wall"].append(wall)
                times[variant]["cpu"].append(cpu)
    return times


def run_case(name: str, args, device, hooks_us: float) -> dict:
    model, inputs, batch = build(name, batch=args.batch, device=device, dtype=args.dtype, seed=args.seed)
    blocks = list_blocks(model, layout_for(model))
    pair = recommend_pair(len(blocks))
    with torch.no_grad():
        target = torch.randn_like(model(**inputs, return_dict=False)[0].float())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train()

    def run(variant):
        with attached(variant, model, blocks, pair) as term:
            sync(device)
            wall, cpu = time.perf_counter(), time.process_time()
            train_step(model, inputs, target, optimizer, term)
            sync(device)
            return time.perf_counter() - wall, time.process_time() - cpu

    load_before = load()
    times = time_rounds(run, args.rounds, args.warmup, args.seed)
    load_after = load()

    def peak(variant, optimizer_step):
        optimizer.zero_grad(set_to_none=True)  # gradients are allocated inside the measured step, as in training
        with attached(variant, model, blocks, pair) as term:
            return peak_bytes(lambda: train_step(model, inputs, target, optimizer, term, optimizer_step), device)

    peaks = {variant: peak(variant, True) for variant in VARIANTS}
    activation_peaks = {variant: peak(variant, False) for variant in VARIANTS}
    optimizer.zero_grad(set_to_none=True)
    with BlockCapture(model, [pair[0]]) as capture:
        model(**inputs)
        ((student,),) = (tuple(tokens.values()) for tokens in capture.pop())
        student = student.hidden
    student_bytes = student.numel() * 4
    alone = loss_alone(
        {"layersync_hooks": layersync_loss, "straightforward": straightforward_loss},
        student.shape,
        student.dtype,
        device,
    )

    base_wall = times["baseline"]["wall"]
    ratios = {v: _paired(times[v]["wall"], base_wall) for v in VARIANTS[1:]}
    cpu_ratios = {v: _paired(times[v]["cpu"], times["baseline"]["cpu"]) for v in VARIANTS[1:]}
    return {
        "case": name,
        "model": type(model).__name__,
        "blocks": len(blocks),
        "batch": batch,
        "dtype": str(args.dtype).replace("torch.", ""),
        "student_block": pair[0],
        "teacher_block": pair[1],
        "student_shape": list(student.shape),
        "rounds": args.rounds,
        "warmup": args.warmup,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "median_step_s": {v: statistics.median(times[v]["wall"]) for v in VARIANTS},
        "median_cpu_s": {v: statistics.median(times[v]["cpu"]) for v in VARIANTS},
        "step_time_ratio": ratios["layersync"][0],
        "step_time_ratio_iqr": ratios["layersync"][1],
        "paused_ratio": ratios["paused"][0],
        "paused_ratio_iqr": ratios["paused"][1],
        "capture_all_ratio": ratios["capture_all"][0],
        "capture_all_ratio_iqr": ratios["capture_all"][1],
        "cpu_time_ratio": {v: cpu_ratios[v][0] for v in cpu_ratios},
        "isolated_ratio": 1 + alone["layersync_hooks"]["ms"] / 1e3 / statistics.median(base_wall),
        "isolated_paused_ratio": 1 + hooks_us / 1e6 / statistics.median(base_wall),
        "loss_alone": alone,
        "peak_bytes": peaks,
        "extra_peak_bytes": peaks["layersync"] - peaks["baseline"],
        "paused_extra_peak_bytes": peaks["paused"] - peaks["baseline"],
        "capture_all_extra_peak_bytes": peaks["capture_all"] - peaks["baseline"],
        "forward_backward_peak_bytes": activation_peaks,
        "extra_forward_backward_peak_bytes": activation_peaks["layersync"] - activation_peaks["baseline"],
        "student_activation_bytes": student_bytes,
        "step_wall_s": {v: times[v]["wall"] for v in VARIANTS},
    }


def _paired(variant: list[float], baseline: list[float]) -> tuple[float, list[float]]:
    """Median and interquartile range of the within-round ratios."""
    ratios = sorted(v / b for v, b in zip(variant, baseline))
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return statistics.median(ratios), [quartiles[0], quartiles[2]]


def table(results: list[dict]) -> str:
    """One row per case; peak-memory differences in float32 student activations."""
    header = (
        f"{'case':<10}{'model':<32}{'batch':>5}{'base s':>9}{'LS ratio':>10}{'paused':>9}{'all blk':>9}"
        f"{'isolated':>10}{'extra peak step':>17}{'fwd+bwd':>9}{'student act':>13}{'load':>7}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        act = r["student_activation_bytes"]
        lines.append(
            f"{r['case']:<10}{r['model']:<32}{r['batch']:>5}{r['median_step_s']['baseline']:>9.3f}"
            f"{r['step_time_ratio']:>10.4f}{r['paused_ratio']:>9.4f}{r['capture_all_ratio']:>9.4f}"
            f"{r['isolated_ratio']:>10.5f}{r['extra_peak_bytes'] / act:>13.2f} act"
            f"{r['extra_forward_backward_peak_bytes'] / act:>9.2f}{act / 2**20:>9.2f} MiB{r['loadavg_after'][0]:>7.2f}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--rounds", type=int, default=20, help="measured rounds per case (each runs every variant)")
    parser.add_argument("--warmup", type=int, default=2, help="rounds run before measuring")
    parser.add_argument("--batch", type=int, default=None, help="override every case's batch size")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="auto", help="auto (GPU if present), cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--save", type=Path, default=None, help="also write the JSON object to this file")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0:
        parser.error(f"--rounds must be >= 1 and --warmup >= 0, got {args.rounds} and {args.warmup}.")
    args.dtype = getattr(torch, args.dtype)
    device = pick_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    info, results, hooks_us = machine(device), [], hooks_alone_us()
    for name in args.cases:
        results.append(run_case(name, args, device, hooks_us))
        print(f"done {name}: ratio {results[-1]['step_time_ratio']:.4f}, load {load()}", file=sys.stderr)
    headline = next((r for r in results if r["case"] == HEADLINE), results[-1])
    keys = (
        "step_time_ratio",
        "paused_ratio",
        "capture_all_ratio",
        "extra_peak_bytes",
        "student_activation_bytes",
        "extra_forward_backward_peak_bytes",
        "isolated_ratio",
        "isolated_paused_ratio",
        "case",
    )
    result = {
        **{k: headline[k] for k in keys},
        "hooks_alone_us": hooks_us,
        "machine": info,
        "loadavg_end": load(),
        "command": " ".join(["python", "benchmarks/overhead.py", *(argv if argv is not None else sys.argv[1:])]),
        "cases": results,
    }
    if args.save is not None:
        save(result, args.save)
    print(json.dumps(result, indent=1) if args.json else table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
