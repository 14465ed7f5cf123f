"""Tiny weight files and cached datasets in the trainers' own formats, so that their unmodified training scripts run
on a CPU with no download: `python tiny_files.py TRAINER FOLDER` in the trainer's own environment (with its checkout
importable) writes them into FOLDER and prints what it wrote as JSON.

- Weights: the trainer's own model class built at the sizes of `site/tiny_dims.py` and saved with the key names of
  the released checkpoints (random weights; the zero-initialised and uninitialised ones re-drawn).
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


def _redraw_unset(model: torch.nn.Module, seed: int = 0) -> None:
    """Re-draw the weights a released checkpoint would set: all-zero parameters (zero-initialised heads and gates, so
    that a LoRA gets gradients from the first step) and parameters or buffers left uninitialised (`torch.empty`, e.g.
    SD3's position-table buffer: whatever memory held, NaN included)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        weights = [(p, True) for p in model.parameters()] + [(b, False) for b in model.buffers()]
        for tensor, is_parameter in weights:
            if not tensor.is_floating_point() or not tensor.numel():
                continue
            unset = not torch.isfinite(tensor).all() or tensor.abs().max() > 1e3
            if unset or (is_parameter and not tensor.any()):
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.02)


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
    _redraw_unset(model)
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


def musubi_hunyuan_video(folder: Path) -> dict:
    """musubi-tuner, HunyuanVideo T2V (`hv_train_network.py`): DiT file (safetensors), images, latent caches and
    LLM (padded, with its mask) + CLIP-L caches, dataset TOML."""
    from musubi_tuner.hunyuan_model import models

    torch.manual_seed(0)
    model = models.load_dit_model(text_states_dim=4096, text_states_dim_2=768, in_channels=16, out_channels=16,
                                  factor_kwargs={"attn_mode": "torch"})  # fmt: skip
    _redraw_unset(model)
    dit = folder / "mp_rank_00_model_states_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, dit)

    images, cache = folder / "images", folder / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(1)
    for i, key in enumerate(_images(images)):
        latents = torch.randn(16, 1, SIZE // 8, SIZE // 8, generator=generator).to(torch.bfloat16)  # C, F, H, W
        save_file({"latents_1x8x8_bfloat16": latents}, cache / f"{key}_{SIZE:04d}x{SIZE:04d}_hv.safetensors",
                  metadata={"architecture": "hunyuan_video", "width": str(SIZE), "height": str(SIZE),
                            "format_version": "1.0.1"})  # fmt: skip
        mask = (torch.arange(T5_TOKENS) < 5 + 3 * i).to(torch.int64)  # padded LLM tokens, uneven lengths
        llm = torch.randn(T5_TOKENS, 4096, generator=generator).to(torch.bfloat16)
        clip = torch.randn(768, generator=generator).to(torch.bfloat16)
        save_file({"llm_bfloat16": llm, "llm_mask": mask, "clipL_bfloat16": clip}, cache / f"{key}_hv_te.safetensors",
                  metadata={"architecture": "hunyuan_video", "caption1": f"a tiny test picture number {i}",
                            "format_version": "1.0.1"})  # fmt: skip
    toml = folder / "dataset.toml"
    toml.write_text(
        f'[general]\nresolution = [{SIZE}, {SIZE}]\ncaption_extension = ".txt"\nbatch_size = 1\n'
        "enable_bucket = false\n\n"
        f'[[datasets]]\nimage_directory = "{images}"\ncache_directory = "{cache}"\nnum_repeats = 1\n'
    )
    return {"dit": str(dit), "dataset_config": str(toml)}


def musubi_flux_kontext(folder: Path) -> dict:
    """musubi-tuner, FLUX.1 Kontext dev (`flux_kontext_train_network.py`): DiT file, images with control images,
    latent caches (target + control) and T5/CLIP-L caches, dataset TOML with `control_directory`."""
    from musubi_tuner.flux import flux_models

    torch.manual_seed(0)
    flux = flux_models.Flux(flux_models.configs_flux_dev_context.params)  # shrunk by sitecustomize
    _redraw_unset(flux)
    dit = folder / "flux1-kontext-dev-tiny.safetensors"
    save_file({k: v.contiguous() for k, v in flux.state_dict().items()}, dit)

    images, control, cache = folder / "images", folder / "control", folder / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    keys = _images(images)
    _images(control)  # the starting images, same names
    generator = torch.Generator().manual_seed(1)
    t5_dim, clip_dim = tiny_dims.MUSUBI_FLUX_KONTEXT["context_in_dim"], tiny_dims.MUSUBI_FLUX_KONTEXT["vec_in_dim"]
    for i, key in enumerate(keys):
        latents = torch.randn(2, 16, SIZE // 8, SIZE // 8, generator=generator).to(torch.bfloat16)  # target, control
        target, start = latents[0].contiguous(), latents[1].contiguous()
        save_file({"latents_1x8x8_bfloat16": target, "latents_control_1x8x8_bfloat16": start},
                  cache / f"{key}_{SIZE:04d}x{SIZE:04d}_fk.safetensors",
                  metadata={"architecture": "flux_kontext", "width": str(SIZE), "height": str(SIZE),
                            "format_version": "1.0.1"})  # fmt: skip
        save_file({"t5_vec_bfloat16": torch.randn(T5_TOKENS, t5_dim, generator=generator).to(torch.bfloat16),
                   "clip_l_pooler_bfloat16": torch.randn(clip_dim, generator=generator).to(torch.bfloat16)},
                  cache / f"{key}_fk_te.safetensors",
                  metadata={"architecture": "flux_kontext", "caption1": f"a tiny test picture number {i}",
                            "format_version": "1.0.1"})  # fmt: skip
    toml = folder / "dataset.toml"
    toml.write_text(
        f'[general]\nresolution = [{SIZE}, {SIZE}]\ncaption_extension = ".txt"\nbatch_size = 1\n'
        "enable_bucket = false\n\n"
        f'[[datasets]]\nimage_directory = "{images}"\ncontrol_directory = "{control}"\n'
        f'cache_directory = "{cache}"\nnum_repeats = 1\n'
    )
    return {"dit": str(dit), "dataset_config": str(toml)}


def musubi_qwen_image(folder: Path) -> dict:
    """musubi-tuner, Qwen-Image (`qwen_image_train_network.py --model_version original --num_layers 6`): DiT file,
    images, latent caches and Qwen2.5-VL embedding caches (uneven lengths), dataset TOML."""
    from musubi_tuner.qwen_image import qwen_image_model

    torch.manual_seed(0)
    model = qwen_image_model.QwenImageTransformer2DModel(  # the arguments of create_model; shrunk by sitecustomize
        patch_size=2, in_channels=64, out_channels=16, num_layers=tiny_dims.MUSUBI_QWEN_IMAGE_LAYERS,
        attention_head_dim=128, num_attention_heads=24, joint_attention_dim=3584, guidance_embeds=False,
        axes_dims_rope=(16, 56, 56), attn_mode="torch",
    )  # fmt: skip
    _redraw_unset(model)
    dit = folder / "qwen_image_tiny_bf16.safetensors"  # bf16 like the released file (musubi trains it in bf16)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}, dit)

    images, cache = folder / "images", folder / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(1)
    width = tiny_dims.MUSUBI_QWEN_IMAGE["joint_attention_dim"]
    for i, key in enumerate(_images(images)):
        latents = torch.randn(16, 1, SIZE // 8, SIZE // 8, generator=generator).to(torch.bfloat16)  # C, F, H, W
        save_file({"latents_1x8x8_bfloat16": latents}, cache / f"{key}_{SIZE:04d}x{SIZE:04d}_qi.safetensors",
                  metadata={"architecture": "qwen_image", "width": str(SIZE), "height": str(SIZE),
                            "format_version": "1.0.1"})  # fmt: skip
        embed = torch.randn(5 + 3 * i, width, generator=generator).to(torch.bfloat16)  # uneven caption lengths
        save_file({"varlen_vl_embed_bfloat16": embed}, cache / f"{key}_qi_te.safetensors",
                  metadata={"architecture": "qwen_image", "caption1": f"a tiny test picture number {i}",
                            "format_version": "1.0.1"})  # fmt: skip
    toml = folder / "dataset.toml"
    toml.write_text(
        f'[general]\nresolution = [{SIZE}, {SIZE}]\ncaption_extension = ".txt"\nbatch_size = 1\n'
        "enable_bucket = false\n\n"
        f'[[datasets]]\nimage_directory = "{images}"\ncache_directory = "{cache}"\nnum_repeats = 1\n'
    )
    return {"dit": str(dit), "dataset_config": str(toml)}


T5_TOKENS = 16  # sd-scripts: `--t5xxl_max_token_length 16`; musubi Kontext's cached T5 length


def _byte_characters() -> list[str]:
    """The 256 printable characters byte-level BPE (GPT-2, CLIP) writes bytes as."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
                 *range(ord("\u00ae"), ord("\u00ff") + 1)]  # fmt: skip
    others = [b for b in range(256) if b not in printable]
    return [chr(c) for c in printable] + [chr(256 + i) for i in range(len(others))]


def _tokenizers(folder: Path) -> Path:
    """Tiny CLIP-L and T5 tokenizers where sd-scripts' `--tokenizer_cache_dir` looks for them (no hub here): a
    character-level CLIP BPE and a Unigram T5 over the same characters."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPTokenizer, T5TokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    chars = _byte_characters()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, **{c: 2 + i for i, c in enumerate(chars)}}
    vocab.update({f"{c}</w>": len(vocab) + i for i, c in enumerate(chars)})
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    clip = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    for name in ("openai_clip-vit-large-patch14", "laion_CLIP-ViT-bigG-14-laion2B-39B-b160k"):  # CLIP-L, CLIP-G
        clip.save_pretrained(folder / name)
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)] + [
        (c, -2.0) for c in map(chr, range(33, 127))
    ]
    t5 = Tokenizer(models.Unigram(pieces, unk_id=2))
    t5.pre_tokenizer = pre_tokenizers.Metaspace()
    t5.save(str(folder / "t5.json"))
    t5 = T5TokenizerFast(tokenizer_file=str(folder / "t5.json"), extra_ids=0, model_max_length=512)
    t5.save_pretrained(folder / "google_t5-v1_1-xxl")
    return folder


def sd_scripts_flux(folder: Path) -> dict:
    """sd-scripts, FLUX.1 dev (`flux_train_network.py`): DiT, CLIP-L, T5-XXL and AE files, tokenizers, images with
    their latent and text-encoder caches (`--cache_latents_to_disk --cache_text_encoder_outputs_to_disk`), TOML."""
    import numpy as np
    from library import flux_models, flux_utils
    from transformers import CLIPTextModel, T5EncoderModel

    torch.manual_seed(0)
    double, single = tiny_dims.SD_FLUX_BLOCKS
    params = flux_models.configs["dev"].params  # shrunk by sitecustomize (LAYERSYNC_TINY_TRAINERS=1)
    flux = flux_models.Flux(type(params)(**{**params.__dict__, "depth": double, "depth_single_blocks": single}))
    _redraw_unset(flux)
    files = {"dit": folder / "flux1-dev-tiny.safetensors", "clip_l": folder / "clip_l-tiny.safetensors",
             "t5xxl": folder / "t5xxl-tiny.safetensors", "ae": folder / "ae-tiny.safetensors"}  # fmt: skip
    save_file({k: v.contiguous() for k, v in flux.state_dict().items()}, files["dit"])
    # The loaders build the text encoders on the meta device from their own configs: the same configs, real weights.
    clip = CLIPTextModel(flux_utils.load_clip_l(None, torch.float32, "cpu", state_dict={}).config)
    t5 = T5EncoderModel(flux_utils.load_t5xxl(None, torch.float32, "cpu", state_dict={}).config)
    ae = flux_models.AutoEncoder(flux_models.configs["dev"].ae_params)
    for name, model in (("clip_l", clip), ("t5xxl", t5), ("ae", ae)):
        save_file({k: v.clone().contiguous() for k, v in model.state_dict().items()}, files[name])  # tied: cloned

    images = folder / "images"
    generator = torch.Generator().manual_seed(1)
    clip_dim, t5_dim = tiny_dims.SD_CLIP_L["hidden_size"], tiny_dims.SD_T5XXL["d_model"]
    for i, key in enumerate(_images(images)):
        latents = torch.randn(16, SIZE // 8, SIZE // 8, generator=generator)
        np.savez(images / f"{key}_{SIZE:04d}x{SIZE:04d}_flux.npz", latents_8x8=latents.numpy(),
                 original_size_8x8=np.array([SIZE, SIZE]), crop_ltrb_8x8=np.array([0, 0, SIZE, SIZE]))  # fmt: skip
        mask = (torch.arange(T5_TOKENS) < 5 + 3 * i).to(torch.int64)  # uneven caption lengths
        np.savez(images / f"{key}_flux_te.npz", l_pooled=torch.randn(clip_dim, generator=generator).numpy(),
                 t5_out=torch.randn(T5_TOKENS, t5_dim, generator=generator).numpy(),
                 txt_ids=np.zeros((T5_TOKENS, 3), dtype=np.float32), t5_attn_mask=mask.numpy(),
                 apply_t5_attn_mask=False)  # fmt: skip
    toml = folder / "dataset.toml"
    toml.write_text(
        f'[general]\ncaption_extension = ".txt"\n\n[[datasets]]\nresolution = {SIZE}\nbatch_size = 1\n'
        f'enable_bucket = false\n\n  [[datasets.subsets]]\n  image_dir = "{images}"\n  num_repeats = 1\n'
    )
    tokenizers = _tokenizers(folder / "tokenizers")
    return {
        **{k: str(v) for k, v in files.items()},
        "dataset_config": str(toml),
        "tokenizer_cache_dir": str(tokenizers),
    }


def sd_scripts_sd3(folder: Path) -> dict:
    """sd-scripts, SD3 medium (`sd3_train_network.py`): the DiT+VAE file (`model.diffusion_model.*`,
    `first_stage_model.*`), CLIP-L, CLIP-G and T5-XXL files, tokenizers, images with their latent and
    text-encoder caches, TOML."""
    import numpy as np
    from library import sd3_models, sd3_utils
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(0)
    clip_width = tiny_dims.SD3_CLIP["hidden_size"]
    grid = tiny_dims.SD3_POS_EMBED_MAX_SIZE
    params = sd3_models.SD3Params(patch_size=2, depth=tiny_dims.SD3_DEPTH, num_patches=grid * grid,
                                  pos_embed_max_size=grid, adm_in_channels=2 * clip_width, qk_norm=None,
                                  x_block_self_attn_layers=[], context_embedder_in_features=4096,
                                  context_embedder_out_features=64 * tiny_dims.SD3_DEPTH,
                                  model_type="medium")  # fmt: skip
    mmdit, vae = sd3_models.create_sd3_mmdit(params), sd3_models.SDVAE()  # VAE shrunk by sitecustomize
    _redraw_unset(mmdit)
    weights = {f"model.diffusion_model.{k}": v for k, v in mmdit.state_dict().items()}
    weights.update({f"first_stage_model.{k}": v for k, v in vae.state_dict().items()})
    files = {"dit": folder / "sd3_medium-tiny.safetensors", "clip_l": folder / "clip_l-tiny.safetensors",
             "clip_g": folder / "clip_g-tiny.safetensors", "t5xxl": folder / "t5xxl-tiny.safetensors"}  # fmt: skip
    save_file({k: v.contiguous() for k, v in weights.items()}, files["dit"])
    for name in ("clip_l", "clip_g"):  # the loaders' own (shrunk) configs, real weights
        width = tiny_dims.SD3_CLIP["hidden_size"]  # (a projection of the right size: else it inserts eye(768))
        marker = {f"text_encoders.{name}.transformer.text_model.embeddings.position_embedding.weight": torch.zeros(1),
                  f"text_encoders.{name}.text_projection.weight": torch.zeros(width, width)}  # fmt: skip
        config = getattr(sd3_utils, f"load_{name}")(None, torch.float32, "cpu", state_dict=marker).config
        model = CLIPTextModelWithProjection(config)
        save_file({k: v.clone().contiguous() for k, v in model.state_dict().items()}, files[name])
    t5 = sd3_utils.flux_utils_load_t5xxl(None, torch.float32, "cpu", state_dict={})
    t5 = type(t5)(t5.config)
    save_file({k: v.clone().contiguous() for k, v in t5.state_dict().items()}, files["t5xxl"])

    images = folder / "images"
    generator = torch.Generator().manual_seed(1)
    for i, key in enumerate(_images(images)):
        latents = torch.randn(16, SIZE // 8, SIZE // 8, generator=generator)
        np.savez(images / f"{key}_{SIZE:04d}x{SIZE:04d}_sd3.npz", latents_8x8=latents.numpy(),
                 original_size_8x8=np.array([SIZE, SIZE]), crop_ltrb_8x8=np.array([0, 0, SIZE, SIZE]))  # fmt: skip
        length = 5 + 3 * i  # uneven caption lengths
        lengths = {"clip_l_attn_mask": 77, "clip_g_attn_mask": 77, "t5_attn_mask": T5_TOKENS}
        masks = {name: (torch.arange(n) < length).to(torch.int64).numpy() for name, n in lengths.items()}
        np.savez(images / f"{key}_sd3_te.npz", lg_out=torch.randn(77, 2 * clip_width, generator=generator).numpy(),
                 lg_pooled=torch.randn(2 * clip_width, generator=generator).numpy(),
                 t5_out=torch.randn(T5_TOKENS, 4096, generator=generator).numpy(), apply_lg_attn_mask=False,
                 apply_t5_attn_mask=False, **masks)  # fmt: skip
    toml = folder / "dataset.toml"
    toml.write_text(
        f'[general]\ncaption_extension = ".txt"\n\n[[datasets]]\nresolution = {SIZE}\nbatch_size = 1\n'
        f'enable_bucket = false\n\n  [[datasets.subsets]]\n  image_dir = "{images}"\n  num_repeats = 1\n'
    )
    tokenizers = _tokenizers(folder / "tokenizers")
    return {**{k: str(v) for k, v in files.items()}, "dataset_config": str(toml),
            "tokenizer_cache_dir": str(tokenizers)}  # fmt: skip


def _gemma_tokenizer_in_hub_cache(cache: Path) -> Path:
    """A tiny Gemma tokenizer where `AutoTokenizer.from_pretrained("google/gemma-2-2b", cache_dir=cache)` finds it
    offline (HF_HUB_OFFLINE=1): the hub cache's own layout, one snapshot that `refs/main` names."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GemmaTokenizerFast

    pieces = [("<pad>", 0.0), ("<eos>", 0.0), ("<bos>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    pieces += [(c, -2.0) for c in map(chr, range(33, 127))]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=3))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    repo, commit = cache / "models--google--gemma-2-2b", "0" * 40
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    GemmaTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
                       unk_token="<unk>").save_pretrained(repo / "snapshots" / commit)  # fmt: skip
    return cache


def sd_scripts_lumina(folder: Path) -> dict:
    """sd-scripts, Lumina Image 2.0 (`lumina_train_network.py`): NextDiT, Gemma 2 and AE files, the Gemma tokenizer in
    a hub cache, images with their latent and text-encoder caches, TOML."""
    import numpy as np
    from library import flux_models, lumina_models, lumina_util
    from transformers import Gemma2Model

    torch.manual_seed(0)
    model = lumina_models.NextDiT_2B_GQA_patch2_Adaln_Refiner()  # get_2b_config shrunk by sitecustomize
    _redraw_unset(model)
    files = {"dit": folder / "lumina-image-2-tiny.safetensors", "gemma2": folder / "gemma-2-2b-tiny.safetensors",
             "ae": folder / "ae-tiny.safetensors"}  # fmt: skip
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, files["dit"])
    gemma2 = Gemma2Model(lumina_util.load_gemma2(None, torch.float32, "cpu", state_dict={}).config)
    save_file({f"model.{k}": v.clone().contiguous() for k, v in gemma2.state_dict().items()}, files["gemma2"])
    ae = flux_models.AutoEncoder(flux_models.configs["schnell"].ae_params)
    save_file({k: v.contiguous() for k, v in ae.state_dict().items()}, files["ae"])

    images = folder / "images"
    generator = torch.Generator().manual_seed(1)
    width = tiny_dims.SD_GEMMA2["hidden_size"]
    for i, key in enumerate(_images(images)):
        latents = torch.randn(16, SIZE // 8, SIZE // 8, generator=generator)
        np.savez(images / f"{key}_{SIZE:04d}x{SIZE:04d}_lumina.npz", latents_8x8=latents.numpy(),
                 original_size_8x8=np.array([SIZE, SIZE]), crop_ltrb_8x8=np.array([0, 0, SIZE, SIZE]))  # fmt: skip
        mask = (torch.arange(GEMMA_TOKENS) < 5 + 3 * i).to(torch.int64)  # uneven caption lengths
        np.savez(images / f"{key}_lumina_te.npz", attention_mask=mask.numpy(),
                 hidden_state=torch.randn(GEMMA_TOKENS, width, generator=generator).numpy(),
                 input_ids=torch.randint(4, 100, (GEMMA_TOKENS,), generator=generator).numpy())  # fmt: skip
    toml = folder / "dataset.toml"
    toml.write_text(
        f'[general]\ncaption_extension = ".txt"\n\n[[datasets]]\nresolution = {SIZE}\nbatch_size = 1\n'
        f'enable_bucket = false\n\n  [[datasets.subsets]]\n  image_dir = "{images}"\n  num_repeats = 1\n'
    )
    cache = _gemma_tokenizer_in_hub_cache(folder / "tokenizers")
    return {**{k: str(v) for k, v in files.items()}, "dataset_config": str(toml), "tokenizer_cache_dir": str(cache)}


GEMMA_TOKENS = 16  # sd-scripts Lumina: `--gemma2_max_token_length 16`


def ai_toolkit_flux(folder: Path) -> dict:
    """ai-toolkit, FLUX.1 dev LoRA (`python run.py config.yaml`): a tiny FLUX.1 pipeline folder in diffusers' format
    (what `name_or_path` names), images with captions, and the job's YAML (CPU, float32, no quantization, no
    sampling)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5TokenizerFast

    torch.manual_seed(0)
    dims = tiny_dims.AI_TOOLKIT_FLUX
    transformer = FluxTransformer2DModel(**dims["transformer"])
    _redraw_unset(transformer)
    vae = AutoencoderKL(**dims["vae"])
    clip = CLIPTextModel(CLIPTextConfig(**dims["clip"]))
    t5 = T5EncoderModel(T5Config(**dims["t5"]))
    tokenizers = _tokenizers(folder / "tokenizers")
    clip_tokenizer = CLIPTokenizer.from_pretrained(tokenizers / "openai_clip-vit-large-patch14")
    t5_tokenizer = T5TokenizerFast.from_pretrained(tokenizers / "google_t5-v1_1-xxl")
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True)
    pipe = FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=clip, tokenizer=clip_tokenizer, text_encoder_2=t5,
                        tokenizer_2=t5_tokenizer, transformer=transformer)  # fmt: skip
    pipe.save_pretrained(folder / "FLUX.1-dev-tiny")
    _images(folder / "images")
    config = folder / "flux_lora.yaml"
    config.write_text(AI_TOOLKIT_FLUX_YAML.format(model=folder / "FLUX.1-dev-tiny", images=folder / "images"))
    return {"model": str(folder / "FLUX.1-dev-tiny"), "config": str(config)}


