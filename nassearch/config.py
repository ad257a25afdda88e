"""Typed experiment configuration: pydantic models, YAML loading, `--set` overrides, one-line errors.

A config file is validated as a whole; every problem is reported as one line naming the file and the
dotted key (``experiments/x.yaml: train.epochs: expected a number, got 'ten'``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from nassearch.atomic import atomic_write_text
from nassearch.errors import NasSearchError, first_line
from nassearch.search_spaces.registry import space_names


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ----------------------------------------------------------------------------------------- data


class SplitConfig(Strict):
    """One COCO-format split: an image folder and an instances file, both relative to `data.root`."""

    images: str
    annotations: str
    # First N images after a seeded shuffle (applied after the holdout split).
    subset: int | None = Field(None, gt=0)
    subset_seed: int = 0
    # Split N images off this set with a seed (NAS-FPN held out 7,392 train2017 images for its
    # reward); `holdout_part` picks which side this split serves.
    holdout: int | None = Field(None, gt=0)
    holdout_seed: int = 0
    holdout_part: Literal["rest", "held_out"] = "rest"


class SyntheticConfig(Strict):
    """Parameters of the embedded synthetic dataset; the data is generated once per parameter set."""

    num_train: int = Field(400, ge=1)
    num_val: int = Field(100, ge=1)
    image_size: int = Field(160, ge=32)
    min_object_size: int = Field(8, ge=2)
    max_object_size: int = Field(128, ge=4)
    max_objects: int = Field(6, ge=1)
    seed: int = 0
    # Where generated datasets are cached (default: ~/.cache/nassearch/synthetic).
    cache_dir: str | None = None


class DataConfig(Strict):
    type: Literal["synthetic", "coco"] = "synthetic"
    # COCO root folder; `train`/`val` paths are relative to it. Required for type coco.
    root: str | None = None
    train: SplitConfig = Field(
        default_factory=lambda: SplitConfig(
            images="train2017", annotations="annotations/instances_train2017.json"
        )
    )
    val: SplitConfig = Field(
        default_factory=lambda: SplitConfig(
            images="val2017", annotations="annotations/instances_val2017.json"
        )
    )
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    # Skip training images without boxes (evaluation always keeps every image).
    skip_empty: bool = True


class InputConfig(Strict):
    """Image pipeline: `square` = NAS-FPN/TF fixed square crops with scale jitter; `resize` = keep ratio."""

    mode: Literal["square", "resize"] = "resize"
    size: int = Field(640, ge=32)
    short_side: int = Field(800, ge=32)
    max_size: int = Field(1333, ge=32)
    scale_range: tuple[float, float] = (0.8, 1.2)
    flip_prob: float = Field(0.5, ge=0, le=1)
    normalize: Literal["imagenet", "caffe"] = "imagenet"
    # Batches are padded to a multiple of this (128 for NAS-FPN pyramids, 32 otherwise).
    size_divisor: int = Field(32, ge=1)

    def network_size(self) -> tuple[int, int]:
        """The padded network input: the square crop, or short x max side rounded up to the divisor."""
        if self.mode == "square":
            return self.size, self.size
        d = self.size_divisor
        return -(-self.short_side // d) * d, -(-self.max_size // d) * d


# ---------------------------------------------------------------------------------------- model


class BackboneConfig(Strict):
    depth: Literal[10, 18, 34, 50, 101] = 50
    # Path to an ImageNet state dict with torchvision key names; nothing is ever downloaded.
    weights: str | None = None
    frozen_stages: int = Field(1, ge=-1, le=4)
    norm_eval: bool = True
    freeze_norm: bool = False
    style: Literal["pytorch", "caffe"] = "pytorch"


class NeckConfig(Strict):
    """What every neck section has: its type and width. A neck registered by a plugin search
    space is configured by this base alone; the package's necks add their own options."""

    type: str = "fpn"
    out_channels: int = Field(256, ge=8)

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        names = ["fpn", *space_names()]
        if value not in names:
            raise ValueError(f"must be one of {', '.join(repr(n) for n in names)}")
        return value


