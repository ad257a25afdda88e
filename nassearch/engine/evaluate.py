"""Detector evaluation: COCO-format predictions in original image coordinates, COCOeval AP, validation loss."""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from nassearch.data.collate import collate_detection
from nassearch.errors import NasSearchError

# Names of COCOeval.stats for bbox, in order. Size-range entries are -1 when the evaluated
# images have no ground truth of that size (COCO's convention, kept as is).
COCO_METRIC_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put the model in eval mode and restore its previous train/eval mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _loader(dataset: Dataset, batch_size: int, size_divisor: int) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        collate_fn=functools.partial(collate_detection, size_divisor=size_divisor),
    )


def _to_device(targets: Sequence[dict[str, Any]], device: torch.device) -> list[dict[str, Any]]:
    return [
        {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in t.items()}
        for t in targets
    ]


def _model_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def boxes_to_original(boxes: torch.Tensor, target: dict[str, Any]) -> torch.Tensor:
    """Map xyxy boxes from transformed-image to original-image pixels and clip them to the original size."""
    sx, sy = (float(v) for v in target["scale"])
    ox, oy = (float(v) for v in target["offset"])
    boxes = boxes.detach().float().cpu()
    offset = torch.tensor([ox, oy, ox, oy])
    scale = torch.tensor([sx, sy, sx, sy])
    orig = (boxes + offset) / scale
    height, width = (float(v) for v in target["orig_size"])
    orig[:, 0::2] = orig[:, 0::2].clamp(0, width)
    orig[:, 1::2] = orig[:, 1::2].clamp(0, height)
    return orig


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset: Dataset,
    *,
    device: torch.device | str | None = None,
    batch_size: int = 2,
    size_divisor: int = 32,
) -> list[dict[str, Any]]:
    """Run the detector over `dataset` and return COCO results (xywh boxes in original image coordinates)."""
    device = _model_device(model, device)
    cat_ids = list(dataset.cat_ids)
    results: list[dict[str, Any]] = []
    with _eval_mode(model):
        for images, targets in _loader(dataset, batch_size, size_divisor):
            outputs = model(images.to(device), _to_device(targets, device))
            results.extend(_coco_results(outputs, targets, cat_ids))
    return results


def _coco_results(
    outputs: Sequence[dict[str, torch.Tensor]], targets: Sequence[dict[str, Any]], cat_ids: list
) -> list[dict[str, Any]]:
    """One batch's detections as COCO results (xywh boxes in original image coordinates)."""
    results = []
    for output, target in zip(outputs, targets, strict=True):
        boxes = boxes_to_original(output["boxes"], target)
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        scores = output["scores"].detach().float().cpu().tolist()
        labels = output["labels"].detach().cpu().tolist()
        image_id = int(target["image_id"])
        for box, score, label in zip(xywh, scores, labels, strict=True):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(cat_ids[int(label)]),
                    "bbox": box,
                    "score": float(score),
                }
            )
    return results


def coco_evaluate(
    coco_gt: Any, results: Sequence[dict[str, Any]], image_ids: Iterable[int] | None = None
) -> dict[str, float]:
    """COCOeval bbox statistics (see COCO_METRIC_NAMES), restricted to `image_ids` when given, all silenced.

    No detections at all gives all-zero metrics (pycocotools cannot load an empty result list).
    """
    from pycocotools.cocoeval import COCOeval

    ids = (
        sorted({int(i) for i in image_ids})
        if image_ids is not None
        else sorted(coco_gt.getImgIds())
    )
    if not ids:
        raise NasSearchError("coco_evaluate: no images to evaluate (empty image_ids)")
    known = set(coco_gt.getImgIds())
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise NasSearchError(f"coco_evaluate: image id {unknown[0]} is not in the ground truth")
    wanted = set(ids)
    # loadRes mutates its input (adds area, id, ...), so hand it copies.
    detections = [dict(r) for r in results if int(r["image_id"]) in wanted]
    if not detections:
        return dict.fromkeys(COCO_METRIC_NAMES, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(detections)
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.params.imgIds = ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {
        name: float(value) for name, value in zip(COCO_METRIC_NAMES, evaluator.stats, strict=True)
    }


def evaluate_detector(
    model: nn.Module,
    dataset: Dataset,
    *,
    device: torch.device | str | None = None,
    batch_size: int = 2,
    size_divisor: int = 32,
) -> dict[str, float]:
    """COCO AP of `model` on `dataset` (only the dataset's own images count, so subsets evaluate correctly)."""
    results = predict(
        model, dataset, device=device, batch_size=batch_size, size_divisor=size_divisor
    )
    return coco_evaluate(dataset.coco, results, image_ids=dataset.image_ids)


@torch.no_grad()
def evaluate_with_loss(
    model: nn.Module,
    dataset: Dataset,
    *,
    device: torch.device | str | None = None,
    batch_size: int = 2,
    size_divisor: int = 32,
) -> tuple[dict[str, float], dict[str, float]]:
    """`evaluate_detector` and `validation_loss` together, from one forward pass per batch
    (`model.detections_and_losses`): the same two results for half the inference."""
    device = _model_device(model, device)
    cat_ids = list(dataset.cat_ids)
    results: list[dict[str, Any]] = []
    losses = _LossMeans()
    with _eval_mode(model):
        for images, targets in _loader(dataset, batch_size, size_divisor):
            detections, batch_losses = model.detections_and_losses(
                images.to(device), _to_device(targets, device)
            )
            results.extend(_coco_results(detections, targets, cat_ids))
            losses.add(batch_losses, len(targets))
    metrics = coco_evaluate(dataset.coco, results, image_ids=dataset.image_ids)
    return metrics, losses.means()


class _LossMeans:
    """Per-image weighted means of loss dicts; "loss" is the sum of the `loss_*` means."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, losses: dict[str, torch.Tensor], images: int) -> None:
        keys = list(losses.keys())
        values = torch.stack([losses[k].detach().float() for k in keys]).tolist()
        for key, value in zip(keys, values, strict=True):
            self.sums[key] = self.sums.get(key, 0.0) + value * images
        self.count += images

    def means(self) -> dict[str, float]:
        if self.count == 0:
            raise NasSearchError("validation_loss: the validation set is empty")
        means = {key: total / self.count for key, total in self.sums.items()}
        return {"loss": sum(means.values()), **means}


@torch.no_grad()
def validation_loss(
    model: nn.Module,
    dataset: Dataset,
    *,
    device: torch.device | str | None = None,
    batch_size: int = 2,
    size_divisor: int = 32,
) -> dict[str, float]:
    """Mean training losses over `dataset` in eval mode (NAS-FCOS rewards the negative loss).

    Each batch's losses are weighted by its number of images; "loss" is the sum of the `loss_*` means.
    """
    device = _model_device(model, device)
    losses = _LossMeans()
    with _eval_mode(model):
        for images, targets in _loader(dataset, batch_size, size_divisor):
            losses.add(
                model.compute_losses(images.to(device), _to_device(targets, device)), len(targets)
            )
    return losses.means()
