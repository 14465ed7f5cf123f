"""The model facts, as plain data: where every diffusers (0.42) denoiser keeps its blocks and which tokens are the
noisy target (`LAYOUTS`), and the released sizes of the classes (`RELEASED`: the `layouts` listing, the presets).

Plain data keyed by class name, looked up along the MRO (`registry.lookup_layout`). Depths number the stacks that
carry the target tokens, in forward order: text-only stacks (HunyuanVideo's token refiner, Z-Image's
`context_refiner`) and side branches (Wan-VACE's `vace_blocks`) are not numbered. Facts (block lists, output order,
where the image tokens sit) were read from each class's diffusers source; each row is proven by the gradient
probe in `tests/test_layout_tokens.py` (DiffSynth-Studio's Wan DiT in `tests/with_diffsynth/`). Classes that cannot be
aligned have a row that says why.
"""

from __future__ import annotations

from typing import Optional

from torch import nn

from .counts import Attribute, FirstMarked, ImageShapes, Latents, Less, Valid
from .rules import ChannelsFirst, Indexed, Last, Marked, SequenceFirst, Span, ZImageTarget
from .types import BlockLayout, Released, Stack

IMAGE = Latents("hidden_states")  # packed (B, N, C) latents: N image tokens


def _stacks(*stacks, output: int = 0, rule=None) -> BlockLayout:
    """Stacks that share one output index and token rule."""
    return BlockLayout(stacks=tuple(Stack(path, output=output, rule=rule) for path in stacks))


def _image_first(patch="patch_size") -> Span:
    return Span(Latents("hidden_states", patch=patch))


def _image_last(patch="patch_size") -> Last:
    return Last(Latents("hidden_states", patch=patch))


def _unet_level(model: nn.Module, path: str) -> int:
    """`down_blocks.i` work at level i, the mid block at the lowest resolution, `up_blocks.j` at level n - 1 - j."""
    part, _, rest = path.partition(".")
    lowest = len(model.down_blocks) - 1
    if part == "down_blocks":
        return int(rest.split(".")[0])
    return lowest - int(rest.split(".")[0]) if part == "up_blocks" else lowest


def _unet(path_in_block: str = "attentions.*.transformer_blocks") -> BlockLayout:
    """UNets: the transformer blocks nested in the down, mid and up blocks, numbered in that (forward) order."""
    paths = (f"down_blocks.*.{path_in_block}", f"mid_block.{path_in_block}", f"up_blocks.*.{path_in_block}")
    return BlockLayout(stacks=paths, level=_unet_level)


def _repeated_blocks(model: nn.Module) -> Optional[str]:
    """Stable Cascade runs each block of a level once per repeat mapper + 1: one hook would see several calls."""
    repeats = [*model.config.down_blocks_repeat_mappers, *model.config.up_blocks_repeat_mappers]
    if any(r > 1 for r in repeats):
        return (
            f"its blocks run several times per forward (blocks repeat mappers {tuple(repeats)}), so one block "
            "has no single output to align. The Stage C prior (no repeats) is supported."
        )
    return None


def _not_layered(model: nn.Module) -> Optional[str]:
    """musubi-tuner's Qwen-Image-Layered denoises several grids of `img_shapes` at once (its `pos_embed` is the
    layer-3D RoPE); which of them are targets has not been proven."""
    if type(getattr(model, "pos_embed", None)).__name__ == "QwenEmbedLayer3DRope":
        return (
            "musubi-tuner's Qwen-Image-Layered (`use_layer3d_rope`) denoises several grids of `img_shapes` at once, "
            "and which of them are targets has not been proven with the gradient probe."
        )
    return None


# musubi-tuner's Flux Kontext packs [noisy; control] into `img`, `control_lengths[i]` control tokens last.
MUSUBI_KONTEXT = Less(Latents("img"), "control_lengths")
# musubi-tuner's Flux.2 marks the target at x_ids[..., 0] == 0 and its references at 10, 20, ...
FLUX2_TARGET = Marked("x_ids", value=0, column=0)

# Target-first image streams marked by position ids: Flux Kontext and Flux.2 references get img_ids[..., 0] != 0,
# LongCat-Image-Edit's target has modality id 1 and its reference 2 (see their pipelines' prepare_latents).
FLUX_TARGET = Marked("img_ids", value=0, column=0)
LONGCAT_TARGET = Marked("img_ids", value=1, column=0)

