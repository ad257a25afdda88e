"""`nassearch show`: pictures of searched architectures from names, arch files and configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from PIL import Image

from nassearch.cli import EXIT_BAD_INPUT, main
from nassearch.errors import NasSearchError
from nassearch.search_spaces.nasfpn import PAPER
from nassearch.show import _blocked, load_genotype

RETRAIN = Path(__file__).resolve().parents[1] / "experiments" / "retrain"


def test_show_named_genotype_writes_a_picture(tmp_path, capsys):
    out = tmp_path / "paper.png"
    assert main(["show", "nasfpn:PAPER", "--out", str(out)]) == 0
    assert PAPER.key() in capsys.readouterr().out
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 800 and image.height > 400


def test_show_from_config_and_arch_file_agree(tmp_path):
    from_config, ctx = load_genotype(str(RETRAIN / "retinanet_r50_nasfpn_7x256.yaml"))
    assert from_config == PAPER and ctx["stacks"] == 7
    arch = tmp_path / "arch-1.yaml"
    arch.write_text(yaml.safe_dump({"space": "nasfpn", "genotype": PAPER.to_dict()}))
    from_file, _ = load_genotype(str(arch))
    assert from_file.key() == PAPER.key()


def test_collinear_edges_are_detected_for_curving():
    # PAPER's cell 5 reads P3_out and P4_out: the straight line P3_out -> P5_out runs through
    # the P4_out node, so the drawing must bow that edge.
    p3_out, p4_out, p5_out = (3.75, 3.0), (5.0, 4.0), (6.25, 5.0)
    assert _blocked(p3_out, p5_out, [p4_out])
    assert not _blocked(p3_out, p4_out, [p5_out])


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("nasfpn:NOPE", "unknown genotype 'NOPE'"),
        ("yolo:PAPER", "unknown space 'yolo'"),
        ("nothing.yaml", "not a file"),
    ],
)
def test_show_bad_sources_are_one_line_errors(tmp_path, capsys, source, needle):
    assert main(["show", source, "--out", str(tmp_path / "x.png")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err
    assert not (tmp_path / "x.png").exists()


def test_show_refuses_plain_fpn_configs_and_bad_suffix(tmp_path, capsys):
    cfg = tmp_path / "plain.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"type": "retinanet"}}))
    with pytest.raises(NasSearchError, match="no searched architecture"):
        load_genotype(str(cfg))
    assert main(["show", "nasfpn:PAPER", "--out", str(tmp_path / "x.jpg")]) == EXIT_BAD_INPUT
    assert ".png" in capsys.readouterr().err


def test_show_nasfcos_paper_and_fpn_only(tmp_path):
    from nassearch.search_spaces.nasfcos import PAPER as FCOS_PAPER

    genotype, _ = load_genotype(str(RETRAIN / "fcos_r50_nasfcos.yaml"))
    assert genotype == FCOS_PAPER
    sizes = []
    for name in ("PAPER", "PAPER_FPN_ONLY"):
        out = tmp_path / f"{name}.png"
        assert main(["show", f"nasfcos:{name}", "--out", str(out)]) == 0
        with Image.open(out) as image:
            sizes.append(image.size)
    # The searched head adds a panel below the FPN.
    assert sizes[0][1] > sizes[1][1]