class FPNNeckConfig(NeckConfig):
    """The plain FPN (RetinaNet / FCOS papers)."""

    type: Literal["fpn"] = "fpn"
    # P6 from C5 ("input") or from P5 ("output"); None: the detector's convention (RetinaNet:
    # input, FCOS: output).
    extra_source: Literal["input", "output"] | None = None
    norm: Literal["bn", "gn"] | None = None


class NASFPNNeckConfig(NeckConfig):
    """A NAS-FPN pyramid built from `model.genotype`."""

    type: Literal["nasfpn"] = "nasfpn"
    # Pyramids stacked with independent weights (paper R-50 model: 7; proxy task: 3), and which
    # reference implementation to follow (Google's TensorFlow code, or mmdetection's).
    stacks: int = Field(1, ge=1)
    style: Literal["tensorflow", "mmdet"] = "tensorflow"


class NASFCOSNeckConfig(NeckConfig):
    """A NAS-FCOS decoder built from `model.genotype`."""

    type: Literal["nasfcos"] = "nasfcos"
    # In-cell upsampling (official code: bilinear; mmdetection: nearest).
    upsample: Literal["bilinear", "nearest"] = "bilinear"


_NECK_CONFIGS: dict[str, type[NeckConfig]] = {
    "fpn": FPNNeckConfig,
    "nasfpn": NASFPNNeckConfig,
    "nasfcos": NASFCOSNeckConfig,
}
_PLUGIN_NECK = "registered"  # the union's tag for necks of plugin search spaces


def _neck_tag(value: Any) -> str:
    # A neck section without `type` is a plain FPN, as in the defaults.
    kind = value.get("type", "fpn") if isinstance(value, dict) else getattr(value, "type", "fpn")
    return kind if kind in _NECK_CONFIGS else _PLUGIN_NECK


NeckSection = Annotated[
    Annotated[FPNNeckConfig, Tag("fpn")]
    | Annotated[NASFPNNeckConfig, Tag("nasfpn")]
    | Annotated[NASFCOSNeckConfig, Tag("nasfcos")]
    | Annotated[NeckConfig, Tag(_PLUGIN_NECK)],
    Discriminator(_neck_tag),
]
_NECK_TAGS = (*_NECK_CONFIGS, _PLUGIN_NECK)


def neck_config(kind: str, options: dict[str, Any]) -> NeckConfig:
    """The typed config of a `kind` neck from its options (raises pydantic's ValidationError)."""
    return _NECK_CONFIGS.get(kind, NeckConfig).model_validate({**options, "type": kind})


# Options every neck section accepted before it became a union, with the default each had: a
# section that does not take one still reads when it holds that default (configs and exports
# written by earlier versions spell out every field), see `_migrate_neck_options`.
_LEGACY_NECK_DEFAULTS: dict[str, Any] = {
    "extra_source": None,
    "norm": None,
    "stacks": 1,
    "style": "tensorflow",
    "upsample": "bilinear",
}


class DetectorConfig(Strict):
    """What every detector section has: backbone, neck (plain or searched), head size, focal loss, inference."""

    num_classes: int | None = Field(None, ge=1)
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    neck: NeckSection = Field(default_factory=FPNNeckConfig)
    # The searched architecture when neck.type is a search space: a named genotype of that space
    # (PAPER, FPN, PAPER_FPN_ONLY), a genotype mapping, or the path of an exported arch-k.yaml.
    genotype: str | dict[str, Any] | None = None
    # `model.genotype` resolved (name, file or mapping -> Genotype) when the config was loaded,
    # with the spelling it was resolved from; see `resolved_genotype`.
    _resolved: tuple[str, Any] | None = PrivateAttr(default=None)
    num_convs: int = Field(4, ge=0)
    feat_channels: int = Field(256, ge=8)
    head_norm: Literal["bn", "gn"] | None = None
    focal_alpha: float = 0.25
    # 1.5 in NAS-FPN (TF), 2.0 in mmdetection.
    focal_gamma: float = Field(2.0, ge=0)
    score_thresh: float = Field(0.05, ge=0, le=1)
    nms_thresh: float = Field(0.5, gt=0, le=1)
    topk_candidates: int = Field(1000, ge=1)
    detections_per_img: int = Field(100, ge=1)

    def _spelling(self) -> str:
        return json.dumps([self.neck.type, self.genotype], sort_keys=True, default=str)

    def remember_genotype(self, genotype: Any) -> None:
        """Keep `model.genotype` resolved (at config load), so builders need not read it again."""
        self._resolved = (self._spelling(), genotype)

    def resolved_genotype(self) -> Any | None:
        """The Genotype resolved at load, if `model.genotype` still reads as it did then.

        The config keeps the user's spelling (`PAPER`, a file path), which saved configs and
        ONNX metadata show; a copy whose genotype or neck type changed resolves again.
        """
        if self._resolved is not None and self._resolved[0] == self._spelling():
            return self._resolved[1]
        return None


