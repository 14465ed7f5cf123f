"""Test-only changes that let the trainers' unmodified scripts run on this CPU machine, applied from outside.

Put this folder first on `PYTHONPATH` and Python imports this file at start-up in every process (`accelerate
launch`'s launcher and each worker alike). It changes modules only when they are imported, through an import hook,
so a process that never imports them pays nothing:

- CPU work-arounds (always):
  - `musubi_tuner.wan.modules.t5` evaluates `torch.cuda.current_device()` as a default argument at import, which
    raises without a GPU: while that one module runs, `current_device` answers 0.
  - ai-toolkit imports every model family at start-up, and OmniGen2's triton layer norm asks
    `torch.cuda.get_device_properties(torch.cuda.current_device())` at import: while it runs, a device 0 without
    properties (its code then uses its default warp size).
  - musubi's HunyuanVideo builds flash attention's sequence lengths on "cuda" in every forward: built on the
    mask's device instead.
  - accelerate wraps every prepared module in DistributedDataParallel on several CPU processes (MULTI_CPU), even a
    frozen one, which DDP refuses ("DistributedDataParallel is not needed when a module doesn't have any parameter
    that requires a gradient"); on GPUs it skips such modules. `prepare_model` skips them on CPUs too.
- Tiny models (only with `LAYERSYNC_TINY_TRAINERS=1`): the trainers' config tables are shrunk to `tiny_dims`, so
  that the weight files written by `tiny_files` load into them: musubi's `WAN_CONFIGS`, `HUNYUAN_VIDEO_CONFIG`,
  `configs_flux_dev_context` and Qwen-Image's constructor arguments, sd-scripts' `flux_models.configs`, the
  CLIP/T5/Gemma 2 configs its loaders build, its SD3 VAE's constructor defaults and Lumina 2's `get_2b_config`.

- A model class without a layout (only with `LAYERSYNC_TEST_NO_LAYOUT=<qualified class name>`): that row of
  LayerSync's layout table is left out, so a trainer's own DiT class stands for one LayerSync does not know.

None of this is part of layersync_hooks; the trainers' files are never edited.
"""

import importlib.abc
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tiny_dims, beside this file
import tiny_dims  # noqa: E402


def _current_device_zero(module_name):
    import torch

    original = torch.cuda.current_device
    if torch.cuda.is_available():
        return None
    torch.cuda.current_device = lambda: 0
    return lambda: setattr(torch.cuda, "current_device", original)


def _no_gpu_properties(module_name):
    """`torch.cuda.get_device_properties(torch.cuda.current_device())` at import: a device without properties."""
    import torch

    if torch.cuda.is_available():
        return None
    current, properties = torch.cuda.current_device, torch.cuda.get_device_properties
    torch.cuda.current_device, torch.cuda.get_device_properties = (lambda: 0), (lambda device=None: object())

    def undo():
        torch.cuda.current_device, torch.cuda.get_device_properties = current, properties

    return undo


def _cu_seqlens_on_the_masks_device(module):
    """HunyuanVideo's forward builds flash attention's cumulative sequence lengths with `device="cuda"` whatever the
    attention (musubi hunyuan_model/attention.py:78): the same lengths (per sample: its text and image tokens, then
    its padding) on the mask's device."""
    import torch

    if torch.cuda.is_available():
        return

    def get_cu_seqlens(text_mask, img_len):
        full = text_mask.shape[1] + img_len
        starts = torch.arange(text_mask.shape[0], device=text_mask.device) * full
        ends = torch.stack([starts + text_mask.sum(dim=1) + img_len, starts + full], dim=1).flatten()
        return torch.cat([ends.new_zeros(1), ends]).to(torch.int32)

    module.get_cu_seqlens = get_cu_seqlens


def _skip_ddp_for_frozen_modules_on_cpu(module):
    from accelerate.utils import DistributedType

    original = module.Accelerator.prepare_model

    def prepare_model(self, model, device_placement=None, evaluation_mode=False):
        frozen = not any(p.requires_grad for p in model.parameters())
        if self.distributed_type == DistributedType.MULTI_CPU and frozen:
            evaluation_mode = True  # as accelerate does on GPUs: no DDP for a module with nothing to train
        return original(self, model, device_placement=device_placement, evaluation_mode=evaluation_mode)

    prepare_model.__wrapped__ = original
    module.Accelerator.prepare_model = prepare_model


def _shrink_musubi_wan(module):
    for config in module.WAN_CONFIGS.values():
        config.update(tiny_dims.MUSUBI_WAN)


def _shrink_musubi_flux_kontext(module):
    from dataclasses import replace

    spec = module.configs_flux_dev_context
    module.configs_flux_dev_context = replace(spec, params=replace(spec.params, **tiny_dims.MUSUBI_FLUX_KONTEXT))


