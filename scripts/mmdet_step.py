"""mmdetection's side of `scripts/bench_detector.py --mmdet PYTHON`: run by an interpreter that has
mmdetection 3.x (and mmcv with its ops) installed; nassearch is not imported here.

Builds mmdetection's own model of a detector from the config files shipped in its package (no
pretrained weights: `backbone.init_cfg` is dropped), feeds the same seeded input as our side
(random normalised images, 5 random boxes each, 80 classes), and prints one JSON line with the
median train-step (`model.loss`, backward, SGD step) and inference (`model.predict`, NMS
included) seconds.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import resource
import statistics
import time

import torch

CONFIGS = {
    "retinanet": ("RetinaNet-R50-FPN", "retinanet/retinanet_r50_fpn_1x_coco.py"),
    "fcos": ("FCOS-R50-FPN", "fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py"),
    "retinanet_nasfpn": (
        "RetinaNet-R50-NASFPN-7x256",
        "nas_fpn/retinanet_r50_nasfpn_crop640-50e_coco.py",
    ),
    "fcos_nasfcos": (
        "FCOS-R50-NASFCOS",
        "nas_fcos/nas-fcos_r50-caffe_fpn_nashead-gn-head_4xb4-1x_coco.py",
    ),
}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(detector: str):
    import mmdet
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.logging import MMLogger

    register_all_modules()
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    path = os.path.join(os.path.dirname(mmdet.__file__), ".mim", "configs", CONFIGS[detector][1])
    model_cfg = copy.deepcopy(Config.fromfile(path).model)
    model_cfg.backbone.init_cfg = None  # nothing is downloaded
    if "num_classes" in model_cfg.bbox_head:
        model_cfg.bbox_head.num_classes = 80
    return MODELS.build(model_cfg)


def batch_of(batch: int, size: int, gen: torch.Generator):
    """The same draws, in the same order, as bench_detector's images and `_fake_targets`."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    images = torch.randn(batch, 3, size, size, generator=gen)
    samples = []
    for _ in range(batch):
        xy = torch.rand(5, 2, generator=gen) * size * 0.7
        wh = 16 + torch.rand(5, 2, generator=gen) * size * 0.3
        boxes = torch.cat([xy, (xy + wh).clamp(max=size - 1)], dim=1)
        labels = torch.randint(0, 80, (5,), generator=gen)
        sample = DetDataSample()
        shape = (size, size)
        sample.set_metainfo(
            {
                "img_shape": shape,
                "ori_shape": shape,
                "pad_shape": shape,
                "batch_input_shape": shape,
                "scale_factor": (1.0, 1.0),
            }
        )
        sample.gt_instances = InstanceData(bboxes=boxes, labels=labels)
        samples.append(sample)
    return images, samples


def median_seconds(fn, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", nargs=2, metavar=("DETECTOR", "SIZE"), required=True)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    detector, size = args.worker[0], int(args.worker[1])
    if args.device not in ("auto", "cpu"):
        raise SystemExit("mmdet_step.py: CPU only")
    torch.manual_seed(0)
    model = build(detector)
    rss_model = _rss_mb()
    images, samples = batch_of(args.batch, size, torch.Generator().manual_seed(0))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

    def train_step() -> None:
        losses = model.loss(images, samples)
        loss, _ = model.parse_losses(losses)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def infer() -> None:
        with torch.no_grad():
            model.predict(images, copy.deepcopy(samples))

    model.train()
    train_s = median_seconds(train_step, args.iters, args.warmup)
    model.eval()
    infer_s = median_seconds(infer, args.iters, args.warmup)
    print(
        json.dumps(
            {
                "detector": CONFIGS[detector][0],
                "implementation": "mmdetection",
                "input": f"{size}x{size}",
                "batch": args.batch,
                "device": "cpu",
                "params": sum(p.numel() for p in model.parameters()),
                "train_step_s": round(train_s, 4),
                "inference_s": round(infer_s, 4),
                "inference_img_per_s": round(args.batch / infer_s, 2),
                "peak_memory_mb": round(_rss_mb(), 1),
                "peak_memory_kind": "process_max_rss",
                "rss_model_mb": round(rss_model, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
