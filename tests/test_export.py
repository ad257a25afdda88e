"""`nassearch export`: ranking the records of a search and the files written for its top K."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import recorded
import yaml
from PIL import Image
from recorded import parsed, record
from search_configs import train_config

from nassearch.cli import main
from nassearch.config import load_config, save_config, validate_config
from nassearch.detectors.build import build_detector, model_genotype
from nassearch.errors import NasSearchError
from nassearch.export import (
    export_top,
    load_experiment,
    retrain_config,
)
from nassearch.jsonl import JsonlWriter
from nassearch.ranking import rank_records
from nassearch.records import RecordWriter
from nassearch.search_spaces import get_space, named_genotypes, resolve_genotype
from nassearch.show import load_genotype

RETRAIN = Path(__file__).resolve().parents[1] / "experiments" / "retrain"
NASFPN = named_genotypes("nasfpn")
NASFCOS = named_genotypes("nasfcos")


pytestmark = pytest.mark.usefixtures("one_thread")


def make_experiment(tmp_path: Path, records: list[dict], cfg: dict | None = None) -> Path:
    return recorded.make_experiment(tmp_path, records, cfg or search_config(tmp_path))


def search_config(tmp_path: Path, name: str = "exp", **search) -> dict:
    """A tiny synthetic-data search config, as `nassearch run` would save it."""
    return {
        **train_config(
            tmp_path,
            name=name,
            seed=3,
            num_train=12,
            model={"num_classes": 6},
            train={
                "optimizer": {"type": "adamw", "lr": 0.001},
                "schedule": {"type": "cosine", "warmup_iters": 7},
            },
        ),
        "search": {"space": "nasfpn", "baselines": ["FPN"], **search},
    }


def samples(space: str = "nasfpn", n: int = 4, **options) -> list:
    """Distinct legal genotypes drawn from a space with fixed seeds."""
    sp = get_space(space, **options)
    out = {}
    for seed in range(100):
        g = sp.sample(np.random.default_rng(seed))
        out.setdefault(g.key(), g)
        if len(out) == n:
            return list(out.values())
    raise AssertionError("not enough distinct samples")


@pytest.fixture
def ranked_records():
    a, b, c, d = samples()
    return [
        record(NASFPN["FPN"], 0.8, "baseline-FPN", baseline=True),
        record(a, 0.5, "t1", params=300),
        record(b, 0.5, "t2", params=200),  # ties with a: fewer parameters first
        record(c, 0.9, "t3", status="error"),  # failed: excluded whatever its reward
        record(a, 0.6, "t4", params=300),  # a again: pooled, shown by its better record
        record(d, None, "t5", status="nan"),
        record(d, 0.1, "t6"),
    ]


def trial_ids(ranked):
    return [a.record.trial_id for a in ranked]


def test_ranking_ties_duplicates_failures_and_baselines(ranked_records):
    ranked = rank_records(parsed(ranked_records))
    # a's two records pool into one architecture (mean 0.55) shown by its better record, t4.
    assert trial_ids(ranked) == ["t4", "t2", "t6"]
    assert ranked[0].scores == (0.5, 0.6) and ranked[0].mean == pytest.approx(0.55)
    with_baselines = rank_records(parsed(ranked_records), include_baselines=True)
    assert trial_ids(with_baselines) == ["baseline-FPN", "t4", "t2", "t6"]
    # Hand-written records without a key are told apart (and merged) by their genotypes.
    keyless = [{k: v for k, v in r.items() if k != "key"} for r in ranked_records]
    assert trial_ids(rank_records(parsed(keyless))) == ["t4", "t2", "t6"]


def test_reevaluation_ranks_a_lucky_draw_below_a_steady_architecture(tmp_path):
    """A single lucky score wins a plain ranking; re-scored with 3 more seeds it falls back."""
    lucky, steady, third = samples()[:3]
    records = [record(lucky, 0.9, "t1"), record(steady, 0.7, "t2"), record(third, 0.2, "t3")]
    assert trial_ids(rank_records(parsed(records))) == ["t1", "t2", "t3"]
    exp = tmp_path / "exp"
    exp.mkdir()
    save_config(validate_config({"name": "exp"}), exp / "config.yaml")
    with RecordWriter(exp / "architectures.jsonl") as writer:
        for r in parsed(records):
            writer.append(r)
    with JsonlWriter(exp / "reevaluation.jsonl") as writer:
        for genotype, scores in ((lucky, [0.3, 0.35, 0.25]), (steady, [0.68, 0.72, 0.7])):
            for seed, score in enumerate(scores, start=1):
                writer.append(
                    {"key": genotype.key(), "seed": seed, "reward": score, "status": "ok"}
                )
        writer.append({"key": steady.key(), "seed": 9, "reward": -5.0, "status": "error"})
    loaded = load_experiment(exp)
    ranked = rank_records(loaded.records, loaded.reevaluations)
    assert trial_ids(ranked) == ["t2", "t1", "t3"]  # a failed re-score is not a score
    assert ranked[0].mean == pytest.approx(0.7) and ranked[1].mean == pytest.approx(0.45)
    assert ranked[0].describe() == f"0.7000 ± {ranked[0].std:.4f} (n=4)"
    exported = export_top(exp, 2, log=None)
    assert [e.trial_id for e in exported] == ["t2", "t1"]
    arch = yaml.safe_load(exported[0].arch_path.read_text())
    assert arch["scores"] == [0.7, 0.68, 0.72, 0.7] and arch["reevaluated_scores"] == 3
    assert arch["reward_mean"] == pytest.approx(0.7)
    board = (exp / "export" / "leaderboard.md").read_text()
    assert "0.7000 ± 0.0163 (n=4)" in board and "re-evaluated" in board


def test_export_writes_loadable_files(tmp_path, ranked_records):
    exp = make_experiment(tmp_path, ranked_records)
    lines = []
    exported = export_top(exp, 2, batch_size=16, log=lines.append)
    out = exp / "export"
    assert [e.rank for e in exported] == [1, 2] and [e.trial_id for e in exported] == ["t4", "t2"]
    per_rank = [f"arch-{k}.yaml" for k in (1, 2)] + [f"retrain-{k}.yaml" for k in (1, 2)]
    per_rank += [f"arch-{k}.png" for k in (1, 2)]
    assert sorted(p.name for p in out.iterdir()) == sorted(per_rank + ["leaderboard.md"])
    by_trial = {r["trial_id"]: r for r in ranked_records}
    for e in exported:
        want = by_trial[e.trial_id]
        # arch-k.yaml: the genotype for resolve_genotype / `nassearch show`, metrics, provenance.
        assert resolve_genotype(str(e.arch_path), "nasfpn").key() == want["key"] == e.key
        assert load_genotype(str(e.arch_path))[0].key() == want["key"]
        arch = yaml.safe_load(e.arch_path.read_text())
        assert arch["genotype"] == want["genotype"] and arch["space"] == "nasfpn"
        metrics = arch["proxy_metrics"]
        assert (metrics["reward"], metrics["params"], metrics["macs"]) == (
            want["reward"],
            want["params"],
            want["macs"],
        )
        prov = arch["provenance"]
        assert prov["trial_id"] == e.trial_id and prov["controller_step"] == 1
        assert prov["candidate_id"] == want["candidate_id"]
        assert (
            prov["config_sha256"] == hashlib.sha256((exp / "config.yaml").read_bytes()).hexdigest()
        )
        assert Path(prov["experiment"]) == exp.resolve()
        with Image.open(e.image_path) as image:
            assert image.format == "PNG" and image.width > 400
    # retrain-1.yaml: the NAS-FPN paper recipe at batch 16 (lr 0.08 * 16 / 64), the genotype inline.
    text = exported[0].retrain_path.read_text()
    assert text.startswith("# Full-training config of architecture #1")
    assert "model.backbone.weights=" in text and "Learning rate 0.02 for 16 images" in text
    cfg = load_config(exported[0].retrain_path)
    assert cfg.name == "exp-retrain-1" and cfg.output_dir == str(tmp_path / "runs")
    assert (cfg.train.batch_size, cfg.train.optimizer.lr) == (16, 0.02)
    assert cfg.train.schedule.warmup_iters == 1000 and cfg.train.schedule.milestones == [30, 40]
    assert (cfg.model.neck.stacks, cfg.model.neck.out_channels, cfg.model.focal_gamma) == (
        7,
        256,
        1.5,
    )
    assert cfg.input.size == 640 and cfg.model.backbone.depth == 50
    search = load_config(exp / "config.yaml")
    assert cfg.data == search.data and cfg.model.num_classes == 6 and cfg.seed == 3
    assert isinstance(cfg.model.genotype, dict)  # inline: no file of the experiment needed
    detector = build_detector(cfg.model, cfg.model.num_classes)
    assert model_genotype(cfg.model).key() == by_trial["t4"]["key"]
    assert len(detector.neck.stacks) == 7 and detector.neck.out_channels == 256
    board = (out / "leaderboard.md").read_text()
    assert (
        "| 1 | `" + by_trial["t4"]["key"] in board and "[retrain-2.yaml](retrain-2.yaml)" in board
    )
    assert (
        "6 evaluated architectures (4 successful, of which 3 unique; 2 failed) and 1 baseline"
        in board
    )
    assert "baseline" not in board.split("|---|")[-1]  # no baseline rows unless asked
    # GMACs, and the reward of the architecture scored twice (0.5 and 0.6)
    assert "2.50" in board and "0.5500 ± 0.0707 (n=2)" in board
    assert not any("only" in line for line in lines)
    assert not list(out.glob(".*"))  # no temporary files left


def test_exported_files_build_without_the_experiment_and_without_ray(tmp_path, ranked_records):
    exp = make_experiment(tmp_path, ranked_records)
    exported = export_top(exp, 1, tmp_path / "out", recipe="search", log=None)
    shutil.rmtree(exp)
    # A fresh interpreter in which `import ray` fails: only the exported files are there to read.
    script = f"""
