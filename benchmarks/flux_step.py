"""Step time and peak memory of LayerSync in a Flux.1 [dev]-sized LoRA training step, eager and regionally compiled.

    python benchmarks/flux_step.py --out benchmarks/results/flux_step_gpu.json     # one GPU; under 8 minutes
    python benchmarks/flux_step.py --tiny --backend aot_eager --out /tmp/flux_step_tiny.json   # CPU; half a minute

On a CPU one training step differs from the next by about +-5 % (benchmarks/README.md), so side-by-side ratios
cannot resolve LayerSync there; a GPU repeats a step to a fraction of a percent. The model is a
`FluxTransformer2DModel` of Flux.1 [dev]'s size (19 double + 38 single blocks, width 3072) with random weights made
directly on the GPU in bf16, a rank-16 LoRA on the attention projections (base weights frozen), gradient
checkpointing, 1024x1024 pixels (4096 image tokens) and 512 text tokens at batch 1 with the position ids the Flux
pipeline makes, and AdamW on the LoRA weights. `--tiny` is the same measurement on a 6-block model (64 image
tokens, float32) that runs on a CPU in seconds, so that the script is tested.

Variants, one full training step each per round (forward, flow-matching MSE + term, backward, AdamW step),
shuffled within every round with a fixed seed; hooks are attached and removed outside the timed region:

    baseline           no hooks
    layersync          LayerSync(model, student_block=16, teacher_block=32); its term is added to the loss
    paused             LayerSync attached, the step runs inside `layersync.paused()`
    capture_all        a forward hook on every block keeps its image-token output (the `output_hidden_states`
                       approach); the LayerSync formula, written plainly, on the kept student and teacher outputs
    simpletuner_style  written here from SimpleTuner's description: hooks on the two blocks keep normalized float32
                       copies of their image tokens, the term is minus the weight times their mean dot product, and
                       two `.item()` calls per step read the logged loss and similarity

Each mode (`eager`, then `compiled`: `compile_repeated_blocks(fullgraph=True)`) runs its warm-up rounds (the
compiled mode compiles in its first step), one peak-memory step per variant, then the measured rounds. A variant's
ratio is the median over rounds of its step time over the baseline step of the same round, with the interquartile
range of those ratios. Peak memory is the allocator's high-water mark above what was allocated before the step on
GPU, and on CPU the replayed allocator events of `memory.py`; its extra over the baseline is also given in student
activations (the student block's image tokens: batch x image tokens x width, in the model's dtype). Targets, on GPU
only: LayerSync <= 1.003x the baseline step, paused <= 1.001x, extra peak <= one student activation.

The JSON is rewritten after every round, so a run cut short by a timeout keeps what it measured (`complete` says
whether a mode finished); the measured rounds also stop early, and say so, where the next one would end past
`--budget-s` (450 s by default at full size). Progress goes to stderr with the seconds since the script started.
On CPU, inductor (the default backend) needs a C++ compiler and compiles the tiny blocks in about two minutes on
2 cores; `--backend aot_eager` or `eager` keep the Dynamo capture and take seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, layersync_variant, machine, pick_device, save, sync  # noqa: E402
from memory import peak_bytes  # noqa: E402

VARIANTS = ("baseline", "layersync", "paused", "capture_all", "simpletuner_style")
MODES = ("eager", "compiled")
WEIGHT = 0.2
TARGETS = {"layersync_ratio": 1.003, "paused_ratio": 1.001, "extra_peak_activations": 1.0}

# diffusers 0.42's FluxTransformer2DModel with Flux.1 [dev]'s config (black-forest-labs/FLUX.1-dev, transformer/).
CONFIGS = {
    "dev": dict(
        model=dict(
            patch_size=1,
            in_channels=64,
            num_layers=19,
            num_single_layers=38,
            attention_head_dim=128,
            num_attention_heads=24,
            joint_attention_dim=4096,
            pooled_projection_dim=768,
            guidance_embeds=True,
            axes_dims_rope=(16, 56, 56),
        ),
        grid=64,
        text_tokens=512,
        batch=1,
        pair=(16, 32),
        lora_rank=16,
        dtype="bfloat16",
        rounds=20,
        warmup=2,
        budget_s=450,
    ),
    "tiny": dict(
        model=dict(
            patch_size=1,
            in_channels=4,
            num_layers=2,
            num_single_layers=4,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            guidance_embeds=True,
            axes_dims_rope=(4, 6, 6),
        ),
        grid=8,
        text_tokens=8,
        batch=1,
        pair=(2, 4),
        lora_rank=4,
        dtype="float32",
        rounds=3,
        warmup=1,
        budget_s=None,
    ),
}
LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]  # as diffusers' train_dreambooth_lora_flux.py
GUIDANCE = 3.5  # what the Flux.1 [dev] LoRA scripts pass as `guidance` (their --guidance_scale default)

_START = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - _START:7.1f} s] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """Parameters are created in `dtype`: no float32 copy of the 12 B weights is ever made."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build(config: dict, device: torch.device, dtype: torch.dtype, seed: int):
    """The model with its LoRA adapter and checkpointing, in train mode, and AdamW over the LoRA weights."""
    from diffusers import FluxTransformer2DModel
    from peft import LoraConfig

    torch.manual_seed(seed)
    # Constructed under the device context, every parameter is allocated and drawn by its module's own init
    # (uniform, in kernels on the device) where it lives: random weights without a host copy or a transfer.
    with torch.device(device), default_dtype(dtype):
        model = FluxTransformer2DModel(**config["model"])
        rank = config["lora_rank"]
        model.add_adapter(
            LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS)
        )  # also freezes the base weights
    model.enable_gradient_checkpointing()
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    return model, torch.optim.AdamW(trainable, lr=1e-4)


