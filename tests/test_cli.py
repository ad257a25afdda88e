"""Command line: bad input gives one clear line on stderr and a non-zero exit; good input works."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from nassearch.cli import EXIT_BAD_INPUT, main

TINY_MODEL = {
    "type": "retinanet",
    "backbone": {"depth": 10, "frozen_stages": -1, "norm_eval": False},
    "neck": {"out_channels": 32},
    "num_convs": 1,
    "feat_channels": 32,
}


def make_coco(root: Path, *, num_images: int = 3, categories=((1, "a"), (5, "b"))) -> Path:
    """A tiny COCO-format dataset (train and val share the images) under `root`."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(1, num_images + 1):
        pixels = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "height": 48, "width": 64})
        cat = categories[i % len(categories)][0]
        annotations.append(
            {
                "id": i,
                "image_id": i,
                "category_id": cat,
                "bbox": [5, 5, 20, 16],
                "area": 320,
                "iscrowd": 0,
            }
        )
    data = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c, "name": n} for c, n in categories],
    }
    (root / "ann.json").write_text(json.dumps(data))
    return root


def write_config(tmp_path: Path, data_root: Path, **extra) -> Path:
    cfg = {
        "name": "cli",
        "output_dir": str(tmp_path / "runs"),
        "data": {
            "type": "coco",
            "root": str(data_root),
            "train": {"images": "images", "annotations": "ann.json"},
            "val": {"images": "images", "annotations": "ann.json"},
        },
        "input": {"mode": "square", "size": 64},
        "model": TINY_MODEL,
        "train": {"epochs": 1, "batch_size": 2, "tensorboard": False},
        **extra,
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    rc = main(list(argv))
    err = capsys.readouterr().err.strip()
    return rc, err


def assert_one_line_error(rc: int, err: str, *needles: str) -> None:
    assert rc == EXIT_BAD_INPUT
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    for needle in needles:
        assert needle in err, (needle, err)


@pytest.fixture
def coco(tmp_path) -> Path:
    return make_coco(tmp_path / "coco")


def test_missing_annotation_file(tmp_path, capsys, coco):
    (coco / "ann.json").unlink()
    config = write_config(tmp_path, coco)
    rc, err = run_cli(capsys, "train", str(config))
    # The line names the config file, the key and the path it points at.
    assert_one_line_error(
        rc, err, f"error: {config}: data.val.annotations: file not found: {coco / 'ann.json'}"
    )


def test_missing_image_folder_and_weights_name_their_keys(tmp_path, capsys, coco):
    config = write_config(tmp_path, coco)
    rc, err = run_cli(capsys, "train", str(config), "--set", "data.train.images=imgs")
    assert_one_line_error(rc, err, f"error: {config}: data.train.images: folder not found")
    weights = tmp_path / "nope.pth"
    rc, err = run_cli(capsys, "train", str(config), "--set", f"model.backbone.weights={weights}")
    assert_one_line_error(
        rc, err, f"error: {config}: model.backbone.weights: {weights}: pretrained weights file"
    )


def test_malformed_annotation_file(tmp_path, capsys, coco):
    (coco / "ann.json").write_text('{"images": [')
    rc, err = run_cli(capsys, "train", str(write_config(tmp_path, coco)))
    assert_one_line_error(rc, err, "ann.json")


def test_missing_image(tmp_path, capsys, coco):
    (coco / "images" / "2.png").unlink()
    rc, err = run_cli(capsys, "train", str(write_config(tmp_path, coco)))
    assert_one_line_error(rc, err, "2.png")


def test_unknown_category_id(tmp_path, capsys, coco):
    data = json.loads((coco / "ann.json").read_text())
    data["annotations"][0]["category_id"] = 42
    (coco / "ann.json").write_text(json.dumps(data))
    rc, err = run_cli(capsys, "train", str(write_config(tmp_path, coco)))
    assert_one_line_error(rc, err, "42", "ann.json")


def test_empty_dataset(tmp_path, capsys, coco):
    data = json.loads((coco / "ann.json").read_text())
    data["images"], data["annotations"] = [], []
    (coco / "ann.json").write_text(json.dumps(data))
    rc, err = run_cli(capsys, "train", str(write_config(tmp_path, coco)))
    assert_one_line_error(rc, err, "ann.json")


def test_missing_data_root(tmp_path, capsys):
    rc, err = run_cli(capsys, "train", str(write_config(tmp_path, tmp_path / "nowhere")))
    assert_one_line_error(rc, err, "data.root", "nowhere")


def test_unknown_config_key(tmp_path, capsys, coco):
    path = write_config(tmp_path, coco, trian={"epochs": 1})
    rc, err = run_cli(capsys, "train", str(path))
    assert_one_line_error(rc, err, str(path), "trian: unknown key")


def test_wrong_type_from_override(tmp_path, capsys, coco):
    path = write_config(tmp_path, coco)
    rc, err = run_cli(capsys, "train", str(path), "--set", "train.batch_size=two")
    assert_one_line_error(rc, err, str(path), "train.batch_size", "'two'")


def test_missing_checkpoint(tmp_path, capsys, coco):
    missing = tmp_path / "nope.pth"
    rc, err = run_cli(
        capsys, "eval", str(write_config(tmp_path, coco)), "--checkpoint", str(missing)
    )
    assert_one_line_error(rc, err, str(missing))


def test_checkpoint_with_mismatched_shapes(tmp_path, capsys, coco):
    from nassearch.config import validate_config
    from nassearch.detectors.build import build_detector

    # Same architecture, but trained for 7 classes: the classifier's shape differs.
    other = build_detector(validate_config({"model": TINY_MODEL}).model, num_classes=7)
    ckpt = tmp_path / "other.pth"
    torch.save(other.state_dict(), ckpt)
    rc, err = run_cli(capsys, "eval", str(write_config(tmp_path, coco)), "--checkpoint", str(ckpt))
    assert_one_line_error(rc, err, str(ckpt), "shape")


def test_refuses_to_overwrite_a_finished_run(tmp_path, capsys, coco):
    path = write_config(tmp_path, coco)
    assert main(["train", str(path)]) == 0
    capsys.readouterr()
    metrics = (tmp_path / "runs" / "cli" / "metrics.json").read_bytes()
    rc, err = run_cli(capsys, "train", str(path))
    assert_one_line_error(rc, err, "--resume")
    assert (tmp_path / "runs" / "cli" / "metrics.json").read_bytes() == metrics


def test_train_then_eval_round_trip(tmp_path, capsys, coco):
    path = write_config(tmp_path, coco)
    assert main(["train", str(path), "--set", "train.save_best=AP50"]) == 0
    run = tmp_path / "runs" / "cli"
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "ok" and "AP" in summary["metrics"]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["backbone"]["depth"] == 10
    # One evaluation (at the end), so the best is the final one.
    best = run / "checkpoints" / "best.pth"
    assert summary["best"] == {
        "metric": "AP50", "value": summary["metrics"]["AP50"], "epoch": 1, "checkpoint": str(best)
    }  # fmt: skip
    assert best.is_file()
    capsys.readouterr()
    assert main(["eval", str(path), "--checkpoint", str(run / "checkpoints" / "last.pth")]) == 0
    evaluated = json.loads((run / "checkpoints" / "last.eval.json").read_text())
    assert evaluated["metrics"] == pytest.approx(summary["metrics"])


def test_summary_json_counts_parts(tmp_path, capsys, coco):
    path = write_config(tmp_path, coco)
    assert main(["summary", str(path), "--json", "--input-size", "64"]) == 0
    out = json.loads(capsys.readouterr().out)
    params = out["params"]
    assert params["total"] == params["backbone"] + params["neck"] + params["head"]
    assert (
        out["macs"]["total"]
        >= out["macs"]["backbone"] + out["macs"]["neck"] + out["macs"]["head"]
        > 0
    )
    assert out["num_classes"] == 80  # COCO data is not read by summary


def test_console_script_prints_no_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: {type: yolo}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "nassearch", "summary", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == EXIT_BAD_INPUT
    assert (
        proc.stderr.strip()
        == f"error: {path}: model.type: unknown type 'yolo' (expected one of 'retinanet', 'fcos')"
    )
    assert "Traceback" not in proc.stderr


def test_data_synth_refuses_non_empty_folder(tmp_path, capsys):
    out = tmp_path / "synth"
    assert (
        main(
            [
                "data",
                "synth",
                "--out",
                str(out),
                "--num-train",
                "2",
                "--num-val",
                "1",
                "--image-size",
                "64",
            ]
        )
        == 0
    )
    # The printed --set items point a COCO config at the folder.
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("use it as COCO data: --set ")
    from nassearch.config import load_config
    from nassearch.train import build_model_and_data

    coco_config = write_config(tmp_path, tmp_path / "elsewhere")
    cfg = load_config(coco_config, line.split("--set ", 1)[1].split())
    _, train_set, val_set = build_model_and_data(cfg)
    assert (len(train_set), len(val_set)) == (2, 1) and len(val_set.cat_ids) == 6
    before = sorted(p.name for p in (out / "train").iterdir())
    assert len(before) == 2
    rc, err = run_cli(capsys, "data", "synth", "--out", str(out))
    assert_one_line_error(rc, err, str(out))
    assert sorted(p.name for p in (out / "train").iterdir()) == before
