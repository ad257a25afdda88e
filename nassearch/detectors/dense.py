"""What RetinaNet and FCOS share: backbone -> neck -> head, then losses (training) or detections (eval).

Subclasses provide `loss` and `postprocess`; `forward_features` starts from backbone features so
a trainer can feed cached ones (the NAS-FCOS proxy trick), and `head_outputs` gives the raw
per-level outputs (what ONNX export stops at).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from nassearch.distributed import average_over_processes
from nassearch.errors import NasSearchError

if TYPE_CHECKING:
    from nassearch.config import DetectorConfig

# Strides of the P3..P7 pyramid every neck outputs and every dense head predicts on.
PYRAMID_STRIDES = (8, 16, 32, 64, 128)


def loss_and_inference_settings(cfg: DetectorConfig) -> dict[str, float | int]:
    """The focal loss and inference settings every dense detector takes from its config."""
    return {
        "focal_alpha": cfg.focal_alpha,
        "focal_gamma": cfg.focal_gamma,
        "score_thresh": cfg.score_thresh,
        "nms_thresh": cfg.nms_thresh,
        "topk_candidates": cfg.topk_candidates,
        "detections_per_img": cfg.detections_per_img,
    }


class DenseDetector(nn.Module):
    """Base of single-stage dense detectors (`backbone`, `neck`, `head` attributes set by subclasses)."""

    def forward(self, images: Tensor, targets: list[dict] | None = None):
        """Losses (training) or detections (eval) for a padded image batch [B, 3, H, W]."""
        feats = self.backbone(images)
        return self.forward_features(feats, tuple(images.shape[-2:]), targets)

    def forward_features(
        self,
        feats: Sequence[Tensor],
        image_shape: tuple[int, int],
        targets: list[dict] | None = None,
    ):
        """Same as forward, from backbone features; boxes are clipped to targets' `img_size` if given."""
        outputs = self.head_outputs(feats)
        if self.training:
            if targets is None:
                raise NasSearchError(
                    f"{type(self).__name__}: targets are required in training mode"
                )
            return self.loss(outputs, targets, image_shape)
        return self.postprocess(outputs, image_shape, targets)

    def compute_losses(self, images: Tensor, targets: list[dict]) -> dict[str, Tensor]:
        """The loss dict in any mode (validation loss in eval mode; NAS-FCOS's reward)."""
        outputs = self.head_outputs(self.backbone(images))
        return self.loss(outputs, targets, images.shape[-2:])

    def detections_and_losses(
        self, images: Tensor, targets: list[dict]
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """Detections and the loss dict from one forward pass (NAS-FCOS's reward needs both: AP
        and the validation loss), each equal to what `forward` (eval) and `compute_losses` give."""
        return self.detections_and_losses_from(self.backbone(images), images.shape[-2:], targets)

    def detections_and_losses_from(
        self, feats: Sequence[Tensor], image_shape: tuple[int, int], targets: list[dict]
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """`detections_and_losses` from backbone features."""
        outputs = self.head_outputs(feats)
        losses = self.loss(outputs, targets, image_shape)
        return self.postprocess(outputs, tuple(image_shape), targets), losses

    def head_outputs(self, feats: Sequence[Tensor]) -> Any:
        """Raw per-level head outputs from backbone features (through the neck)."""
        return self.head(self.neck(feats))

    def global_count(self, count: Tensor) -> Tensor:
        """A loss normaliser (e.g. positive samples) averaged over DDP processes while training.

        Every rank then divides its loss sum by the same count, and DDP's gradient mean equals the
        gradient of one process holding the whole global batch. Evaluation (rank 0 alone, eval
        mode) keeps the local count, so no collective is entered by one process only.
        """
        return average_over_processes(count.float()) if self.training else count.float()

    def loss(
        self, outputs: Any, targets: list[dict], image_shape: tuple[int, int]
    ) -> dict[str, Tensor]:
        raise NotImplementedError

    def postprocess(
        self, outputs: Any, image_shape: tuple[int, int], targets: list[dict] | None = None
    ) -> list[dict[str, Tensor]]:
        raise NotImplementedError