def image_ids(grid: int) -> torch.Tensor:
    """(0, row, column) per latent, row-major, as the Flux pipeline makes them; 0 marks the target image."""
    rows, columns = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    return torch.stack([torch.zeros_like(rows), rows, columns], dim=-1).reshape(grid * grid, 3).float()


def make_batch(config: dict, device: torch.device, dtype: torch.dtype, seed: int):
    """One flow-matching batch (the same every step, so every step does the same work) and its target."""
    g = torch.Generator().manual_seed(seed)
    model, batch, tokens, text = config["model"], config["batch"], config["grid"] ** 2, config["text_tokens"]
    latents = torch.randn(batch, tokens, model["in_channels"], generator=g)
    noise = torch.randn(latents.shape, generator=g)
    t = torch.rand(batch, generator=g)
    noisy = (1 - t.view(-1, 1, 1)) * latents + t.view(-1, 1, 1) * noise
    inputs = dict(
        hidden_states=noisy,
        timestep=t,
        img_ids=image_ids(config["grid"]),
        txt_ids=torch.zeros(text, 3),
        encoder_hidden_states=torch.randn(batch, text, model["joint_attention_dim"], generator=g),
        pooled_projections=torch.randn(batch, model["pooled_projection_dim"], generator=g),
    )
    if model["guidance_embeds"]:
        inputs["guidance"] = torch.full((batch,), GUIDANCE)
    inputs = {k: v.to(device, dtype if k not in ("img_ids", "txt_ids") else torch.float32) for k, v in inputs.items()}
    return inputs, (noise - latents).to(device)


def flux_blocks(model) -> list[torch.nn.Module]:
    """Both stacks in forward order: depth d is `blocks[d - 1]` (16 = transformer_blocks.15, 32 = single.12)."""
    return [*model.transformer_blocks, *model.single_transformer_blocks]


