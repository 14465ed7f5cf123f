"""The shrunk sizes of the trainers' models: one place, read by `sitecustomize` (which shrinks the trainers' config
tables from outside when `LAYERSYNC_TINY_TRAINERS=1`) and by `tiny_files` (which writes weights of these sizes)."""

# musubi-tuner's Wan table (`musubi_tuner.wan.configs.WAN_CONFIGS`): 6 blocks of width 48, heads of 24 (the smallest
# head size whose three rotary parts are all non-empty), text padded to 32 tokens instead of 512.
MUSUBI_WAN = {"dim": 48, "ffn_dim": 96, "num_heads": 2, "num_layers": 6, "text_len": 32}

# sd-scripts' FLUX.1 (`library.flux_models.configs`, the block counts come from the checkpoint's keys): width 64,
# two heads of 32 (= the sum of the rotary axes); CLIP-L and T5-XXL built by `library.flux_utils` from configs written
# inside its loaders, shrunk where it builds them; the AutoEncoder at two levels of 32 channels.
SD_FLUX = {"hidden_size": 64, "num_heads": 2, "axes_dim": [8, 12, 12], "vec_in_dim": 32, "context_in_dim": 32}
SD_FLUX_BLOCKS = (3, 4)  # double, single: the weight file holds this many (4 single: `--blocks_to_swap 2` fits)
SD_FLUX_AE = {"ch": 32, "ch_mult": [1, 1], "num_res_blocks": 1}
SD_CLIP_L = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
             "projection_dim": 32}  # fmt: skip
SD_T5XXL = {"d_model": 32, "d_ff": 64, "d_kv": 16, "num_heads": 2, "num_layers": 2}

# ai-toolkit's FLUX.1 (diffusers classes, loaded from a pipeline folder): 2 double + 3 single blocks of width 32;
# 16 latent channels packed 2x2 (64 inputs) as FLUX.1's VAE gives; CLIP-L/T5 widths match the joint/pooled dims.
AI_TOOLKIT_FLUX = {
    "transformer": {"patch_size": 1, "in_channels": 64, "num_layers": 2, "num_single_layers": 3,
                    "attention_head_dim": 16, "num_attention_heads": 2, "joint_attention_dim": 32,
                    "pooled_projection_dim": 32, "guidance_embeds": True, "axes_dims_rope": [4, 6, 6]},
    "vae": {"in_channels": 3, "out_channels": 3, "latent_channels": 16, "block_out_channels": [32, 32, 32, 32],
            "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
            "layers_per_block": 1, "norm_num_groups": 32, "scaling_factor": 0.3611, "shift_factor": 0.1159,
            "use_quant_conv": False, "use_post_quant_conv": False},
    "clip": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
             "projection_dim": 32, "vocab_size": 49408, "max_position_embeddings": 77},
    "t5": {"d_model": 32, "d_ff": 64, "d_kv": 16, "num_heads": 2, "num_layers": 2, "vocab_size": 32128},
}  # fmt: skip

# musubi-tuner's FLUX.1 Kontext (`musubi_tuner.flux.flux_models.configs_flux_dev_context`, block counts from the
# table): as sd-scripts' FLUX.1 above, 3 double + 3 single blocks.
MUSUBI_FLUX_KONTEXT = {**SD_FLUX, "depth": 3, "depth_single_blocks": 3}

# musubi-tuner's Qwen-Image: `qwen_image_model.create_model` passes literal sizes to the class; its constructor's
# arguments are overridden (the block count comes from musubi's own `--num_layers`).
MUSUBI_QWEN_IMAGE = {"attention_head_dim": 16, "num_attention_heads": 2, "joint_attention_dim": 32,
                     "axes_dims_rope": (4, 6, 6)}  # fmt: skip
MUSUBI_QWEN_IMAGE_LAYERS = 6

# sd-scripts' SD3 (`library.sd3_models.MMDiT`, its sizes read from the checkpoint's keys: width 64 x depth): depth 4,
# 8x8 position grid; CLIP-L/G built by `library.sd3_utils` from configs written inside its loaders, shrunk there;
# the VAE's encoder/decoder at 32 channels (their constructors' defaults).
SD3_DEPTH, SD3_POS_EMBED_MAX_SIZE = 4, 8
SD3_CLIP = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "projection_dim": 32}  # fmt: skip
SD3_VAE_CHANNELS = 32

# sd-scripts' Lumina 2 (`library.lumina_models.LuminaParams.get_2b_config`): width 64, 4 layers (+ its 2+2 refiners),
# 2 heads of 32 (one key/value head), caption width 32 = the tiny Gemma 2's (built by `library.lumina_util` from a
# config written inside its loader, shrunk there); its AE is sd-scripts' FLUX.1 AE, shrunk above.
SD_LUMINA = {"dim": 64, "n_layers": 4, "n_heads": 2, "n_kv_heads": 1, "multiple_of": 16,
             "axes_dims": [8, 12, 12], "cap_feat_dim": 32}  # fmt: skip
SD_GEMMA2 = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "num_key_value_heads": 1, "head_dim": 16, "vocab_size": 1024}  # fmt: skip

# musubi-tuner's HunyuanVideo (`musubi_tuner.hunyuan_model.models.HUNYUAN_VIDEO_CONFIG`): 3 double + 3 single blocks
# of width 64, 2 heads of 32 (= the sum of the rotary dims); the text widths (LLM 4096, CLIP-L 768) are literals.
MUSUBI_HUNYUAN_VIDEO = {"mm_double_blocks_depth": 3, "mm_single_blocks_depth": 3, "rope_dim_list": [8, 12, 12],
                        "hidden_size": 64, "heads_num": 2}  # fmt: skip
