"""Tiny weight files and cached datasets in the trainers' own formats, so that their unmodified training scripts run
on a CPU with no download: `python tiny_files.py TRAINER FOLDER` in the trainer's own environment (with its checkout
importable) writes them into FOLDER and prints what it wrote as JSON.

- Weights: the trainer's own model class built at the sizes of `site/tiny_dims.py` and saved with the key names of
  the released checkpoints (random weights; the zero-initialised ones re-drawn, as after some training, so that a
  LoRA gets gradients from the first step).
- Data: a few 64x64 images with captions, and the caches the trainer's cache scripts would write for them (same
  file names, tensor keys, dtypes and metadata), filled with fixed random latents and text-encoder outputs, so no
  VAE or text encoder is needed.
"""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent / "site"))
import tiny_dims  # noqa: E402

IMAGES = 3  # items in each tiny dataset
SIZE = 64  # image side in pixels: 8x8 latents (VAE stride 8)


def _redraw_zeros(model: torch.nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)


def _images(folder: Path) -> list[str]:
    """IMAGES small PNGs with `.txt` captions; returns their item keys (file names without extension)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    keys = []
    for i in range(IMAGES):
        key = f"img{i}"
        Image.new("RGB", (SIZE, SIZE), (40 * i, 100, 200 - 40 * i)).save(folder / f"{key}.png")
        (folder / f"{key}.txt").write_text(f"a tiny test picture number {i}")
        keys.append(key)
    return keys


def musubi_wan(folder: Path) -> dict:
    """musubi-tuner, Wan 2.1 T2V 1.3B (`--task t2v-1.3B`): DiT file, images, latent and T5 caches, dataset TOML."""
    from musubi_tuner.wan.modules.model import WanModel

    dims = tiny_dims.MUSUBI_WAN
    torch.manual_seed(0)
    model = WanModel(model_type="t2v", dim=dims["dim"], ffn_dim=dims["ffn_dim"], num_heads=dims["num_heads"],
                     num_layers=dims["num_layers"], text_len=dims["text_len"], attn_mode="torch")  # fmt: skip
    _redraw_zeros(model)
    dit = folder / "wan2.1_t2v_1.3B_tiny_fp32.safetensors"
    # The released 1.3B file (ComfyUI's repackaging, which musubi's docs point to) keeps ComfyUI's prefix.
    save_file({f"model.diffusion_model.{k}": v.contiguous() for k, v in model.state_dict().items()}, dit)

    images, cache = folder / "images", folder / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(1)
    for i, key in enumerate(_images(images)):
        latents = torch.randn(16, 1, SIZE // 8, SIZE // 8, generator=generator).to(torch.bfloat16)  # C, F, H, W
        save_file({"latents_1x8x8_bfloat16": latents}, cache / f"{key}_{SIZE:04d}x{SIZE:04d}_wan.safetensors",
                  metadata={"architecture": "wan", "width": str(SIZE), "height": str(SIZE),
                            "format_version": "1.0.1"})  # fmt: skip
        t5 = torch.randn(5 + 3 * i, 4096, generator=generator).to(torch.bfloat16)  # uneven caption lengths
        save_file({"varlen_t5_bfloat16": t5}, cache / f"{key}_wan_te.safetensors",
                  metadata={"architecture": "wan", "caption1": f"a tiny test picture number {i}",
                            "format_version": "1.0.1"})  # fmt: skip
    toml = folder / "dataset.toml"
    toml.write_text(
        f'[general]\nresolution = [{SIZE}, {SIZE}]\ncaption_extension = ".txt"\nbatch_size = 1\n'
        "enable_bucket = false\n\n"
        f'[[datasets]]\nimage_directory = "{images}"\ncache_directory = "{cache}"\nnum_repeats = 1\n'
    )
    return {"dit": str(dit), "dataset_config": str(toml)}


WRITERS = {"musubi-wan": musubi_wan}

if __name__ == "__main__":
    trainer, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    print(json.dumps(WRITERS[trainer](out)))
