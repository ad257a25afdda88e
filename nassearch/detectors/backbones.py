"""ResNet backbones for detection, with torchvision's parameter names so ImageNet checkpoints load."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from nassearch.errors import NasSearchError

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "build_backbone", "load_pretrained"]

STYLES = ("pytorch", "caffe")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a BN follows)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias (a BN follows)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (ResNet-10/18/34); style does not apply."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        style: str = "pytorch",
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 residual block (ResNet-50/101).

    "pytorch" style strides the 3x3 conv (torchvision's ResNet v1.5); "caffe" strides the first
    1x1 conv as in the original paper and the MSRA/Detectron caffe2 checkpoints.
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        style: str = "pytorch",
    ) -> None:
        super().__init__()
        stride1, stride2 = (stride, 1) if style == "caffe" else (1, stride)
        self.conv1 = conv1x1(inplanes, planes, stride1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride2)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


# depth -> (block, blocks per stage); 10 is the NAS-FPN proxy backbone (one BasicBlock per stage).
ARCH_SETTINGS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    10: (BasicBlock, (1, 1, 1, 1)),
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


class ResNet(nn.Module):
    """ResNet feature extractor returning the stages in `out_indices` (1=C2 ... 4=C5).

    Stage i (layer i) has stride 2**(i+1). Layers after the last requested stage are kept (so that
    full checkpoints load) but never run, and their parameters are frozen so that optimisers and
    DDP do not see parameters without gradients.
    `frozen_stages`: -1 none, 0 the stem (conv1/bn1), k the stem and layer1..layerk; frozen parts get
    requires_grad=False and stay in eval mode. `norm_eval`: every BN stays in eval mode (running
    stats frozen) during training. `freeze_norm`: BN affine parameters are not trained; together
    with `norm_eval=True` this is Detectron's FrozenBatchNorm.
    """

    def __init__(
        self,
        depth: int = 50,
        out_indices: Sequence[int] = (2, 3, 4),
        frozen_stages: int = -1,
        norm_eval: bool = False,
        freeze_norm: bool = False,
        style: str = "pytorch",
    ) -> None:
        super().__init__()
        if depth not in ARCH_SETTINGS:
            raise NasSearchError(
                f"resnet depth {depth!r} not supported; choose from {sorted(ARCH_SETTINGS)}"
            )
        out_indices = tuple(out_indices)
        if not out_indices or any(i not in (1, 2, 3, 4) for i in out_indices):
            raise NasSearchError(
                f"resnet out_indices {list(out_indices)} must be a non-empty subset of 1..4"
            )
        if list(out_indices) != sorted(set(out_indices)):
            raise NasSearchError(
                f"resnet out_indices {list(out_indices)} must be increasing without repeats"
            )
        if frozen_stages not in range(-1, 5):
            raise NasSearchError(f"resnet frozen_stages {frozen_stages!r} must be in -1..4")
        if style not in STYLES:
            raise NasSearchError(f"resnet style {style!r} must be one of {list(STYLES)}")
        block, stage_blocks = ARCH_SETTINGS[depth]
        self.depth = depth
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.freeze_norm = freeze_norm
        self.style = style

        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for i, num_blocks in enumerate(stage_blocks, start=1):
            planes = 64 * 2 ** (i - 1)
            layer = self._make_layer(block, planes, num_blocks, stride=1 if i == 1 else 2)
            self.add_module(f"layer{i}", layer)
        self.out_channels: list[int] = [64 * 2 ** (i - 1) * block.expansion for i in out_indices]
        self.out_strides: list[int] = [2 ** (i + 1) for i in out_indices]

        self._init_weights()
        self._set_requires_grad()

    def _make_layer(
        self, block: type[BasicBlock] | type[Bottleneck], planes: int, num_blocks: int, stride: int
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, self.style)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, style=self.style) for _ in range(1, num_blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        # torchvision's defaults
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _frozen_modules(self) -> list[nn.Module]:
        """Stem and layers up to `frozen_stages`, in stage order."""
        if self.frozen_stages < 0:
            return []
        mods: list[nn.Module] = [self.conv1, self.bn1]
        return mods + [getattr(self, f"layer{i}") for i in range(1, self.frozen_stages + 1)]

    def _set_requires_grad(self) -> None:
        unused = [getattr(self, f"layer{i}") for i in range(max(self.out_indices) + 1, 5)]
        for m in self._frozen_modules() + unused:
            m.requires_grad_(False)
        if self.freeze_norm:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.requires_grad_(False)

    def train(self, mode: bool = True) -> ResNet:
        """Set train/eval mode, keeping frozen stages (and all BN layers if `norm_eval`) in eval."""
        super().train(mode)
        if mode:
            for m in self._frozen_modules():
                m.eval()
            if self.norm_eval:
                for m in self.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
        return self

    def forward(self, images: Tensor) -> list[Tensor]:
        """Return the feature maps of the stages in `out_indices`, finest first."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        outs = []
        for i in range(1, max(self.out_indices) + 1):
            x = getattr(self, f"layer{i}")(x)
            if i in self.out_indices:
                outs.append(x)
        return outs


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _name_keys(keys: list[str], first: int = 3) -> str:
    shown = ", ".join(keys[:first])
    return (
        f"{shown}, ... ({len(keys)} in all)"
        if len(keys) > first
        else f"{shown} ({len(keys)} in all)"
    )


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, Tensor]:
    """Return the tensor mapping inside a checkpoint (plain, or under "state_dict"/"model")."""
    for _ in range(2):  # e.g. {"model": {...}} or {"state_dict": {...}}; at most two wrappers
        if isinstance(obj, Mapping) and not all(isinstance(v, Tensor) for v in obj.values()):
            inner = next(
                (obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), Mapping)), None
            )
            if inner is not None:
                obj = inner
    if not isinstance(obj, Mapping):
        raise NasSearchError(f"{path}: not a state dict (got a {type(obj).__name__})")
    if not obj:
        raise NasSearchError(f"{path}: not a state dict (empty {type(obj).__name__})")
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, Tensor):
            raise NasSearchError(
                f"{path}: not a state dict: entry {k!r} is a {type(v).__name__}, not a tensor"
            )
    return dict(obj)


