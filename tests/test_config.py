"""Config loading: typed overrides, one-line errors naming file and dotted key, resolved-config round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nassearch.config import (
    ExperimentConfig,
    FCOSConfig,
    FPNNeckConfig,
    NASFPNNeckConfig,
    apply_overrides,
    check_unchanged,
    load_config,
    save_config,
    validate_config,
)
from nassearch.errors import NasSearchError

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def error_of(path: Path, overrides=(), **kwargs) -> str:
    with pytest.raises(NasSearchError) as info:
        load_config(path, overrides, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path)) or message.startswith("--set")
    return message


def test_overrides_are_typed():
    raw = apply_overrides(
        {"train": {"epochs": 12}},
        [
            "train.epochs=2.5",
            "train.batch_size=4",
            "train.tensorboard=false",
            "input.scale_range=[0.5, 1.5]",
            "model.backbone.weights=null",
            "name=abc",
        ],
    )
    assert raw["train"] == {"epochs": 2.5, "batch_size": 4, "tensorboard": False}
    assert raw["input"]["scale_range"] == [0.5, 1.5]
    assert raw["model"]["backbone"]["weights"] is None
    cfg = validate_config(raw)
    assert cfg.train.epochs == 2.5 and cfg.train.batch_size == 4
    assert cfg.input.scale_range == (0.5, 1.5)
    assert cfg.name == "abc"


def test_override_into_a_value_is_refused():
    with pytest.raises(NasSearchError, match=r"train\.epochs is a value"):
        apply_overrides({"train": {"epochs": 1}}, ["train.epochs.x=2"])
    with pytest.raises(NasSearchError, match="KEY=VALUE"):
        apply_overrides({}, ["train.epochs"])


def test_unknown_key_names_file_and_dotted_key(tmp_path):
    path = write(tmp_path, {"model": {"type": "retinanet", "backbone": {"depht": 50}}})
    assert error_of(path) == f"{path}: model.backbone.depht: unknown key"


def test_unknown_key_from_override(tmp_path):
    path = write(tmp_path, {})
    assert error_of(path, ["train.epocs=3"]) == f"{path}: train.epocs: unknown key"


def test_wrong_type_names_key_and_value(tmp_path):
    path = write(tmp_path, {"train": {"epochs": "ten"}})
    message = error_of(path)
    assert message.startswith(f"{path}: train.epochs: ") and "'ten'" in message


def test_wrong_choice_in_union_member(tmp_path):
    path = write(tmp_path, {"model": {"type": "fcos", "box_loss": "l2"}})
    message = error_of(path)
    assert message.startswith(f"{path}: model.box_loss: ") and "'l2'" in message


def test_unknown_detector_type(tmp_path):
    path = write(tmp_path, {"model": {"type": "yolo"}})
    assert "model.type: unknown type 'yolo'" in error_of(path)


def test_missing_required_value(tmp_path):
    path = write(tmp_path, {"data": {"train": {"images": "train2017"}}})
    assert error_of(path) == f"{path}: data.train.annotations: required value is missing"


def test_coco_needs_a_root_except_for_summary(tmp_path):
    path = write(tmp_path, {"data": {"type": "coco"}})
    assert "data.root" in error_of(path) and "--set data.root=" in error_of(path)
    cfg = load_config(path, require_data=False)
    assert cfg.data.type == "coco"


def test_missing_and_malformed_files(tmp_path):
    assert error_of(tmp_path / "nope.yaml").endswith("config file not found")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    assert "not valid YAML" in error_of(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    assert "must be a mapping" in error_of(listing)


def test_fcos_defaults_differ_from_retinanet():
    cfg = validate_config({"model": {"type": "fcos"}})
    assert isinstance(cfg.model, FCOSConfig)
    assert cfg.model.head_norm == "gn" and cfg.model.nms_thresh == 0.6


def test_saved_config_reloads_identically(tmp_path):
    cfg = validate_config({"name": "x", "model": {"type": "fcos"}, "train": {"epochs": 3}})
    save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(tmp_path / "run" / "config.yaml")
    assert again == cfg
    assert isinstance(again, ExperimentConfig)


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.rglob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    from nassearch.config import apply_overrides, first_required, read_yaml

    # `???` values are the user's to give (data root, weights): stand in with null for them.
    local: list[str] = []
    while (key := first_required(apply_overrides(read_yaml(path), local))) is not None:
        local.append(f"{key}=null")
    if local:
        with pytest.raises(NasSearchError, match="required; give it with --set"):
            load_config(path, require_data=False)
    cfg = load_config(path, local, require_data=False)
    if cfg.data.type == "coco":
        with pytest.raises(NasSearchError, match=r"data\.root"):
            load_config(path, local)


def test_check_unchanged_ignores_free_keys_and_names_the_first_change(tmp_path):
    saved = tmp_path / "config.yaml"
    save_config(validate_config({"train": {"epochs": 2, "log_interval": 5}}), saved)
    free = ("device", "train.log_interval", "train.num_workers", "eval.batch_size")
    same = {"device": "cpu", "train": {"epochs": 2, "log_interval": 9, "num_workers": 1},
            "eval": {"batch_size": 8}}  # fmt: skip
    check_unchanged(validate_config(same), saved, free, "run")
    changed = {"train": {"epochs": 3, "optimizer": {"lr": 0.5}}}
    with pytest.raises(NasSearchError) as info:
        check_unchanged(validate_config(changed), saved, free, "run")
    assert str(info.value).startswith(f"train.epochs: 3.0 differs from 2.0 in the run's {saved}")


def test_the_neck_section_is_a_union_of_typed_necks(tmp_path):
    """Each neck type takes its own options; another type's option names the key."""
    nasfpn = validate_config(
        {"model": {"neck": {"type": "nasfpn", "stacks": 7}, "genotype": "PAPER"}}
    ).model.neck
    assert type(nasfpn) is NASFPNNeckConfig and (nasfpn.stacks, nasfpn.style) == (7, "tensorflow")
    assert type(validate_config({}).model.neck) is FPNNeckConfig
    cases = [
        ({"type": "nasfcos", "stacks": 2}, "model.neck.stacks: unknown key"),
        ({"type": "nasfpn", "upsample": "nearest"}, "model.neck.upsample: unknown key"),
        ({"type": "nasfpn", "style": "keras"}, "model.neck.style: "),
        ({"type": "fpn", "norm": "ln"}, "model.neck.norm: "),
        ({"type": "yolo"}, "model.neck.type: must be one of 'fpn'"),
    ]
    for neck, needle in cases:
        message = error_of(write(tmp_path, {"model": {"neck": neck, "genotype": "PAPER"}}))
        assert needle in message, message