# config/examples/train_lora_flux_24gb.yaml, less what a CPU cannot do (cuda, bf16, quantize, 8-bit AdamW, EMA,
# sampling), for 4 steps at 64x64. `training_folder` is set by the test (`{output}` is replaced); its tensorboard
# log (`log_dir`, every step) is where it shows its own losses.
AI_TOOLKIT_FLUX_YAML = """---
job: extension
config:
  name: "tiny_flux_lora"
  process:
    - type: 'sd_trainer'
      training_folder: "{{output}}"
      log_dir: "{{output}}/logs"
      logging:
        log_every: 1
      device: cpu
      network:
        type: "lora"
        linear: 4
        linear_alpha: 4
      save:
        dtype: float32
        save_every: 1000
        max_step_saves_to_keep: 1
      datasets:
        - folder_path: "{images}"
          caption_ext: "txt"
          caption_dropout_rate: 0.0
          cache_latents_to_disk: true
          resolution: [ 64 ]
      train:
        batch_size: 1
        steps: 4
        gradient_accumulation_steps: 1
        train_unet: true
        train_text_encoder: false
        gradient_checkpointing: true
        noise_scheduler: "flowmatch"
        optimizer: "adamw"
        lr: 1e-3
        dtype: fp32
        disable_sampling: true
        skip_first_sample: true
      model:
        name_or_path: "{model}"
        is_flux: true
        quantize: false
      sample:
        sampler: "flowmatch"
        sample_every: 1000
        width: 64
        height: 64
        prompts:
          - "a tiny test picture"
        seed: 42
        guidance_scale: 4
        sample_steps: 2
meta:
  name: "[name]"
  version: '1.0'
"""

WRITERS = {
    "musubi-wan": musubi_wan,
    "musubi-flux-kontext": musubi_flux_kontext,
    "musubi-hunyuan-video": musubi_hunyuan_video,
    "musubi-qwen-image": musubi_qwen_image,
    "sd-scripts-flux": sd_scripts_flux,
    "sd-scripts-sd3": sd_scripts_sd3,
    "sd-scripts-lumina": sd_scripts_lumina,
    "ai-toolkit-flux": ai_toolkit_flux,
}

if __name__ == "__main__":
    trainer, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    print(json.dumps(WRITERS[trainer](out)))
