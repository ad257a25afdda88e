"""Searched architectures inside whole detectors: published parameter counts via `nassearch summary`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from nassearch.cli import EXIT_BAD_INPUT, main
from nassearch.config import load_config, validate_config
from nassearch.detectors.build import build_detector
from nassearch.errors import NasSearchError

RETRAIN = Path(__file__).resolve().parents[1] / "experiments" / "retrain"
R50_BACKBONE = 23_508_032


def summary_json(capsys, config: Path, *overrides: str) -> dict:
    argv = ["summary", str(config), "--json", "--input-size", "128"]
    if overrides:
        argv += ["--set", *overrides]
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_retinanet_nasfpn_mmdet_style_matches_mmdetection(capsys):
    # mmdetection's RetinaNet R-50 + NAS-FPN (7 stacks x 256, RetinaSepBNHead, 80 classes).
    out = summary_json(
        capsys, RETRAIN / "retinanet_r50_nasfpn_7x256.yaml", "model.neck.style=mmdet"
    )
    assert out["params"] == {
        "backbone": R50_BACKBONE,
        "neck": 29_990_144,
        "head": 6_481_652,
        "total": 59_979_828,
    }


def test_retinanet_nasfpn_tensorflow_style(capsys):
    out = summary_json(capsys, RETRAIN / "retinanet_r50_nasfpn_7x256.yaml")
    # Google's layout: no bias on the cell convs and no convs before the P6/P7 max pools.
    cell = 9 * 256 * 256 + 2 * 256  # 3x3 conv without bias + BN
    laterals = sum(c * 256 + 2 * 256 for c in (512, 1024, 2048))
    assert out["params"]["neck"] == 7 * 7 * cell + laterals
    assert out["params"]["head"] == 6_481_652


def test_fcos_nasfcos_matches_mmdetection(capsys):
    out = summary_json(capsys, RETRAIN / "fcos_r50_nasfcos.yaml")
    assert out["params"] == {
        "backbone": R50_BACKBONE,
        "neck": 10_690_696,
        "head": 4_368_946,
        "total": 38_567_674,
    }
    out = summary_json(capsys, RETRAIN / "fcos_r50_nasfcos.yaml", "model.genotype=PAPER_FPN_ONLY")
    assert out["params"]["head"] == 4_918_618
    assert out["params"]["total"] == 39_117_346


@pytest.mark.parametrize(
    ("neck", "genotype", "detector"),
    [("nasfpn", "PAPER", "retinanet"), ("nasfpn", "FPN", "fcos"), ("nasfcos", "PAPER", "fcos")],
)
def test_searched_detectors_train_and_detect(neck, genotype, detector):
    cfg = validate_config(
        {
            "model": {
                "type": detector,
                "backbone": {"depth": 10, "frozen_stages": -1, "norm_eval": False},
                "neck": {
                    "type": neck,
                    "out_channels": 32,
                    **({"stacks": 2} if neck == "nasfpn" else {}),
                },
                "genotype": genotype,
                "num_convs": 1,
                "feat_channels": 32,
            }
        }
    )
    model = build_detector(cfg.model, num_classes=3)
    images = torch.randn(2, 3, 128, 128)
    targets = [
        {"boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    losses = model(images, targets)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    trained = [p for p in model.neck.parameters() if p.requires_grad]
    assert trained and all(p.grad is not None for p in trained)
    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == 2 and set(detections[0]) == {"boxes", "scores", "labels"}


def write_cfg(tmp_path: Path, model: dict) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"model": model}))
    return path


@pytest.mark.parametrize(
    ("model", "needle"),
    [
        ({"neck": {"type": "nasfpn"}}, "model.genotype: required"),
        ({"genotype": "PAPER"}, "model.genotype: given, but model.neck.type is fpn"),
        ({"neck": {"type": "nasfpn"}, "genotype": "NOPE"}, "unknown genotype 'NOPE'"),
        (
            {"type": "retinanet", "neck": {"type": "nasfcos"}, "genotype": "PAPER"},
            "model.type fcos",
        ),
        ({"neck": {"type": "nasfpn"}, "genotype": "missing.yaml"}, "missing.yaml"),
    ],
)
def test_bad_genotype_settings_are_one_line_errors(tmp_path, capsys, model, needle):
    path = write_cfg(tmp_path, model)
    with pytest.raises(NasSearchError, match="model.genotype"):
        load_config(path)
    assert main(["summary", str(path)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and str(path) in err


def test_genotype_from_an_exported_arch_file(tmp_path, capsys):
    from nassearch.search_spaces.nasfpn import PAPER

    arch = tmp_path / "arch-1.yaml"
    arch.write_text(yaml.safe_dump({"space": "nasfpn", "genotype": PAPER.to_dict()}))
    path = write_cfg(
        tmp_path,
        {
            "backbone": {"depth": 10},
            "neck": {"type": "nasfpn", "out_channels": 32},
            "genotype": str(arch),
        },
    )
    by_file = summary_json(capsys, path)
    path.write_text(
        yaml.safe_dump(
            {
                "model": {
                    "backbone": {"depth": 10},
                    "neck": {"type": "nasfpn", "out_channels": 32},
                    "genotype": "PAPER",
                }
            }
        )
    )
    assert summary_json(capsys, path)["params"] == by_file["params"]


def test_the_genotype_is_resolved_once_at_config_load(tmp_path, monkeypatch):
    """An arch file is read when the config loads; building reads nothing again (the file may
    even be gone), while the config keeps the user's spelling for saved configs and metadata."""
    from nassearch import search_spaces
    from nassearch.detectors import build
    from nassearch.search_spaces.nasfpn import PAPER

    arch = tmp_path / "arch-1.yaml"
    arch.write_text(yaml.safe_dump({"space": "nasfpn", "genotype": PAPER.to_dict()}))
    model = {"backbone": {"depth": 10}, "neck": {"type": "nasfpn", "out_channels": 16}}
    calls = []
    resolve = search_spaces.resolve_genotype

    def counting(*args, **kwargs):
        calls.append(args)
        return resolve(*args, **kwargs)

    monkeypatch.setattr(search_spaces, "resolve_genotype", counting)
    monkeypatch.setattr(build, "resolve_genotype", counting)
    cfg = validate_config({"model": {**model, "genotype": str(arch)}})
    arch.unlink()
    assert build.model_genotype(cfg.model).key() == PAPER.key() and len(calls) == 1
    build_detector(cfg.model, 3)
    assert len(calls) == 1 and cfg.model.genotype == str(arch)
    # A copy with another genotype is resolved anew, not served the stale one.
    other = cfg.model.model_copy(update={"genotype": "FPN"})
    assert build.model_genotype(other).key() != PAPER.key() and len(calls) == 2