import sys
sys.modules["ray"] = None
from nassearch.config import load_config
from nassearch.detectors.build import build_detector, model_genotype
from nassearch.search_spaces import resolve_genotype
cfg = load_config({str(exported[0].retrain_path)!r})
build_detector(cfg.model, cfg.model.num_classes)
arch = resolve_genotype({str(exported[0].arch_path)!r}, "nasfpn")
print(model_genotype(cfg.model).key(), arch.key(), "ray" in sys.modules and sys.modules["ray"])
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [exported[0].key, exported[0].key, "None"]


def test_include_baselines_ranks_and_marks_them(tmp_path, ranked_records):
    exp = make_experiment(tmp_path, ranked_records)
    exported = export_top(exp, 1, include_baselines=True, log=None)
    assert exported[0].baseline and exported[0].key == NASFPN["FPN"].key()
    board = (exp / "export" / "leaderboard.md").read_text()
    assert "| 1 (baseline FPN) | `" + NASFPN["FPN"].key() in board
    # A baseline outside the top K is still listed, for comparison, without files.
    ranked_records[0]["reward"] = 0.05
    exp2 = make_experiment(tmp_path / "b", ranked_records)
    export_top(exp2, 1, include_baselines=True, log=None)
    board = (exp2 / "export" / "leaderboard.md").read_text()
    assert "| 1 | `" in board and "| — (baseline FPN) | `" + NASFPN["FPN"].key() in board


