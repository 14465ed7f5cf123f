"""`layersync-hooks probe MODEL`: measure block-to-block similarity and recommend student/teacher pairs.

Every argument is checked before the model is loaded (and the layout before any input is built), so a mistake
costs no forward: a `UsageError` or a refused class is printed as `error: ...` with exit code 2.

Example:
    ```bash
    layersync-hooks probe ./my-flux/transformer --output-dir probe-flux --height 64 --width 64
    ```
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..capture import describe, list_blocks
from ..errors import UsageError
from ..layouts import layout_for
from ..probe import (
    REPORT_FILES,
    ProbeSize,
    forward_inputs,
    load_forward_kwargs,
    load_model,
    print_report,
    probe,
    read_model_config,
    save_report,
)
from .checks import existing, noise_level, positive_int, require_modules, seed, writable_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="A local diffusers model folder (config.json, weights optional) or config file.")
    parser.add_argument("--output-dir", default="layersync_runs/probe", help="Where to write the report.")
    parser.add_argument(
        "--overwrite", action="store_true", help="Replace an earlier report in --output-dir (else the probe refuses)."
    )
    parser.add_argument("--height", type=positive_int, default=32, help="Latent height, before patching (default 32).")
    parser.add_argument("--width", type=positive_int, default=32, help="Latent width, before patching (default 32).")
    parser.add_argument("--frames", type=positive_int, default=4, help="Latent frames of video models (default 4).")
    parser.add_argument("--text-tokens", type=positive_int, default=16, help="Random text tokens (default 16).")
    parser.add_argument("--batch-size", type=positive_int, default=2, help="Samples per forward (default 2).")
    parser.add_argument(
        "--noise-levels",
        type=noise_level,
        nargs="+",
        default=[0.25, 0.5, 0.75],
        help="Noise levels sigma in (0, 1); x_t = (1 - sigma) x_0 + sigma noise.",
    )
    parser.add_argument(
        "--repeats", type=positive_int, default=1, help="Forwards per noise level (default 1; once with --inputs)."
    )
    parser.add_argument("--inputs", help="A safetensors file of forward kwargs (save_forward_kwargs) to use as is.")
    parser.add_argument("--cka-tokens", type=_cka_tokens, default=1024, help="Tokens sampled for linear CKA.")
    parser.add_argument("--top", type=positive_int, default=3, help="Pairs to recommend (default 3).")
    parser.add_argument(
        "--device", type=_device, default="auto", help="auto (GPU when present), cpu, cuda, cuda:1, ..."
    )
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="auto: bfloat16 on GPU, float32 on CPU.",
    )
    parser.add_argument("--seed", type=seed, default=0, help="Seed of the random inputs (and of random weights).")


def _cka_tokens(text: str) -> int:
    value = positive_int(text)
    if value < 2:  # CKA centres the tokens: one token leaves nothing to compare
        raise argparse.ArgumentTypeError(f"must be at least 2 tokens, got {text!r}")
    return value


def _device(text: str) -> str:
    if text != "auto":
        try:
            torch.device(text)
        except (RuntimeError, ValueError):
            raise argparse.ArgumentTypeError(
                f"must be auto or a torch device such as cpu, cuda, cuda:1, got {text!r}"
            ) from None
    return text


def run(args: argparse.Namespace) -> int:
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = (
        getattr(torch, args.dtype)
        if args.dtype != "auto"
        else (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    )
    check_arguments(args, device)
    torch.manual_seed(args.seed)  # random weights (a config without weights) are reproducible too
    model = load_model(args.model, device=device, dtype=dtype)
    layout = layout_for(model)  # a class the layout table refuses says why here, before any input is built
    batches = _batches(args, model)
    print(
        f"Probing {type(model).__name__} ({describe(list_blocks(model, layout))}) on {device}, "
        f"{dtype}, {len(batches)} forwards."
    )
    result = probe(model, batches, cka_tokens=args.cka_tokens, top=args.top)
    print_report(result)
    for path in save_report(result, args.output_dir):
        print(f"Wrote {path}")
    return 0


def check_arguments(args: argparse.Namespace, device: str) -> None:
    """What can be checked without the weights: matplotlib, the device, the model's config, --inputs, and that
    --output-dir can be written and holds no earlier report. Raises `UsageError` (or the config's error)."""
    require_modules({"matplotlib": "matplotlib"}, why="The probe's heatmap")  # drawn after the forwards
    _check_device(device)
    try:
        read_model_config(args.model)  # a config that is not a model's raises its own LayerSyncError
    except FileNotFoundError as error:
        raise UsageError(str(error)) from None
    if args.inputs:
        _check_inputs(Path(args.inputs))
    output = Path(args.output_dir)
    earlier = existing(output, REPORT_FILES)
    if earlier and not args.overwrite:
        raise UsageError(
            f"--output-dir {output} already holds an earlier probe report ({', '.join(earlier)}). Pass --overwrite "
            "to replace it, or choose another --output-dir."
        )
    writable_folder(output, "--output-dir")


def _check_device(device: str) -> None:
    """A CUDA or MPS device must exist here; a typo'd index would otherwise fail deep inside `model.to`."""
    target = torch.device(device)
    if target.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (target.index or 0) >= count:
            have = f"CUDA devices cuda:0..cuda:{count - 1}" if count else "no CUDA device"
            raise UsageError(f"--device {device}: this machine has {have}. Pass --device cpu, auto or one of those.")
    if target.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {device}: MPS is not available here. Pass --device cpu or auto.")


def _check_inputs(path: Path) -> None:
    """--inputs is a safetensors file (its header is read now; the tensors after the model loads)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception as error:  # a missing file, a folder or another format: safetensors raises several kinds
        raise UsageError(
            f"--inputs {path} cannot be read as a safetensors file of forward kwargs ({error}). Write one with "
            "`layersync_hooks.probe.save_forward_kwargs(path, kwargs)` from one forward's keyword arguments."
        ) from None


def _batches(args: argparse.Namespace, model) -> list[tuple[float, dict]]:
    """(noise level, forward kwargs) of every forward: the saved --inputs once, or built ones per level and repeat."""
    if args.inputs:  # fixed inputs and an eval-mode model: every repeat would give the same forward
        return [(float("nan"), load_forward_kwargs(args.inputs, model))]
    _check_patch_size(args, model)
    size = ProbeSize(args.batch_size, args.height, args.width, args.frames, args.text_tokens)
    return [
        (level, forward_inputs(model, size, level, seed=args.seed + i))
        for level in args.noise_levels
        for i in range(args.repeats)
    ]


def _check_patch_size(args: argparse.Namespace, model) -> None:
    """--height, --width (and --frames of video models) must be multiples of the model's patch size: the patch
    embedding would drop the rest, and the model's output would not match its input."""
    patch = getattr(model.config, "patch_size", None)
    if isinstance(patch, int):
        patch = (getattr(model.config, "patch_size_t", None) or 1, patch, patch)
    if not (isinstance(patch, (list, tuple)) and len(patch) in (2, 3)):
        return
    flags = ("--frames", "--height", "--width")[-len(patch) :]
    for flag, step in zip(flags, patch):
        value = getattr(args, flag[2:])
        if step and value % step:
            raise UsageError(
                f"{flag} {value} is not a multiple of {type(model).__name__}'s patch size {step} "
                f"(patch_size {tuple(patch)}). Pass {flag} {value + step - value % step}."
            )