class RetinaNetConfig(DetectorConfig):
    type: Literal["retinanet"] = "retinanet"
    # NAS-FPN's head: conv weights shared across levels, a separate BatchNorm per level.
    separate_norm_per_level: bool = False
    octave_base_scale: float = Field(4.0, gt=0)
    scales_per_octave: int = Field(3, ge=1)
    ratios: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0])
    pos_iou_thr: float = Field(0.5, gt=0, le=1)
    neg_iou_thr: float = Field(0.4, ge=0, le=1)
    min_pos_iou: float = Field(0.0, ge=0, le=1)
    box_loss: Literal["smooth_l1", "l1", "giou"] = "l1"
    smooth_l1_beta: float = Field(0.11, gt=0)


class FCOSConfig(DetectorConfig):
    type: Literal["fcos"] = "fcos"
    head_norm: Literal["bn", "gn"] | None = "gn"
    centerness_on: Literal["cls", "reg"] = "cls"
    regress_ranges: list[tuple[float, float]] = Field(
        default_factory=lambda: [(-1, 64), (64, 128), (128, 256), (256, 512), (512, 1e8)]
    )
    center_sampling: bool = False
    center_sampling_radius: float = Field(1.5, gt=0)
    box_loss: Literal["log", "linear", "giou"] = "giou"
    nms_thresh: float = Field(0.6, gt=0, le=1)


def _model_tag(value: Any) -> str | None:
    # A model section without `type` is a RetinaNet, as in the defaults.
    if isinstance(value, dict):
        return value.get("type", "retinanet")
    return getattr(value, "type", None)


ModelConfig = Annotated[
    Annotated[RetinaNetConfig, Tag("retinanet")] | Annotated[FCOSConfig, Tag("fcos")],
    Discriminator(_model_tag),
]
_MODEL_TAGS = ("retinanet", "fcos")


# ------------------------------------------------------------------------------------- training


class OptimizerConfig(Strict):
    type: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    # mmdetection's paramwise option: no weight decay on norm weights and biases.
    no_decay_norm_bias: bool = False
    bias_lr_mult: float = Field(1.0, gt=0)


class ScheduleConfig(Strict):
    type: Literal["step", "cosine", "constant"] = "step"
    # Step decay points, in epochs (fractions allowed); the learning rate is multiplied by `gamma` at each.
    milestones: list[float] = Field(default_factory=list)
    gamma: float = Field(0.1, gt=0)
    warmup_iters: int = Field(0, ge=0)
    # Linear warm-up starts at lr * warmup_ratio.
    warmup_ratio: float = Field(0.001, gt=0, le=1)
    # Cosine schedules decay to lr * min_lr_ratio.
    min_lr_ratio: float = Field(0.0, ge=0, le=1)


