"""`layersync-hooks probe MODEL`: measure block-to-block similarity and recommend student/teacher pairs.

Example:
    ```bash
    layersync-hooks probe ./my-flux/transformer --output-dir probe-flux --height 64 --width 64
    ```
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

import torch

from ..capture import describe, list_blocks
from ..errors import LayerSyncError
from ..layouts import layout_for
from ..probe import ProbeSize, forward_inputs, load_forward_kwargs, load_model, print_report, probe, save_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="A local diffusers model folder (config.json, weights optional) or config file.")
    parser.add_argument("--output-dir", default="layersync_runs/probe", help="Where to write the report.")
    parser.add_argument("--height", type=int, default=32, help="Latent height, before patching (default 32).")
    parser.add_argument("--width", type=int, default=32, help="Latent width, before patching (default 32).")
    parser.add_argument("--frames", type=int, default=4, help="Latent frames of video models (default 4).")
    parser.add_argument("--text-tokens", type=int, default=16, help="Random text tokens (default 16).")
    parser.add_argument("--batch-size", type=int, default=2, help="Samples per forward (default 2).")
    parser.add_argument(
        "--noise-levels",
        type=float,
        nargs="+",
        default=[0.25, 0.5, 0.75],
        help="Noise levels sigma in (0, 1); x_t = (1 - sigma) x_0 + sigma noise.",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="Forwards per noise level (default 1; once with --inputs)."
    )
    parser.add_argument("--inputs", help="A safetensors file of forward kwargs (save_forward_kwargs) to use as is.")
    parser.add_argument("--cka-tokens", type=int, default=1024, help="Tokens sampled for linear CKA.")
    parser.add_argument("--top", type=int, default=3, help="Pairs to recommend (default 3).")
    parser.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="auto: bfloat16 on GPU, float32 on CPU.",
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random inputs (and of random weights).")


def run(args: argparse.Namespace) -> int:
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = (
        getattr(torch, args.dtype)
        if args.dtype != "auto"
        else (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    )
    if not all(0 < level < 1 for level in args.noise_levels):
        print(f"error: --noise-levels must lie in (0, 1), got {args.noise_levels}.", file=sys.stderr)
        return 2
    small = {
        flag: value
        for flag, value in (
            ("--repeats", args.repeats),
            ("--cka-tokens", args.cka_tokens),
            ("--top", args.top),
            ("--batch-size", args.batch_size),
        )
        if value < 1
    }
    if small:
        print(f"error: {', '.join(f'{flag} {value}' for flag, value in small.items())}: must be >= 1.", file=sys.stderr)
        return 2
    if importlib.util.find_spec("matplotlib") is None:  # checked first: the heatmap comes after the forwards
        print(
            "error: the probe's heatmap needs matplotlib: pip install matplotlib (or layersync_hooks[demo]).",
            file=sys.stderr,
        )
        return 2
    torch.manual_seed(args.seed)  # random weights (a config without weights) are reproducible too
    try:
        model = load_model(args.model, device=device, dtype=dtype)
        if args.inputs:  # fixed inputs and an eval-mode model: every repeat would give the same forward
            batches = [(float("nan"), load_forward_kwargs(args.inputs, model))]
        else:
            size = ProbeSize(args.batch_size, args.height, args.width, args.frames, args.text_tokens)
            batches = [
                (level, forward_inputs(model, size, level, seed=args.seed + i))
                for level in args.noise_levels
                for i in range(args.repeats)
            ]
        print(
            f"Probing {type(model).__name__} ({describe(list_blocks(model, layout_for(model)))}) on {device}, "
            f"{dtype}, {len(batches)} forwards."
        )
        result = probe(model, batches, cka_tokens=args.cka_tokens, top=args.top)
    except (LayerSyncError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_report(result)
    for path in save_report(result, args.output_dir):
        print(f"Wrote {path}")
    return 0
