"""Search, export and retrain end to end: the exported config trains the best searched architecture."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from search_configs import search_config, write

from nassearch.cli import main
from nassearch.config import load_config
from nassearch.data.build import build_dataset
from nassearch.detectors.build import build_detector, model_genotype
from nassearch.search_spaces import genotype_from_dict


def ranked_searched(records: list[dict]) -> list[dict]:
    """Successful searched records best first (highest reward, ties: fewer parameters; the file
    order after that), one per genotype key."""
    ok = [
        r
        for r in records
        if r["status"] == "ok"
        and not r["baseline"]
        and isinstance(r["reward"], (int, float))
        and math.isfinite(r["reward"])
    ]
    ranked: dict[str, dict] = {}
    for r in sorted(ok, key=lambda r: (-r["reward"], r["params"])):  # stable: file order
        ranked.setdefault(r["key"], r)
    return list(ranked.values())


@pytest.mark.slow
def test_search_export_then_retrain_the_best_architecture(ray_session, tmp_path):
    cfg = search_config(tmp_path, num_architectures=3)
    # Rewards from the held-out loss: distinct values, so the ranking is by reward, not file order
    # (a 1-epoch proxy's AP is 0.0 for every architecture).
    cfg["proxy"]["reward"] = "neg_loss"
    assert main(["run", write(tmp_path, cfg)]) == 0
    exp = tmp_path / "runs" / "tiny-search"
    lines = (exp / "architectures.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    searched = [r for r in records if not r["baseline"]]
    assert len(searched) == 3
    assert len({r["reward"] for r in searched}) > 1
    ranked = ranked_searched(records)
    assert ranked, "the search produced no successful searched architecture"
    best = ranked[0]

    assert main(["export", str(exp), "--top", "3", "--recipe", "search"]) == 0
    out = exp / "export"
    exported = min(3, len(ranked))  # --top 3, or all there are
    for k in range(1, exported + 1):
        for name in (f"arch-{k}.yaml", f"retrain-{k}.yaml", f"arch-{k}.png"):
            assert (out / name).is_file(), name
        arch_k = yaml.safe_load((out / f"arch-{k}.yaml").read_text())
        retrain_k = yaml.safe_load((out / f"retrain-{k}.yaml").read_text())
        assert arch_k["key"] == ranked[k - 1]["key"] and arch_k["rank"] == k
        assert arch_k["genotype"] == retrain_k["model"]["genotype"] == ranked[k - 1]["genotype"]
    assert not (out / f"arch-{exported + 1}.yaml").exists()
    assert (out / "leaderboard.md").is_file()
    assert f"| 1 | `{best['key']}` |" in (out / "leaderboard.md").read_text()

    # Both exported files carry exactly the best record's genotype.
    arch = yaml.safe_load((out / "arch-1.yaml").read_text())
    retrain_raw = yaml.safe_load((out / "retrain-1.yaml").read_text())
    assert arch["genotype"] == best["genotype"] and arch["key"] == best["key"]
    assert retrain_raw["model"]["genotype"] == best["genotype"]
    assert genotype_from_dict(arch["genotype"]).key() == best["key"]
    retrain = load_config(out / "retrain-1.yaml")
    assert model_genotype(retrain.model).key() == best["key"]
    assert retrain.model.neck.type == "nasfpn" and retrain.device == "cpu"
    assert isinstance(retrain.model.genotype, dict)  # inline: no file of the search needed

    # Train it briefly from the exported config on the embedded synthetic data.
    runs = tmp_path / "retrain-runs"
    rc = main(
        [
            "train",
            str(out / "retrain-1.yaml"),
            "--set",
            "train.epochs=1",
            f"output_dir={runs}",
            "device=cpu",
        ]
    )
    assert rc == 0
    run_dir = runs / retrain.name
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["status"] == "ok" and summary["epochs_completed"] == 1
    metrics = summary["metrics"]
    assert {"AP", "AP50"} <= set(metrics)
    for name, value in metrics.items():
        assert value == -1 or 0.0 <= value <= 1.0, (name, value)
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["genotype"] == best["genotype"]

    # The checkpoint's weights fit the detector built from the retrain config's genotype alone.
    ckpt = torch.load(run_dir / "checkpoints" / "last.pth", weights_only=True)
    classes = len(build_dataset(retrain, "val", train=False).cat_ids)
    model = build_detector(retrain.model, classes)
    model.load_state_dict(ckpt["model"], strict=True)

    # `nassearch eval` on the exported architecture's checkpoint reproduces the final evaluation.
    last = run_dir / "checkpoints" / "last.pth"
    assert main(["eval", str(out / "retrain-1.yaml"), "--checkpoint", str(last)]) == 0
    evaluated = json.loads((run_dir / "checkpoints" / "last.eval.json").read_text())
    assert evaluated["metrics"] == metrics

    # The default export, the paper recipe (7 x 256 on R-50 at 640 px), carries the same genotype;
    # shrunk on the command line it trains here too.
    paper_out = tmp_path / "paper"
    assert main(["export", str(exp), "--top", "1", "--out", str(paper_out)]) == 0
    paper = load_config(paper_out / "retrain-1.yaml")
    assert (paper.model.neck.stacks, paper.model.neck.out_channels, paper.input.size) == (
        7,
        256,
        640,
    )
    assert model_genotype(paper.model).key() == best["key"]
    small = [
        "device=cpu", "train.max_iters=2", "train.batch_size=2", "train.num_workers=0",
        "input.size=128", "model.backbone.depth=10", "model.backbone.weights=null",
        "model.neck.stacks=1", "model.neck.out_channels=16", "model.num_convs=1",
        "model.feat_channels=16", f"output_dir={runs}",
    ]  # fmt: skip
    argv = ["train", str(paper_out / "retrain-1.yaml"), "--name", "paper", "--set", *small]
    assert main(argv) == 0
    summary = json.loads((runs / "paper" / "metrics.json").read_text())
    assert summary["status"] == "ok" and summary["iterations"] == 2 and "AP" in summary["metrics"]
