"""`nassearch report`: the slide picture of a search, from a hand-written experiment."""

from __future__ import annotations

import numpy as np
from PIL import Image
from recorded import make_experiment, record
from search_configs import search_config

from nassearch.cli import EXIT_BAD_INPUT, main
from nassearch.jsonl import JsonlWriter
from nassearch.report import pareto_front
from nassearch.search_spaces import get_space, named_genotypes


def test_pareto_front_keeps_what_nothing_beats():
    points = [(1.0, 0.1), (2.0, 0.3), (1.5, 0.05), (3.0, 0.25), (4.0, 0.4), (2.0, 0.2)]
    assert pareto_front(points) == [0, 1, 4]


def test_report_draws_every_panel(tmp_path, capsys):
    space = get_space("nasfpn")
    rng = np.random.default_rng(0)
    records = [record(named_genotypes("nasfpn")["FPN"], 0.2, "baseline-FPN", baseline=True)]
    for i in range(12):
        g = space.sample(rng)
        records.append(record(g, 0.1 + 0.02 * i, f"t{i + 1}", params=1000 + 100 * i))
    records[3]["status"] = "error"
    exp = make_experiment(tmp_path, records, search_config(tmp_path))
    with JsonlWriter(exp / "controller.jsonl") as writer:
        for u in range(1, 5):
            writer.append(
                {
                    "stage": None,
                    "update": u,
                    "told": 3 * u,
                    "batch_size": 3,
                    "batch_reward_mean": 0.1 * u,
                    "batch_reward_max": 0.12 * u,
                    "best_reward": 0.5,
                }
            )
    assert main(["report", str(exp), "--cost", "params"]) == 0
    assert "report.png" in capsys.readouterr().out
    image = Image.open(exp / "report.png")
    assert image.size == (1600, 950)
    # Not a blank page: the panels and drawings put many colours on it.
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 500
    md = (exp / "report.md").read_text()
    assert "12 architectures evaluated, 11 successful" in md
    assert "rose over 4 updates" in md
    # Rewards rise with parameters here, so every successful architecture is on the front.
    assert "Pareto front over parameters (M) (11 architectures)" in md


def test_report_of_an_experiment_without_success_is_one_line(tmp_path, capsys):
    g = get_space("nasfpn").sample(np.random.default_rng(1))
    exp = make_experiment(tmp_path, [record(g, None, "t1", status="nan")], search_config(tmp_path))
    assert main(["report", str(exp)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no successful searched architecture" in err
