"""The shrunk sizes of the trainers' models: one place, read by `sitecustomize` (which shrinks the trainers' config
tables from outside when `LAYERSYNC_TINY_TRAINERS=1`) and by `tiny_files` (which writes weights of these sizes)."""

# musubi-tuner's Wan table (`musubi_tuner.wan.configs.WAN_CONFIGS`): 6 blocks of width 48, heads of 24 (the smallest
# head size whose three rotary parts are all non-empty), text padded to 32 tokens instead of 512.
MUSUBI_WAN = {"dim": 48, "ffn_dim": 96, "num_heads": 2, "num_layers": 6, "text_len": 32}