@pytest.mark.parametrize("recipe", ["paper", "search"])
def test_a_baseline_outside_a_reduced_space_exports_and_builds(tmp_path, recipe):
    # The quickstart searches 5-cell pyramids; its FPN baseline is the published 7-cell one.
    cfg = search_config(tmp_path, space_options={"num_cells": 5})
    five = samples(n=1, num_cells=5)[0]
    records = [record(NASFPN["FPN"], 0.4, "baseline-FPN", baseline=True), record(five, 0.3, "t1")]
    exp = make_experiment(tmp_path, records, cfg)
    exported = export_top(exp, 2, include_baselines=True, recipe=recipe, log=None)
    assert [e.key for e in exported] == [NASFPN["FPN"].key(), five.key()]
    for e in exported:
        retrain = load_config(e.retrain_path)
        assert model_genotype(retrain.model).key() == e.key
        build_detector(retrain.model, 6)


@pytest.mark.parametrize(
    ("shipped", "space", "detector"),
    [("retinanet_r50_nasfpn_7x256.yaml", "nasfpn", "retinanet"), ("fcos_r50_nasfcos.yaml", "nasfcos", "fcos")],
)  # fmt: skip
def test_paper_recipes_equal_the_shipped_retrain_configs(tmp_path, shipped, space, detector):
    cfg = search_config(tmp_path, space=space, baselines=[])
    cfg["model"]["type"] = detector
    exp = load_experiment(make_experiment(tmp_path, [record(NASFPN["FPN"], 0.1, "t1")], cfg))
    paper = NASFPN["PAPER"] if space == "nasfpn" else NASFCOS["PAPER"]
    ours, _ = retrain_config(exp, paper, 1)
    theirs = load_config(RETRAIN / shipped, ["data.root=/coco"])
    assert model_genotype(ours.model).key() == model_genotype(theirs.model).key()
    skip = {"name", "seed", "output_dir", "data", "search", "proxy"}
    a, b = (json.loads(c.model_dump_json(exclude=skip)) for c in (ours, theirs))
    for d in (a, b):
        d["model"].pop("genotype"), d["model"].pop("num_classes")
    assert a == b