def load_pretrained(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load a torchvision-style ResNet checkpoint into `model` strictly (ignoring the fc classifier).

    Accepts a plain state dict or one wrapped under "state_dict"/"model", with or without a
    DataParallel "module." prefix. BN `num_batches_tracked` buffers may be absent (torchvision's
    original ImageNet files predate them). Never downloads. Returns a small report.
    """
    path = Path(path)
    if not path.is_file():
        raise NasSearchError(f"{path}: pretrained weights file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unpickling / zip / weights_only failure means a bad file
        raise NasSearchError(
            f"{path}: cannot read checkpoint ({type(e).__name__}: {_one_line(e)})"
        ) from e
    ckpt = {k.removeprefix("module."): v for k, v in _unwrap_state_dict(obj, path).items()}
    ignored = sorted(k for k in ckpt if k.startswith("fc."))
    ckpt = {k: v for k, v in ckpt.items() if not k.startswith("fc.")}

    what = f"ResNet-{model.depth}" if hasattr(model, "depth") else type(model).__name__
    own = model.state_dict()
    absent = [k for k in own if k not in ckpt]
    missing = [k for k in absent if not k.endswith("num_batches_tracked")]
    if missing:
        raise NasSearchError(f"{path}: missing key(s) for {what}: {_name_keys(missing)}")
    unexpected = [k for k in ckpt if k not in own]
    if unexpected:
        raise NasSearchError(f"{path}: unexpected key(s) for {what}: {_name_keys(unexpected)}")
    for k, v in ckpt.items():
        if v.shape != own[k].shape:
            raise NasSearchError(
                f"{path}: shape mismatch for {k}: checkpoint {list(v.shape)}, {what} {list(own[k].shape)}"
            )
    model.load_state_dict({**own, **ckpt}, strict=True)
    return {"path": str(path), "loaded": len(ckpt), "ignored": ignored, "absent_buffers": absent}


def build_backbone(
    depth: int,
    *,
    weights: str | Path | None = None,
    out_indices: Sequence[int] = (2, 3, 4),
    frozen_stages: int = -1,
    norm_eval: bool = False,
    freeze_norm: bool = False,
    style: str = "pytorch",
) -> ResNet:
    """Build a ResNet backbone and, if `weights` is a file path, load it with `load_pretrained`."""
    model = ResNet(
        depth,
        out_indices=out_indices,
        frozen_stages=frozen_stages,
        norm_eval=norm_eval,
        freeze_norm=freeze_norm,
        style=style,
    )
    if weights is not None:
        try:
            load_pretrained(model, weights)
        except NasSearchError as exc:
            raise NasSearchError(f"model.backbone.weights: {exc}") from None
    return model