class TrainConfig(Strict):
    epochs: float = Field(12, gt=0)
    # Optional hard cap on optimiser steps (overrides epochs when smaller); useful for proxy tasks.
    max_iters: int | None = Field(None, gt=0)
    # Images per optimiser step in all: under torchrun each of N processes takes batch_size / N.
    batch_size: int = Field(2, ge=1)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    # Clip the global gradient norm to this value; None disables clipping.
    grad_clip: float | None = Field(None, gt=0)
    # bf16 autocast: "auto" enables it on CUDA only; never on CPU.
    amp: Literal["auto", "off", "bf16"] = "auto"
    # channels_last memory format: "auto" on CUDA only; "on" on CPU too (faster for large
    # convolutions, but not bit-identical to contiguous runs); "off" never.
    channels_last: Literal["auto", "off", "on"] = "auto"
    # Distributed runs on CUDA: BatchNorm layers in training mode (NAS-FPN cells, BN heads) compute
    # their statistics over the global batch (torch's SyncBatchNorm does not run on CPU).
    sync_bn: bool = False
    log_interval: int = Field(20, ge=1)
    # Evaluate every N epochs (0: only at the end).
    eval_interval: int = Field(0, ge=0)
    # Keep checkpoints/best.pth, the weights of the evaluation with the highest value of this COCO
    # metric (as mmdetection's save_best); None keeps none.
    save_best: (
        Literal[
            "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"
        ]
        | None
    ) = None
    # Keep epoch_N.pth every N epochs (and at the end); last.pth is rewritten after every epoch.
    checkpoint_interval: int = Field(1, ge=1)
    num_workers: int = Field(0, ge=0)
    tensorboard: bool = True


class EvalConfig(Strict):
    batch_size: int = Field(2, ge=1)


class CostConfig(Strict):
    """A cost term on the reward: MnasNet's soft constraint, or a hard limit."""

    metric: Literal["params", "macs", "latency_ms"]
    target: float = Field(gt=0)
    # Soft: reward * (cost / target) ** weight (MnasNet uses -0.07); a larger cost lowers the reward.
    weight: float = -0.07
    # Hard: an architecture over `target` gets the failure reward and is not trained.
    hard_limit: bool = False


class ProxyConfig(Strict):
    """How a sampled architecture is scored: short training on `data.train`, reward on held-out images.

    The reward images are split off the training set (`reward_holdout` images, as NAS-FPN held out
    7,392 train2017 images), never taken from the validation set you report on.
    """

    reward: Literal["ap", "ap50", "neg_loss"] = "ap"
    reward_holdout: int = Field(64, gt=0)
    reward_holdout_seed: int = 0
    failure_reward: float = 0.0
    # Wall-clock limit for one architecture's training; None: no limit.
    time_limit_s: float | None = Field(None, gt=0)
    cost: CostConfig | None = None
    # Latency is timed on batches of this many images of the proxy input size.
    latency_batch: int = Field(1, ge=1)
    # Each search trial reports its trainer state (last.pth) as a Tune checkpoint every epoch, so
    # an interrupted search resumes unfinished trials mid-way; off saves disk for big models.
    trial_checkpoints: bool = True
    # At most one trial checkpoint per this many seconds of training (0: every epoch). Short
    # proxy epochs make per-epoch checkpoints a fixed cost that buys little: a resume then loses
    # at most this much training. Rewards do not depend on it (resumes are exact).
    checkpoint_every_s: float = Field(0.0, ge=0)
    # Train trials on backbone features computed once per experiment (NAS-FCOS's proxy): `auto`
    # does so whenever the backbone is frozen (frozen_stages 4 with norm_eval); no augmentation.
    feature_cache: bool | Literal["auto"] = "auto"
    feature_cache_dtype: Literal["float16", "float32"] = "float16"
    # Score every architecture this many times under seeds seed, seed+1, ...: the reward is the
    # mean, the record keeps every score and their std (R times the cost, noise / sqrt(R)).
    repeats: int = Field(1, ge=1)


class ReevaluateConfig(Strict):
    """`search.reevaluate_top`: the best k architectures, re-scored with `seeds` more seeds."""

    k: int = Field(ge=1)
    seeds: int = Field(ge=1)


