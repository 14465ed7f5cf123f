"""The trainers' own DiT classes built tiny, each with the training forward its trainer runs.

musubi-tuner (`MUSUBI_TUNER_SRC`, the checkout's root) and kohya sd-scripts (`SD_SCRIPTS_SRC`) are not on PyPI: point
the variables at checkouts to use these builders; `available()` says which are set. Every builder returns a `Setup`:
the model (fp32, CPU, random weights, in `eval()` as both trainers keep it without gradient checkpointing), its
stacks, `forward()` that calls the model exactly as the trainer's training step does (argument names, keyword or
positional, per-sample lists and loops, masks, control or reference latents, two samples with captions of uneven
length) and returns the part of the prediction the trainer's loss compares with the noisy target, and
`checkpointing()` that switches on the trainer's own gradient checkpointing the trainer's way (then `train()`).

CPU-only work-arounds, all from outside the trainers' code (their files are never edited), are marked WORK-AROUND.
The line numbers cited are those of musubi-tuner 30c658c and sd-scripts 48d368f.
"""

from __future__ import annotations

import importlib
import os
import sys
import types

import torch
import torch.nn.functional as F
from trainer_models import CAPTIONS, captions, finish, padded, randn  # tests/: the builders' shared helpers

MUSUBI = "MUSUBI_TUNER_SRC"
SD_SCRIPTS = "SD_SCRIPTS_SRC"


def rearrange(tensor, pattern, **sizes):
    """einops' rearrange, imported when used: the trainers need einops, the stand-ins (and CI) do not."""
    from einops import rearrange as einops_rearrange

    return einops_rearrange(tensor, pattern, **sizes)


def _switch(model, *args):
    """The trainer's call: `transformer.enable_gradient_checkpointing(args.gradient_checkpointing_cpu_offload)`."""
    return lambda: model.enable_gradient_checkpointing(*args)


def available(trainer):
    """Whether the checkout for `trainer` ("musubi" or "sd-scripts") is given by its environment variable."""
    return bool(os.environ.get(MUSUBI if trainer == "musubi" else SD_SCRIPTS))


def _import(name):
    """Import a module of a checkout: musubi from `$MUSUBI_TUNER_SRC/src`, sd-scripts from `$SD_SCRIPTS_SRC`."""
    for variable, sub in ((MUSUBI, "src"), (SD_SCRIPTS, "")):
        root = os.environ.get(variable)
        if root and os.path.join(root, sub).rstrip("/") not in sys.path:
            sys.path.insert(0, os.path.join(root, sub).rstrip("/"))
    if name.startswith("library."):
        _stub_torchvision()
    if name.startswith("musubi_tuner.wan."):
        # WORK-AROUND: wan/modules/t5.py:457 evaluates `torch.cuda.current_device()` as a default argument at import.
        real, torch.cuda.current_device = torch.cuda.current_device, lambda: 0
        try:
            return importlib.import_module(name)
        finally:
            torch.cuda.current_device = real
    return importlib.import_module(name)


def _stub_torchvision():
    """WORK-AROUND: sd-scripts' library/utils.py:8 imports torchvision.transforms at import time (no model uses it);
    PyPI's torchvision wheels are built against CUDA torch and fail with a CPU torch, so a stub stands in."""
    try:
        import torchvision  # noqa: F401

        return
    except Exception:  # an installed but broken wheel raises RuntimeError, not ImportError
        for key in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[key]
    from importlib.machinery import ModuleSpec

    stub, transforms = types.ModuleType("torchvision"), types.ModuleType("torchvision.transforms")
    stub.__spec__, transforms.__spec__ = ModuleSpec("torchvision", None), ModuleSpec("torchvision.transforms", None)
    stub.transforms = transforms
    sys.modules.update({"torchvision": stub, "torchvision.transforms": transforms})


# ---------------------------------------------------------------------------------------------------------- musubi


