"""`layersync-hooks probe`: the similarity math, the pair heuristic, input builders and the report files."""

import importlib.util
import json
import math

import pytest
import torch
from helpers import save_tiny
from safetensors.torch import load_file
from tiny_models import TINY, build, prediction

from layersync_hooks import Activation, LayerSync, token_similarity
from layersync_hooks.commands.cli import main
from layersync_hooks.errors import UnknownModelError
from layersync_hooks.pairs import candidate_pairs
from layersync_hooks.probe import (
    INPUT_BUILDERS,
    ProbeSize,
    cosine_matrix,
    forward_inputs,
    linear_cka_matrix,
    probe,
    recommend,
    save_forward_kwargs,
)

SIZE = ProbeSize(batch=2, height=8, width=8, frames=2, text_tokens=6)
WITH_BUILDER = [name for name, (class_name, _, _) in TINY.items() if class_name in INPUT_BUILDERS]


def test_cosine_matrix_is_layersyncs_similarity():
    """Entry (i, j) is `token_similarity` of blocks i and j over the tokens both masks keep; NaN across widths."""
    torch.manual_seed(0)
    hidden = [torch.randn(2, 6, 8) for _ in range(3)]
    masks = [None, torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool), None]
    matrix = cosine_matrix([Activation(h, m) for h, m in zip(hidden, masks)] + [Activation(torch.randn(2, 6, 4), None)])
    for i in range(3):
        for j in range(3):
            mask = masks[i] if masks[j] is None else masks[j] if masks[i] is None else masks[i] & masks[j]
            assert matrix[i, j] == pytest.approx(token_similarity(hidden[i], hidden[j], mask=mask).item(), abs=1e-6)
    assert matrix[:3, 3].isnan().all() and matrix[3, 3] == pytest.approx(1.0)


def test_linear_cka_invariances():
    """CKA is 1 for a rotated and scaled copy, symmetric, and lower for unrelated tokens."""
    torch.manual_seed(0)
    x = torch.randn(2, 40, 16)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16))
    matrix = linear_cka_matrix(
        [Activation(x, None), Activation(3 * x @ rotation, None), Activation(torch.randn(2, 40, 16), None)],
        max_tokens=64,
    )
    assert matrix[0, 1] == pytest.approx(1.0, abs=1e-5) and torch.equal(matrix, matrix.T)
    assert matrix[0, 2] < 0.6


@pytest.mark.parametrize("blocks,best", [(28, (8, 16)), (57, (16, 32)), (12, (3, 6)), (5, (1, 2)), (4, (1, 2))])
def test_recommendation_follows_the_paper_heuristic(blocks, best):
    """The paper's 8 <- 16 of 28 proportions first; every pair keeps its teacher out of the last 20%, with a gap."""
    for student, teacher in candidate_pairs(blocks):
        assert student < teacher <= max(int(0.8 * blocks), 2) and teacher - student >= round(0.25 * blocks)
    torch.manual_seed(0)
    cosine = torch.rand(blocks, blocks)
    found = recommend(cosine, torch.rand(blocks, blocks))
    assert (found[0].student, found[0].teacher) == best and len(found) == min(3, len(candidate_pairs(blocks)))
    assert found[0].cosine == pytest.approx(float(cosine[best[0] - 1, best[1] - 1]))
    aligned = recommend(torch.ones(blocks, blocks), torch.ones(blocks, blocks))[0]
    assert any("already nearly aligned" in reason for reason in aligned.reasons)


def test_blocks_of_different_shapes_are_never_paired():
    """Blocks whose tokens differ in count or width (UNet levels) get NaN and are not recommended together."""
    torch.manual_seed(0)
    activations = [Activation(torch.randn(2, 16, 8), None) for _ in range(3)]
    activations += [Activation(torch.randn(2, 4, 8), None) for _ in range(3)]
    cosine, cka = cosine_matrix(activations), linear_cka_matrix(activations)
    assert cosine[1, 3].isnan() and cka[1, 3].isnan() and not cka[3, 5].isnan()
    found = recommend(cosine, cka)
    assert (found[0].student, found[0].teacher) == (1, 3)  # the paper's pair here, 2 <- 4, mixes shapes
    assert all(not math.isnan(r.cosine) for r in found)


@pytest.mark.parametrize("family", WITH_BUILDER)
def test_input_builders_run_every_family(family):
    """Inputs built from the config run the model; noise levels change the noisy latents only."""
    model, _ = build(family)
    low, high = forward_inputs(model, SIZE, 0.25), forward_inputs(model, SIZE, 0.75)
    assert prediction(model, low).isfinite().all()
    assert not torch.equal(low["hidden_states"], high["hidden_states"])


