"""`layersync-hooks layouts` lists the table with real sizes; the docs carry its table; refused classes say why."""

import re
from pathlib import Path

import diffusers
import pytest
from tiny_models import REFUSED

from layersync_hooks import BlockLayout, LayerSync
from layersync_hooks.commands.cli import main
from layersync_hooks.errors import UnsupportedModelError

PAGE = (Path(__file__).parents[1] / "docs" / "supported-models.md").read_text()


@pytest.mark.slow
def test_supported_models_page_carries_the_generated_table(capsys):
    """The table between the layouts markers of docs/supported-models.md is `layersync-hooks layouts --markdown`."""
    assert main(["layouts", "--markdown"]) == 0
    generated = capsys.readouterr().out.strip()
    carried = re.search(r"<!-- layouts:start -->\n(.*?)\n<!-- layouts:end -->", PAGE, flags=re.S).group(1)
    assert carried == generated, "docs/supported-models.md is stale: paste `layersync-hooks layouts --markdown` there"


@pytest.mark.slow
def test_supported_models_page_carries_the_trainers_table(capsys):
    """The trainers table of docs/supported-models.md is `layersync-hooks layouts --trainers`: every trainer class of
    the layout table, with its trainer."""
    assert main(["layouts", "--trainers"]) == 0
    generated = capsys.readouterr().out.strip()
    carried = re.search(r"<!-- trainers:start -->\n(.*?)\n<!-- trainers:end -->", PAGE, flags=re.S).group(1)
    assert carried == generated, "docs/supported-models.md is stale: paste `layersync-hooks layouts --trainers` there"
    for trainer, name in (("musubi-tuner", "musubi_tuner.wan.modules.model.WanModel"),
                          ("kohya sd-scripts", "library.chroma_models.Chroma")):  # fmt: skip
        assert f"| {trainer} | `{name}` |" in generated


@pytest.mark.slow
def test_layouts_prints_stacks_depths_and_a_pair_for_the_real_size(capsys):
    """Real block counts of the released models (or the default config): Flux 19 + 38, SDXL's UNet 70 blocks,
    HiDream (whose default config cannot be built) 48; `families` is the command's name before 0.2."""
    assert main(["layouts"]) == 0
    out = capsys.readouterr().out
    assert re.search(
        r"FluxTransformer2DModel +Flux.1 \[dev\], \[schnell\], Kontext +depths 1\.\.57 +pair 16 <- 32 +"
        r"transformer_blocks \(19\), single_transformer_blocks \(38\)",
        out,
    )
    assert re.search(r"UNet2DConditionModel +SDXL, Kolors +depths 1\.\.70 +pair 20 <- 40", out)
    assert re.search(r"HiDreamImageTransformer2DModel +HiDream-I1 +depths 1\.\.48", out)
    assert re.search(r"OvisImageTransformer2DModel +default config +depths 1\.\.33", out)
    assert "Cosmos3OmniTransformer" in out and "not supported: its layers run one packed" in out
    assert main(["families"]) == 0 and capsys.readouterr().out == out


@pytest.mark.parametrize(
    "class_name,reason",
    [
        ("Cosmos3OmniTransformer", "no batch axis"),
        ("AnyFlowFARTransformer3DModel", "FlexAttention"),
        ("StableCascadeUNet", r"run several times .* \(1, 1, 2, 2\)"),
    ],
)
def test_refused_classes_say_why_at_attach_time(class_name, reason):
    """A class LayerSync cannot align raises UnsupportedModelError with the reason; `layout=` still overrides."""
    model = getattr(diffusers, class_name)(**REFUSED[class_name])
    with pytest.raises(UnsupportedModelError, match=rf"cannot align the image tokens of `{class_name}`: .*{reason}"):
        LayerSync(model, student_block=1, teacher_block=2)
    stack = {"Cosmos3OmniTransformer": "layers", "AnyFlowFARTransformer3DModel": "blocks"}.get(
        class_name, "up_blocks.0"
    )
    LayerSync(model, student_block=1, teacher_block=2, layout=BlockLayout(stacks=(stack,))).remove()


@pytest.mark.parametrize(
    "class_name,classes",
    [
        ("FluxTransformer2DModel", "FluxTransformerBlock,FluxSingleTransformerBlock"),
        ("LTXVideoTransformer3DModel", "LTXVideoTransformerBlock"),  # no `_no_split_modules`: FSDP needs the name
        ("UNet2DConditionModel", "BasicTransformerBlock"),
    ],
)
def test_fsdp_wrap_prints_the_block_classes(class_name, classes, capsys):
    """`layouts --fsdp-wrap CLASS` prints what accelerate's `fsdp_transformer_layer_cls_to_wrap` takes: the classes
    of the layout's blocks, in depth order, each once; an unknown class is a usage error pointing to Python."""
    assert main(["layouts", "--fsdp-wrap", class_name]) == 0
    assert capsys.readouterr().out.strip() == classes
    assert main(["layouts", "--fsdp-wrap", "NoSuchModel"]) == 2
    assert "block_classes(model)" in capsys.readouterr().err