def _wan(version):
    model_module = _import("musubi_tuner.wan.modules.model")
    torch.manual_seed(0)
    model = model_module.WanModel(
        model_type="t2v", model_version=version, patch_size=(1, 2, 2), text_len=10, in_dim=4, dim=32, ffn_dim=64,
        freq_dim=16, text_dim=12, out_dim=4, num_heads=2, num_layers=3, attn_mode="torch",
    )  # fmt: skip
    latents = randn(2, 4, 2, 4, 4)  # B, C, F, H, W: one bucket, so one token count
    context = captions(12)

    def forward():
        # wan_train_network.py:696-710: a (B, C, F, H, W) tensor (iterated per sample inside), a list of
        # per-sample T5 embeddings, seq_len = F*H*W / patch volume of the batch's bucket, keywords.
        seq_len = 2 * 2 * 2
        t = torch.tensor([500.0, 300.0])
        prediction = model(latents, t=t, context=context, clip_fea=None, seq_len=seq_len, y=None)
        return torch.stack(prediction, dim=0)

    return finish(model, ("blocks",), forward, _switch(model, False))


def wan21():
    return _wan("2.1")


def wan22():
    return _wan("2.2")


def wan21_padded():
    """Not the trainer's call: the model's own list input with uneven per-sample videos padded to `seq_len`, the
    case the issue names. musubi's `torch` attention refuses padding (wan/modules/attention.py:85-89); only the
    flash3/sage varlen paths take it, so a CPU stand-in for `sageattention.sageattn_varlen` is set (WORK-AROUND)."""
    attention = _import("musubi_tuner.wan.modules.attention")
    attention.sageattention = types.SimpleNamespace(sageattn_varlen=_varlen_attention)
    setup = _wan("2.1")
    model = setup.model
    for block in model.blocks:
        block.self_attn.attn_mode = block.cross_attn.attn_mode = "sageattn"
    videos = [randn(4, 2, 4, 4), randn(4, 1, 4, 4, seed=1)]  # 8 and 4 tokens
    context = captions(12)

    def forward():
        prediction = model(videos, t=torch.tensor([500.0, 300.0]), context=context, seq_len=8)
        return prediction  # a list: each sample's own shape

    setup.forward = forward
    return setup


def _varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, sm_scale=None):
    """sageattn_varlen's contract on CPU: packed (total, heads, dim) q/k/v, attention within each segment."""
    out = []
    for i in range(len(cu_seqlens_q) - 1):
        qs = q[cu_seqlens_q[i] : cu_seqlens_q[i + 1]].transpose(0, 1).float()
        ks = k[cu_seqlens_k[i] : cu_seqlens_k[i + 1]].transpose(0, 1).float()
        vs = v[cu_seqlens_k[i] : cu_seqlens_k[i + 1]].transpose(0, 1).float()
        out.append(F.scaled_dot_product_attention(qs, ks, vs, scale=sm_scale).transpose(0, 1))
    return torch.cat(out).to(q.dtype)


def hunyuan_video():
    models = _import("musubi_tuner.hunyuan_model.models")
    # WORK-AROUND: hunyuan_model/attention.py:78 allocates cu_seqlens on "cuda"; the same arithmetic on the mask's
    # device (cu_seqlens are read only by the flash/sage varlen paths, not by "torch").
    models.get_cu_seqlens = _cu_seqlens
    torch.manual_seed(0)
    model = models.HYVideoDiffusionTransformer(
        text_states_dim=12, text_states_dim_2=8, patch_size=[1, 2, 2], in_channels=4, hidden_size=32, heads_num=2,
        mlp_width_ratio=2.0, mm_double_blocks_depth=2, mm_single_blocks_depth=2, rope_dim_list=[4, 6, 6],
        guidance_embed=True, attn_mode="torch",
    )  # fmt: skip
    latents = randn(2, 4, 2, 4, 4)
    llm, llm_mask = padded(captions(12), length=6)  # the LLM states are padded to a fixed length, with a mask
    clip = randn(2, 8, seed=2)
    freqs_cos, freqs_sin = models.get_rotary_pos_embed_by_shape(model, latents.shape[2:])

    def forward():
        # hv_train_network.py:444-456
        return model(
            latents, torch.tensor([500.0, 300.0]), text_states=llm, text_mask=llm_mask, text_states_2=clip,
            freqs_cos=freqs_cos, freqs_sin=freqs_sin, guidance=torch.full((2,), 1000.0), return_dict=False,
        )  # fmt: skip

    return finish(model, ("double_blocks", "single_blocks"), forward, _switch(model, False))


