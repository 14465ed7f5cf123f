"""The demo's linear probe at every block: of the two models a `layersync-hooks demo --compare` wrote, and of the
untrained model they started from. It answers why the demo's student probe does not move with LayerSync: whether
the teacher block holds more of the class than the student block, i.e. whether there is anything to pull toward.

    layersync-hooks demo --compare --seed 1 --output-dir layersync_runs/demo_seed1
    python benchmarks/demo_probes.py layersync_runs/demo_seed1 --seed 1 --out probes_seed1.json

The probe is the demo's own (`layersync_hooks/commands/demo/linear_probe.py`: 256 held-out shapes of `--seed` at
t = 0.3, empty caption, mean-pooled tokens, 4-fold ridge classifier; chance 1/6), at the patch embedding and after
each of the 12 blocks. A few seconds per model on a CPU.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from layersync_hooks.commands.demo.linear_probe import ProbeImages, pooled_tokens, probe_accuracy
from layersync_hooks.commands.demo.train import build_model

RUNS = ("baseline", "layersync")


def block_probes(model, images: ProbeImages) -> dict[str, float]:
    """The probe of the patch embedding's tokens (`embedding`) and of each block's (`1`, `2`, ...)."""
    stages = {"embedding": model.pos_embed}
    stages.update({str(depth): block for depth, block in enumerate(model.transformer_blocks, start=1)})
    features = pooled_tokens(model, stages, images, None, "cpu")
    return {name: round(probe_accuracy(x, images.labels), 4) for name, x in features.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("compare_dir", type=Path, help="the --output-dir of a `demo --compare` run")
    parser.add_argument("--seed", type=int, required=True, help="the --seed that run was trained with")
    parser.add_argument("--out", type=Path, help="write the probes to this JSON file")
    args = parser.parse_args(argv)
    from diffusers import PixArtTransformer2DModel

    images = ProbeImages.draw(seed=args.seed)
    models = {"untrained": build_model(args.seed)}  # the initial weights both runs started from
    for run in RUNS:
        models[run] = PixArtTransformer2DModel.from_pretrained(args.compare_dir / run / "model")
    result = {"seed": args.seed, **{name: block_probes(model, images) for name, model in models.items()}}
    print(f"{'':>10}" + "".join(f"{name:>10}" for name in result["untrained"]))
    for name in models:
        print(f"{name:>10}" + "".join(f"{value:>10.3f}" for value in result[name].values()))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    torch.set_num_threads(min(2, torch.get_num_threads()))
    main()