class KeptOutputs:
    """Forward hooks on some blocks that keep each one's image tokens (element 1 of a Flux block's output).

    Kept only inside the model's own forward: a checkpointed block recomputed during backward runs its hooks again,
    and keeping those outputs would pin them until the next step. With `compiled` (regional compilation) the hooks
    run as plain Python: Dynamo would otherwise compile each block's hook closure as a frame of its own, and
    `fullgraph=True` fails at its recompile limit (LayerSync keeps its own hooks out of Dynamo for the same reason:
    docs/compile-precision-distributed.md). In eager mode they are not wrapped, so that they cost what such hooks cost.
    """

    def __init__(self, model, blocks, keep=lambda tokens: tokens, compiled=False):
        self.kept, self.keep, self.armed = {}, keep, False
        hook = torch.compiler.disable(self._hook) if compiled else self._hook
        self.handles = [block.register_forward_hook(hook) for block in blocks]
        self.handles.append(model.register_forward_pre_hook(lambda *_: self._arm(True)))
        self.handles.append(model.register_forward_hook(lambda *_: self._arm(False)))

    def _arm(self, armed: bool) -> None:
        self.armed = armed

    def _hook(self, module, args, output):
        # Run during recomputation too: non-reentrant checkpointing replays every op that saved a tensor in the
        # first forward, this hook's among them, and raises if one is missing (tried).
        tokens = self.keep(output[1])
        if self.armed:
            self.kept[module] = tokens

    def pop(self, *blocks) -> list[torch.Tensor]:
        """The kept tokens of `blocks`; everything else kept is dropped."""
        tokens = [self.kept[block] for block in blocks]
        self.kept.clear()
        return tokens

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.kept.clear()


class CaptureAll(KeptOutputs):
    """Every block's output kept, as `output_hidden_states`-style code does; the LayerSync formula written plainly."""

    def __init__(self, model, pair, compiled=False, weight=WEIGHT):
        blocks = flux_blocks(model)
        super().__init__(model, blocks, compiled=compiled)
        self.student, self.teacher, self.weight = blocks[pair[0] - 1], blocks[pair[1] - 1], weight

    def term(self) -> torch.Tensor:
        student, teacher = self.pop(self.student, self.teacher)
        return -self.weight * F.cosine_similarity(student.float(), teacher.detach().float(), dim=-1).mean()


def normalized_copy(tokens: torch.Tensor) -> torch.Tensor:
    return F.normalize(tokens.float(), dim=-1)


class SimpleTunerStyle(KeptOutputs):
    """SimpleTuner's LayerSync as its documentation describes it: normalized float32 copies of both blocks' tokens,
    the mean cosine as their dot product, and the logged loss and similarity read with `.item()` every step."""

    def __init__(self, model, pair, compiled=False, weight=WEIGHT):
        blocks = flux_blocks(model)
        self.student, self.teacher, self.weight = blocks[pair[0] - 1], blocks[pair[1] - 1], weight
        super().__init__(model, [self.student, self.teacher], keep=normalized_copy, compiled=compiled)
        self.logs = {}

    def term(self) -> torch.Tensor:
        student, teacher = self.pop(self.student, self.teacher)
        similarity = (student * teacher.detach()).sum(-1).mean()
        loss = -self.weight * similarity
        self.logs = {"layersync_loss": loss.item(), "layersync_similarity": similarity.item()}  # two host syncs
        return loss


@contextlib.contextmanager
def attached(variant: str, model, pair, compiled=False):
    """The variant's hooks for one step; yields the callable that returns its loss term, or None."""
    if variant == "baseline":
        yield None
        return
    if variant in ("capture_all", "simpletuner_style"):
        hooks = (CaptureAll if variant == "capture_all" else SimpleTunerStyle)(model, pair, compiled)
        try:
            yield hooks.term
        finally:
            hooks.remove()
        return
    with layersync_variant(variant, model, pair, WEIGHT) as term:
        yield term