LAYOUTS: dict[str, BlockLayout] = {
    # -- joint-attention MMDiTs: blocks return (encoder_hidden_states, hidden_states) -----------------------------
    "FluxTransformer2DModel": BlockLayout(
        stacks=(
            Stack("transformer_blocks", output=1, rule=FLUX_TARGET),
            # (text, image) from diffusers 0.35 on; before, one [text; image] tensor (the image tokens last either way)
            Stack("single_transformer_blocks", output=1, rule=Last(IMAGE, then=FLUX_TARGET)),
        )
    ),
    "Flux2Transformer2DModel": BlockLayout(
        stacks=(
            Stack("transformer_blocks", output=1, rule=FLUX_TARGET),
            Stack("single_transformer_blocks", rule=Last(IMAGE, then=FLUX_TARGET)),
        )
    ),  # one [text; image] tensor
    "Flux3Transformer2DModel": BlockLayout(
        stacks=(Stack("mode_blocks.image"), Stack("single_transformer_blocks", output=1, rule=Span(IMAGE)))
    ),
    "ChromaTransformer2DModel": BlockLayout(
        stacks=(Stack("transformer_blocks", output=1), Stack("single_transformer_blocks", rule=Last(IMAGE)))
    ),
    "SD3Transformer2DModel": _stacks("transformer_blocks", output=1),  # its last block returns (None, hidden)
    "AuraFlowTransformer2DModel": BlockLayout(
        stacks=(Stack("joint_transformer_blocks", output=1), Stack("single_transformer_blocks", rule=_image_last()))
    ),  # [text + 8 registers; image]
    "LongCatImageTransformer2DModel": _stacks(
        "transformer_blocks", "single_transformer_blocks", output=1, rule=LONGCAT_TARGET
    ),
    "OvisImageTransformer2DModel": _stacks("transformer_blocks", "single_transformer_blocks", output=1),
    "BriaTransformer2DModel": _stacks("transformer_blocks", "single_transformer_blocks", output=1),
    "BriaFiboTransformer2DModel": BlockLayout(
        stacks=(
            Stack("transformer_blocks", output=1, rule=FLUX_TARGET),  # edit references: img_ids[..., 0] = 1, 2, ...
            Stack("single_transformer_blocks", rule=Last(IMAGE, then=FLUX_TARGET)),
        )
    ),
    "QwenImageTransformer2DModel": _stacks(
        "transformer_blocks", output=1, rule=Span(ImageShapes("img_shapes", all_but_last="use_layer3d_rope"))
    ),
    "Krea2Transformer2DModel": _stacks("transformer_blocks", rule=Last(IMAGE)),  # one [text; image] tensor
    # -- blocks that return (hidden_states, encoder_hidden_states) ---------------------------------------------------
    "HunyuanVideoTransformer3DModel": _stacks("transformer_blocks", "single_transformer_blocks"),
    "HunyuanVideo15Transformer3DModel": _stacks("transformer_blocks"),
    "HunyuanVideoFramepackTransformer3DModel": _stacks(  # [history; noisy]
        "transformer_blocks",
        "single_transformer_blocks",
        rule=_image_last(patch=("patch_size_t", "patch_size", "patch_size")),
    ),
    "HunyuanImageTransformer2DModel": _stacks("transformer_blocks", "single_transformer_blocks"),
    "MotifVideoTransformer3DModel": _stacks("transformer_blocks", "single_transformer_blocks"),
    "CogVideoXTransformer3DModel": _stacks("transformer_blocks"),
    "ConsisIDTransformer3DModel": _stacks("transformer_blocks"),
    "CogView3PlusTransformer2DModel": _stacks("transformer_blocks"),
    "CogView4Transformer2DModel": _stacks("transformer_blocks"),
    "GlmImageTransformer2DModel": _stacks("transformer_blocks"),
    "EasyAnimateTransformer3DModel": _stacks("transformer_blocks"),
    "MochiTransformer3DModel": _stacks("transformer_blocks"),
    "JoyImageEditTransformer3DModel": _stacks("double_blocks", rule=_image_first()),  # target moved first
    "JoyImageEditPlusTransformer3DModel": _stacks("double_blocks", rule=Span(ImageShapes("shape_list"))),
    "HiDreamImageTransformer2DModel": _stacks(  # double blocks return (image, text); single: [image; text]
        "double_stream_blocks",
        "single_stream_blocks",
        rule=Span(Latents("hidden_states", patch="patch_size", packed_3d=True), valid="hidden_states_masks"),
    ),
    "LTX2VideoTransformer3DModel": _stacks("transformer_blocks"),  # (video, audio)
    "Kandinsky6Transformer3DModel": _stacks("visual_transformer_blocks"),  # (visual, audio or None)
    # -- blocks that return the image tokens alone ------------------------------------------------------------------
    "PixArtTransformer2DModel": _stacks("transformer_blocks"),
    "DiTTransformer2DModel": _stacks("transformer_blocks"),
    "Transformer2DModel": _stacks("transformer_blocks"),
    "SanaTransformer2DModel": _stacks("transformer_blocks"),
    "SanaVideoTransformer3DModel": _stacks("transformer_blocks"),
    "SanaWMTransformer3DModel": _stacks("blocks"),
    "SanaWMLTX2RefinerTransformer3DModel": _stacks("transformer_blocks"),
    "WanTransformer3DModel": _stacks("blocks"),
    "WanVACETransformer3DModel": _stacks("blocks"),  # not vace_blocks: a control branch added to the main stream
    "WanAnimateTransformer3DModel": _stacks(  # latent frame 0 is the reference slot; the pipeline drops it
        "blocks", rule=Last(Latents("hidden_states", patch="patch_size", condition_frames=1))
    ),
    "WanAnimate2Transformer3DModel": _stacks("blocks"),
    "SkyReelsV2Transformer3DModel": _stacks("blocks"),
    "ChronoEditTransformer3DModel": _stacks("blocks"),
    "AnyFlowTransformer3DModel": _stacks("blocks"),
    "CosmosTransformer3DModel": _stacks("transformer_blocks"),
    "LTXVideoTransformer3DModel": _stacks("transformer_blocks"),
    "AllegroTransformer3DModel": _stacks("transformer_blocks"),
    "HunyuanDiT2DModel": _stacks("blocks"),
    "LuminaNextDiT2DModel": _stacks("layers"),
    "NucleusMoEImageTransformer2DModel": _stacks("transformer_blocks"),
    "PRXTransformer2DModel": _stacks("blocks"),
    "Kandinsky5Transformer3DModel": _stacks("visual_transformer_blocks"),  # not text_transformer_blocks
    "Kandinsky6SRTransformer3DModel": _stacks("visual_transformer_blocks"),
    "AceStepTransformer1DModel": _stacks("layers"),
    "LongCatAudioDiTTransformer": _stacks("blocks"),
    "LatteTransformer3DModel": _stacks("transformer_blocks"),  # spatial blocks, (B*F, H*W, D): every token is video
    # -- joint single streams with the target somewhere inside -------------------------------------------------------
    "Lumina2Transformer2DModel": BlockLayout(
        stacks=(  # [caption_b; image; padding], caption length per sample
            Stack("noise_refiner"),
            Stack(
                "layers", rule=Span(Latents("hidden_states", patch="patch_size"), start=Valid("encoder_attention_mask"))
            ),
        )
    ),
    "ZImageTransformer2DModel": BlockLayout(
        stacks=(
            Stack("noise_refiner", rule=ZImageTarget(unified=False)),
            Stack("layers", rule=ZImageTarget(unified=True)),
        )
    ),
    "OmniGenTransformer2DModel": _stacks("layers", rule=_image_last()),  # [condition; time token; image]
    "ErnieImageTransformer2DModel": _stacks("layers", rule=SequenceFirst(_image_first())),  # (S, B, D): [image; text]
    "BriaFibo2Transformer2DModel": BlockLayout(
        stacks=(  # layers: [gist; image; context] or [image; context; gist]
            Stack("noise_refiner", rule=_image_first()),
            Stack("layers", rule=Span(Latents("hidden_states", patch="patch_size"), start=FirstMarked("noise_mask"))),
        )
    ),
    "QwenImage21Transformer2DModel": _stacks(  # interleaved text and condition images, the target image last
        "transformer_blocks", rule=Last(ImageShapes("img_shapes", index=-1))
    ),
    "Ideogram4Transformer2DModel": _stacks("layers", rule=Marked("indicator", value=2)),  # OUTPUT_IMAGE_INDICATOR
    "MiniMaxH3Transformer3DModel": _stacks("transformer_blocks", rule=Indexed("video_indices")),
    "HeliosTransformer3DModel": _stacks("blocks", rule=_image_last()),  # [history; noisy]
    "StableAudioDiTModel": _stacks("transformer_blocks", rule=_image_last(patch=1)),  # [global; audio]
    "StableAudio3DiTModel": _stacks("transformer_blocks", rule=_image_last()),  # [memory; audio]
    "MiniMaxMusic3Transformer1DModel": _stacks("transformer_blocks", rule=_image_last(patch=1)),  # [time; audio]
    # -- UNets -------------------------------------------------------------------------------------------------------
    "UNet2DConditionModel": _unet(),  # SD 1.x/2.x, SDXL, Kolors: BasicTransformerBlocks, width changes per level
    "StableCascadeUNet": BlockLayout(
        stacks=tuple(  # the attention block ends each res/timestep/attention triple
            Stack(path, rule=ChannelsFirst(), blocks=("SDCascadeAttnBlock",))
            for path in ("down_blocks.*", "up_blocks.*")
        ),
        check=_repeated_blocks,
    ),
    # -- outside diffusers, keyed by qualified name (other packages reuse the class name) -----------------------------
    # A qualified row applies to its class only (registry.py). None of these classes has a `config`: counts come from
    # the model's and blocks' arguments and attributes (`layouts.counts.model_setting`).
    # DiffSynth-Studio's Wan DiT: its `blocks` return the video tokens alone. Its training loop never calls
    # `WanModel.forward` (model_fn_wan_video runs the blocks itself): the capture arms on the training module.
    "diffsynth.models.wan_video_dit.WanModel": _stacks("blocks"),
    # musubi-tuner (30c658c). Wan 2.1 / 2.2: a (B, C, F, H, W) batch, or a list of per-sample videos whose tokens the
    # model zero-pads to `seq_len`: only each sample's own tokens are targets.
    "musubi_tuner.wan.modules.model.WanModel": _stacks("blocks", rule=Span(Latents("x", patch="patch_size"))),
    "musubi_tuner.hunyuan_model.models.HYVideoDiffusionTransformer": BlockLayout(
        stacks=(Stack("double_blocks"), Stack("single_blocks", rule=Span(Latents("x", patch="patch_size"))))
    ),  # double blocks return (img, txt); single blocks run over [img; txt]
    "musubi_tuner.frame_pack.hunyuan_video_packed.HunyuanVideoTransformer3DModelPacked": _stacks(
        "transformer_blocks",
        "single_transformer_blocks",  # both return (hidden, text); hidden = [clean 4x; clean 2x; clean; noisy]
        rule=Last(Latents("hidden_states", patch=("config_patch_size_t", "config_patch_size", "config_patch_size"))),
    ),
    "musubi_tuner.flux.flux_models.Flux": BlockLayout(
        stacks=(  # img = [noisy; Kontext control]; single blocks run over [txt; img]
            Stack("double_blocks", rule=Span(MUSUBI_KONTEXT)),
            Stack("single_blocks", rule=Span(MUSUBI_KONTEXT, start=Latents("txt"))),
        )
    ),
    "musubi_tuner.flux_2.flux2_models.Flux2": BlockLayout(
        stacks=(  # x = [target; references], the references at x_ids[..., 0] = 10, 20, ...
            Stack("double_blocks", rule=FLUX2_TARGET),
            Stack("single_blocks", rule=Last(Latents("x"), then=FLUX2_TARGET)),
        )
    ),
    "musubi_tuner.qwen_image.qwen_image_model.QwenImageTransformer2DModel": BlockLayout(
        stacks=(Stack("transformer_blocks", output=1, rule=Span(ImageShapes("img_shapes"))),),  # Edit: [noisy; control]
        check=_not_layered,
    ),
    "musubi_tuner.hunyuan_video_1_5.hunyuan_video_1_5_models.HunyuanVideo_1_5_DiffusionTransformer": _stacks(
        "double_blocks"  # (img, txt)
    ),
    "musubi_tuner.kandinsky5.models.dit.DiffusionTransformer3D": _stacks(
        "visual_transformer_blocks"  # unbatched (N, D): the trainer calls the DiT once per sample
    ),
    "musubi_tuner.zimage.zimage_model.ZImageTransformer2DModel": BlockLayout(
        stacks=(Stack("noise_refiner"), Stack("layers", rule=Span(Attribute("attn_params", "img_len"))))
    ),  # layers run over [image; caption]
    # kohya sd-scripts (48d368f)
    "library.flux_models.Flux": BlockLayout(
        stacks=(Stack("double_blocks"), Stack("single_blocks", rule=Last(Latents("img"))))  # single: [txt; img]
    ),
    "library.chroma_models.Chroma": BlockLayout(  # a subclass of library.flux_models.Flux, with the image FIRST
        stacks=(Stack("double_blocks"), Stack("single_blocks", rule=Span(Latents("img"))))
    ),
    "library.sd3_models.MMDiT": _stacks("joint_blocks", output=1),  # (context, x); the last block (None, x)
    "library.lumina_models.NextDiT": BlockLayout(
        stacks=(  # layers: [caption of its own length; image; padding] per sample
            Stack("noise_refiner"),
            Stack("layers", rule=Span(Latents("x", patch="patch_size"), start=Valid("cap_mask"))),
        )
    ),
    # -- cannot be aligned --------------------------------------------------------------------------------------------
    "Cosmos3OmniTransformer": BlockLayout(
        unsupported=(
            "its layers run one packed (tokens, channels) sequence with no batch axis, mixing understanding and "
            "generation tokens of every sample."
        )
    ),
    "AnyFlowFARTransformer3DModel": BlockLayout(
        unsupported=(
            "its causal rollout packs compressed context frames, the noisy frames and clean frames into one sequence "
            "under a FlexAttention block mask, and where its noisy tokens sit has not been proven with the gradient "
            "probe (FlexAttention has no CPU backward), so LayerSync does not guess."
        )
    ),
}