def _cu_seqlens(text_mask, img_len):
    text_len, max_len = text_mask.sum(dim=1), text_mask.shape[1] + img_len
    cu = torch.zeros(2 * text_mask.shape[0] + 1, dtype=torch.int32)
    for i in range(text_mask.shape[0]):
        cu[2 * i + 1], cu[2 * i + 2] = i * max_len + text_len[i] + img_len, (i + 1) * max_len
    return cu


def framepack():
    packed = _import("musubi_tuner.frame_pack.hunyuan_video_packed")
    torch.manual_seed(0)
    # split_attn: two samples without flash/sage have no other CPU path (attn_varlen_func, hunyuan_video_packed.py:843)
    model = packed.HunyuanVideoTransformer3DModelPacked(
        in_channels=16, out_channels=16, num_attention_heads=2, attention_head_dim=16, num_layers=2,
        num_single_layers=2, num_refiner_layers=1, mlp_ratio=2.0, patch_size=2, patch_size_t=1, text_embed_dim=12,
        pooled_projection_dim=8, rope_axes_dim=(4, 6, 6), has_image_proj=True, image_proj_dim=8,
        has_clean_x_embedder=True, attn_mode="torch", split_attn=True,
    )  # fmt: skip
    latents = randn(2, 16, 1, 8, 8)  # the noisy section: 1 frame, 16 tokens (16 channels: hard-coded in
    # HunyuanVideoPatchEmbedForCleanLatents, hunyuan_video_packed.py:1484)
    llama, llama_mask = padded(captions(12), length=6)

    def forward():
        # fpack_train_network.py:549-595: keywords; the clean history (1x, 2x, 4x) is prepended to the noisy latents
        return model(
            hidden_states=latents, timestep=torch.tensor([500.0, 300.0]), encoder_hidden_states=llama,
            encoder_attention_mask=llama_mask, pooled_projections=randn(2, 8, seed=2),
            guidance=torch.full((2,), 10000.0), latent_indices=torch.tensor([[4], [4]]),
            clean_latents=randn(2, 16, 2, 8, 8, seed=3), clean_latent_indices=torch.tensor([[0, 3], [0, 3]]),
            clean_latents_2x=randn(2, 16, 2, 8, 8, seed=4), clean_latent_2x_indices=torch.tensor([[1, 2], [1, 2]]),
            clean_latents_4x=randn(2, 16, 4, 8, 8, seed=5), clean_latent_4x_indices=torch.tensor([[0, 1, 2, 3]] * 2),
            image_embeddings=randn(2, 3, 8, seed=6), return_dict=False,
        )[0]  # fmt: skip

    return finish(model, ("transformer_blocks", "single_transformer_blocks"), forward, _switch(model))


def _musubi_flux_params(flux_models):
    return flux_models.FluxParams(
        in_channels=16, vec_in_dim=8, context_in_dim=12, hidden_size=32, mlp_ratio=2.0, num_heads=2, depth=2,
        depth_single_blocks=2, axes_dim=[4, 6, 6], theta=10_000, qkv_bias=True, guidance_embed=True,
    )  # fmt: skip


def flux_kontext():
    flux_models = _import("musubi_tuner.flux.flux_models")
    torch.manual_seed(0)
    model = flux_models.Flux(_musubi_flux_params(flux_models), attn_mode="torch")
    noisy = randn(2, 4, 8, 8)  # 16 packed tokens
    control = randn(2, 4, 4, 8, seed=3)  # a smaller control image: 8 tokens
    t5, _ = padded(captions(12), length=6)  # T5 states of a fixed length, no mask in musubi's Flux

    def forward():
        # flux_kontext_train_network.py:305-360
        img = rearrange(noisy, "b c (h ph) (w pw) -> b (h w) (c ph pw)", ph=2, pw=2)
        ctrl = rearrange(control, "b c (h ph) (w pw) -> b (h w) (c ph pw)", ph=2, pw=2)
        img_ids = torch.cat((_flux_ids(2, 4, 4), _flux_ids(2, 2, 4, control=True)), dim=1)
        prediction = model(
            img=torch.cat((img, ctrl), dim=1), img_ids=img_ids, txt=t5, txt_ids=torch.zeros(2, 6, 3),
            y=randn(2, 8, seed=2), timesteps=torch.tensor([0.5, 0.3]), guidance=torch.ones(2),
            control_lengths=[ctrl.shape[1]] * 2,
        )  # fmt: skip
        return prediction[:, : img.shape[1]]

    return finish(model, ("double_blocks", "single_blocks"), forward, _switch(model, False))