def test_search_recipe_keeps_the_search_settings_and_builds(tmp_path):
    # A NAS-FCOS head search (part head) on FCOS: space options must carry through.
    cfg = search_config(tmp_path, space="nasfcos", space_options={"part": "head"}, baselines=[])
    cfg["model"].update(type="fcos", neck={"out_channels": 32}, feat_channels=32)
    heads = samples("nasfcos", 2, part="head")
    records = [record(g, 0.1 * i, f"t{i}", stage="head") for i, g in enumerate(heads)]
    exp = make_experiment(tmp_path, records, cfg)
    exported = export_top(exp, 1, recipe="search", batch_size=8, log=None)
    assert exported[0].key == heads[1].key()
    assert yaml.safe_load(exported[0].arch_path.read_text())["provenance"]["stage"] == "head"
    retrain = load_config(exported[0].retrain_path)
    search = load_config(exp / "config.yaml")
    assert "--recipe search" in exported[0].retrain_path.read_text()
    assert retrain.model.neck.type == "nasfcos" and retrain.model.backbone.depth == 10
    assert retrain.input == search.input and retrain.train.epochs == search.train.epochs
    assert (retrain.train.batch_size, retrain.train.optimizer.lr) == (8, 0.002)  # 0.001 * 8 / 4
    assert retrain.train.schedule.warmup_iters == 7 and retrain.device == "cpu"
    detector = build_detector(retrain.model, 6)
    assert model_genotype(retrain.model).key() == heads[1].key()
    assert type(detector).__name__ == "FCOS" and detector.num_classes == 6
    assert resolve_genotype(str(exported[0].arch_path), "nasfcos").key() == heads[1].key()


def test_search_recipe_trains_a_backbone_the_proxy_kept_frozen_and_random(tmp_path):
    """The quickstart's proxy caches features of a frozen random backbone; the retrain must not."""
    cfg = search_config(tmp_path)
    cfg["model"]["backbone"].update(frozen_stages=4, norm_eval=True)
    exp = make_experiment(tmp_path, [record(NASFPN["PAPER"], 0.3, "t1")], cfg)
    exported = export_top(exp, 1, recipe="search", log=None)
    retrain = load_config(exported[0].retrain_path)
    assert (retrain.model.backbone.frozen_stages, retrain.model.backbone.norm_eval) == (-1, False)
    assert "frozen random backbone trains here" in exported[0].retrain_path.read_text()
    assert load_config(exp / "config.yaml").model.backbone.frozen_stages == 4  # search unchanged


@pytest.mark.parametrize("recipe", ["paper", "search"])
def test_retrain_data_is_the_whole_dataset_at_absolute_paths(tmp_path, monkeypatch, recipe):
    # A proxy search on 3,000 train2017 images with a relative root (as experiments/nasfcos.yaml).
    monkeypatch.chdir(tmp_path)
    (tmp_path / "coco").mkdir()
    cfg = search_config(tmp_path)
    cfg["data"] = {
        "type": "coco",
        "root": "coco",
        "train": {"images": "train2017", "annotations": "a/train.json", "subset": 3000},
        "val": {"images": "train2017", "annotations": "a/train.json", "subset": 50,
                "holdout": 500, "holdout_part": "held_out"},
    }  # fmt: skip
    cfg["data"]["train"]["holdout"] = 500
    exp = make_experiment(tmp_path, [record(samples(n=1)[0], 0.3, "t1")], cfg)
    exported = export_top(exp, 1, recipe=recipe, log=None)
    retrain = load_config(exported[0].retrain_path, require_data=False)
    assert retrain.data.root == str(tmp_path / "coco")
    # The holdout partitions train and val: it stays, or validation images would be trained on.
    assert retrain.data.train.holdout == retrain.data.val.holdout == 500
    assert retrain.data.val.holdout_part == "held_out"
    lines = exported[0].retrain_path.read_text().splitlines()
    header = " ".join(line.lstrip("# ") for line in lines if line.startswith("#"))
    assert f"data.root coco -> {tmp_path / 'coco'}" in header
    if recipe == "paper":
        assert retrain.data.train.subset is None and retrain.data.val.subset is None
        assert "data.train.subset 3000 dropped" in header
    else:
        assert (retrain.data.train.subset, retrain.data.val.subset) == (3000, 50)


