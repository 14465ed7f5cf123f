"""Stand-ins for the trainers' own DiT classes (kohya musubi-tuner and sd-scripts), which CI cannot install.

Each stand-in is written from reading its class (file:line at musubi-tuner 30c658c / sd-scripts 48d368f in its
docstring), not copied: tiny dense single-head attention and a one-layer MLP per block, but the class's
STRUCTURE and CALLING CONVENTION as they are:
stack attribute names and nesting, how each block is called (keywords, positional, positional under checkpointing),
the order of its output tuple, the token order of joint streams, caption masks and padding, per-sample list inputs,
unbatched (N, D) blocks and one DiT call per sample (Kandinsky 5), sd-scripts' `Chroma` subclassing its `Flux` with
the image first, and a `gradient_checkpointing` switch that works as the trainer's (gated on `training`, on
`torch.is_grad_enabled()`, or on nothing). Each class carries the real qualified name (`__module__`, `__qualname__`,
`__name__`), so a layout keyed by qualified name applies to it; its `__mro__` holds the stand-ins of the real bases.

`BUILDERS` gives, per class, a builder with the interface of tests/with_trainers/real_models.py: the model in
`eval()` (both trainers keep it there without gradient checkpointing), its stacks, the trainer's training forward
returning the part of the prediction the loss compares, and the trainer's way to switch on checkpointing. The token
counts equal those of the real builders, so the gradient probe (tests/with_trainers/truth.py) can compare them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["BUILDERS", "Setup"]

DIM = 16
CAPTIONS = (5, 3)  # two samples, captions of uneven length


@dataclass
class Setup:
    """A tiny model, its stacks in forward order, and its trainer's training forward.

    forward: runs the training forward and returns the part of the prediction the loss compares with the target.
    checkpointing: switches on the trainer's gradient checkpointing the trainer's way (and `train()`, as both do).
    """

    model: torch.nn.Module
    stacks: tuple
    forward: Callable[[], object]
    checkpointing: Callable[[], None]


def finish(model, stacks, forward, checkpointing):
    """Random weights everywhere (zero-initialised gates and heads, and parameters left by `torch.empty`, re-drawn:
    a zero parameter would hide a row's gradient), fp32, and eval() as the trainers keep the DiT without
    checkpointing."""
    model.float()
    with torch.no_grad():
        for parameter in model.parameters():
            size = parameter.abs()
            if not size.isfinite().all() or not size.any() or size.max() > 1e3 or size[size > 0].min() < 1e-20:
                parameter.normal_(std=0.02)
    model.eval()

    def switch_on():
        checkpointing()
        model.train()

    return Setup(model, stacks, forward, switch_on)


def captions(dim, lengths=CAPTIONS, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, dim, generator=generator) for n in lengths]


def padded(captions, length=None):
    """(B, L, D) captions zero-padded to `length` (default: the longest) and their (B, L) bool mask."""
    length = length or max(c.shape[0] for c in captions)
    stacked = torch.stack([F.pad(c, (0, 0, 0, length - c.shape[0])) for c in captions])
    mask = torch.stack([torch.arange(length) < c.shape[0] for c in captions])
    return stacked, mask


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def named(qualified):
    """Give a stand-in class the real class's qualified name (module, qualname and bare name)."""

    def rename(cls):
        cls.__module__, _, cls.__qualname__ = qualified.rpartition(".")
        cls.__name__ = cls.__qualname__
        return cls

    return rename


def attention(q, k, v, key_mask=None):
    """Dense attention; `key_mask` (B, Nk) bool marks the keys every query of that sample may attend to."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=None if key_mask is None else key_mask[:, None, :])


class Stream(nn.Module):
    """One stream's weights: query/key/value, attention output and MLP."""

    def __init__(self, dim=DIM):
        super().__init__()
        self.qkv, self.out, self.mlp = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim), nn.Linear(dim, dim)

    def finish(self, x, attended):
        x = x + self.out(attended)
        return x + self.mlp(F.gelu(x))


def joint(streams, tokens, masks):
    """Joint attention over cat(tokens) with one set of weights per stream; each stream's new tokens, in order."""
    q, k, v = (torch.cat(parts, dim=1) for parts in zip(*(s.qkv(t).chunk(3, -1) for s, t in zip(streams, tokens))))
    key_mask = None if all(m is None for m in masks) else torch.cat(
        [torch.ones(t.shape[:2], dtype=torch.bool) if m is None else m for t, m in zip(tokens, masks)], dim=1
    )  # fmt: skip
    attended = attention(q, k, v, key_mask).split([t.shape[1] for t in tokens], dim=1)
    return [s.finish(t, a) for s, t, a in zip(streams, tokens, attended)]


class Single(nn.Module):
    """A block over one sequence (self-attention with an optional key mask, MLP)."""

    def __init__(self):
        super().__init__()
        self.stream = Stream()
        self.gradient_checkpointing = False

    def mix(self, x, key_mask=None):
        return joint([self.stream], [x], [key_mask])[0]


class Double(nn.Module):
    """A block over two streams with their own weights, attending jointly."""

    def __init__(self):
        super().__init__()
        self.first, self.second = Stream(), Stream()
        self.gradient_checkpointing = False

    def mix(self, a, b, mask_a=None, mask_b=None):
        return joint([self.first, self.second], [a, b], [mask_a, mask_b])