class Setup:
    """What every step uses: the model, its optimizer, the one batch, the pair, and the student's size in bytes.

    (A plain class, not a dataclass: dataclasses look their module up in `sys.modules`, where a benchmark script
    imported from its path, as tests/test_benchmarks.py does, is not.)
    """

    def __init__(self, model, optimizer, inputs: dict, target, pair: tuple[int, int], device, activation_bytes: int):
        self.model, self.optimizer, self.inputs, self.target = model, optimizer, inputs, target
        self.pair, self.device, self.activation_bytes = pair, device, activation_bytes
        self.compiled = False  # set when the blocks are regionally compiled

    def step(self, term) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What a diffusers LoRA training script does per step, minus data and logging. (loss, term), detached."""
        prediction = self.model(**self.inputs, return_dict=False)[0]
        loss = F.mse_loss(prediction.float(), self.target.float())
        extra = term() if term is not None else None
        if extra is not None:
            loss = loss + extra
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach(), None if extra is None else extra.detach()

    def timed(self, variant: str) -> float:
        """Wall-clock seconds of one step, GPU work included; the hooks are attached and removed outside."""
        with attached(variant, self.model, self.pair, self.compiled) as term:
            gc.disable()  # a collection of the Python heap inside one step would add tens of ms to it
            try:
                sync(self.device)
                start = time.perf_counter()
                self.step(term)
                sync(self.device)
                return time.perf_counter() - start
            finally:
                gc.enable()

    def peak(self, variant: str) -> tuple[int, float, float | None]:
        """(peak bytes above the start of one step, its loss, its term) for a variant."""
        values = {}
        with attached(variant, self.model, self.pair, self.compiled) as term:

            def step():
                values["loss"], values["term"] = self.step(term)

            peak = peak_bytes(step, self.device)
        return peak, values["loss"].item(), None if values["term"] is None else values["term"].item()


def paired(times: list[float], baseline: list[float]) -> tuple[float, list[float]]:
    """Median and interquartile range of the within-round ratios."""
    ratios = sorted(v / b for v, b in zip(times, baseline))
    if len(ratios) < 2:
        return ratios[0], [ratios[0], ratios[0]]
    quartiles = statistics.quantiles(ratios, n=4, method="inclusive")
    return statistics.median(ratios), [quartiles[0], quartiles[2]]


def summarize(record: dict, activation_bytes: int) -> None:
    """Fill in medians and ratios from the step times measured so far (in place)."""
    variants, baseline = record["variants"], record["variants"]["baseline"]["step_s"]
    for entry in variants.values():
        if entry["step_s"]:
            entry["median_s"] = statistics.median(entry["step_s"])
            entry["ratio"], entry["ratio_iqr"] = paired(entry["step_s"], baseline)
        if "peak_bytes" in entry:
            entry["extra_peak_bytes"] = entry["peak_bytes"] - variants["baseline"]["peak_bytes"]
            entry["extra_peak_activations"] = entry["extra_peak_bytes"] / activation_bytes


def targets(record: dict) -> dict[str, bool]:
    v = record["variants"]
    return {
        f"layersync_ratio <= {TARGETS['layersync_ratio']}": v["layersync"]["ratio"] <= TARGETS["layersync_ratio"],
        f"paused_ratio <= {TARGETS['paused_ratio']}": v["paused"]["ratio"] <= TARGETS["paused_ratio"],
        "layersync extra peak <= 1 student activation": v["layersync"]["extra_peak_activations"]
        <= TARGETS["extra_peak_activations"],
    }


def compile_counters() -> dict:
    """Dynamo's own counts (graphs compiled, graph breaks): a compiled mode that fell back to eager shows here."""
    from torch._dynamo.utils import counters

    return {"unique_graphs": counters["stats"]["unique_graphs"], "graph_breaks": sum(counters["graph_break"].values())}