# The released models of the table's classes, at their real sizes. A preset is checked against its size's block
# count (the paper heuristic's pair); the `layouts` command lists one row per size (the class default otherwise).
RELEASED: dict[str, tuple[Released, ...]] = {
    "FluxTransformer2DModel": (Released("Flux.1 [dev], [schnell], Kontext", preset="flux"),),
    "Flux2Transformer2DModel": (Released("Flux.2 [dev]", preset="flux2"),),
    "ChromaTransformer2DModel": (Released("Chroma", preset="chroma"),),
    "SD3Transformer2DModel": (
        Released("SD 3 / 3.5 Medium", {"num_layers": 24}, preset="sd3"),
        Released("SD 3.5 Large", {"num_layers": 38}, preset="sd35_large"),
    ),
    "PixArtTransformer2DModel": (Released("PixArt-Sigma / Alpha", preset="pixart_sigma"),),
    "SanaTransformer2DModel": (Released("Sana 1600M", preset="sana"),),
    "QwenImageTransformer2DModel": (Released("Qwen-Image / Edit", preset="qwen_image"),),
    "HiDreamImageTransformer2DModel": (
        Released("HiDream-I1", {"patch_size": 2, "caption_channels": [4096, 4096]}, preset="hidream"),
    ),
    "Lumina2Transformer2DModel": (Released("Lumina-Image 2.0", preset="lumina2"),),
    "AuraFlowTransformer2DModel": (Released("AuraFlow", preset="auraflow"),),
    "WanTransformer3DModel": (Released("Wan 2.1 / 2.2 14B", preset="wan"),),
    "HunyuanVideoTransformer3DModel": (Released("HunyuanVideo", preset="hunyuan_video"),),
    "LTXVideoTransformer3DModel": (Released("LTX-Video", preset="ltx_video"),),
    "CosmosTransformer3DModel": (Released("Cosmos Predict2 2B / 1.0 7B", preset="cosmos"),),
    "CogVideoXTransformer3DModel": (
        Released("CogVideoX 5B", {"num_layers": 42, "num_attention_heads": 48}, preset="cogvideox"),
    ),
    "UNet2DConditionModel": (
        Released("SD 1.x / 2.x (default config)"),
        Released(
            "SDXL, Kolors",
            dict(
                block_out_channels=(320, 640, 1280),
                attention_head_dim=(5, 10, 20),
                transformer_layers_per_block=(1, 2, 10),
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            ),
        ),
    ),
    "LatteTransformer3DModel": (
        Released(
            "Latte-1",
            dict(
                num_layers=28,
                sample_size=64,
                patch_size=2,
                in_channels=4,
                num_attention_heads=16,
                attention_head_dim=72,
                caption_channels=4096,
            ),
        ),  # fmt: skip
    ),
    # Classes whose default config cannot be built (sizes default to None): the released size's own arguments.
    "EasyAnimateTransformer3DModel": (
        Released("EasyAnimate V5.1", dict(in_channels=16, out_channels=16, patch_size=2, text_embed_dim_t5=4096)),
    ),
    "HunyuanDiT2DModel": (Released("HunyuanDiT v1.2", dict(in_channels=4, patch_size=2, num_layers=40)),),
    "LuminaNextDiT2DModel": (Released("Lumina-Next-SFT", dict(num_kv_heads=8)),),
    "Transformer2DModel": (
        Released(
            "PixArt-Alpha (as Transformer2DModel)",
            dict(
                in_channels=4,
                out_channels=8,
                patch_size=2,
                sample_size=128,
                num_layers=28,
                num_attention_heads=16,
                attention_head_dim=72,
                cross_attention_dim=1152,
                num_embeds_ada_norm=1000,
                norm_type="ada_norm_single",
                caption_channels=4096,
            ),
        ),  # fmt: skip
    ),
    "OmniGenTransformer2DModel": (Released("OmniGen v1", blocks={"layers": 32}),),  # its RoPE config is checkpoint data
    "diffsynth.models.wan_video_dit.WanModel": (Released("DiffSynth-Studio, Wan 2.1 14B", blocks={"blocks": 40}),),
    # The trainers' classes: their own code, not built here (counts from their configs and defaults).
    "musubi_tuner.wan.modules.model.WanModel": (
        Released("Wan 2.1 14B, Wan 2.2 A14B experts", blocks={"blocks": 40}),
        Released("Wan 2.1 1.3B", blocks={"blocks": 30}),
    ),
    "musubi_tuner.hunyuan_model.models.HYVideoDiffusionTransformer": (
        Released("HunyuanVideo", blocks={"double_blocks": 20, "single_blocks": 40}),
    ),
    "musubi_tuner.frame_pack.hunyuan_video_packed.HunyuanVideoTransformer3DModelPacked": (
        Released("FramePack", blocks={"transformer_blocks": 20, "single_transformer_blocks": 40}),
    ),
    "musubi_tuner.flux.flux_models.Flux": (
        Released("FLUX.1 Kontext [dev]", blocks={"double_blocks": 19, "single_blocks": 38}),
    ),
    "musubi_tuner.flux_2.flux2_models.Flux2": (
        Released("FLUX.2 [dev]", blocks={"double_blocks": 8, "single_blocks": 48}),
        Released("FLUX.2 [klein] 9B", blocks={"double_blocks": 8, "single_blocks": 24}),
        Released("FLUX.2 [klein] 4B", blocks={"double_blocks": 5, "single_blocks": 20}),
    ),
    "musubi_tuner.qwen_image.qwen_image_model.QwenImageTransformer2DModel": (
        Released("Qwen-Image / Edit", blocks={"transformer_blocks": 60}),
    ),
    "musubi_tuner.hunyuan_video_1_5.hunyuan_video_1_5_models.HunyuanVideo_1_5_DiffusionTransformer": (
        Released("HunyuanVideo 1.5", blocks={"double_blocks": 54}),
    ),
    "musubi_tuner.kandinsky5.models.dit.DiffusionTransformer3D": (
        Released("Kandinsky 5.0 Lite video", blocks={"visual_transformer_blocks": 32}),
        Released("Kandinsky 5.0 Lite image", blocks={"visual_transformer_blocks": 50}),
        Released("Kandinsky 5.0 Pro video", blocks={"visual_transformer_blocks": 60}),
    ),
    "musubi_tuner.zimage.zimage_model.ZImageTransformer2DModel": (
        Released("Z-Image", blocks={"noise_refiner": 2, "layers": 30}),
    ),
    "library.flux_models.Flux": (Released("FLUX.1 [dev]", blocks={"double_blocks": 19, "single_blocks": 38}),),
    "library.chroma_models.Chroma": (Released("Chroma", blocks={"double_blocks": 19, "single_blocks": 38}),),
    "library.sd3_models.MMDiT": (
        Released("SD 3.5 Medium", blocks={"joint_blocks": 24}),
        Released("SD 3.5 Large", blocks={"joint_blocks": 38}),
    ),
    "library.lumina_models.NextDiT": (Released("Lumina-Image 2.0", blocks={"noise_refiner": 2, "layers": 26}),),
}

# The trainers whose own classes the table holds, by the package their module paths start with.
TRAINERS = {"diffsynth": "DiffSynth-Studio", "musubi_tuner": "musubi-tuner", "library": "kohya sd-scripts"}