def test_default_experiment_is_the_most_recent_under_runs(tmp_path, monkeypatch):
    a, b = samples(n=2)
    old = make_experiment(tmp_path, [record(a, 0.3, "t1")], search_config(tmp_path, "old"))
    new = make_experiment(tmp_path, [record(b, 0.2, "t1")], search_config(tmp_path, "new"))
    (tmp_path / "runs" / "not-an-experiment").mkdir()
    os.utime(old / "architectures.jsonl", (1e9, 2e9))
    os.utime(new / "architectures.jsonl", (1e9, 1e9))
    monkeypatch.chdir(tmp_path)
    exported = export_top(None, 1, recipe="search", log=None)  # runs_dir defaults to ./runs
    assert exported[0].key == a.key() and exported[0].arch_path.parent == Path("runs/old/export")
    os.utime(new / "architectures.jsonl", (1e9, 3e9))
    assert export_top(None, 1, recipe="search", log=None)[0].key == b.key()


def test_truncated_last_line_is_skipped_with_a_warning(tmp_path):
    a, b = samples(n=2)
    exp = make_experiment(tmp_path, [record(a, 0.3, "t1"), record(b, 0.2, "t2")])
    with open(exp / "architectures.jsonl", "a") as f:
        f.write(json.dumps(record(b, 0.9, "t3"))[:40])  # the driver died mid-write
    with pytest.warns(UserWarning, match=r"architectures.jsonl:3: skipping a truncated"):
        exported = export_top(exp, 5, recipe="search", log=None)
    assert [e.trial_id for e in exported] == ["t1", "t2"]