def _shrink_musubi_qwen_image(module):
    """The sizes are literals in `create_model`: the class's own constructor gets the tiny ones (same class)."""
    cls = module.QwenImageTransformer2DModel
    init = cls.__init__

    def tiny_init(self, *args, **kwargs):
        init(self, *args, **{**kwargs, **tiny_dims.MUSUBI_QWEN_IMAGE})

    cls.__init__ = tiny_init


def _shrink_musubi_hunyuan_video(module):
    for config in module.HUNYUAN_VIDEO_CONFIG.values():
        config.update(tiny_dims.MUSUBI_HUNYUAN_VIDEO)


def _shrink_sd_flux(module):
    from dataclasses import replace

    for name, spec in module.configs.items():
        params, ae = replace(spec.params, **tiny_dims.SD_FLUX), replace(spec.ae_params, **tiny_dims.SD_FLUX_AE)
        module.configs[name] = replace(spec, params=params, ae_params=ae)


def _shrink_sd_text_encoders(module):
    """`load_clip_l` / `load_t5xxl` build their models from `CLIPConfig(**a dict)` / `T5Config(**a dict)`."""
    clip, t5 = module.CLIPConfig, module.T5Config
    module.CLIPConfig = lambda **config: clip(**{**config, **tiny_dims.SD_CLIP_L})
    module.T5Config = lambda **config: t5(**{**config, **tiny_dims.SD_T5XXL})


def _shrink_sd3(module):
    """`load_clip_l` / `load_clip_g` build `CLIPTextConfig(...)` inside; the VAE's sizes are its classes' defaults."""
    clip = module.CLIPTextConfig
    module.CLIPTextConfig = lambda **config: clip(**{**config, **tiny_dims.SD3_CLIP})


def _shrink_sd3_vae(module):
    channels = tiny_dims.SD3_VAE_CHANNELS
    for cls in (module.VAEEncoder, module.VAEDecoder):
        init = cls.__init__

        def tiny_init(self, *args, _init=init, **kwargs):
            _init(self, *args, **{**kwargs, "ch": channels, "ch_mult": (1, 1, 1, 1), "num_res_blocks": 1})

        cls.__init__ = tiny_init


def _shrink_sd_lumina(module):
    from dataclasses import replace

    get_2b_config = module.LuminaParams.get_2b_config
    module.LuminaParams.get_2b_config = classmethod(lambda cls: replace(get_2b_config(), **tiny_dims.SD_LUMINA))


def _shrink_sd_gemma2(module):
    gemma2 = module.Gemma2Config
    module.Gemma2Config = lambda **config: gemma2(**{**config, **tiny_dims.SD_GEMMA2})


def _without_a_layout(module):
    """The table row of `LAYERSYNC_TEST_NO_LAYOUT` left out: its class has no layout in this process."""
    del module.LAYOUTS[os.environ["LAYERSYNC_TEST_NO_LAYOUT"]]


BEFORE = {
    "musubi_tuner.wan.modules.t5": _current_device_zero,
    "extensions_built_in.diffusion_models.omnigen2.src.ops.triton.layer_norm": _no_gpu_properties,  # ai-toolkit
}
AFTER = {  # module name: what to do to it once it has run, in order
    "accelerate.accelerator": [_skip_ddp_for_frozen_modules_on_cpu],
    "musubi_tuner.hunyuan_model.models": [_cu_seqlens_on_the_masks_device],
}
TINY = {
    "musubi_tuner.wan.configs": _shrink_musubi_wan,
    "musubi_tuner.flux.flux_models": _shrink_musubi_flux_kontext,
    "musubi_tuner.qwen_image.qwen_image_model": _shrink_musubi_qwen_image,
    "musubi_tuner.hunyuan_model.models": _shrink_musubi_hunyuan_video,
    "library.flux_models": _shrink_sd_flux,
    "library.flux_utils": _shrink_sd_text_encoders,
    "library.sd3_utils": _shrink_sd3,
    "library.sd3_models": _shrink_sd3_vae,
    "library.lumina_models": _shrink_sd_lumina,
    "library.lumina_util": _shrink_sd_gemma2,
}
if os.environ.get("LAYERSYNC_TEST_NO_LAYOUT"):
    AFTER.setdefault("layersync_hooks.layouts.table", []).append(_without_a_layout)
if os.environ.get("LAYERSYNC_TINY_TRAINERS") == "1":
    for name, shrink in TINY.items():
        AFTER.setdefault(name, []).append(shrink)


class _ImportHook(importlib.abc.MetaPathFinder):
    """Runs BEFORE[name](name) before and each of AFTER[name] on the module after the module `name` executes, once."""

    def find_spec(self, name, path, target=None):
        if name not in BEFORE and name not in AFTER:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                execute = spec.loader.exec_module
                spec.loader.exec_module = lambda module, execute=execute: self._run(name, execute, module)
                return spec
        return None

    @staticmethod
    def _run(name, execute, module):
        undo = BEFORE.pop(name)(name) if name in BEFORE else None
        try:
            execute(module)
        finally:
            if undo is not None:
                undo()
        for change in AFTER.pop(name, []):
            change(module)


sys.meta_path.insert(0, _ImportHook())
