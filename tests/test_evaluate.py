"""Evaluation: COCO results mapped back to original coordinates, COCOeval metrics, validation loss."""

from __future__ import annotations

import contextlib
import io
import json
import math

import pytest
import torch
from pycocotools.coco import COCO
from torch import nn

from nassearch.engine.evaluate import (
    COCO_METRIC_NAMES,
    boxes_to_original,
    coco_evaluate,
    evaluate_detector,
    predict,
    validation_loss,
)
from nassearch.errors import NasSearchError

CPU = torch.device("cpu")
# COCOeval computes precision as tp / (tp + fp + eps), so a perfect AP is 1 - O(1e-16), not exactly 1.
PERFECT = pytest.approx(1.0, abs=1e-12)
CAT_IDS = [3, 7, 12]  # non-contiguous COCO category ids; labels are their indices 0..2

# image id -> (width, height, [(x, y, w, h, category_id)]); small (<32^2), medium and large boxes.
IMAGES = {
    11: (200, 150, [(10, 20, 8, 9, 3), (50, 40, 40, 50, 7), (20, 10, 150, 120, 12)]),
    42: (120, 300, [(5, 100, 100, 110, 7), (60, 8, 20, 25, 12)]),
    7: (640, 480, [(300, 200, 12, 6, 3), (100, 50, 60, 70, 3), (400, 300, 200, 150, 12)]),
}
# Per-image transform (sx, sy, ox, oy): transformed = orig * s - o. Non-uniform scales,
# a crop (positive offset, all boxes stay inside) and padding (negative offset).
TRANSFORMS = {11: (1.5, 2.0, 4.0, 6.0), 42: (0.5, 0.75, -8.0, -3.0), 7: (0.4, 0.3, 0.0, 0.0)}


@pytest.fixture(scope="module")
def coco_gt(tmp_path_factory) -> COCO:
    images, annotations = [], []
    for image_id, (w, h, boxes) in IMAGES.items():
        images.append({"id": image_id, "width": w, "height": h, "file_name": f"{image_id}.png"})
        for x, y, bw, bh, cat in boxes:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": [x, y, bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": c, "name": f"c{c}"} for c in CAT_IDS]
    path = tmp_path_factory.mktemp("coco") / "instances.json"
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


class TransformedDataset(torch.utils.data.Dataset):
    """Samples as the data contract describes them, after a scale + offset transform of each image."""

    def __init__(self, coco: COCO, image_ids: list[int] | None = None) -> None:
        self.coco = coco
        self.image_ids = list(image_ids) if image_ids is not None else sorted(IMAGES)
        self.cat_ids = list(CAT_IDS)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, i):
        image_id = self.image_ids[i]
        w, h, boxes = IMAGES[image_id]
        sx, sy, ox, oy = TRANSFORMS[image_id]
        tw, th = math.ceil(w * sx - ox), math.ceil(h * sy - oy)
        xyxy = torch.tensor(
            [[x, y, x + bw, y + bh] for x, y, bw, bh, _ in boxes], dtype=torch.float32
        )
        transformed = xyxy * torch.tensor([sx, sy, sx, sy]) - torch.tensor([ox, oy, ox, oy])
        labels = torch.tensor([CAT_IDS.index(c) for *_, c in boxes], dtype=torch.int64)
        target = {
            "boxes": transformed,
            "labels": labels,
            "image_id": image_id,
            "orig_size": (h, w),
            "img_size": (th, tw),
            "scale": (sx, sy),
            "offset": (ox, oy),
            "flipped": False,
        }
        return torch.zeros(3, th, tw), target


class OracleDetector(nn.Module):
    """Eval-mode forward returns the (transformed) ground truth as detections with score 1."""

    def __init__(self, drop_image: int | None = None, empty: bool = False) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.drop_image, self.empty = drop_image, empty
        self.modes: list[bool] = []

    def forward(self, images, targets=None):
        self.modes.append(self.training)
        assert images.shape[-2] % 32 == 0 and images.shape[-1] % 32 == 0
        out = []
        for t in targets:
            keep = not self.empty and t["image_id"] != self.drop_image
            boxes = t["boxes"] if keep else t["boxes"][:0]
            labels = t["labels"] if keep else t["labels"][:0]
            out.append({"boxes": boxes.clone(), "scores": torch.ones(len(boxes)), "labels": labels})
        return out


def test_gt_as_detections_gives_perfect_ap_after_mapping_back(coco_gt):
    dataset = TransformedDataset(coco_gt)
    results = predict(OracleDetector(), dataset, device=CPU, batch_size=2)
    assert len(results) == sum(len(v[2]) for v in IMAGES.values())
    # Every detection equals its ground-truth box in original coordinates (xywh) with the right category.
    for image_id, (_, _, boxes) in IMAGES.items():
        mine = [r for r in results if r["image_id"] == image_id]
        assert len(mine) == len(boxes)
        for r, (x, y, bw, bh, cat) in zip(mine, boxes, strict=True):
            assert r["category_id"] == cat and r["score"] == 1.0
            assert r["bbox"] == pytest.approx([x, y, bw, bh], abs=1e-3)
    metrics = coco_evaluate(coco_gt, results, image_ids=dataset.image_ids)
    assert set(metrics) == set(COCO_METRIC_NAMES)
    for name in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR10", "AR100", "ARs", "ARm", "ARl"):
        assert metrics[name] == PERFECT, name
    assert metrics["AR1"] < 1.0  # one detection per image cannot recall images with several boxes