def _flux_ids(batch, height, width, control=False):
    ids = torch.zeros(height, width, 3)
    ids[..., 0] = float(control)
    ids[..., 1] = torch.arange(height)[:, None]
    ids[..., 2] = torch.arange(width)[None, :]
    return ids.flatten(0, 1).expand(batch, -1, -1)


def flux2():
    flux2_models = _import("musubi_tuner.flux_2.flux2_models")
    torch.manual_seed(0)
    params = flux2_models.Flux2Params(
        in_channels=8, context_in_dim=12, hidden_size=32, num_heads=2, depth=2, depth_single_blocks=2,
        axes_dim=[4, 4, 4, 4], mlp_ratio=2.0,
    )  # fmt: skip
    model = flux2_models.Flux2(params, attn_mode="torch")
    noisy = randn(2, 8, 4, 4)  # 16 tokens
    references = [randn(2, 8, 2, 4, seed=3), randn(2, 8, 2, 2, seed=4)]  # 8 + 4 reference tokens
    ctx, _ = padded(captions(12), length=6)

    def forward():
        # flux_2_train_network.py:272-321: references concatenated after the target, positional ids with t offsets
        img, img_ids = _flux2_ids(noisy, 0)
        refs = [_flux2_ids(r, 10 + 10 * i) for i, r in enumerate(references)]
        x = torch.cat([img] + [r for r, _ in refs], dim=1)
        x_ids = torch.cat([img_ids] + [i for _, i in refs], dim=1)
        ctx_ids = torch.stack(torch.meshgrid(*(torch.arange(n) for n in (1, 1, 1, 6)), indexing="ij"), -1).flatten(0, 3)
        prediction = model(
            x=x, x_ids=x_ids, timesteps=torch.tensor([0.5, 0.3]), ctx=ctx, ctx_ids=ctx_ids.expand(2, -1, -1),
            guidance=torch.ones(2),
        )  # fmt: skip
        return prediction[:, : img.shape[1]]

    return finish(model, ("double_blocks", "single_blocks"), forward, _switch(model, False))


def _flux2_ids(latents, t):
    """(B, HW, C) tokens and their (t, h, w, l) ids, as flux2_utils.prc_img / pack_control_latent build them."""
    b, _, h, w = latents.shape
    axes = torch.tensor([t]), torch.arange(h), torch.arange(w), torch.arange(1)
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)
    return rearrange(latents, "b c h w -> b (h w) c"), grid.flatten(0, 3).expand(b, -1, -1)


def _qwen(edit):
    qwen = _import("musubi_tuner.qwen_image.qwen_image_model")
    torch.manual_seed(0)
    model = qwen.QwenImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=3, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=12, axes_dims_rope=(4, 6, 6), attn_mode="torch", zero_cond_t=edit,
    )  # fmt: skip
    noisy = randn(2, 4, 1, 8, 8)  # B, C, 1, H, W: 16 packed tokens
    control = randn(2, 4, 1, 4, 8, seed=3)  # 8 tokens
    vl_embed = captions(12)

    def forward():
        # qwen_image_train_network.py:468-560 (not --split_attn): captions padded to the longest, a bool mask,
        # txt_seq_lens as Python ints, img_shapes per patch grid; the Edit model gets cat(noisy, control).
        img = _qwen_pack(noisy)
        img_shapes = [(1, 4, 4)]
        if edit:
            img = torch.cat([img, _qwen_pack(control)], dim=1)
            img_shapes = [img_shapes + [(1, 2, 4)]]
        else:
            img_shapes = [img_shapes]
        txt, mask = padded(vl_embed)
        prediction = model(
            hidden_states=img, timestep=torch.tensor([0.5, 0.3]), guidance=None, encoder_hidden_states_mask=mask,
            encoder_hidden_states=txt, img_shapes=img_shapes, txt_seq_lens=[c.shape[0] for c in vl_embed],
            additional_t_cond=None,
        )  # fmt: skip
        return prediction[:, :16] if edit else prediction

    return finish(model, ("transformer_blocks",), forward, _switch(model, False))


