"""configs/: the accelerate launch configs load with accelerate's own loader, name only options `accelerate launch`
knows, say when to pick them, and wrap the blocks LayerSync sees; the presets there are the package's one copy,
which an installed wheel loads by name."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import yaml
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import launch_command_parser
from accelerate.utils import DeepSpeedPlugin, DistributedType
from launch import CONFIGS, ROOT
from tiny_models import build

from layersync_hooks.capture import list_blocks
from layersync_hooks.config import PRESETS, presets
from layersync_hooks.layouts import layout_for

LAUNCH_CONFIGS = sorted(CONFIGS.glob("*.yaml"))
ENGINE = {
    "one_gpu.yaml": DistributedType.NO,
    "ddp.yaml": DistributedType.MULTI_GPU,
    "fsdp2.yaml": DistributedType.FSDP,
    "fsdp1.yaml": DistributedType.FSDP,
    "deepspeed_zero2.yaml": DistributedType.DEEPSPEED,
    "deepspeed_zero3.yaml": DistributedType.DEEPSPEED,
    "two_nodes.yaml": DistributedType.FSDP,
}
LAUNCH_FLAGS = {action.dest for action in launch_command_parser()._actions}


def test_every_engine_has_a_config():
    """configs/ holds a launch config for one GPU, DDP, FSDP2, FSDP1, ZeRO-2, ZeRO-3 and two machines."""
    assert [path.name for path in LAUNCH_CONFIGS] == sorted(ENGINE)


@pytest.mark.parametrize("path", LAUNCH_CONFIGS, ids=lambda p: p.stem)
def test_config_loads_and_says_when_to_pick_it(path):
    """accelerate's loader reads it as the engine its name says; its first lines say when to pick it; every
    fsdp_config / deepspeed_config key is an `accelerate launch` option (a misspelt one is silently ignored)."""
    config = load_config_from_file(str(path))
    assert config.distributed_type == ENGINE[path.name]
    header = "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))
    assert "Pick it" in header, header
    for key in {**(config.fsdp_config or {}), **(config.deepspeed_config or {})}:
        assert key in LAUNCH_FLAGS, f"{path.name}: {key} is not an `accelerate launch` option"
    if config.distributed_type == DistributedType.FSDP:
        assert config.fsdp_config["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"
        assert config.fsdp_config["fsdp_cpu_ram_efficient_loading"] is False


def test_fsdp_configs_wrap_the_blocks_layersync_addresses():
    """The FSDP configs wrap Flux.1's block classes: the classes of every block of its layout, both stacks."""
    model, _ = build("Flux")
    classes = {type(block.module).__name__ for block in list_blocks(model, layout_for(model))}
    for name in ("fsdp2.yaml", "fsdp1.yaml", "two_nodes.yaml"):
        wrapped = yaml.safe_load((CONFIGS / name).read_text())["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"]
        assert set(wrapped.split(",")) == classes == {"FluxTransformerBlock", "FluxSingleTransformerBlock"}


def test_zero3_config_names_a_deepspeed_json_accelerate_accepts():
    """deepspeed_zero3.yaml points to deepspeed_zero3.json from the repository root; accelerate reads it as ZeRO-3,
    and the YAML sets no precision (accelerate refuses one beside a DeepSpeed JSON: pass --mixed_precision)."""
    config = load_config_from_file(str(CONFIGS / "deepspeed_zero3.yaml"))
    json_path = ROOT / config.deepspeed_config["deepspeed_config_file"]
    assert json_path.is_file() and config.mixed_precision is None
    plugin = DeepSpeedPlugin(hf_ds_config=str(json_path))
    zero = plugin.deepspeed_config["zero_optimization"]
    assert plugin.zero_stage == 3 and zero["stage3_gather_16bit_weights_on_model_save"]  # get_state_dict needs it


def test_two_nodes_template():
    """two_nodes.yaml: 2 machines, the main one's address and port, rank 0 (each machine passes its own)."""
    config = load_config_from_file(str(CONFIGS / "two_nodes.yaml"))
    assert (config.num_machines, config.machine_rank, config.main_process_port) == (2, 0, 29500)
    assert config.main_process_ip and config.num_processes % config.num_machines == 0


def test_presets_are_one_copy_shown_in_configs():
    """configs/presets is a link to the package's presets (layersync_hooks/presets), not a second copy."""
    link = CONFIGS / "presets"
    assert link.is_symlink() and os.readlink(link) == "../layersync_hooks/presets"
    assert link.resolve() == PRESETS.resolve()
    assert sorted(path.stem for path in link.glob("*.json")) == presets()


@pytest.mark.slow
def test_an_installed_wheel_loads_a_preset_by_name(tmp_path):
    """The wheel carries the presets: installed (unpacked by pip into a folder of its own, imported from there),
    `LayerSync.from_config(model, "flux")` reads flux.json from it."""
    # Offline where setuptools is installed; otherwise pip fetches the build backend.
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    wheel = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-w", str(tmp_path / "dist"), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert wheel.returncode == 0, wheel.stdout[-2000:] + wheel.stderr[-2000:]
    (built,) = (tmp_path / "dist").glob("layersync_hooks-*.whl")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(tmp_path / "site"),
         str(built)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-2000:]
    check = (
        "import json, layersync_hooks, diffusers\n"
        "from layersync_hooks import LayerSync\n"
        "model = diffusers.FluxTransformer2DModel(num_layers=19, num_single_layers=38, attention_head_dim=8,"
        " num_attention_heads=1, joint_attention_dim=8, pooled_projection_dim=8, in_channels=4,"
        " axes_dims_rope=[2, 2, 4])\n"
        "layersync = LayerSync.from_config(model, 'flux')\n"
        "print(json.dumps([layersync_hooks.__file__, layersync.state_dict()['pairs']]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    done = subprocess.run([sys.executable, "-c", check], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    where, pairs = json.loads(done.stdout.splitlines()[-1])
    assert where.startswith(str(tmp_path / "site"))
    assert pairs == [["transformer_blocks.15", "single_transformer_blocks.12"]]
