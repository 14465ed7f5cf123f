"""The benchmark scripts run end to end at the smallest settings. Smoke runs: they check the report, never a time."""

import json

import pytest
from helpers import script


def test_overhead_json_reports_the_headline(capsys):
    """`overhead.py --json` prints one object: ratios, extra peak bytes, the student activation size, the machine."""
    overhead = script("overhead")
    overhead.main(["--cases", "dit-tiny", "--rounds", "2", "--warmup", "0", "--threads", "1", "--json"])
    result = json.loads(capsys.readouterr().out)
    for key in ("step_time_ratio", "paused_ratio", "capture_all_ratio", "extra_peak_bytes", "student_activation_bytes"):
        assert isinstance(result[key], (int, float)), key
    assert result["student_activation_bytes"] == 4 * 64 * 64 * 4  # batch 4, 64 tokens, width 64, float32
    assert result["cases"][0]["peak_bytes"]["baseline"] > 0
    assert {"cpu", "cores", "torch", "loadavg"} <= set(result["machine"])


@pytest.mark.parametrize("case", ["dit-tiny", "flux", "sd3", "pixart", "wan"])
def test_overhead_cases_align_target_tokens(case):
    """Each case's inputs are what its pipeline passes, so LayerSync selects tokens (Flux reads them from img_ids)."""
    from layersync_hooks import LayerSync

    cases = script("cases")
    model, inputs, _ = cases.build(case, batch=1)
    layersync = LayerSync(model.train(), student_block=1, teacher_block=2)
    model(**inputs)
    layersync.loss()
    assert 0 < abs(layersync.metrics()["layersync_similarity"]) <= 1  # raises if no token was selected


@pytest.mark.slow
def test_convergence_run_reports_every_metric(tmp_path):
    """One tiny baseline and LayerSync run each give the flow loss, per-block probes, FD and class coverage."""
    convergence = script("convergence")
    args = convergence.parse(
        [
            "--steps",
            "2",
            "--eval-every",
            "2",
            "--blocks",
            "2",
            "--width",
            "32",
            "--student",
            "1",
            "--teacher",
            "2",
            "--seeds",
            "0",
            "--samples",
            "40",
            "--sample-steps",
            "2",
        ]
    )
    features = script("digits").mlp().eval()  # untrained: this checks the plumbing, not the numbers
    runs = [convergence.run(args, 0, arm, features) for arm in (False, True)]
    point = runs[1]["checkpoints"][-1]
    assert len(point["probe"]) == 2 and set(point["heldout_loss_by_t"]) == set(convergence.NOISE_LEVELS)
    assert {"fd", "class_accuracy", "coverage", "layersync_similarity"} <= set(point)
    report = script("report")
    summary = report.summarize(runs, args)
    assert "layersync" in report.table(summary)
    report.plot(summary, tmp_path / "curves.png", args)
    assert (tmp_path / "curves.png").stat().st_size > 0


@pytest.mark.parametrize(
    "argv", [["--width", "48"], ["--eval-every", "0"], ["--samples", "5"], ["--student", "5", "--teacher", "2"]]
)
def test_convergence_refuses_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit):
        script("convergence").parse(argv)
    error = capsys.readouterr().err
    assert "must be" in error or "Need 1 <=" in error


def test_overhead_refuses_zero_rounds(capsys):
    with pytest.raises(SystemExit):
        script("overhead").main(["--cases", "dit-tiny", "--rounds", "0"])
    assert "--rounds must be >= 1" in capsys.readouterr().err


def test_demo_probes_reads_every_block_of_a_compare_run(tmp_path):
    """`demo_probes.py` probes the embedding and the 12 blocks of both runs' models and of the untrained model; a
    run that saved the untrained weights probes exactly as the untrained model (the seed rebuilds them)."""
    from layersync_hooks.commands.demo.train import build_model

    for run in ("baseline", "layersync"):
        build_model(3).save_pretrained(tmp_path / run / "model")
    result = script("demo_probes").main([str(tmp_path), "--seed", "3", "--out", str(tmp_path / "probes.json")])
    assert json.loads((tmp_path / "probes.json").read_text()) == result
    assert list(result["untrained"]) == ["embedding", *map(str, range(1, 13))]
    assert result["baseline"] == result["untrained"] == result["layersync"]
    assert all(0 <= value <= 1 for value in result["untrained"].values())