def _qwen_pack(latents):
    return rearrange(latents[:, :, 0], "b c (h ph) (w pw) -> b (h w) (c ph pw)", ph=2, pw=2)


def qwen_image():
    return _qwen(edit=False)


def qwen_image_edit():
    """The Edit model as musubi builds Qwen-Image-Edit-2511 (`zero_cond_t=True`): control tokens after the target."""
    return _qwen(edit=True)


def hunyuan_video_15():
    """WORK-AROUND: HunyuanVideo_1_5_DiffusionTransformer.__init__ hard-codes the full size (54 blocks, width 2048,
    hunyuan_video_1_5_models.py:50-130). It is built on the meta device, then each part is replaced by the same
    class of hunyuan_video_1_5_modules built tiny; forward() is the class's own, unchanged."""
    hv15 = _import("musubi_tuner.hunyuan_video_1_5.hunyuan_video_1_5_models")
    with torch.device("meta"):
        model = hv15.HunyuanVideo_1_5_DiffusionTransformer(task_type="t2v", attn_mode="torch")
    torch.manual_seed(0)
    hidden, heads = 32, 2
    model.hidden_size, model.heads_num, model.rope_dim_list = hidden, heads, [4, 6, 6]
    model.in_channels = model.out_channels = model.unpatchify_channels = 4
    model.byt5_in = hv15.ByT5Mapper(in_dim=10, out_dim=hidden, hidden_dim=hidden, out_dim1=hidden, use_residual=False)
    model.img_in = hv15.PatchEmbed(model.patch_size, 4, hidden)  # takes 2 * 4 + 1: noisy, condition and its mask
    model.vision_in = hv15.VisionProjection(input_dim=8, output_dim=hidden)
    model.txt_in = hv15.SingleTokenRefiner(12, hidden, heads, depth=1)
    model.time_in = hv15.TimestepEmbedder(hidden, torch.nn.SiLU)
    model.double_blocks = torch.nn.ModuleList(
        hv15.MMDoubleStreamBlock(
            hidden, heads, mlp_width_ratio=2, mlp_act_type="gelu_tanh", qk_norm=True, qk_norm_type="rms", qkv_bias=True
        )  # fmt: skip
        for _ in range(3)
    )
    model.num_double_blocks = 3
    model.final_layer = hv15.FinalLayer(hidden, model.patch_size, 4, torch.nn.SiLU)
    model.cond_type_embedding = torch.nn.Embedding(3, hidden)
    leftover = [name for name, p in model.named_parameters() if p.is_meta]
    if leftover:
        raise RuntimeError(f"HunyuanVideo 1.5 parts still on the meta device: {leftover}")
    latents = randn(2, 4, 1, 4, 4)  # patch 1x1x1: 16 tokens
    vl, byt5 = captions(12), captions(10, lengths=(2, 4), seed=3)

    def forward():
        # hv_1_5_train_network.py:390-451: T2V zero condition channels, per-sample captions padded with masks
        cond = torch.zeros(2, 5, 1, 4, 4)
        vl_embed, vl_mask = padded(vl)
        byt5_embed, byt5_mask = padded(byt5)
        return model(
            hidden_states=torch.cat([latents, cond], dim=1), timestep=torch.tensor([500.0, 300.0]),
            text_states=vl_embed, encoder_attention_mask=vl_mask, vision_states=None, byt5_text_states=byt5_embed,
            byt5_text_mask=byt5_mask, rotary_pos_emb_cache=None,
        )  # fmt: skip

    return finish(model, ("double_blocks",), forward, _switch(model, False))