def patches(x, kernel=(1, 2, 2)):
    """(B, C, [F,] H, W) -> (B, F/kf * H/kh * W/kw, C * kf * kh * kw): non-overlapping patches, as tokens."""
    if x.dim() == 4:
        x = x.unsqueeze(2)
    (b, c, f, h, w), (kf, kh, kw) = x.shape, kernel
    x = x.reshape(b, c, f // kf, kf, h // kh, kh, w // kw, kw).permute(0, 2, 4, 6, 1, 3, 5, 7)
    return x.reshape(b, (f // kf) * (h // kh) * (w // kw), -1)


def unpatch(tokens, grid, kernel=(1, 2, 2)):
    """The inverse of `patches` for a token grid (F, H, W): (B, F*H*W, C*k) -> (B, C, F*kf, H*kh, W*kw)."""
    (f, h, w), (kf, kh, kw) = grid, kernel
    x = tokens.reshape(tokens.shape[0], f, h, w, -1, kf, kh, kw).permute(0, 4, 1, 5, 2, 6, 3, 7)
    return x.reshape(x.shape[0], x.shape[1], f * kf, h * kh, w * kw)


def enable_blocks(model, *stacks):
    for stack in stacks:
        for block in getattr(model, stack):
            block.gradient_checkpointing = True


def blockwise(block, forward, *args):
    """musubi/sd-scripts style: the block's own forward checkpoints its `_forward` when training."""
    if block.training and block.gradient_checkpointing:
        return checkpoint(forward, *args, use_reentrant=False)
    return forward(*args)


# ---------------------------------------------------------------------------------------------------------- musubi


class WanAttentionBlock(Single):
    def __init__(self):
        super().__init__()
        self.cross = Stream()

    def _forward(self, x, e, seq_lens, grid_sizes, freqs, context, context_lens):
        keys = torch.arange(x.shape[1])[None] < seq_lens[:, None]  # varlen: padded rows are no one's keys
        x = self.mix(x + e, keys)
        q, k, v = self.cross.qkv(x).chunk(3, -1)[0], *self.cross.qkv(context).chunk(3, -1)[1:]
        return self.cross.finish(x, attention(q, k, v))  # context padded to text_len with zeros, no mask

    def forward(self, x, e, seq_lens, grid_sizes, freqs, context, context_lens):
        return blockwise(self, self._forward, x, e, seq_lens, grid_sizes, freqs, context, context_lens)


@named("musubi_tuner.wan.modules.model.WanModel")
class WanModel(nn.Module):
    """wan/modules/model.py:549. forward(x: per-sample (C, F, H, W), t, context: per-sample list, seq_len): the
    tokens of each sample zero-padded to `seq_len`; `block(x, **kwargs)`; a list of per-sample predictions."""

    def __init__(self, model_version="2.1", num_layers=3, text_len=10):
        super().__init__()
        self.model_version, self.text_len = model_version, text_len
        self.patch_size = (1, 2, 2)  # (F, H, W), an attribute as in wan/modules/model.py:623
        self.patch_embedding, self.text_embedding = nn.Linear(16, DIM), nn.Linear(12, DIM)
        self.time_embedding = nn.Linear(1, DIM)
        self.blocks = nn.ModuleList(WanAttentionBlock() for _ in range(num_layers))
        self.head = nn.Linear(DIM, 16)

    def enable_gradient_checkpointing(self, activation_cpu_offloading=False):
        enable_blocks(self, "blocks")

    def forward(self, x, t, context, seq_len, clip_fea=None, y=None):
        tokens = [patches(u.unsqueeze(0))[0] for u in x]
        grid_sizes = torch.tensor([[u.shape[1], u.shape[2] // 2, u.shape[3] // 2] for u in x])
        seq_lens = torch.tensor([u.shape[0] for u in tokens])
        h = self.patch_embedding(torch.stack([F.pad(u, (0, 0, 0, seq_len - u.shape[0])) for u in tokens]))
        e = self.time_embedding(t[:, None, None] / 1000)
        context = self.text_embedding(torch.stack([F.pad(c, (0, 0, 0, self.text_len - c.shape[0])) for c in context]))
        kwargs = dict(e=e, seq_lens=seq_lens, grid_sizes=grid_sizes, freqs=None, context=context, context_lens=None)
        for block in self.blocks:
            h = block(h, **kwargs)
        out = self.head(h)
        return [unpatch(u[None, : math.prod(grid)], grid)[0] for u, grid in zip(out, grid_sizes.tolist())]


def _wan(version):
    model = WanModel(version)
    latents, context = randn(2, 4, 2, 4, 4), captions(12)

    def forward():
        t = torch.tensor([500.0, 300.0])
        return torch.stack(model(latents, t=t, context=context, clip_fea=None, seq_len=8, y=None), dim=0)

    return finish(model, ("blocks",), forward, lambda: model.enable_gradient_checkpointing(False))


def wan21_padded():
    setup = _wan("2.1")
    videos, context = [randn(4, 2, 4, 4), randn(4, 1, 4, 4, seed=1)], captions(12)
    setup.forward = lambda: setup.model(videos, t=torch.tensor([500.0, 300.0]), context=context, seq_len=8)
    return setup


class MMDoubleStreamBlock(Double):
    def _forward(self, img, txt, vec, attn_mask, total_len, cu_q, cu_kv, max_q, max_kv, freqs_cis):
        return tuple(self.mix(img + vec, txt + vec, None, attn_mask))  # (img, txt)

    def forward(self, *args, **kwargs):
        return blockwise(self, self._forward, *args)


class MMSingleStreamBlock(Single):
    def _forward(self, x, vec, txt_len, attn_mask, total_len, cu_q, cu_kv, max_q, max_kv, freqs_cis):
        img_mask = torch.ones(x.shape[0], x.shape[1] - txt_len, dtype=torch.bool)
        return self.mix(x + vec, torch.cat([img_mask, attn_mask], dim=1))  # over cat(img, txt)

    def forward(self, *args, **kwargs):
        return blockwise(self, self._forward, *args)


@named("musubi_tuner.hunyuan_model.models.HYVideoDiffusionTransformer")
class HYVideoDiffusionTransformer(nn.Module):
    """hunyuan_model/models.py:450. Blocks called positionally (10 arguments); double -> (img, txt); single over
    cat(img, txt); LLM states padded to a fixed length, masked as keys."""

    def __init__(self):
        super().__init__()
        self.img_in, self.txt_in, self.time_in = nn.Linear(16, DIM), nn.Linear(12, DIM), nn.Linear(1, DIM)
        self.patch_size = [1, 2, 2]  # hunyuan_model/models.py:535
        self.double_blocks = nn.ModuleList(MMDoubleStreamBlock() for _ in range(2))
        self.single_blocks = nn.ModuleList(MMSingleStreamBlock() for _ in range(2))
        self.final_layer = nn.Linear(DIM, 16)

    def enable_gradient_checkpointing(self, activation_cpu_offloading=False):
        enable_blocks(self, "double_blocks", "single_blocks")

    def forward(
        self,
        x,
        t,
        text_states=None,
        text_mask=None,
        text_states_2=None,
        freqs_cos=None,
        freqs_sin=None,
        guidance=None,
        return_dict=True,
    ):
        f, h, w = x.shape[2], x.shape[3] // 2, x.shape[4] // 2
        img, txt, vec = self.img_in(patches(x)), self.txt_in(text_states), self.time_in(t[:, None, None] / 1000)
        for block in self.double_blocks:
            img, txt = block(img, txt, vec, text_mask, None, None, None, None, None, None)
        x = torch.cat((img, txt), 1)
        for block in self.single_blocks:
            x = block(x, vec, txt.shape[1], text_mask, None, None, None, None, None, None)
        out = unpatch(self.final_layer(x[:, : img.shape[1]]), (f, h, w))
        return {"x": out} if return_dict else out


def hunyuan_video():
    model = HYVideoDiffusionTransformer()
    latents = randn(2, 4, 2, 4, 4)
    llm, llm_mask = padded(captions(12), length=6)

    def forward():
        return model(latents, torch.tensor([500.0, 300.0]), text_states=llm, text_mask=llm_mask,
                     text_states_2=randn(2, 8, seed=2), freqs_cos=None, freqs_sin=None,
                     guidance=torch.full((2,), 1000.0), return_dict=False)  # fmt: skip

    return finish(model, ("double_blocks", "single_blocks"), forward, model.enable_gradient_checkpointing)


class HunyuanVideoTransformerBlock(Double):
    def forward(self, hidden_states, encoder_hidden_states, temb, attention_mask=None, freqs_cis=None):
        return tuple(self.mix(hidden_states + temb, encoder_hidden_states + temb, None, attention_mask))


class HunyuanVideoSingleTransformerBlock(Single):
    def forward(self, hidden_states, encoder_hidden_states, temb, attention_mask=None, image_rotary_emb=None):
        n = hidden_states.shape[1]
        x = torch.cat([hidden_states, encoder_hidden_states], dim=1) + temb
        keys = torch.cat([torch.ones(x.shape[0], n, dtype=torch.bool), attention_mask], dim=1)
        x = self.mix(x, keys)
        return x[:, :n], x[:, n:]  # (hidden, encoder_hidden), image first


@named("musubi_tuner.frame_pack.hunyuan_video_packed.HunyuanVideoTransformer3DModelPacked")
class HunyuanVideoTransformer3DModelPacked(nn.Module):
    """frame_pack/hunyuan_video_packed.py:1512. hidden = cat(clean 4x, clean 2x, clean, noisy); text = cat(image
    embeddings, LLM states); every block through `gradient_checkpointing_method(block, 5 positional)` -> (hidden,
    encoder_hidden), checkpointed whenever `use_gradient_checkpointing` (not gated on `training`)."""

    def __init__(self):
        super().__init__()
        self.x_embedder, self.context_embedder = nn.Linear(64, DIM), nn.Linear(12, DIM)
        self.clean_1x, self.clean_2x, self.clean_4x = nn.Linear(64, DIM), nn.Linear(512, DIM), nn.Linear(4096, DIM)
        self.image_projection, self.time_text_embed = nn.Linear(8, DIM), nn.Linear(1, DIM)
        self.transformer_blocks = nn.ModuleList(HunyuanVideoTransformerBlock() for _ in range(2))
        self.single_transformer_blocks = nn.ModuleList(HunyuanVideoSingleTransformerBlock() for _ in range(2))
        self.proj_out = nn.Linear(DIM, 64)
        self.config_patch_size, self.config_patch_size_t = 2, 1  # hunyuan_video_packed.py:1543 (no `config`)
        self.use_gradient_checkpointing = False

    def enable_gradient_checkpointing(self, activation_cpu_offloading=False):
        self.use_gradient_checkpointing = True

    def gradient_checkpointing_method(self, block, *args):
        if self.use_gradient_checkpointing:
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def forward(
        self,
        hidden_states,
        timestep,
        encoder_hidden_states,
        encoder_attention_mask,
        pooled_projections,
        guidance,
        latent_indices=None,
        clean_latents=None,
        clean_latent_indices=None,
        clean_latents_2x=None,
        clean_latent_2x_indices=None,
        clean_latents_4x=None,
        clean_latent_4x_indices=None,
        image_embeddings=None,
        attention_kwargs=None,
        return_dict=True,
    ):
        h, w = hidden_states.shape[3] // 2, hidden_states.shape[4] // 2
        noisy = self.x_embedder(patches(hidden_states))
        parts = [
            self.clean_4x(patches(clean_latents_4x, (4, 8, 8))),
            self.clean_2x(patches(clean_latents_2x, (2, 4, 4))),
        ]
        hidden = torch.cat(parts + [self.clean_1x(patches(clean_latents)), noisy], dim=1)
        text = torch.cat([self.image_projection(image_embeddings), self.context_embedder(encoder_hidden_states)], 1)
        mask = torch.cat([torch.ones(text.shape[0], image_embeddings.shape[1], dtype=torch.bool),
                          encoder_attention_mask], dim=1)  # fmt: skip
        temb = self.time_text_embed(timestep[:, None, None] / 1000)
        for block in list(self.transformer_blocks) + list(self.single_transformer_blocks):
            hidden, text = self.gradient_checkpointing_method(block, hidden, text, temb, mask, None)
        out = self.proj_out(hidden[:, -noisy.shape[1] :])
        out = unpatch(out, (1, h, w))
        return (out,) if not return_dict else {"sample": out}


def framepack():
    model = HunyuanVideoTransformer3DModelPacked()
    latents = randn(2, 16, 1, 8, 8)
    llama, llama_mask = padded(captions(12), length=6)

    def forward():
        return model(
            hidden_states=latents, timestep=torch.tensor([500.0, 300.0]), encoder_hidden_states=llama,
            encoder_attention_mask=llama_mask, pooled_projections=randn(2, 8, seed=2),
            guidance=torch.full((2,), 10000.0), latent_indices=torch.tensor([[4], [4]]),
            clean_latents=randn(2, 16, 2, 8, 8, seed=3), clean_latent_indices=torch.tensor([[0, 3], [0, 3]]),
            clean_latents_2x=randn(2, 16, 2, 8, 8, seed=4), clean_latent_2x_indices=torch.tensor([[1, 2]] * 2),
            clean_latents_4x=randn(2, 16, 4, 8, 8, seed=5), clean_latent_4x_indices=torch.tensor([[0, 1, 2, 3]] * 2),
            image_embeddings=randn(2, 3, 8, seed=6), return_dict=False,
        )[0]  # fmt: skip

    return finish(
        model, ("transformer_blocks", "single_transformer_blocks"), forward, model.enable_gradient_checkpointing
    )


class FluxDoubleStreamBlock(Double):
    def _forward(self, img, txt, vec, pe, mask=None):
        txt, img = self.mix(txt + vec, img + vec, mask, None)  # attention over cat(txt, img)
        return img, txt

    def forward(self, img, txt, vec, pe, control_lengths=None):
        return blockwise(self, self._forward, img, txt, vec, pe)


class FluxSingleStreamBlock(Single):
    def _forward(self, x, vec, pe, mask=None):
        return self.mix(x + vec, mask)

    def forward(self, x, vec, pe, control_lengths=None):
        return blockwise(self, self._forward, x, vec, pe)


@named("musubi_tuner.flux.flux_models.Flux")
class MusubiFlux(nn.Module):
    """flux/flux_models.py:821 (FLUX.1 Kontext). Double blocks called with keywords only -> (img, txt); single
    blocks `block(img, vec=, pe=, control_lengths=)` over cat(txt, img); img = cat(noisy, control)."""

    def __init__(self):
        super().__init__()
        self.img_in, self.txt_in, self.time_in = nn.Linear(16, DIM), nn.Linear(12, DIM), nn.Linear(1, DIM)
        self.double_blocks = nn.ModuleList(FluxDoubleStreamBlock() for _ in range(2))
        self.single_blocks = nn.ModuleList(FluxSingleStreamBlock() for _ in range(2))
        self.final_layer = nn.Linear(DIM, 16)

    def enable_gradient_checkpointing(self, activation_cpu_offloading=False):
        enable_blocks(self, "double_blocks", "single_blocks")

    def forward(self, img, img_ids, txt, txt_ids, timesteps, y, guidance=None, control_lengths=None):
        img, txt, vec = self.img_in(img), self.txt_in(txt), self.time_in(timesteps[:, None, None])
        for block in self.double_blocks:
            img, txt = block(img=img, txt=txt, vec=vec, pe=None, control_lengths=control_lengths)
        img = torch.cat((txt, img), 1)
        for block in self.single_blocks:
            img = block(img, vec=vec, pe=None, control_lengths=control_lengths)
        return self.final_layer(img[:, txt.shape[1] :])


def flux_kontext():
    model = MusubiFlux()
    noisy, control = patches(randn(2, 4, 8, 8)), patches(randn(2, 4, 4, 8, seed=3))
    t5, _ = padded(captions(12), length=6)

    def forward():
        prediction = model(img=torch.cat((noisy, control), dim=1), img_ids=None, txt=t5, txt_ids=None,
                           y=randn(2, 8, seed=2), timesteps=torch.tensor([0.5, 0.3]), guidance=torch.ones(2),
                           control_lengths=[control.shape[1]] * 2)  # fmt: skip
        return prediction[:, : noisy.shape[1]]

    return finish(
        model, ("double_blocks", "single_blocks"), forward, lambda: model.enable_gradient_checkpointing(False)
    )


class Flux2DoubleStreamBlock(Double):
    def _forward(self, img, txt, pe, pe_ctx, mod_img, mod_txt, attn_params):
        txt, img = self.mix(txt + mod_txt, img + mod_img)
        return img, txt

    def forward(self, img, txt, pe, pe_ctx, mod_img, mod_txt, attn_params):
        return blockwise(self, self._forward, img, txt, pe, pe_ctx, mod_img, mod_txt, attn_params)


class Flux2SingleStreamBlock(Single):
    def _forward(self, x, pe, mod, attn_params):
        return self.mix(x + mod)

    def forward(self, x, pe, mod, attn_params):
        return blockwise(self, self._forward, x, pe, mod, attn_params)


@named("musubi_tuner.flux_2.flux2_models.Flux2")
class Flux2(nn.Module):
    """flux_2/flux2_models.py:413. Blocks called positionally: double (7) -> (img, txt); single (4) over
    cat(txt, img); img = cat(target, references)."""

    def __init__(self):
        super().__init__()
        self.img_in, self.txt_in, self.time_in = nn.Linear(8, DIM), nn.Linear(12, DIM), nn.Linear(1, DIM)
        self.double_blocks = nn.ModuleList(Flux2DoubleStreamBlock() for _ in range(2))
        self.single_blocks = nn.ModuleList(Flux2SingleStreamBlock() for _ in range(2))
        self.final_layer = nn.Linear(DIM, 8)

    def enable_gradient_checkpointing(self, activation_cpu_offloading=False):
        enable_blocks(self, "double_blocks", "single_blocks")

    def forward(self, x, x_ids, timesteps, ctx, ctx_ids, guidance):
        vec = self.time_in(timesteps[:, None, None])
        img, txt = self.img_in(x), self.txt_in(ctx)
        for block in self.double_blocks:
            img, txt = block(img, txt, None, None, vec, vec, None)
        img = torch.cat((txt, img), dim=1)
        for block in self.single_blocks:
            img = block(img, None, vec, None)
        return self.final_layer(img[:, ctx.shape[1] :])


def flux2():
    model = Flux2()
    noisy = patches(randn(2, 8, 4, 4), (1, 1, 1))
    refs = [patches(r, (1, 1, 1)) for r in (randn(2, 8, 2, 4, seed=3), randn(2, 8, 2, 2, seed=4))]
    ctx, _ = padded(captions(12), length=6)

    def forward():
        # flux2_utils.py:163-186: (t, h, w, l) ids, t = 0 on the target and 10, 20, ... on the references
        x = torch.cat([noisy] + refs, dim=1)
        x_ids = torch.zeros(2, x.shape[1], 4)
        for t, (start, end) in zip((10, 20), ((16, 24), (24, 28))):
            x_ids[:, start:end, 0] = t
        prediction = model(x=x, x_ids=x_ids, timesteps=torch.tensor([0.5, 0.3]), ctx=ctx, ctx_ids=None,
                           guidance=torch.ones(2))  # fmt: skip
        return prediction[:, : noisy.shape[1]]

    return finish(
        model, ("double_blocks", "single_blocks"), forward, lambda: model.enable_gradient_checkpointing(False)
    )


class QwenImageTransformerBlock(Double):
    def forward(
        self,
        hidden_states,
        encoder_hidden_states,
        encoder_hidden_states_mask,
        temb,
        image_rotary_emb=None,
        txt_seq_lens=None,
        joint_attention_kwargs=None,
        timestep_zero_index=None,
    ):
        img, txt = self.mix(hidden_states + temb, encoder_hidden_states + temb, None, encoder_hidden_states_mask)
        return txt, img  # (encoder_hidden_states, hidden_states)


@named("musubi_tuner.qwen_image.qwen_image_model.QwenImageTransformer2DModel")
class QwenImageTransformer2DModel(nn.Module):
    """qwen_image/qwen_image_model.py:1062. Blocks called with keywords, or positionally (8) through checkpoint when
    `torch.is_grad_enabled() and self.gradient_checkpointing` (not gated on `training`); -> (encoder, hidden);
    Edit: hidden = cat(noisy, control)."""

    def __init__(self, zero_cond_t=False):
        super().__init__()
        self.zero_cond_t = zero_cond_t
        self.img_in, self.txt_in, self.time_text_embed = nn.Linear(16, DIM), nn.Linear(12, DIM), nn.Linear(1, DIM)
        self.transformer_blocks = nn.ModuleList(QwenImageTransformerBlock() for _ in range(3))
        self.proj_out = nn.Linear(DIM, 16)
        self.gradient_checkpointing = False

    def enable_gradient_checkpointing(self, activation_cpu_offloading=False):
        self.gradient_checkpointing = True

    def forward(
        self,
        hidden_states,
        encoder_hidden_states=None,
        encoder_hidden_states_mask=None,
        timestep=None,
        img_shapes=None,
        txt_seq_lens=None,
        guidance=None,
        attention_kwargs=None,
        additional_t_cond=None,
    ):
        hidden, text = self.img_in(hidden_states), self.txt_in(encoder_hidden_states)
        temb = self.time_text_embed(timestep[:, None, None])
        lens = torch.tensor(txt_seq_lens)
        for block in self.transformer_blocks:
            args = (hidden, text, encoder_hidden_states_mask, temb, None, lens, attention_kwargs, None)
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                text, hidden = checkpoint(block, *args, use_reentrant=False)
            else:
                text, hidden = block(
                    hidden_states=hidden, encoder_hidden_states=text, encoder_hidden_states_mask=args[2], temb=temb,
                    image_rotary_emb=None, txt_seq_lens=lens, joint_attention_kwargs=attention_kwargs,
                    timestep_zero_index=None,
                )  # fmt: skip
        return self.proj_out(hidden)


def _qwen(edit):
    model = QwenImageTransformer2DModel(zero_cond_t=edit)
    noisy, control, vl = patches(randn(2, 4, 8, 8)), patches(randn(2, 4, 4, 8, seed=3)), captions(12)

    def forward():
        img = torch.cat([noisy, control], dim=1) if edit else noisy
        txt, mask = padded(vl)
        # qwen_image_train_network.py:540-546: one list of (frames, h, w) grids for the batch, the target first
        img_shapes = [[(1, 4, 4), (1, 2, 4)]] if edit else [[(1, 4, 4)]]
        prediction = model(hidden_states=img, timestep=torch.tensor([0.5, 0.3]), guidance=None,
                           encoder_hidden_states_mask=mask, encoder_hidden_states=txt, img_shapes=img_shapes,
                           txt_seq_lens=[c.shape[0] for c in vl], additional_t_cond=None)  # fmt: skip
        return prediction[:, :16] if edit else prediction

    return finish(model, ("transformer_blocks",), forward, lambda: model.enable_gradient_checkpointing(False))


class HunyuanVideo15DoubleBlock(Double):
    def _forward(self, img, txt, vec, freqs_cis=None, attn_params=None):
        return tuple(self.mix(img + vec, txt + vec, None, attn_params))  # (img, txt)

    def forward(self, img, txt, vec, freqs_cis=None, attn_params=None):
        return blockwise(self, self._forward, img, txt, vec, freqs_cis, attn_params)


@named("musubi_tuner.hunyuan_video_1_5.hunyuan_video_1_5_models.HunyuanVideo_1_5_DiffusionTransformer")
class HunyuanVideo_1_5_DiffusionTransformer(nn.Module):
    """hunyuan_video_1_5_models.py:39. One stack, `double_blocks`, called positionally (5) -> (img, txt); the text
    of each sample is cat(ByT5 tokens, LLM tokens) of its own lengths, packed, then padded with a mask."""

    def __init__(self):
        super().__init__()
        self.img_in, self.txt_in, self.byt5_in = nn.Linear(9, DIM), nn.Linear(12, DIM), nn.Linear(10, DIM)
        self.time_in = nn.Linear(1, DIM)
        self.double_blocks = nn.ModuleList(HunyuanVideo15DoubleBlock() for _ in range(3))
        self.final_layer = nn.Linear(DIM, 4)

    def enable_gradient_checkpointing(self, cpu_offload=False):
        enable_blocks(self, "double_blocks")

    def forward(
        self,
        hidden_states,
        timestep,
        text_states,
        encoder_attention_mask,
        vision_states=None,
        byt5_text_states=None,
        byt5_text_mask=None,
        rotary_pos_emb_cache=None,
    ):
        f, h, w = hidden_states.shape[2:]
        img = self.img_in(patches(hidden_states, (1, 1, 1)))
        llm, byt5 = self.txt_in(text_states), self.byt5_in(byt5_text_states)
        texts = [torch.cat([byt5[i][byt5_text_mask[i]], llm[i][encoder_attention_mask[i]]]) for i in range(len(img))]
        txt, mask = padded(texts)
        vec = self.time_in(timestep[:, None, None] / 1000)
        for block in self.double_blocks:
            img, txt = block(img, txt, vec, None, mask)
        return unpatch(self.final_layer(img), (f, h, w), (1, 1, 1))


def hunyuan_video_15():
    model = HunyuanVideo_1_5_DiffusionTransformer()
    latents, vl, byt5 = randn(2, 4, 1, 4, 4), captions(12), captions(10, lengths=(2, 4), seed=3)

    def forward():
        vl_embed, vl_mask = padded(vl)
        byt5_embed, byt5_mask = padded(byt5)
        return model(hidden_states=torch.cat([latents, torch.zeros(2, 5, 1, 4, 4)], dim=1),
                     timestep=torch.tensor([500.0, 300.0]), text_states=vl_embed, encoder_attention_mask=vl_mask,
                     vision_states=None, byt5_text_states=byt5_embed, byt5_text_mask=byt5_mask,
                     rotary_pos_emb_cache=None)  # fmt: skip

    return finish(model, ("double_blocks",), forward, lambda: model.enable_gradient_checkpointing(False))


class TransformerDecoderBlock(Single):
    """Visual tokens unbatched (N, D): self-attention, then cross-attention to the sample's own text."""

    def __init__(self):
        super().__init__()
        self.cross = Stream()

    def forward(self, visual_embed, text_embed, time_embed, rope, sparse_params, attention_mask=None):
        x = self.mix((visual_embed + time_embed)[None])
        q, (_, k, v) = self.cross.qkv(x).chunk(3, -1)[0], self.cross.qkv(text_embed[None]).chunk(3, -1)
        return self.cross.finish(x, attention(q, k, v))[0]


class TransformerEncoderBlock(Single):
    def forward(self, x, time_embed, rope, attention_mask=None):
        return self.mix((x + time_embed)[None])[0]


@named("musubi_tuner.kandinsky5.models.dit.DiffusionTransformer3D")
class DiffusionTransformer3D(nn.Module):
    """kandinsky5/models/dit.py:90. One call per sample (the trainer loops); `text_transformer_blocks` then
    `visual_transformer_blocks`, both unbatched (N, D), called positionally, through checkpoint when training."""

    def __init__(self):
        super().__init__()
        self.text_embeddings, self.visual_embeddings = nn.Linear(12, DIM), nn.Linear(16, DIM)
        self.time_embeddings = nn.Linear(1, DIM)
        self.text_transformer_blocks = nn.ModuleList(TransformerEncoderBlock() for _ in range(1))
        self.visual_transformer_blocks = nn.ModuleList(TransformerDecoderBlock() for _ in range(3))
        self.out_layer = nn.Linear(DIM, 16)
        self.gradient_checkpointing = False

    def enable_gradient_checkpointing(self, activation_cpu_offloading=False):
        self.gradient_checkpointing = True

    def forward(
        self,
        x,
        text_embed,
        pooled_text_embed,
        time,
        visual_rope_pos,
        text_rope_pos,
        scale_factor=(1.0, 1.0, 1.0),
        sparse_params=None,
        attention_mask=None,
    ):
        duration, height, width = x.shape[0], x.shape[1] // 2, x.shape[2] // 2
        text, time_embed = self.text_embeddings(text_embed), self.time_embeddings(time[:, None] / 1000)
        visual = self.visual_embeddings(patches(x.permute(3, 0, 1, 2)[None])[0])  # (F, H, W, C) -> (N, C*4)
        for block in self.text_transformer_blocks:
            args = (text, time_embed, None, attention_mask)
            use = self.training and self.gradient_checkpointing
            text = checkpoint(block, *args, use_reentrant=False) if use else block(*args)
        for block in self.visual_transformer_blocks:
            args = (visual, text, time_embed, None, sparse_params, attention_mask)
            use = self.training and self.gradient_checkpointing
            visual = checkpoint(block, *args, use_reentrant=False) if use else block(*args)
        out = self.out_layer(visual)
        return unpatch(out[None], (duration, height, width))[0].permute(1, 2, 3, 0)  # (F, H, W, C)


def kandinsky5():
    model = DiffusionTransformer3D()
    latents, texts, pooled = randn(2, 4, 8, 8), captions(12), randn(2, 8, seed=2)

    def forward():
        predictions = []
        for b in range(2):  # kandinsky5_train_network.py:750: one DiT call per sample
            x = latents[b].permute(1, 2, 0).unsqueeze(0)
            prediction = model(x, texts[b], pooled[b], torch.tensor([500.0 - 200 * b]), None, None,
                               scale_factor=(1.0, 1.0, 1.0), sparse_params=None, attention_mask=None)  # fmt: skip
            predictions.append(prediction.permute(0, 3, 1, 2))
        return torch.stack(predictions, dim=0)

    return finish(model, ("visual_transformer_blocks",), forward, lambda: model.enable_gradient_checkpointing(False))


@dataclass
class AttentionParams:
    """modules/attention.py:31: what musubi's attention gets; `img_len` leads every `layers` sequence."""

    img_len: int
    attention_mask: object = None


class ZImageTransformerBlock(Single):
    def _forward(self, x, freqs_cis, adaln_input=None, attn_params=None):
        return self.mix(x if adaln_input is None else x + adaln_input, attn_params.attention_mask)

    def forward(self, x, freqs_cis, adaln_input=None, attn_params=None):
        return blockwise(self, self._forward, x, freqs_cis, adaln_input, attn_params)


@named("musubi_tuner.zimage.zimage_model.ZImageTransformer2DModel")
class ZImageTransformer2DModel(nn.Module):
    """zimage/zimage_model.py:358. `noise_refiner` over the image, `context_refiner` over the caption, `layers` over
    cat(image, caption padded to a multiple of 32 in all); `layer(x, freqs, adaln, attn_params=...)`."""

    def __init__(self):
        super().__init__()
        self.x_embedder, self.cap_embedder, self.t_embedder = nn.Linear(16, DIM), nn.Linear(12, DIM), nn.Linear(1, DIM)
        self.noise_refiner = nn.ModuleList(ZImageTransformerBlock() for _ in range(1))
        self.context_refiner = nn.ModuleList(ZImageTransformerBlock() for _ in range(1))
        self.layers = nn.ModuleList(ZImageTransformerBlock() for _ in range(3))
        self.final_layer = nn.Linear(DIM, 16)

    def enable_gradient_checkpointing(self, cpu_offload=False):
        enable_blocks(self, "noise_refiner", "context_refiner", "layers")

    def forward(self, x, t, cap_feats, cap_mask, patch_size=2, f_patch_size=1):
        h, w = x.shape[3] // 2, x.shape[4] // 2
        adaln = self.t_embedder(t[:, None, None])
        x = self.x_embedder(patches(x))
        for layer in self.noise_refiner:
            x = layer(x, None, adaln, attn_params=AttentionParams(0))
        cap = self.cap_embedder(cap_feats)
        for layer in self.context_refiner:
            cap = layer(cap, None, attn_params=AttentionParams(0, cap_mask))
        unified = torch.cat([x, cap], dim=1)
        keys = torch.cat([torch.ones(x.shape[:2], dtype=torch.bool), cap_mask], dim=1)
        for layer in self.layers:
            unified = layer(unified, None, adaln, attn_params=AttentionParams(x.shape[1], keys))
        out = self.final_layer(unified[:, : x.shape[1]])
        return unpatch(out, (1, h, w))


def zimage():
    model = ZImageTransformer2DModel()
    latents, llm = randn(2, 4, 8, 8), captions(12)

    def forward():
        cap, mask = padded(llm, length=32 * -(-(max(CAPTIONS) + 16) // 32) - 16)
        return model(x=latents.unsqueeze(2), t=torch.tensor([0.5, 0.7]), cap_feats=cap, cap_mask=mask).squeeze(2)

    return finish(model, ("noise_refiner", "layers"), forward, lambda: model.enable_gradient_checkpointing(False))


# ----------------------------------------------------------------------------------------------------- sd-scripts


class SdDoubleStreamBlock(FluxDoubleStreamBlock):
    def forward(self, img, txt, vec, pe, txt_attention_mask=None):
        return blockwise(self, self._forward, img, txt, vec, pe, txt_attention_mask)


class SdSingleStreamBlock(FluxSingleStreamBlock):
    def forward(self, x, vec, pe, txt_attention_mask=None):
        keys = torch.cat([txt_attention_mask, torch.ones(x.shape[0], x.shape[1] - txt_attention_mask.shape[1],
                                                         dtype=torch.bool)], dim=1)  # fmt: skip
        return blockwise(self, self._forward, x, vec, pe, keys)


@named("library.flux_models.Flux")
class SdFlux(nn.Module):
    """sd-scripts library/flux_models.py:878. As musubi's Flux, with the T5 attention mask (`txt_attention_mask`)
    masking padded caption keys; double blocks called with keywords; single over cat(txt, img)."""

    def __init__(self):
        super().__init__()
        self.img_in, self.txt_in, self.time_in = nn.Linear(16, DIM), nn.Linear(12, DIM), nn.Linear(1, DIM)
        self.double_blocks = nn.ModuleList(SdDoubleStreamBlock() for _ in range(2))
        self.single_blocks = nn.ModuleList(SdSingleStreamBlock() for _ in range(2))
        self.final_layer = nn.Linear(DIM, 16)

    def enable_gradient_checkpointing(self, cpu_offload=False):
        enable_blocks(self, "double_blocks", "single_blocks")

    def get_mod_vectors(self, timesteps, guidance=None, batch_size=None):
        return None

    def forward(
        self,
        img,
        img_ids,
        txt,
        txt_ids,
        timesteps,
        y,
        block_controlnet_hidden_states=None,
        block_controlnet_single_hidden_states=None,
        guidance=None,
        txt_attention_mask=None,
        mod_vectors=None,
    ):
        img, txt, vec = self.img_in(img), self.txt_in(txt), self.time_in(timesteps[:, None, None])
        for block in self.double_blocks:
            img, txt = block(img=img, txt=txt, vec=vec, pe=None, txt_attention_mask=txt_attention_mask)
        img = torch.cat((txt, img), 1)
        for block in self.single_blocks:
            img = block(img, vec=vec, pe=None, txt_attention_mask=txt_attention_mask)
        return self.final_layer(img[:, txt.shape[1] :])


class ChromaDoubleStreamBlock(Double):
    def _forward(self, img, txt, pe, distill_vec, txt_seq_len):
        keys = torch.arange(txt.shape[1])[None] < txt_seq_len[:, None]  # each sample's text trimmed to its length
        return tuple(self.mix(img + distill_vec, txt + distill_vec, None, keys))  # (img, txt)

    def forward(self, img, txt, pe, distill_vec, txt_seq_len):
        return blockwise(self, self._forward, img, txt, pe, distill_vec, txt_seq_len)


class ChromaSingleStreamBlock(Single):
    def _forward(self, x, pe, distill_vec, txt_seq_len, img_len):
        keys = torch.arange(x.shape[1])[None] < img_len + txt_seq_len[:, None]  # over cat(img, txt): image first
        return self.mix(x + distill_vec, keys)

    def forward(self, x, pe, distill_vec, txt_seq_len):
        img_len = x.shape[1] - int(txt_seq_len.max())
        return blockwise(self, self._forward, x, pe, distill_vec, txt_seq_len, img_len)


@named("library.chroma_models.Chroma")
class Chroma(SdFlux):
    """sd-scripts library/chroma_models.py:537: a subclass of its Flux (`nn.Module.__init__` only) whose single
    blocks run over cat(img, txt), the image FIRST; text trimmed to the longest caption + 1, per-sample lengths."""

    def __init__(self):
        nn.Module.__init__(self)
        self.img_in, self.txt_in, self.distilled_guidance_layer = (
            nn.Linear(16, DIM),
            nn.Linear(12, DIM),
            nn.Linear(1, DIM),
        )
        self.double_blocks = nn.ModuleList(ChromaDoubleStreamBlock() for _ in range(2))
        self.single_blocks = nn.ModuleList(ChromaSingleStreamBlock() for _ in range(2))
        self.final_layer = nn.Linear(DIM, 16)

    def get_mod_vectors(self, timesteps, guidance=None, batch_size=None):
        return self.distilled_guidance_layer(timesteps[:, None, None])

    def forward(
        self,
        img,
        img_ids,
        txt,
        txt_ids,
        timesteps,
        y,
        block_controlnet_hidden_states=None,
        block_controlnet_single_hidden_states=None,
        guidance=None,
        txt_attention_mask=None,
        attn_padding=1,
        mod_vectors=None,
    ):
        img, txt = self.img_in(img), self.txt_in(txt)
        txt_seq_len = torch.clip(txt_attention_mask.sum(-1) + attn_padding, 0, txt.shape[1])
        max_txt_len = int(txt_seq_len.max())
        txt = txt[:, :max_txt_len]
        for block in self.double_blocks:
            img, txt = block(img=img, txt=txt, pe=None, distill_vec=mod_vectors, txt_seq_len=txt_seq_len)
        img = torch.cat((img, txt), 1)
        for block in self.single_blocks:
            img = block(img, pe=None, distill_vec=mod_vectors, txt_seq_len=txt_seq_len)
        return self.final_layer(img[:, :-max_txt_len])


def _sd_flux(model):
    noisy = patches(randn(2, 4, 8, 8))
    t5, mask = padded(captions(12), length=6)

    def forward():
        with torch.no_grad():
            mod_vectors = model.get_mod_vectors(
                timesteps=torch.tensor([0.5, 0.3]), guidance=torch.ones(2), batch_size=2
            )
        if mod_vectors is not None:
            mod_vectors.requires_grad_(True)
        return model(img=noisy, img_ids=None, txt=t5, txt_ids=None, y=randn(2, 8, seed=2),
                     timesteps=torch.tensor([0.5, 0.3]), guidance=torch.ones(2), txt_attention_mask=mask,
                     mod_vectors=mod_vectors)  # fmt: skip

    return finish(model, ("double_blocks", "single_blocks"), forward, model.enable_gradient_checkpointing)


class MMDiTBlock(Double):
    def __init__(self, pre_only):
        super().__init__()
        self.pre_only = pre_only

    def _forward(self, context, x, c):
        context, x = self.mix(context + c, x + c)
        return (None if self.pre_only else context), x

    def forward(self, *args, **kwargs):
        return blockwise(self, self._forward, *args)


@named("library.sd3_models.MMDiT")
class MMDiT(nn.Module):
    """sd-scripts library/sd3_models.py:740. `joint_blocks` called positionally `block(context, x, c)` ->
    (context, x); the last block is `pre_only` and returns (None, x)."""

    def __init__(self, depth=2):
        super().__init__()
        self.x_embedder, self.context_embedder, self.t_embedder = (
            nn.Linear(64, DIM),
            nn.Linear(12, DIM),
            nn.Linear(1, DIM),
        )
        self.joint_blocks = nn.ModuleList(MMDiTBlock(pre_only=i == depth - 1) for i in range(depth))
        self.final_layer = nn.Linear(DIM, 64)

    def enable_gradient_checkpointing(self):
        enable_blocks(self, "joint_blocks")

    def forward(self, x, t, y=None, context=None):
        h, w = x.shape[2] // 2, x.shape[3] // 2
        x, c = self.x_embedder(patches(x)), self.t_embedder(t[:, None, None] / 1000)
        context = self.context_embedder(context)
        for block in self.joint_blocks:
            context, x = block(context, x, c)
        return unpatch(self.final_layer(x), (1, h, w))[:, :, 0]


def sd_sd3():
    model = MMDiT()
    noisy, context = randn(2, 16, 8, 8), randn(2, 6, 12, seed=1)

    def forward():
        return model(noisy, torch.tensor([500.0, 300.0]), context=context, y=randn(2, 8, seed=2))

    return finish(model, ("joint_blocks",), forward, model.enable_gradient_checkpointing)


class JointTransformerBlock(Single):
    def _forward(self, x, x_mask, freqs_cis, adaln_input=None):
        return self.mix(x if adaln_input is None else x + adaln_input, x_mask)

    def forward(self, *args, **kwargs):
        return blockwise(self, self._forward, *args)


@named("library.lumina_models.NextDiT")
class NextDiT(nn.Module):
    """sd-scripts library/lumina_models.py:822 (Lumina 2). `noise_refiner` over the image, `context_refiner` over
    the caption, `layers` over per-sample [caption of its own length; image; padding], all called positionally."""

    def __init__(self):
        super().__init__()
        self.x_embedder, self.cap_embedder, self.t_embedder = nn.Linear(16, DIM), nn.Linear(12, DIM), nn.Linear(1, DIM)
        self.patch_size = 2  # lumina_models.py:876
        self.noise_refiner = nn.ModuleList(JointTransformerBlock() for _ in range(1))
        self.context_refiner = nn.ModuleList(JointTransformerBlock() for _ in range(1))
        self.layers = nn.ModuleList(JointTransformerBlock() for _ in range(3))
        self.final_layer = nn.Linear(DIM, 16)

    def enable_gradient_checkpointing(self, cpu_offload=False):
        enable_blocks(self, "noise_refiner", "context_refiner", "layers")

    def forward(self, x, t, cap_feats, cap_mask):
        h, w = x.shape[2] // 2, x.shape[3] // 2
        t, cap = self.t_embedder(t[:, None, None]), self.cap_embedder(cap_feats)
        for layer in self.context_refiner:
            cap = layer(cap, cap_mask.bool(), None)
        x = self.x_embedder(patches(x))
        for layer in self.noise_refiner:
            x = layer(x, torch.ones(x.shape[:2], dtype=torch.bool), None, t)
        lengths = cap_mask.sum(dim=1).tolist()
        joint_tokens, mask = padded([torch.cat([cap[i, :n], x[i]]) for i, n in enumerate(lengths)])
        for layer in self.layers:
            joint_tokens = layer(joint_tokens, mask, None, t)
        out = self.final_layer(torch.stack([joint_tokens[i, n : n + x.shape[1]] for i, n in enumerate(lengths)]))
        return unpatch(out, (1, h, w))[:, :, 0]


def sd_lumina():
    model = NextDiT()
    noisy = randn(2, 4, 8, 8)
    gemma, mask = padded(captions(12), length=6)

    def forward():
        return model(x=noisy, t=1 - torch.tensor([0.5, 0.3]), cap_feats=gemma, cap_mask=mask.to(torch.int32))

    return finish(model, ("noise_refiner", "layers"), forward, model.enable_gradient_checkpointing)


def available(trainer):
    """Stand-ins need nothing installed."""
    return True


BUILDERS = {
    "musubi.wan21": lambda: _wan("2.1"),
    "musubi.wan22": lambda: _wan("2.2"),
    "musubi.wan21_padded": wan21_padded,
    "musubi.hunyuan_video": hunyuan_video,
    "musubi.framepack": framepack,
    "musubi.flux_kontext": flux_kontext,
    "musubi.flux2": flux2,
    "musubi.qwen_image": lambda: _qwen(edit=False),
    "musubi.qwen_image_edit": lambda: _qwen(edit=True),
    "musubi.hunyuan_video_15": hunyuan_video_15,
    "musubi.kandinsky5": kandinsky5,
    "musubi.zimage": zimage,
    "sd-scripts.flux": lambda: _sd_flux(SdFlux()),
    "sd-scripts.chroma": lambda: _sd_flux(Chroma()),
    "sd-scripts.sd3": sd_sd3,
    "sd-scripts.lumina": sd_lumina,
}
