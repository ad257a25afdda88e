"""NAS-FCOS's progressive search in one `nassearch run`: FPN first, then the head on the best FPN."""

from __future__ import annotations

import pytest
from search_configs import search_config, write

from nassearch.cli import EXIT_BAD_INPUT, main
from nassearch.records import read_records


def progressive_config(tmp_path, **search) -> dict:
    cfg = search_config(
        tmp_path,
        space="nasfcos",
        progressive=True,
        num_architectures=2,
        head_architectures=2,
        baselines=[],
        **search,
    )
    # GroupNorm(32) in the FCOS towers needs >= 64 channels on the 1x1 P7 of 64-px images.
    cfg["model"] = {
        "type": "fcos",
        "backbone": {"depth": 10, "frozen_stages": -1, "norm_eval": False},
        "neck": {"out_channels": 64},
        "num_convs": 1,
        "feat_channels": 64,
    }
    return cfg


@pytest.mark.slow
def test_progressive_search_fixes_the_best_fpn_then_searches_heads(ray_session, tmp_path, capsys):
    path = write(tmp_path, progressive_config(tmp_path))
    assert main(["run", path]) == 0
    out = capsys.readouterr().out
    exp = tmp_path / "runs" / "tiny-search"
    records = read_records(exp / "architectures.jsonl")
    assert [r.stage for r in records] == ["fpn", "fpn", "head", "head"]
    assert {r.status for r in records} == {"ok"}
    fpn_stage, head_stage = records[:2], records[2:]
    assert all(r.genotype["head"] is None for r in fpn_stage)  # stock FCOS head
    best = max(fpn_stage, key=lambda r: (r.reward, -r.params))
    assert all(r.genotype["fpn"] == best.genotype["fpn"] for r in head_stage)
    assert all(r.genotype["head"] is not None for r in head_stage)
    assert "stage 2: searching the head" in out and "4 searched architectures" in out
    assert (exp / "tune-fpn").is_dir() and (exp / "tune-head").is_dir()
    assert (exp / "tensorboard" / "fpn").is_dir() and (exp / "tensorboard" / "head").is_dir()

    # Resuming a finished progressive search trains nothing and writes nothing.
    before = (exp / "architectures.jsonl").read_text()
    assert main(["run", str(exp), "--resume"]) == 0
    assert (exp / "architectures.jsonl").read_text() == before


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (
            {"space": "nasfpn"},
            "search.progressive: NAS-FCOS's progressive search needs space nasfcos",
        ),
        ({"space_options": {"part": "fpn"}}, "search.space_options: a progressive search sets"),
        ({"progressive": False}, "search.head_architectures: only used with search.progressive"),
    ],
)
def test_progressive_settings_are_checked(ray_session, tmp_path, capsys, change, needle):
    cfg = progressive_config(tmp_path)
    cfg["search"].update(change)
    assert main(["run", write(tmp_path, cfg)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
    assert not (tmp_path / "runs" / "tiny-search").exists()