class SearchConfig(Strict):
    """The search itself: space, controller, budget, Ray resources, baselines (`nassearch run`)."""

    space: str = "nasfpn"
    # Options of the space, e.g. {num_cells: 7} for nasfpn or {part: fpn} for nasfcos.
    space_options: dict[str, Any] = Field(default_factory=dict)
    # Options of the neck the trials build (a `space` neck, model.neck.out_channels wide), e.g.
    # {stacks: 3, style: tensorflow} for nasfpn or {upsample: nearest} for nasfcos; model.neck
    # stays the plain neck a config without a genotype builds. See ExperimentConfig.searched_neck.
    neck: dict[str, Any] = Field(default_factory=dict)
    controller: Literal["reinforce", "ppo", "random", "evolution"] = "reinforce"
    # Hyper-parameters of the controller (lr, batch_size, failure_reward is taken from proxy).
    controller_options: dict[str, Any] = Field(default_factory=dict)
    num_architectures: int = Field(20, ge=1)
    max_concurrent: int = Field(1, ge=1)
    cpus_per_trial: float = Field(1, gt=0)
    gpus_per_trial: float = Field(0, ge=0)
    # Stop handing out new architectures after this many seconds (running trials finish).
    time_budget_s: float | None = Field(None, gt=0)
    # Named genotypes of the space trained first under the same proxy, to compare against.
    baselines: list[str] = Field(default_factory=list)
    # NAS-FCOS's progressive search in one run: stage 1 searches the FPN with the stock FCOS head
    # (num_architectures), stage 2 fixes stage 1's best FPN and searches the head
    # (head_architectures, default num_architectures).
    progressive: bool = False
    head_architectures: int | None = Field(None, ge=1)
    # When the search ends, re-score its best `k` with `seeds` more seeds each before anything is
    # ranked or exported, so that a lucky draw does not win (reevaluation.jsonl).
    reevaluate_top: ReevaluateConfig | None = None
    # Early stopping: `asha` (Ray Tune's asynchronous successive halving) cuts trials whose
    # per-epoch validation loss on the reward split is in the worst 1 - 1/reduction_factor of
    # their rung (rungs at grace_epochs * reduction_factor^k epochs, below max_epochs, the full
    # budget: train.epochs). `fifo` trains every trial to the end.
    scheduler: Literal["fifo", "asha"] = "fifo"
    # What ASHA compares at a rung, computed on the reward split after every epoch: the
    # detection loss (cheap), or the proxy reward itself (AP / AP50 / neg_loss, an evaluation).
    rung_metric: Literal["val_loss", "reward"] = "val_loss"
    grace_epochs: int = Field(1, ge=1)
    reduction_factor: int = 3
    max_epochs: int | None = Field(None, ge=1)
    # Tries of a trial whose process fails (a lost node): it resumes from its last epoch
    # checkpoint on another node; after max_retries more failures it is recorded as failed.
    max_retries: int = Field(0, ge=0)

    @field_validator("space")
    @classmethod
    def _known_space(cls, value: str) -> str:
        if value not in space_names():
            raise ValueError(f"must be one of {', '.join(repr(n) for n in space_names())}")
        return value