def run_rounds(record: dict, setup: Setup, args, save_now) -> None:
    """Warm-up rounds, peaks, then measured rounds until `--rounds` or the time budget; every variant once a round."""
    order, rng, last = list(VARIANTS), random.Random(args.seed), 0.0
    for index in range(args.warmup + args.rounds):
        warm = index < args.warmup
        if index == args.warmup:
            measure_peaks(record, setup)  # before the measured rounds: a run cut short still has its peaks
            save_now()
        if not warm and args.budget_s is not None and time.monotonic() - _START + last > args.budget_s:
            record["stopped_early"] = f"the next round would end past --budget-s {args.budget_s:g}"
            log(f"stopping after {record['rounds_done']} measured rounds: {record['stopped_early']}")
            break
        started, done = time.monotonic(), []
        rng.shuffle(order)
        for variant in order:
            seconds = setup.timed(variant)
            record["variants"][variant]["warmup_s" if warm else "step_s"].append(seconds)
            done.append(f"{variant} {seconds:.4f}")
        last = time.monotonic() - started
        record["rounds_done"] = max(0, index + 1 - args.warmup)
        save_now()
        what = " (warm-up)" if warm else ""
        log(f"{record['mode']} round {index + 1}/{args.warmup + args.rounds}{what}, as run: {', '.join(done)} s")


def measure_peaks(record: dict, setup: Setup) -> None:
    """One step per variant under the allocator's high-water mark; its loss and term too, as a sanity check."""
    for variant in VARIANTS:
        entry = record["variants"][variant]
        entry["peak_bytes"], entry["loss"], entry["term"] = setup.peak(variant)
    log(f"{record['mode']} peaks measured")


def run_mode(mode: str, setup: Setup, args, result: dict) -> None:
    """One mode's rounds and peaks; the JSON is saved after every round."""
    record = {
        "mode": mode,
        "complete": False,
        "rounds_done": 0,
        "variants": {v: {"step_s": [], "warmup_s": []} for v in VARIANTS},
    }
    result["modes"][mode] = record

    def save_now():
        summarize(record, setup.activation_bytes)
        save(result, args.out)

    started = time.monotonic()
    if mode == "compiled":
        setup.model.compile_repeated_blocks(fullgraph=True, backend=args.backend)
        setup.compiled = True
    run_rounds(record, setup, args, save_now)
    if mode == "compiled":
        record["dynamo"] = compile_counters()
    summarize(record, setup.activation_bytes)
    if setup.device.type == "cuda" and record["rounds_done"] > 0:
        record["targets_met"] = targets(record)
    record["seconds"] = time.monotonic() - started
    record["complete"] = True
    save(result, args.out)
    log(f"{mode} done in {record['seconds']:.1f} s")


