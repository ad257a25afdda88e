"""`nassearch summary`: parameter and multiply-add counts against published reference figures."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from nassearch.config import load_config, validate_config
from nassearch.detectors.backbones import build_backbone
from nassearch.detectors.complexity import count_macs
from nassearch.summary import format_summary, summarize

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def test_retinanet_r50_fpn_matches_mmdetection_parameter_counts():
    # mmdetection's retinanet_r50_fpn (80 classes): 37,968,692 parameters; FPN with P6 on C5.
    cfg = load_config(EXPERIMENTS / "retrain" / "retinanet_r50_fpn.yaml", require_data=False)
    out = summarize(cfg, input_size=128)
    assert out["params"] == {
        "total": 37_968_692,
        "backbone": 23_508_032,
        "neck": 7_997_440,
        "head": 6_463_220,
    }


def test_fcos_r50_fpn_head_matches_mmdetection():
    # mmdetection's FCOSHead (GN, 80 classes) has 4,918,618 parameters; FPN with P6 on P5.
    cfg = load_config(EXPERIMENTS / "retrain" / "fcos_r50_fpn.yaml", require_data=False)
    out = summarize(cfg, input_size=128)
    assert out["params"]["head"] == 4_918_618
    assert out["params"]["neck"] == 3_868_672
    assert out["params"]["total"] == 23_508_032 + 3_868_672 + 4_918_618


@pytest.mark.parametrize(("depth", "gmacs"), [(18, 1.81), (50, 4.09)])
def test_backbone_multiply_adds_match_torchvision_figures(depth, gmacs):
    # torchvision documents 1.81 / 4.09 GFLOPS (multiply-adds) at 224x224 for ResNet-18 / 50;
    # the ImageNet classifier (fc, 0.5M / 2M MACs) is not part of a detection backbone.

    backbone = build_backbone(depth)

    class OnlyBackbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = backbone

        def head_outputs(self, feats):
            return feats

    macs = count_macs(OnlyBackbone(), (224, 224))
    assert macs["backbone"] == macs["total"]
    assert macs["total"] / 1e9 == pytest.approx(gmacs, abs=0.01)


def test_macs_scale_with_input_area():
    cfg = validate_config(
        {"model": {"backbone": {"depth": 10}, "neck": {"out_channels": 32}, "feat_channels": 32}}
    )
    small = summarize(cfg, input_size=128)["macs"]["total"]
    large = summarize(cfg, input_size=256)["macs"]["total"]
    assert large == pytest.approx(4 * small, rel=0.02)


def test_format_summary_lists_every_part():
    cfg = validate_config({"model": {"backbone": {"depth": 10}}})
    text = format_summary(summarize(cfg, input_size=64))
    for part in ("backbone", "neck", "head", "total"):
        assert part in text
    assert "64x64" in text