def test_cli_prints_a_skipped_record_as_one_warning_line(tmp_path, capsys):
    a = samples(n=1)[0]
    exp = make_experiment(tmp_path, [record(a, 0.3, "t1")])
    with open(exp / "architectures.jsonl", "a") as f:
        f.write('{"reward": 0.')
    assert main(["export", str(exp), "--top", "1", "--recipe", "search"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    path = exp / "architectures.jsonl"
    assert err == [f"warning: {path}:2: skipping a truncated or corrupt record"]


def test_k_larger_than_available_exports_what_exists_and_says_so(tmp_path, ranked_records):
    exp = make_experiment(tmp_path, ranked_records)
    out = tmp_path / "out"
    out.mkdir()
    (out / "arch-4.yaml").write_text("kept\n")  # ranks not being written are left alone
    (out / "arch-1.yaml").write_text("replaced\n")
    lines = []
    exported = export_top(exp, 10, out, recipe="search", log=lines.append)
    assert [e.rank for e in exported] == [1, 2, 3]
    assert any(
        "only 3 unique successful architecture(s)" in line and "not 10" in line for line in lines
    )
    assert (out / "arch-4.yaml").read_text() == "kept\n"
    assert "replaced" not in (out / "arch-1.yaml").read_text()
    assert "# Top 3 architectures" in (out / "leaderboard.md").read_text()


def test_a_failed_write_leaves_no_partial_file(tmp_path, ranked_records, monkeypatch):
    exp = make_experiment(tmp_path, ranked_records)

    def broken_draw(genotype, out, **kwargs):
        Path(out).write_bytes(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr("nassearch.show.draw", broken_draw)
    with pytest.raises(OSError, match="disk full"):
        export_top(exp, 2, recipe="search", log=None)
    out = exp / "export"
    assert sorted(p.name for p in out.iterdir()) == ["arch-1.yaml", "retrain-1.yaml"]
    assert load_config(out / "retrain-1.yaml").name == "exp-retrain-1"  # complete files only


def run_cli(argv: list[str]) -> int:
    return main(["export", *argv])


def test_cli_arguments(tmp_path, ranked_records, capsys):
    exp = make_experiment(tmp_path, ranked_records)
    argv = [str(exp), "--top", "2", "--out", str(tmp_path / "o"), "--recipe", "search"]
    assert run_cli(argv + ["--batch-size", "2", "--include-baselines"]) == 0
    assert "leaderboard" in capsys.readouterr().out
    cfg = load_config(tmp_path / "o" / "retrain-2.yaml")
    assert (cfg.train.batch_size, cfg.train.optimizer.lr) == (2, 0.0005)
    assert yaml.safe_load((tmp_path / "o" / "arch-1.yaml").read_text())["baseline"] is True


def _without(name):
    def setup(tmp_path, records):
        exp = make_experiment(tmp_path, records)
        (exp / name).unlink()
        return exp

    return setup


def _bad_genotype(tmp_path, records):
    records[4]["genotype"]["cells"][0]["level"] = 9
    return make_experiment(tmp_path, records)


def _failed(tmp_path, records):
    return make_experiment(tmp_path, [{**r, "status": "error"} for r in records])


def _only_baselines_ok(tmp_path, records):
    return make_experiment(
        tmp_path, [r if r["baseline"] else {**r, "status": "oom"} for r in records]
    )


@pytest.mark.parametrize(
    ("setup", "kwargs", "needle"),
    [
        (lambda t, r: None, {}, "runs: no experiment folder (one holding architectures.jsonl"),
        (_without("config.yaml"), {}, "exp: not an experiment folder (no config.yaml)"),
        (_without("architectures.jsonl"), {}, "exp: not an experiment folder (no architectures.jsonl)"),
        (lambda t, r: make_experiment(t, []), {}, "architectures.jsonl: no readable architecture record"),
        (_failed, {}, "no successful architecture among 7 record(s) (7 error)"),
        (_only_baselines_ok, {}, "1 baseline(s) succeeded (pass --include-baselines to export them)"),
        (make_experiment, {"top": 0}, "--top: must be an integer of at least 1, got 0"),
        (make_experiment, {"batch_size": 0}, "--batch-size: must be an integer of at least 1, got 0"),
        (make_experiment, {"recipe": "huge"}, "--recipe: 'huge' (expected one of paper, search)"),
        (_bad_genotype, {}, "architectures.jsonl: record 5 (trial t4): genotype: "),
    ],
)  # fmt: skip
def test_bad_input_is_one_line(tmp_path, ranked_records, monkeypatch, setup, kwargs, needle):
    exp = setup(tmp_path, ranked_records)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NasSearchError) as info:
        export_top(exp, **{"top": 2, "log": None, **kwargs})
    message = str(info.value)
    assert needle in message and len(message.splitlines()) == 1
    assert not (tmp_path / "runs" / "exp" / "export").exists()  # nothing written


def test_all_corrupt_records_are_an_error(tmp_path):
    exp = make_experiment(tmp_path, [])
    (exp / "architectures.jsonl").write_text('{"reward": 0.\n[1, 2]\n')
    with pytest.warns(UserWarning), pytest.raises(NasSearchError, match="every line is corrupt"):
        export_top(exp, 1, log=None)
    with pytest.raises(NasSearchError, match="no such experiment folder"):
        export_top(tmp_path / "nope", 1, log=None)


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda g: g["cells"][0].update(inputs=[1, 9]), "cell 1 input2 = 9 is not an existing"),
        (lambda g: g["cells"][0].update(op="max"), "cell 1 op 'max' is unknown"),
        (lambda g: g.pop("cells"), "model.genotype"),
    ],
)
def test_retrain_config_with_an_invalid_genotype_is_one_line(
    tmp_path, ranked_records, capsys, edit, needle
):
    exp = make_experiment(tmp_path, ranked_records)
    assert run_cli([str(exp), "--top", "1", "--recipe", "search"]) == 0
    path = exp / "export" / "retrain-1.yaml"
    cfg = yaml.safe_load(path.read_text())
    edit(cfg["model"]["genotype"])
    path.write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {path}: model.genotype: "), err
    assert needle in err
    assert not (tmp_path / "runs" / cfg["name"]).exists()  # nothing started
