"""`proxy.repeats` and `search.reevaluate_top` in a real (tiny) search, resumed once."""

from __future__ import annotations

import pytest
from search_configs import search_config, write

from nassearch.cli import main
from nassearch.jsonl import read_jsonl
from nassearch.ranking import rank_records, read_reevaluations
from nassearch.records import read_records


@pytest.mark.slow
def test_repeats_and_reevaluation_are_recorded_and_rank_the_search(ray_session, tmp_path, capsys):
    cfg = search_config(tmp_path, reevaluate_top={"k": 2, "seeds": 1})
    cfg["proxy"].update(reward="neg_loss", repeats=2)
    path = write(tmp_path, cfg)
    assert main(["run", path]) == 0
    out = capsys.readouterr().out
    exp = tmp_path / "runs" / "tiny-search"
    records = read_records(exp / "architectures.jsonl")
    assert len(records) == 4 and {r.status for r in records} == {"ok"}
    for r in records:  # every score kept, the reward their mean
        assert len(r.scores) == 2 and r.scores[0] != r.scores[1]
        assert r.reward == pytest.approx(sum(r.scores) / 2)
        assert r.reward_std > 0
    lines = read_jsonl(exp / "reevaluation.jsonl")
    best_two = {a.key for a in rank_records(records)[:2]}
    # The seeds continue after the repeats' (seed 0 and 1): seed 2 for each of the best two.
    assert {(line["key"], line["seed"]) for line in lines} == {(k, 2) for k in best_two}
    assert "re-evaluating the best 2 with 1 more seed(s) each: 2 runs" in out
    ranked = rank_records(records, read_reevaluations(exp / "reevaluation.jsonl"))
    assert {a.key for a in ranked[:2]} == best_two and all(len(a.scores) == 3 for a in ranked[:2])
    assert f"#1        {ranked[0].key}" in out and "(n=3)" in out
    # A resumed, finished search re-scores nothing.
    assert main(["run", str(exp), "--resume"]) == 0
    again = capsys.readouterr().out
    assert len(read_jsonl(exp / "reevaluation.jsonl")) == 2 and "[1/2]" not in again