@pytest.mark.parametrize(
    ("space", "options"),
    [
        ("nasfpn", {"num_cells": 5}),
        ("nasfcos", {"part": "fpn", "num_cells": 3}),
        ("nasfcos", {"part": "head"}),
        ("nasfcos", {"part": "both", "num_cells": 4}),
    ],
)
def test_genotypes_of_reduced_spaces_parse_and_build_without_options(space, options):
    """A trial or a retrain config gets only the genotype: its cell count must come from it."""
    import numpy as np

    from nassearch.config import validate_config
    from nassearch.detectors.build import build_detector, model_genotype
    from nassearch.search_spaces import genotype_from_dict, get_space, resolve_genotype

    genotype = get_space(space, **options).sample(np.random.default_rng(0))
    data = genotype.to_dict()
    assert genotype_from_dict(data).key() == resolve_genotype(data, space).key() == genotype.key()
    cfg = validate_config(
        {
            "model": {
                "type": "retinanet" if space == "nasfpn" else "fcos",
                "backbone": {"depth": 10},
                "neck": {"type": space, "out_channels": 32},
                "genotype": data,
                "feat_channels": 32,
                "num_convs": 1,
            }
        },
        "test",
        require_data=False,
    )
    assert model_genotype(cfg.model).key() == genotype.key()
    model = build_detector(cfg.model, 3, seed=0)
    model.eval()
    with torch.no_grad():
        outputs = model.head_outputs(model.backbone(torch.zeros(1, 3, 256, 256)))
    assert len(outputs[0]) == 5  # five pyramid levels
