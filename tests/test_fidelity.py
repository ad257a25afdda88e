"""`nassearch fidelity`: input checks, the reference recipe, and a real study of a tiny search."""

from __future__ import annotations

import json

import numpy as np
import pytest
from recorded import make_experiment, record
from search_configs import search_config, write

from nassearch.cli import EXIT_BAD_INPUT, main
from nassearch.config import validate_config
from nassearch.fidelity.study import longer_reference
from nassearch.search_spaces import get_space


def genotypes(n):
    space = get_space("nasfpn")
    found = {}
    for seed in range(50):
        g = space.sample(np.random.default_rng(seed))
        found.setdefault(g.key(), g)
    return list(found.values())[:n]


def test_longer_reference_scales_epochs_and_input():
    cfg = validate_config(
        {
            "input": {"mode": "square", "size": 64, "size_divisor": 32},
            "train": {"epochs": 3, "max_iters": 10},
            "proxy": {"time_limit_s": 60, "repeats": 2},
        }
    )
    ref = longer_reference(cfg)
    assert ref.train.epochs == 9 and ref.train.max_iters == 30
    assert ref.input.size == 96  # 1.25 x 64 = 80, rounded up to a multiple of 32
    assert ref.proxy.time_limit_s is None and ref.proxy.repeats == 1
    assert cfg.train.epochs == 3  # the search config is untouched


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "needs at least 3 successful architectures; 2 in the record"),
        (["--reference", "nowhere.yaml"], "--reference nowhere.yaml: neither the recipe"),
        (["--seeds", "0"], "--seeds: must be an integer of at least 1, got 0"),
        (["--reference-metric", "ap75"], "--reference-metric: 'ap75'"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, args, needle):
    a, b = genotypes(2)
    records = [record(a, 0.3, "t1"), record(b, 0.2, "t2"), record(b, None, "t3", status="nan")]
    exp = make_experiment(tmp_path, records, search_config(tmp_path))
    assert main(["fidelity", str(exp), *args]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err
    assert not (exp / "fidelity").exists()  # nothing written


def test_a_reference_config_of_another_detector_is_refused(tmp_path, capsys):
    records = [record(g, 0.1 * i, f"t{i}") for i, g in enumerate(genotypes(3), start=1)]
    exp = make_experiment(tmp_path, records, search_config(tmp_path))
    other = search_config(tmp_path)
    other["model"]["type"] = "fcos"
    assert main(["fidelity", str(exp), "--reference", write(tmp_path, other)]) == EXIT_BAD_INPUT
    assert "model.type fcos, but the search trained retinanet" in capsys.readouterr().err


@pytest.mark.slow
def test_fidelity_of_a_tiny_search(ray_session, tmp_path, capsys, monkeypatch):
    cfg = search_config(tmp_path, num_architectures=4)
    cfg["proxy"]["reward"] = "neg_loss"
    assert main(["run", write(tmp_path, cfg)]) == 0
    exp = tmp_path / "runs" / "tiny-search"
    monkeypatch.chdir(tmp_path)  # a relative experiment folder, as users type it
    args = ["fidelity", "runs/tiny-search", "--top", "2", "--random", "1", "--seeds", "1"]
    assert main([*args, "--reference-metric", "reward"]) == 0
    out = capsys.readouterr().out
    assert "3 architectures (2 best, 1 random), 1 more proxy seed(s) each" in out
    assert "[6/6]" in out and "seed noise: ICC" in out and "Kendall tau" in out
    study = exp / "fidelity"
    result = json.loads((study / "fidelity.json").read_text())
    archs = result["architectures"]
    assert [a["chosen"] for a in archs] == ["top", "top", "random"]
    assert [a["rank"] for a in archs][:2] == [1, 2]
    # A seed the search never used: seed 0 was the search's.
    assert result["new_seeds"] == [1]
    assert all(len(a["proxy_scores"]) == 1 and a["reference"] is not None for a in archs)
    assert all(len(a["recorded_scores"]) == 1 for a in archs)
    # One new seed: the noise is measured on it and the search's own score together, and says so.
    noise = result["seed_noise"]
    assert noise["architectures"] == 3 and noise["scores"] == 6
    assert result["noise_scores"].startswith("new seeds and the search's own scores")
    assert -1 <= result["mean_fidelity"]["kendall_tau"]["value"] <= 1
    assert result["mean_fidelity"]["top_k"] == 2  # the two best chosen, of three
    assert (study / "fidelity.png").stat().st_size > 10_000
    assert "| ICC(1)" in (study / "fidelity.md").read_text()
    # Resumable: a second run finds every score recorded and trains nothing.
    lines = (study / "scores.jsonl").read_text().count("\n")
    assert main(args + ["--reference-metric", "reward"]) == 0
    assert "[1/6]" not in capsys.readouterr().out
    assert (study / "scores.jsonl").read_text().count("\n") == lines == 6