def kandinsky5():
    dit = _import("musubi_tuner.kandinsky5.models.dit")
    torch.manual_seed(0)
    model = dit.DiffusionTransformer3D(
        in_visual_dim=4, in_text_dim=12, in_text_dim2=8, time_dim=16, out_visual_dim=4, patch_size=(1, 2, 2),
        model_dim=32, ff_dim=64, num_text_blocks=1, num_visual_blocks=3, axes_dims=(4, 6, 6), attention_engine="sdpa",
    )  # fmt: skip
    latents = randn(2, 4, 8, 8)  # images: B, C, H, W -> 16 tokens each
    texts, pooled = captions(12), randn(2, 8, seed=2)

    def forward():
        # kandinsky5_train_network.py:750-905: one DiT call per sample, unbatched inputs, image branch
        predictions = []
        for b in range(2):
            x = latents[b].permute(1, 2, 0).unsqueeze(0)  # 1, H, W, C
            # WORK-AROUND: kandinsky5/models/nn.py:30-50 casts activations to bfloat16 and relies on autocast to
            # run fp32 weights on them; accelerator.autocast() does that on CUDA, CPU autocast does it here.
            with torch.autocast("cpu", dtype=torch.bfloat16):
                prediction = model(
                    x, texts[b], pooled[b], torch.tensor([500.0 - 200 * b]),
                    [torch.arange(1), torch.arange(4), torch.arange(4)], torch.arange(texts[b].shape[0]),
                    scale_factor=(1.0, 1.0, 1.0), sparse_params=None, attention_mask=None,
                )  # fmt: skip
            predictions.append(prediction.permute(0, 3, 1, 2))
        return torch.stack(predictions, dim=0)

    return finish(model, ("visual_transformer_blocks",), forward, _switch(model, False))