def test_no_builder_names_the_class_and_the_fix():
    """A class without a builder is an error naming it and the `--inputs` route."""
    with pytest.raises(UnknownModelError, match=r"no input builder for `Linear`.*save_forward_kwargs.*--inputs"):
        forward_inputs(torch.nn.Linear(2, 2), SIZE, 0.5)


def test_probe_cosine_equals_layersync_on_target_tokens():
    """The probe's (student, teacher) cosine is LayerSync's similarity for that pair: image tokens only."""
    model, _ = build("Flux")
    inputs = forward_inputs(model, SIZE, 0.5)
    result = probe(model, [(0.5, inputs)], progress=False)
    assert result.cosine.shape == result.cka.shape == (1, 5, 5)
    layersync = LayerSync(model, student_block=2, teacher_block=4)
    prediction(model, inputs)
    layersync.loss()
    assert result.cosine[0, 1, 3].item() == pytest.approx(layersync.metrics()["layersync_similarity"], abs=1e-6)
    assert all(p.requires_grad for p in model.parameters()) and model.training  # restored after probing


def test_probe_command_writes_the_report(tmp_path, capsys):
    """`layersync-hooks probe FOLDER` prints the pair with reasons and writes safetensors, JSON and a PNG."""
    folder = save_tiny(tmp_path / "pixart", "PixArt")
    out = tmp_path / "report"
    assert (
        main(
            [
                "probe",
                str(folder),
                "--output-dir",
                str(out),
                "--height",
                "8",
                "--width",
                "8",
                "--noise-levels",
                "0.3",
                "0.7",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    report = json.loads((out / "similarity.json").read_text())
    best = report["recommended"][0]
    assert f"Recommended: student {best['student']} <- teacher {best['teacher']}" in printed
    assert all(f"  - {reason}" in printed for reason in best["reasons"])
    tensors = load_file(str(out / "similarity.safetensors"))
    assert tensors["cosine_per_level"].shape == tensors["cka_per_level"].shape == (2, 4, 4)
    assert torch.allclose(tensors["cosine"], tensors["cosine_per_level"].mean(0))
    assert report["noise_levels"] == [0.3, 0.7] and len(report["cosine"]) == 4
    assert (out / "similarity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_probe_command_inputs_file_and_random_weights(tmp_path, capsys):
    """A config alone probes random weights with a warning; `--inputs` runs saved forward kwargs as given."""
    folder = save_tiny(tmp_path / "pixart", "PixArt", weights=False)
    kwargs = TINY["PixArt"][2](2)
    save_forward_kwargs(tmp_path / "inputs.safetensors", kwargs)
    with pytest.warns(UserWarning, match="randomly initialised PixArtTransformer2DModel"):
        assert (
            main(
                [
                    "probe",
                    str(folder / "config.json"),
                    "--inputs",
                    str(tmp_path / "inputs.safetensors"),
                    "--output-dir",
                    str(tmp_path / "out"),
                ]
            )
            == 0
        )
    assert json.loads((tmp_path / "out" / "similarity.json").read_text())["noise_levels"] == [None]
    (tmp_path / "bad.json").write_text(json.dumps({"num_layers": 2}))
    assert main(["probe", str(tmp_path / "bad.json")]) == 2
    assert "has no `_class_name`: the probe needs the config.json of a diffusers model" in capsys.readouterr().err
    assert main(["probe", str(tmp_path / "missing")]) == 2
    assert "No diffusers model config" in capsys.readouterr().err
    (tmp_path / "scheduler.json").write_text(json.dumps({"_class_name": "DDPMScheduler"}))
    assert main(["probe", str(tmp_path / "scheduler.json")]) == 2
    assert "names 'DDPMScheduler', which is not a model class" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text("{")
    assert main(["probe", str(tmp_path / "broken.json")]) == 2
    assert "is not valid JSON" in capsys.readouterr().err


def test_probe_command_checks_before_any_forward(tmp_path, capsys, monkeypatch):
    """Bad noise levels and counts are argparse errors; a missing matplotlib fails before the model is loaded."""
    with pytest.raises(SystemExit):
        main(["probe", str(tmp_path / "never-read"), "--noise-levels", "0.5", "1.5"])
    assert "argument --noise-levels: must lie strictly between 0 and 1, got '1.5'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["probe", str(tmp_path / "never-read"), "--top", "0"])
    assert "argument --top: must be a positive integer, got '0'" in capsys.readouterr().err
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *args: None if name == "matplotlib" else find_spec(name, *args)
    )
    assert main(["probe", str(tmp_path / "never-read")]) == 2
    assert "heatmap needs matplotlib" in capsys.readouterr().err