def test_the_trials_neck_is_search_neck_at_the_model_necks_width(tmp_path):
    raw = {"model": {"neck": {"out_channels": 48}}, "search": {"neck": {"stacks": 3}}}
    cfg = validate_config(raw)
    assert type(cfg.model.neck) is FPNNeckConfig and cfg.model.neck.out_channels == 48
    neck = cfg.candidate_model().neck
    assert (type(neck), neck.out_channels, neck.stacks) == (NASFPNNeckConfig, 48, 3)
    # Spelled out in full, so a saved config says it and compares equal on resume.
    assert cfg.search.neck == {"stacks": 3, "style": "tensorflow"}
    fcos = validate_config({"model": {"type": "fcos"}, "search": {"space": "nasfcos"}})
    assert fcos.candidate_model().neck.upsample == "bilinear"
    path = write(tmp_path, {"search": {"space": "nasfcos", "neck": {"stacks": 3}}})
    assert error_of(path) == f"{path}: search.neck.stacks: unknown key"
    path = write(tmp_path, {"search": {"neck": {"stacks": 0}}})
    assert error_of(path).startswith(f"{path}: search.neck.stacks: must be greater than")


def test_configs_of_earlier_versions_read_with_their_neck_options_moved(tmp_path):
    """Before the union, one neck section held every neck's options: a search config put the
    trials' stacks beside a plain FPN's width, and saved configs spelled out every field."""
    old_search = {
        "model": {"neck": {"type": "fpn", "out_channels": 32, "extra_source": None,
                           "norm": None, "stacks": 3, "style": "mmdet", "upsample": "bilinear"}},
        "search": {"space": "nasfpn"},
    }  # fmt: skip
    cfg = validate_config(old_search)
    assert cfg.model.neck == FPNNeckConfig(out_channels=32)
    assert cfg.search.neck == {"stacks": 3, "style": "mmdet"}
    new = validate_config(
        {
            "model": {"neck": {"out_channels": 32}},
            "search": {"neck": {"stacks": 3, "style": "mmdet"}},
        }
    )
    assert new == cfg
    old_retrain = {
        "model": {"neck": {"type": "nasfpn", "out_channels": 256, "extra_source": None,
                           "norm": None, "stacks": 7, "style": "tensorflow",
                           "upsample": "bilinear"}, "genotype": "PAPER"},
    }  # fmt: skip
    assert validate_config(old_retrain).model.neck == NASFPNNeckConfig(out_channels=256, stacks=7)
    # A legacy option away from its old default was never a no-op to drop silently.
    old_retrain["model"]["neck"]["norm"] = "gn"
    message = error_of(write(tmp_path, old_retrain))
    assert message.endswith("model.neck.norm: unknown key")
    # What a user set under search.neck wins over what moves there.
    both = {**old_search, "search": {"space": "nasfpn", "neck": {"stacks": 5}}}
    assert validate_config(both).search.neck == {"stacks": 5, "style": "mmdet"}