def zimage():
    zimage_model = _import("musubi_tuner.zimage.zimage_model")
    torch.manual_seed(0)
    model = zimage_model.ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=4, dim=32, n_layers=3, n_refiner_layers=1, n_heads=2,
        n_kv_heads=2, cap_feat_dim=12, axes_dims=[4, 6, 6], axes_lens=[64, 32, 32], attn_mode="torch",
    )  # fmt: skip
    latents = randn(2, 4, 8, 8)  # 16 tokens
    llm = captions(12)

    def forward():
        # zimage_train_network.py:278-322 (not --split_attn): captions padded so that image + caption is a multiple
        # of SEQ_MULTI_OF (32), a bool mask, keywords
        max_len = 32 * -(-(max(CAPTIONS) + 16) // 32) - 16
        cap, mask = padded(llm, length=max_len)
        prediction = model(x=latents.unsqueeze(2), t=torch.tensor([0.5, 0.7]), cap_feats=cap, cap_mask=mask)
        return prediction.squeeze(2)

    return finish(model, ("noise_refiner", "layers"), forward, _switch(model, False))


# ----------------------------------------------------------------------------------------------------- sd-scripts


def _sd_flux_forward(model, chroma):
    """flux_train_network.py:326-390: keywords, T5 states of a fixed length with their attention mask."""
    noisy = randn(2, 4, 8, 8)
    t5, mask = padded(captions(12), length=6)
    guidance = torch.ones(2)

    def forward():
        with torch.no_grad():
            mod_vectors = model.get_mod_vectors(timesteps=torch.tensor([0.5, 0.3]), guidance=guidance, batch_size=2)
        if mod_vectors is not None:
            mod_vectors.requires_grad_(True)
        return model(
            img=rearrange(noisy, "b c (h ph) (w pw) -> b (h w) (c ph pw)", ph=2, pw=2), img_ids=_flux_ids(2, 4, 4),
            txt=t5, txt_ids=torch.zeros(2, 6, 3), y=randn(2, 8, seed=2), timesteps=torch.tensor([0.5, 0.3]),
            guidance=guidance, txt_attention_mask=mask, mod_vectors=mod_vectors,
        )  # fmt: skip

    return forward


def sd_flux():
    flux_models = _import("library.flux_models")
    torch.manual_seed(0)
    params = flux_models.FluxParams(
        in_channels=16, vec_in_dim=8, context_in_dim=12, hidden_size=32, mlp_ratio=2.0, num_heads=2, depth=2,
        depth_single_blocks=2, axes_dim=[4, 6, 6], theta=10_000, qkv_bias=True, guidance_embed=True,
    )  # fmt: skip
    model = flux_models.Flux(params)
    return finish(
        model, ("double_blocks", "single_blocks"), _sd_flux_forward(model, False), model.enable_gradient_checkpointing
    )


def sd_chroma():
    chroma_models = _import("library.chroma_models")
    torch.manual_seed(0)
    params = chroma_models.ChromaParams(
        in_channels=16, context_in_dim=12, hidden_size=32, mlp_ratio=2.0, num_heads=2, depth=2, depth_single_blocks=2,
        axes_dim=[4, 6, 6], theta=10_000, qkv_bias=True, guidance_embed=True, approximator_in_dim=16,
        approximator_depth=1, approximator_hidden_size=32, _use_compiled=False,
    )  # fmt: skip
    model = chroma_models.Chroma(params)
    return finish(
        model, ("double_blocks", "single_blocks"), _sd_flux_forward(model, True), model.enable_gradient_checkpointing
    )


def sd_sd3():
    sd3_models = _import("library.sd3_models")
    torch.manual_seed(0)
    # sd3_utils builds it through create_sd3_mmdit with SD3Params; hidden size is 64 * depth (sd3_models.py:800)
    params = sd3_models.SD3Params(
        patch_size=2, depth=2, num_patches=64, pos_embed_max_size=8, adm_in_channels=8, qk_norm="rms",
        x_block_self_attn_layers=[], context_embedder_in_features=12, context_embedder_out_features=128,
        model_type="sd3m",
    )  # fmt: skip
    model = sd3_models.create_sd3_mmdit(params, attn_mode="torch")
    with torch.no_grad():  # allocated with torch.empty and filled only by a checkpoint (sd3_models.py:418, 835)
        model.pos_embed.normal_(std=0.02)
        for module in model.modules():
            if isinstance(module, sd3_models.RMSNorm) and module.weight is not None:
                module.weight.fill_(1.0)
    noisy = randn(2, 16, 8, 8)  # 16 tokens
    context = randn(2, 6, 12, seed=1)  # CLIP-L/G + T5 concatenated, fixed length, no mask

    def forward():
        # sd3_train_network.py:356: positional latents and timesteps, keywords context and y
        return model(noisy, torch.tensor([500.0, 300.0]), context=context, y=randn(2, 8, seed=2))

    return finish(model, ("joint_blocks",), forward, model.enable_gradient_checkpointing)


def sd_lumina():
    lumina_models = _import("library.lumina_models")
    torch.manual_seed(0)
    model = lumina_models.NextDiT(
        patch_size=2, in_channels=4, dim=32, n_layers=3, n_refiner_layers=1, n_heads=2, n_kv_heads=1, multiple_of=16,
        qk_norm=True, cap_feat_dim=12, axes_dims=[4, 6, 6], axes_lens=[64, 32, 32],
    )  # fmt: skip
    noisy = randn(2, 4, 8, 8)  # 16 tokens
    gemma, mask = padded(captions(12), length=6)

    def forward():
        # lumina_train_network.py:269-285: keywords, an int32 mask of the fixed-length Gemma 2 states
        return model(x=noisy, t=1 - torch.tensor([0.5, 0.3]), cap_feats=gemma, cap_mask=mask.to(torch.int32))

    return finish(model, ("noise_refiner", "layers"), forward, model.enable_gradient_checkpointing)


BUILDERS = {
    "musubi.wan21": wan21,
    "musubi.wan22": wan22,
    "musubi.wan21_padded": wan21_padded,
    "musubi.hunyuan_video": hunyuan_video,
    "musubi.framepack": framepack,
    "musubi.flux_kontext": flux_kontext,
    "musubi.flux2": flux2,
    "musubi.qwen_image": qwen_image,
    "musubi.qwen_image_edit": qwen_image_edit,
    "musubi.hunyuan_video_15": hunyuan_video_15,
    "musubi.kandinsky5": kandinsky5,
    "musubi.zimage": zimage,
    "sd-scripts.flux": sd_flux,
    "sd-scripts.chroma": sd_chroma,
    "sd-scripts.sd3": sd_sd3,
    "sd-scripts.lumina": sd_lumina,
}


def build(name):
    """`BUILDERS[name]()`; where this environment lacks one of the trainer's imports, a test failure that names it
    and the environment to run in (the project's own has none of the trainers' dependencies)."""
    try:
        return BUILDERS[name]()
    except ModuleNotFoundError as error:
        import pytest

        pytest.fail(
            f"{name} imports {error.name!r}, which this environment lacks: run the tests that build the trainers' "
            "classes in-process in one that has their model dependencies (tests/with_trainers/README.md, "
            "venv-models).",
            pytrace=False,
        )