class ExperimentConfig(Strict):
    """A whole experiment: what `nassearch train` / `eval` / `summary` read."""

    name: str = Field("experiment", min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    seed: int = 0
    device: str = "auto"
    # Outputs go to <output_dir>/<name>/ (relative paths are relative to the working directory).
    output_dir: str = "runs"
    data: DataConfig = Field(default_factory=DataConfig)
    input: InputConfig = Field(default_factory=InputConfig)
    model: ModelConfig = Field(default_factory=RetinaNetConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    proxy: ProxyConfig = Field(default_factory=ProxyConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)

    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def searched_neck(self, space: str | None = None) -> NeckConfig:
        """The neck config of the search's architectures (of `space`, default search.space):
        model.neck's settings when it is already that type, else its width; then search.neck."""
        space = space or self.search.space
        neck = self.model.neck
        base = neck.model_dump() if neck.type == space else {"out_channels": neck.out_channels}
        options = self.search.neck if space == self.search.space else {}
        return neck_config(space, {**base, **options})

    def candidate_model(self, space: str | None = None) -> ModelConfig:
        """The model section a searched architecture of `space` is built from (its genotype is
        passed to `build_detector` separately)."""
        return self.model.model_copy(update={"neck": self.searched_neck(space)})

    @model_validator(mode="after")
    def _complete_search_neck(self) -> ExperimentConfig:
        # Every option of the trials' neck spelled out, so that two configs that build the same
        # neck compare equal (a resumed search checks its saved config) and saved configs say it.
        try:
            neck = self.searched_neck()
        except ValidationError:
            return self  # `_check_searched_neck` names the option
        options = neck.model_dump(exclude={"type", "out_channels"})
        if neck.out_channels != self.model.neck.out_channels:
            options["out_channels"] = neck.out_channels
        self.search.neck = options
        return self

    @model_validator(mode="before")
    @classmethod
    def _migrate_neck_options(cls, data: Any) -> Any:
        """Configs written before the neck section became a union set the searched neck's options
        (stacks, style, upsample) beside a plain FPN's in one `model.neck`: move those to
        `search.neck`, and drop legacy options a neck does not take while they hold their old
        default (earlier exports spell out every field). Anything else is left to validation."""
        if not isinstance(data, dict):
            return data
        model = data.get("model")
        if not isinstance(model, dict) or not isinstance(model.get("neck"), dict):
            return data
        neck = dict(model["neck"])
        kind = neck.get("type", "fpn")
        takes = _NECK_CONFIGS.get(kind, NeckConfig).model_fields
        search = data.get("search") if isinstance(data.get("search"), dict) else {}
        space = search.get("space", SearchConfig.model_fields["space"].default)
        searched = _NECK_CONFIGS.get(space, NeckConfig).model_fields if kind == "fpn" else {}
        moved: dict[str, Any] = {}
        for key in [k for k in neck if k not in takes and k in _LEGACY_NECK_DEFAULTS]:
            if key in searched:
                moved[key] = neck.pop(key)
            elif neck[key] == _LEGACY_NECK_DEFAULTS[key]:
                del neck[key]
        if neck == model["neck"]:
            return data
        data = {**data, "model": {**model, "neck": neck}}
        if moved:
            given = search.get("neck") if isinstance(search.get("neck"), dict) else {}
            data["search"] = {**search, "neck": {**moved, **given}}
        return data


# ------------------------------------------------------------------------------- loading, errors


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse one `--set a.b.c=value`; the value is read as YAML, so numbers, bools and lists are typed."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise NasSearchError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.epochs=2")
    parts = key.strip().split(".")
    if any(not p for p in parts):
        raise NasSearchError(f"--set {item!r}: malformed key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise NasSearchError(
            f"--set {item!r}: value is not valid YAML ({first_line(exc)})"
        ) from exc
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of `raw` with each `--set` applied; missing intermediate sections are created."""
    out = copy.deepcopy(raw)
    for item in overrides:
        parts, value = parse_override(item)
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                dotted = ".".join(parts[: i + 1])
                raise NasSearchError(f"--set {item!r}: {dotted} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with one-line errors for a missing, unreadable or non-mapping file."""
    path = Path(path)
    if not path.is_file():
        raise NasSearchError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise NasSearchError(f"{path}: not valid YAML ({first_line(exc)})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise NasSearchError(f"{path}: cannot read ({exc})") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise NasSearchError(
            f"{path}: top level must be a mapping of sections, got {type(data).__name__}"
        )
    return data


def validate_config(
    raw: dict[str, Any],
    source: str = "<config>",
    *,
    require_data: bool = True,
    check_space: bool = True,
) -> ExperimentConfig:
    """Validate a raw mapping; the first problem becomes one line naming `source` and the dotted key.

    `require_data=False` skips the data-root check, for commands that never read images (summary).
    `check_space=False` skips building the search space from `search.space_options`: for a Ray
    trial, which receives the config the driver already validated and parses its one genotype.
    """
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise NasSearchError(f"{source}: {format_validation_error(exc)}") from None
    _check_consistency(cfg, source, require_data=require_data, check_space=check_space)
    return cfg


def load_config(
    path: str | Path, overrides: Sequence[str] = (), *, require_data: bool = True
) -> ExperimentConfig:
    """Load, override and validate an experiment config file.

    A value written as `???` is one the user must give (a dataset root, weights on their disk):
    left unset, it is an error naming the key and the `--set` that fills it.
    """
    raw = apply_overrides(read_yaml(path), overrides)
    missing = first_required(raw)
    if missing is not None:
        raise NasSearchError(f"{path}: {missing}: required; give it with --set {missing}=VALUE")
    return validate_config(raw, str(path), require_data=require_data)


REQUIRED = "???"


def first_required(raw: Any, prefix: str = "") -> str | None:
    """Dotted key of the first `???` value in a raw config tree, if any."""
    if isinstance(raw, dict):
        for key, value in raw.items():
            found = first_required(value, f"{prefix}{key}.")
            if found is not None:
                return found
    elif raw == REQUIRED:
        return prefix.rstrip(".")
    return None


def save_config(cfg: BaseModel, path: str | Path) -> None:
    """Write the resolved config as YAML next to a run's outputs (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, yaml.safe_dump(json.loads(cfg.model_dump_json()), sort_keys=False))


def first_difference(a: Any, b: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    """(dotted key, a's value, b's value) of the first place two plain-data trees differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            found = first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
            if found is not None:
                return found
        return None
    return None if a == b else (prefix.rstrip("."), a, b)


def check_unchanged(
    cfg: ExperimentConfig, saved_path: Path, free: Sequence[str], what: str
) -> None:
    """A resumed run keeps its saved settings: the first key outside `free` (dotted) that `cfg`
    changes is an error naming it."""
    saved = load_config(saved_path, require_data=False)
    trees = [json.loads(c.model_dump_json()) for c in (saved, cfg)]
    for tree in trees:
        for dotted in free:
            *parents, leaf = dotted.split(".")
            node = tree
            for part in parents:
                node = node.get(part, {})
            node.pop(leaf, None)
    difference = first_difference(*trees)
    if difference is not None:
        key, was, now = difference
        raise NasSearchError(
            f"{key}: {now!r} differs from {was!r} in the {what}'s {saved_path}; --resume continues "
            "with the saved settings (drop the change, or start a new --name)"
        )


def format_validation_error(exc: ValidationError) -> str:
    """One line for the first error of a pydantic ValidationError: dotted key and what is wrong."""
    err = exc.errors()[0]
    loc = _clean_loc(err["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        return f"{key}: unknown key"
    if kind == "missing":
        return f"{key}: required value is missing"
    if kind == "union_tag_invalid":
        allowed = err.get("ctx", {}).get("expected_tags", "")
        return f"{key}.type: unknown type {err.get('ctx', {}).get('tag')!r} (expected one of {allowed})"
    msg = err["msg"].replace("Input should be", "must be").replace("Value error, ", "")
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return f"{key}: {msg.lower()}, got {value!r}"
    return f"{key}: {msg[0].lower() + msg[1:]} (got {value!r})"


def _clean_loc(loc: tuple[Any, ...]) -> list[Any]:
    # A discriminated union puts the tag into the location: model.retinanet.x -> model.x,
    # model.neck.nasfpn.stacks -> model.neck.stacks.
    out: list[Any] = []
    for i, part in enumerate(loc):
        if i > 0 and loc[i - 1] == "model" and part in _MODEL_TAGS:
            continue
        if i > 0 and loc[i - 1] == "neck" and part in _NECK_TAGS:
            continue
        out.append(part)
    return out


def _check_consistency(
    cfg: ExperimentConfig, source: str, *, require_data: bool, check_space: bool
) -> None:
    if require_data and cfg.data.type == "coco" and not cfg.data.root:
        raise NasSearchError(
            f"{source}: data.root: required for COCO data; pass --set data.root=/path/to/coco"
        )
    if cfg.model.type == "retinanet" and cfg.model.neg_iou_thr > cfg.model.pos_iou_thr:
        raise NasSearchError(
            f"{source}: model.neg_iou_thr: {cfg.model.neg_iou_thr} is above model.pos_iou_thr "
            f"{cfg.model.pos_iou_thr}"
        )
    _check_genotype(cfg, source)
    _check_searched_neck(cfg, source)
    _check_scheduler(cfg, source)
    if check_space:
        _check_space(cfg, source)
    lo, hi = cfg.input.scale_range
    if not 0 < lo <= hi:
        raise NasSearchError(f"{source}: input.scale_range: need 0 < low <= high, got {[lo, hi]}")
    syn = cfg.data.synthetic
    if syn.min_object_size > syn.max_object_size:
        raise NasSearchError(
            f"{source}: data.synthetic.min_object_size: {syn.min_object_size} exceeds "
            f"max_object_size {syn.max_object_size}"
        )
    if syn.max_object_size > syn.image_size:
        raise NasSearchError(
            f"{source}: data.synthetic.max_object_size: {syn.max_object_size} exceeds "
            f"image_size {syn.image_size}"
        )


def _check_scheduler(cfg: ExperimentConfig, source: str) -> None:
    """ASHA's rungs must fit inside the trials' training (epochs are its time unit)."""
    search = cfg.search
    if search.reduction_factor < 2:
        raise NasSearchError(
            f"{source}: search.reduction_factor: {search.reduction_factor} keeps every trial; "
            "successive halving needs at least 2"
        )
    if search.scheduler != "asha":
        return
    epochs = cfg.train.epochs
    if cfg.train.max_iters is not None or epochs != int(epochs):
        raise NasSearchError(
            f"{source}: search.scheduler: asha counts whole epochs, but train.epochs is {epochs:g}"
            + (" and train.max_iters is set" if cfg.train.max_iters is not None else "")
        )
    if search.max_epochs is not None and search.max_epochs != epochs:
        raise NasSearchError(
            f"{source}: search.max_epochs: {search.max_epochs} differs from train.epochs "
            f"{epochs:g}, the trials' full budget (leave it out, or set both alike)"
        )
    if search.grace_epochs >= epochs:
        raise NasSearchError(
            f"{source}: search.grace_epochs: {search.grace_epochs} is not below max_epochs "
            f"{epochs:g}, so no trial could be stopped early"
        )
    if cfg.proxy.repeats != 1:
        raise NasSearchError(
            f"{source}: search.scheduler: asha needs proxy.repeats 1 (got {cfg.proxy.repeats}); "
            "a stopped architecture would have some repeats and not others"
        )


def _check_searched_neck(cfg: ExperimentConfig, source: str) -> None:
    """search.neck must configure the search space's neck (one line naming the option)."""
    try:
        cfg.searched_neck()
    except ValidationError as exc:
        line = format_validation_error(exc)
        if line.startswith("type: "):
            line = f"the {cfg.search.space} neck: {line}"
        raise NasSearchError(f"{source}: search.neck.{line}") from None


def _check_space(cfg: ExperimentConfig, source: str) -> None:
    """The search space must build from its options here, before any run folder is made."""
    from nassearch.search_spaces import get_space

    options = cfg.search.space_options
    try:
        get_space(cfg.search.space, **options)
    except NasSearchError as exc:
        raise NasSearchError(f"{source}: search.space_options: {exc}") from None
    except TypeError as exc:  # an option the space's constructor does not take
        raise NasSearchError(
            f"{source}: search.space_options: {cfg.search.space} takes no such option "
            f"({first_line(exc)})"
        ) from None


def _check_genotype(cfg: ExperimentConfig, source: str) -> None:
    """A searched neck needs a genotype that its space accepts; a plain FPN takes none."""
    model = cfg.model
    if model.neck.type == "fpn":
        if model.genotype is not None:
            raise NasSearchError(
                f"{source}: model.genotype: given, but model.neck.type is fpn "
                "(use nasfpn or nasfcos to build a searched neck)"
            )
        return
    if model.genotype is None:
        raise NasSearchError(
            f"{source}: model.genotype: required when model.neck.type is {model.neck.type} "
            "(e.g. PAPER, or the arch-k.yaml of an exported architecture)"
        )
    from nassearch.search_spaces import resolve_genotype

    try:
        genotype = resolve_genotype(model.genotype, model.neck.type)
    except NasSearchError as exc:
        raise NasSearchError(f"{source}: model.genotype: {exc}") from None
    if getattr(genotype, "head", None) is not None and model.type != "fcos":
        raise NasSearchError(
            f"{source}: model.genotype: searches a NAS-FCOS head, which needs model.type fcos"
        )
    model.remember_genotype(genotype)