def test_evaluate_detector_end_to_end(coco_gt):
    metrics = evaluate_detector(
        OracleDetector(), TransformedDataset(coco_gt), device=CPU, batch_size=3
    )
    assert metrics["AP"] == PERFECT and metrics["AP50"] == PERFECT


def test_unmapped_boxes_would_fail(coco_gt):
    """Sanity check of the test itself: submitting transformed-coordinate boxes does not reach AP 1."""
    dataset = TransformedDataset(coco_gt)
    results = []
    for i in range(len(dataset)):
        _, t = dataset[i]
        for box, label in zip(t["boxes"].tolist(), t["labels"].tolist(), strict=True):
            xywh = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
            results.append(
                {
                    "image_id": t["image_id"],
                    "category_id": CAT_IDS[label],
                    "bbox": xywh,
                    "score": 1.0,
                }
            )
    assert coco_evaluate(coco_gt, results)["AP"] < 0.5


def test_zero_detections_give_zero_metrics(coco_gt):
    assert coco_evaluate(coco_gt, []) == dict.fromkeys(COCO_METRIC_NAMES, 0.0)
    metrics = evaluate_detector(OracleDetector(empty=True), TransformedDataset(coco_gt), device=CPU)
    assert metrics == dict.fromkeys(COCO_METRIC_NAMES, 0.0)


def test_evaluation_restricted_to_dataset_image_ids(coco_gt):
    # Detections only for images 11 and 42: perfect on that subset, imperfect on all images.
    model = OracleDetector(drop_image=7)
    subset = TransformedDataset(coco_gt, image_ids=[42, 11])
    assert evaluate_detector(model, subset, device=CPU)["AP"] == PERFECT
    full = predict(model, TransformedDataset(coco_gt), device=CPU)
    assert coco_evaluate(coco_gt, full)["AP"] < 0.9
    # Detections of images outside image_ids are ignored, not counted as false positives.
    everything = predict(OracleDetector(), TransformedDataset(coco_gt), device=CPU)
    assert coco_evaluate(coco_gt, everything, image_ids=[42])["AP"] == PERFECT


def test_coco_evaluate_rejects_unknown_and_empty_image_ids(coco_gt):
    with pytest.raises(NasSearchError, match="image id 999"):
        coco_evaluate(coco_gt, [], image_ids=[11, 999])
    with pytest.raises(NasSearchError, match="no images"):
        coco_evaluate(coco_gt, [], image_ids=[])


def test_coco_evaluate_is_silent_and_does_not_mutate_results(coco_gt, capsys):
    results = predict(OracleDetector(), TransformedDataset(coco_gt), device=CPU)
    before = json.dumps(results)
    coco_evaluate(coco_gt, results)
    assert capsys.readouterr().out == ""
    assert json.dumps(results) == before


def test_predict_restores_train_mode_and_runs_in_eval(coco_gt):
    model = OracleDetector()
    model.train()
    predict(model, TransformedDataset(coco_gt), device=CPU, batch_size=2)
    assert model.training and model.modes == [False, False]
    model.eval()
    predict(model, TransformedDataset(coco_gt), device=CPU, batch_size=3)
    assert not model.training


def test_boxes_to_original_clips_to_original_size():
    target = {"scale": (2.0, 0.5), "offset": (10.0, -4.0), "orig_size": (50, 40)}
    boxes = torch.tensor([[-30.0, -10.0, 20.0, 16.0], [50.0, 0.0, 200.0, 100.0]])
    got = boxes_to_original(boxes, target)
    # orig = (box + offset) / scale, then x clipped to [0, 40] and y to [0, 50]
    expected = torch.tensor([[0.0, 0.0, 15.0, 24.0], [30.0, 0.0, 40.0, 50.0]])
    assert torch.equal(got, expected)


class LossDetector(nn.Module):
    """Contract-shaped model whose losses depend only on the targets (so padding does not matter)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Identity()
        self.w = nn.Parameter(torch.tensor(0.5))
        self.loss_modes: list[bool] = []

    def head_outputs(self, feats):
        return (feats.mean(dim=(1, 2, 3)) * 0 + self.w,)

    def compute_losses(self, images, targets):
        return self.loss(self.head_outputs(self.backbone(images)), targets, images.shape[-2:])

    def loss(self, outputs, targets, image_shape):
        self.loss_modes.append(self.training)
        (w,) = outputs
        sums = torch.stack([t["boxes"].sum() for t in targets])
        counts = torch.tensor([float(len(t["boxes"])) for t in targets])
        return {"loss_box": (w * sums / 1000).mean(), "loss_count": counts.mean()}


def test_validation_loss_is_per_image_mean(coco_gt):
    dataset = TransformedDataset(coco_gt)
    model = LossDetector().train()
    got = validation_loss(model, dataset, device=CPU, batch_size=2)  # batches of 2 and 1 images
    per_image = [dataset[i][1] for i in range(len(dataset))]
    ref_box = sum(0.5 * float(t["boxes"].sum()) / 1000 for t in per_image) / 3
    ref_count = sum(len(t["boxes"]) for t in per_image) / 3
    assert got["loss_box"] == pytest.approx(ref_box, rel=1e-6)
    assert got["loss_count"] == pytest.approx(ref_count, rel=1e-6)
    assert got["loss"] == pytest.approx(ref_box + ref_count, rel=1e-6)
    assert model.training and model.loss_modes == [False, False]
    assert model.w.grad is None