def table(result: dict) -> str:
    """One row per mode and variant; extra peak in student activations."""
    header = (
        f"{'mode':<9}{'variant':<19}{'median step':>13}{'ratio':>9}{'IQR':>19}{'peak MiB':>12}"
        f"{'extra MiB':>11}{'extra act':>11}"
    )
    lines = [header, "-" * len(header)]
    for mode, record in result["modes"].items():
        for variant, e in record["variants"].items():
            if "ratio" not in e:
                continue
            peak = (
                f"{e['peak_bytes'] / 2**20:>12.2f}{e['extra_peak_bytes'] / 2**20:>11.2f}"
                f"{e['extra_peak_activations']:>11.2f}"
                if "peak_bytes" in e
                else ""
            )
            lines.append(
                f"{mode:<9}{variant:<19}{e['median_s']:>11.4f} s{e['ratio']:>9.4f}"
                f"{e['ratio_iqr'][0]:>9.4f}-{e['ratio_iqr'][1]:.4f}{peak}"
            )
    return "\n".join(lines)


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a 6-block Flux that runs on a CPU in seconds (CI)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON path (default benchmarks/results/flux_step_gpu.json, or flux_step_tiny.json)",
    )
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--backend", default="inductor", help="torch.compile backend of the compiled mode")
    parser.add_argument("--rounds", type=int, default=None, help="measured rounds (default: 20; 3 with --tiny)")
    parser.add_argument("--warmup", type=int, default=None, help="rounds before measuring (default: 2; 1 with --tiny)")
    parser.add_argument(
        "--dtype",
        default=None,
        choices=["bfloat16", "float16", "float32"],
        help="weights and activations (default: bfloat16; float32 with --tiny)",
    )
    parser.add_argument("--device", default="auto", help="auto (GPU if present), cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="stop measuring when the next round would end later than this many seconds after start "
        "(default: 450 for the full size, leaving half a minute of the 8; none with --tiny)",
    )
    args = parser.parse_args(argv)
    config = CONFIGS["tiny" if args.tiny else "dev"]
    for key in ("rounds", "warmup", "dtype", "budget_s"):
        if getattr(args, key) is None:
            setattr(args, key, config[key])
    if args.rounds < 1 or args.warmup < 0:
        parser.error(f"--rounds must be >= 1 and --warmup >= 0, got {args.rounds} and {args.warmup}.")
    if args.out is None:
        args.out = RESULTS / f"flux_step_{'tiny' if args.tiny else 'gpu'}.json"
    args.config = config
    return args


def make_setup(args, device: torch.device) -> Setup:
    config, dtype = args.config, getattr(torch, args.dtype)
    model, optimizer = build(config, device, dtype, args.seed)
    inputs, target = make_batch(config, device, dtype, args.seed)
    width = config["model"]["num_attention_heads"] * config["model"]["attention_head_dim"]
    student_bytes = config["batch"] * config["grid"] ** 2 * width * dtype.itemsize
    sync(device)
    return Setup(model, optimizer, inputs, target, config["pair"], device, student_bytes)


def describe(args, setup: Setup) -> dict:
    """The run's settings as the JSON records them, with the model's parameter counts."""
    fixed = {k: v for k, v in args.config.items() if k not in ("rounds", "warmup", "dtype", "budget_s")}
    parameters = list(setup.model.parameters())
    return {
        **fixed,
        **{k: getattr(args, k) for k in ("dtype", "rounds", "warmup", "budget_s", "seed", "backend")},
        "modes": args.modes,
        "weight": WEIGHT,
        "lora_targets": LORA_TARGETS,
        "parameters": sum(p.numel() for p in parameters),
        "trainable_parameters": sum(p.numel() for p in parameters if p.requires_grad),
        "image_tokens": args.config["grid"] ** 2,
        "student_activation_bytes": setup.activation_bytes,
    }


def main(argv=None) -> int:
    args = parse(argv)
    device = pick_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    log(f"building the {'tiny' if args.tiny else 'Flux.1 [dev]-sized'} model on {device} in {args.dtype}")
    started = time.monotonic()
    setup = make_setup(args, device)
    result = {
        "command": " ".join(["python", "benchmarks/flux_step.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(device),
        "config": describe(args, setup),
        "memory": (
            "allocator high-water mark above the start of the step"
            if device.type == "cuda"
            else "CPU allocator events replayed (benchmarks/memory.py)"
        ),
        "construction_s": time.monotonic() - started,
        "modes": {},
    }
    config = result["config"]
    log(
        f"built in {result['construction_s']:.1f} s: {config['parameters']:,} parameters, "
        f"{config['trainable_parameters']:,} trainable"
    )
    for mode in args.modes:
        run_mode(mode, setup, args, result)
    result["total_s"] = time.monotonic() - _START
    save(result, args.out)
    print(table(result))
    overflowed = [
        f"{m}/{v}" for m, r in result["modes"].items() for v, e in r["variants"].items() if not math.isfinite(e["loss"])
    ]
    if overflowed:
        log(f"non-finite loss in {', '.join(overflowed)}: the random weights overflow {args.dtype}; times still hold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
