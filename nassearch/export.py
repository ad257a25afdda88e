"""`nassearch export`: the best architectures of a search as files to cite, draw and train.

Reads an experiment's `architectures.jsonl` (the durable record of a search), ranks the
architectures by reward (ties: fewer parameters; one entry per genotype key; failed ones and,
unless asked, the baselines left out) and writes for each of the top K:

- `arch-k.yaml`: the genotype, its proxy metrics and provenance; `model.genotype: arch-k.yaml`
  in a config and `nassearch show arch-k.yaml` read it.
- `retrain-k.yaml`: a complete full-training config with the genotype inline, built from the
  paper recipe of the search's detector type (or the search's own settings), for `nassearch train`.
- `arch-k.png`: the architecture drawn as in the papers.

and one `leaderboard.md`. Every check runs before the first file is written, so bad input writes
nothing, and each file is written atomically, so none is ever left half-written. Files of ranks
beyond K from an earlier, larger export are left alone (the leaderboard lists what this one wrote).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nassearch.atomic import atomic_write
from nassearch.config import ExperimentConfig, load_config, validate_config
from nassearch.console import Log, silent
from nassearch.errors import NasSearchError, require_int
from nassearch.output_paths import check_output_folder
from nassearch.ranking import (
    REEVALUATION_FILE,
    RankedArchitecture,
    rank_records,
    read_reevaluations,
)
from nassearch.recipes import PAPER_RECIPES, RECIPE_CHOICES, Recipe
from nassearch.records import RECORD_FILE, ArchitectureRecord, read_records
from nassearch.search_spaces import Genotype, genotype_from_dict
from nassearch.status import Status

CONFIG_FILE = "config.yaml"  # the resolved search config `nassearch run` saves (search.py)


# --------------------------------------------------------------------------------- experiment


@dataclass
class Experiment:
    """An experiment folder: its resolved search config (and the file's hash) and its records."""

    path: Path
    config: ExperimentConfig
    config_sha256: str
    records: list[ArchitectureRecord]
    # Re-evaluation scores per genotype key (search.reevaluate_top), empty if none were run.
    reevaluations: dict[str, list[float]] = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def records_path(self) -> Path:
        return self.path / RECORD_FILE


@dataclass(frozen=True)
class ExportedArchitecture:
    """One exported architecture: its rank, identity, proxy reward (the mean over every score it
    has) and the files written for it."""

    rank: int
    key: str
    space: str
    reward: float
    trial_id: str | None
    baseline: bool
    arch_path: Path
    retrain_path: Path
    image_path: Path
    record: ArchitectureRecord = field(repr=False, compare=False)
    reward_text: str = ""  # `mean ± std (n=…)` when it has several scores


@dataclass
class _Planned:
    """An architecture about to be exported: everything computed, nothing written yet."""

    rank: int
    ranked: RankedArchitecture
    genotype: Genotype
    arch_text: str
    retrain_text: str
    stacks: int


def is_experiment(path: Path) -> bool:
    return (path / RECORD_FILE).is_file() and (path / CONFIG_FILE).is_file()


def latest_experiment(runs_dir: str | Path = "runs") -> Path:
    """The experiment under `runs_dir` whose architectures.jsonl changed last."""
    runs_dir = Path(runs_dir)
    found = (
        [p for p in runs_dir.iterdir() if p.is_dir() and is_experiment(p)]
        if runs_dir.is_dir()
        else []
    )
    if not found:
        raise NasSearchError(
            f"{runs_dir}: no experiment folder (one holding {RECORD_FILE} and {CONFIG_FILE}); "
            "pass EXPERIMENT_DIR"
        )
    return max(found, key=lambda p: (p / RECORD_FILE).stat().st_mtime)


def load_experiment(path: str | Path) -> Experiment:
    """Read an experiment folder's config and records; one-line errors for what is missing."""
    path = Path(path)
    if not path.is_dir():
        raise NasSearchError(f"{path}: no such experiment folder")
    for name in (RECORD_FILE, CONFIG_FILE):
        if not (path / name).is_file():
            raise NasSearchError(f"{path}: not an experiment folder (no {name})")
    config_bytes = (path / CONFIG_FILE).read_bytes()
    config = load_config(path / CONFIG_FILE, require_data=False)
    records = read_records(path / RECORD_FILE)
    if not records:
        raise NasSearchError(
            f"{path / RECORD_FILE}: no readable architecture record (the file is empty, or "
            "every line is corrupt)"
        )
    reevaluations = read_reevaluations(path / REEVALUATION_FILE)
    return Experiment(
        path, config, hashlib.sha256(config_bytes).hexdigest(), records, reevaluations
    )


# ------------------------------------------------------------------------------------ ranking


def _no_architecture_error(exp: Experiment) -> NasSearchError:
    records = exp.records
    good_baselines = [r for r in records if r.baseline and r.successful]
    if good_baselines:
        return NasSearchError(
            f"{exp.records_path}: no successful searched architecture; "
            f"{len(good_baselines)} baseline(s) succeeded (pass --include-baselines to export them)"
        )
    statuses: dict[str, int] = {}
    for r in records:
        statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
    counts = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
    return NasSearchError(
        f"{exp.records_path}: no successful architecture among {len(records)} record(s) ({counts})"
    )


def _where(exp: Experiment, record: ArchitectureRecord) -> str:
    index = next(i for i, r in enumerate(exp.records, start=1) if r is record)
    return f"{exp.records_path}: record {index} (trial {record.trial_id})"


def record_genotype(exp: Experiment, record: ArchitectureRecord) -> Genotype:
    """The record's genotype, validated by its space (with the search's space options)."""
    data = record.genotype
    if data is None:
        raise NasSearchError(f"{_where(exp, record)}: genotype: missing or not a mapping")
    # A baseline is a published genotype outside the searched space (the 7-cell FPN beside a
    # 5-cell search): it carries its own structure, so only searched records must fit the options.
    options = {} if record.baseline else exp.config.search.space_options
    try:  # records always name their space; a hand-written one may leave it to the search's
        data = {"space": exp.config.search.space, **data}
        return genotype_from_dict(data, **options)
    except (NasSearchError, TypeError) as exc:
        raise NasSearchError(f"{_where(exp, record)}: genotype: {exc}") from None


# ----------------------------------------------------------------------------- retrain config


def scaled_lr(lr: float, batch_size: int, base_batch: int) -> float:
    """Linear scaling rule (Goyal et al.): lr grows with the batch; rounded to hide float noise."""
    return float(f"{lr * batch_size / base_batch:.10g}")


def _plain(model: Any) -> dict[str, Any]:
    return json.loads(model.model_dump_json())


def retrain_data(search: ExperimentConfig, recipe: str) -> tuple[dict[str, Any], list[str]]:
    """The search's data section for full training, and what was changed in it.

    Relative paths become absolute (the retrain config may be run from anywhere). The paper recipe
    trains and evaluates on whole splits, so the search's `subset` budgets are dropped; a
    `holdout` stays, since it partitions the data (a validation split may be the held-out part).
    """
    data = _plain(search.data)
    changes = []
    paths = [
        (data, "root", "data.root"),
        (data["synthetic"], "cache_dir", "data.synthetic.cache_dir"),
    ]
    for section, name, key in paths:
        value = section.get(name)
        if value and not Path(value).is_absolute() and Path(value).exists():
            section[name] = str(Path(value).resolve())
            changes.append(f"{key} {value} -> {section[name]}")
    if recipe == "paper" and data["type"] == "coco":
        for split in ("train", "val"):
            if data[split].get("subset") is not None:
                changes.append(f"data.{split}.subset {data[split]['subset']} dropped (whole split)")
                data[split]["subset"] = None
    return data, changes


def paper_sections(genotype: Genotype, search: ExperimentConfig) -> tuple[dict[str, Any], Recipe]:
    """The paper recipe of the search's detector type with this genotype as its neck (and head)."""
    recipe = PAPER_RECIPES[search.model.type]
    sections = copy.deepcopy(recipe.sections)
    model = sections["model"]
    if genotype.space != recipe.space:
        # A space searched on the other paper's detector: keep the search's neck options.
        neck = _plain(search.searched_neck(genotype.space))
        neck.update(out_channels=model["neck"]["out_channels"])
        model["neck"] = neck
    model["num_classes"] = search.model.num_classes
    model["genotype"] = genotype.to_dict()
    return sections, recipe


def search_sections(genotype: Genotype, search: ExperimentConfig) -> dict[str, Any]:
    """The search's own (proxy) input, model and training settings with this genotype as its neck."""
    sections = {name: _plain(getattr(search, name)) for name in ("input", "train", "eval")}
    sections["model"] = _plain(search.candidate_model(genotype.space))
    sections["model"]["genotype"] = genotype.to_dict()
    backbone = sections["model"]["backbone"]
    if backbone.get("weights") is None and backbone.get("frozen_stages") == 4:
        # A frozen, randomly initialised backbone is a proxy trick (cheap cached features that
        # rank architectures well); a detector to keep trains it.
        backbone.update(frozen_stages=-1, norm_eval=False)
    return sections


def retrain_config(
    exp: Experiment,
    genotype: Genotype,
    rank: int,
    *,
    recipe: str = "paper",
    batch_size: int | None = None,
) -> tuple[ExperimentConfig, list[str]]:
    """The validated full-training config of one architecture and the header lines explaining it."""
    search = exp.config
    if recipe == "paper":
        sections, paper = paper_sections(genotype, search)
        origin = f"Recipe: the paper's, {paper.summary}."
    else:
        sections, paper = search_sections(genotype, search), None
        origin = (
            "Recipe: the search's own proxy settings (input, model, training) with this "
            "architecture as the neck (--recipe search)."
        )
        if search.model.backbone.weights is None and search.model.backbone.frozen_stages == 4:
            origin += " The search's frozen random backbone trains here (frozen_stages -1)."
    train = sections["train"]
    base_batch, base_lr = train["batch_size"], train["optimizer"]["lr"]
    if batch_size is not None:
        train["batch_size"] = batch_size
        train["optimizer"]["lr"] = scaled_lr(base_lr, batch_size, base_batch)
    data, data_changes = retrain_data(search, recipe)
    raw = {
        "name": f"{search.name}-retrain-{rank}",
        "seed": search.seed,
        "device": "auto" if recipe == "paper" else search.device,
        "output_dir": search.output_dir,
        "data": data,
        **sections,
    }
    source = f"retrain-{rank}.yaml"
    cfg = validate_config(raw, source, require_data=False)
    scaled = ""
    if batch_size is not None and batch_size != base_batch:
        scaled = f" (scaled linearly from lr {base_lr:g} at {base_batch})"
    notes = [
        origin,
        f"Learning rate {train['optimizer']['lr']:g} for {train['batch_size']} images per step"
        f"{scaled}; scale it linearly if you change train.batch_size (warm-up is unchanged).",
        _data_note(cfg, recipe),
    ]
    if data_changes:
        notes.append("Data changed from the search: " + "; ".join(data_changes) + ".")
    if paper is not None and genotype.space != paper.space:
        notes.append(
            f"Neck: the search's {genotype.space} settings at the recipe's width (the recipe "
            f"comes from the {paper.space} paper, which used a {paper.space} neck)."
        )
    if paper is not None:
        notes.append(f"Recommended: --set model.backbone.weights={paper.weights}")
    return cfg, notes


def _data_note(cfg: ExperimentConfig, recipe: str) -> str:
    """What the data section needs on the training machine."""
    data = cfg.data
    if data.type == "coco" and not data.root:
        return "Required: --set data.root=/path/to/coco"
    if data.type == "coco":
        return f"Data: as in the search, COCO-format files under {data.root} (--set data.root=...)."
    note = "Data: as in the search, the embedded synthetic dataset"
    if recipe == "paper":
        note += " (the paper recipe is meant for COCO: --set data.type=coco data.root=/path/to/coco"
        note += ", or export with --recipe search to keep the search's small settings)"
    return note + "."


# ------------------------------------------------------------------------------------- output


class _Dumper(yaml.SafeDumper):
    """Block style, except lists of plain values (`inputs: [4, 3]`, genotype cells) on one line."""

    def represent_list(self, data: list[Any]) -> yaml.Node:
        flow = all(not isinstance(item, (dict, list, tuple)) for item in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _Dumper.represent_list)


def _yaml(data: dict[str, Any], header: list[str]) -> str:
    """YAML text with a comment header (each note wrapped to the line length)."""
    lines = [
        wrapped for note in header for wrapped in textwrap.wrap(note, 98, break_on_hyphens=False)
    ]
    comments = "".join(f"# {line}\n" for line in lines)
    return comments + yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=100)


def _number(value: Any) -> Any:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def arch_document(
    exp: Experiment, ranked: RankedArchitecture, genotype: Genotype, rank: int
) -> dict[str, Any]:
    """What arch-k.yaml holds: the genotype (under `genotype`), proxy metrics and provenance.

    `reward` is the recorded one; `reward_mean`/`reward_std`/`scores` cover every seed it was
    scored with (proxy.repeats and search.reevaluate_top), which is what it was ranked by.
    """
    record = ranked.record
    return {
        "rank": rank,
        "space": genotype.space,
        "key": genotype.key(),
        "baseline": record.baseline,
        "genotype": genotype.to_dict(),
        "proxy_metrics": {
            name: getattr(record, name)
            for name in ("reward", "ap", "ap50", "val_loss", "params", "macs", "latency_ms")
        },
        "reward_mean": ranked.mean,
        "reward_std": ranked.std,
        "scores": list(ranked.scores),
        "reevaluated_scores": ranked.reevaluated,
        "provenance": {
            "experiment": str(exp.path.resolve()),
            "trial_id": record.trial_id,
            "controller_step": record.controller_step,
            "candidate_id": record.candidate_id,
            "recorded": record.time,
            # Progressive NAS-FCOS searches record their stage (fpn, then head on the best FPN).
            "stage": record.stage,
            "search_space_options": dict(exp.config.search.space_options),
            "config": str(exp.config_path.resolve()),
            "config_sha256": exp.config_sha256,
        },
    }


def _plan(
    exp: Experiment,
    rank: int,
    ranked: RankedArchitecture,
    out: Path,
    recipe: str,
    batch_size: int | None,
) -> _Planned:
    """Validate one record and render its two YAML files (nothing is written here)."""
    record = ranked.record
    genotype = record_genotype(exp, record)
    try:
        cfg, notes = retrain_config(exp, genotype, rank, recipe=recipe, batch_size=batch_size)
    except NasSearchError as exc:
        raise NasSearchError(
            f"{_where(exp, record)}: cannot make its retrain config: {exc}"
        ) from None
    what = f"Architecture #{rank} ({genotype.space} {genotype.key()})"
    origin = f"the search in {exp.path.resolve()} (trial {record.trial_id}"
    arch_header = [
        f"{what} of {origin}), exported by `nassearch export`. Proxy metrics are the search's "
        "(macs: multiply-adds per image at the proxy input size).",
        f"Use it in a config as `model.genotype: {out / f'arch-{rank}.yaml'}` with "
        f"`model.neck.type: {genotype.space}`; draw it with `nassearch show "
        f"{out / f'arch-{rank}.yaml'} --out arch.png`; retrain-{rank}.yaml trains it.",
    ]
    retrain_header = [
        f"Full-training config of {what[0].lower()}{what[1:]}, from {origin}, config sha256 "
        f"{exp.config_sha256[:12]}), exported by `nassearch export`.",
        *notes,
        f"Train: nassearch train {out / f'retrain-{rank}.yaml'} [--set KEY=VALUE ...]",
    ]
    retrain = json.loads(cfg.model_dump_json(exclude={"search", "proxy"}))
    retrain["model"] = {"type": retrain["model"].pop("type"), **retrain["model"]}
    stacks = getattr(cfg.model.neck, "stacks", 1)
    return _Planned(
        rank,
        ranked,
        genotype,
        _yaml(arch_document(exp, ranked, genotype, rank), arch_header),
        _yaml(retrain, retrain_header),
        stacks,
    )


def _write_planned(item: _Planned, out: Path) -> ExportedArchitecture:
    from nassearch.show import draw

    k = item.rank
    arch, retrain, image = out / f"arch-{k}.yaml", out / f"retrain-{k}.yaml", out / f"arch-{k}.png"
    atomic_write(arch, lambda p: p.write_text(item.arch_text))
    atomic_write(retrain, lambda p: p.write_text(item.retrain_text))
    title = f"#{k} {item.genotype.key()}"
    atomic_write(image, lambda p: draw(item.genotype, p, title=title, stacks=item.stacks))
    return ExportedArchitecture(
        rank=k,
        key=item.genotype.key(),
        space=item.genotype.space,
        reward=item.ranked.mean,
        trial_id=item.ranked.record.trial_id,
        baseline=item.ranked.record.baseline,
        arch_path=arch,
        retrain_path=retrain,
        image_path=image,
        record=item.ranked.record,
        reward_text=item.ranked.describe(),
    )


def _fmt(value: Any, spec: str) -> str:
    return "—" if _number(value) is None else format(value, spec)


def leaderboard(
    exp: Experiment,
    exported: list[ExportedArchitecture],
    reference: list[ArchitectureRecord],
    *,
    recipe: str,
) -> str:
    """leaderboard.md: one table row per exported architecture, then baseline rows for reference."""
    searched = [r for r in exp.records if not r.baseline]
    ok = [r for r in searched if r.successful]
    unique = {r.key for r in ok}
    stopped = sum(1 for r in searched if r.status == Status.STOPPED)
    baselines = len(exp.records) - len(searched)
    lines = [
        f"# Top {len(exported)} architectures of `{exp.config.name}`",
        "",
        f"The experiment `{exp.path.resolve()}` has {len(searched)} evaluated architectures "
        f"({len(ok)} successful, of which {len(unique)} unique; "
        f"{len(searched) - len(ok) - stopped} failed"
        f"{f'; {stopped} stopped early, never ranked' if stopped else ''}) "
        f"and {baselines} baseline(s).",
        f"Search space {exp.config.search.space}; metrics are the proxy task's (reward: "
        f"{exp.config.proxy.reward}); retrain configs use the {recipe} recipe.",
        *(
            [
                f"Ranked by the mean over every seed; {len(exp.reevaluations)} architecture(s) "
                f"were re-evaluated (reevaluation.jsonl) and rank ahead of the rest."
            ]
            if exp.reevaluations
            else []
        ),
        "",
        "| rank | key | reward | AP | AP50 | params | GMACs | latency (ms) | trial | files |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [(str(e.rank), e.record, e) for e in exported]
    rows += [("—", r, None) for r in reference]
    for rank, record, item in rows:
        if record.baseline:
            rank += f" (baseline {record.name or '?'})"
        macs = record.macs
        files = (
            "—"
            if item is None
            else ", ".join(
                f"[{p.name}]({p.name})"
                for p in (item.arch_path, item.retrain_path, item.image_path)
            )
        )
        lines.append(
            f"| {rank} | `{record.key}` | "
            f"{item.reward_text if item is not None else _fmt(record.reward, '.4f')} "
            f"| {_fmt(record.ap, '.3f')} | {_fmt(record.ap50, '.3f')} "
            f"| {_fmt(record.params, ',')} | {_fmt(macs and macs / 1e9, '.2f')} "
            f"| {_fmt(record.latency_ms, '.1f')} | {record.trial_id} | {files} |"
        )
    exported_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    lines += ["", f"Exported {exported_at} by `nassearch export`."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------- API


def export_top(
    exp_dir: str | Path | None,
    top: int,
    out: str | Path | None = None,
    *,
    include_baselines: bool = False,
    recipe: str = "paper",
    batch_size: int | None = None,
    runs_dir: str | Path = "runs",
    log: Log | None = print,
) -> list[ExportedArchitecture]:
    """Export the `top` best architectures of an experiment (default: the latest under `runs_dir`)."""
    require_int("--top", top)
    if recipe not in RECIPE_CHOICES:
        raise NasSearchError(f"--recipe: {recipe!r} (expected one of {', '.join(RECIPE_CHOICES)})")
    if batch_size is not None:
        require_int("--batch-size", batch_size)
    log = log or silent
    exp = load_experiment(exp_dir if exp_dir is not None else latest_experiment(runs_dir))
    out = check_output_folder(out if out is not None else exp.path / "export")
    ranked = rank_records(exp.records, exp.reevaluations, include_baselines=include_baselines)
    if not ranked:
        raise _no_architecture_error(exp)
    if top > len(ranked):
        log(
            f"only {len(ranked)} unique successful architecture(s) in {exp.records_path}; "
            f"exporting {len(ranked)}, not {top}"
        )
    chosen = ranked[:top]
    planned = [
        _plan(exp, rank, architecture, out, recipe, batch_size)
        for rank, architecture in enumerate(chosen, start=1)
    ]
    reference = []
    if include_baselines:
        chosen_ids = {id(a.record) for a in chosen}
        reference = [
            r for r in exp.records if r.baseline and r.successful and id(r) not in chosen_ids
        ]
    out.mkdir(parents=True, exist_ok=True)
    exported = []
    for item in planned:
        exported.append(_write_planned(item, out))
        log(
            f"#{item.rank} {item.genotype.space} {item.genotype.key()} reward "
            f"{item.ranked.describe()} -> {out}/arch-{item.rank}.yaml, "
            f"retrain-{item.rank}.yaml, arch-{item.rank}.png"
        )
    board = out / "leaderboard.md"
    text = leaderboard(exp, exported, reference, recipe=recipe)
    atomic_write(board, lambda p: p.write_text(text))
    log(f"leaderboard: {board}; train one with `nassearch train {exported[0].retrain_path}`")
    return exported


# ----------------------------------------------------------------------------------------- CLI


def cmd_export(args: argparse.Namespace) -> int:
    """Run `nassearch export` from parsed arguments."""
    export_top(
        args.experiment,
        args.top,
        args.out,
        include_baselines=args.include_baselines,
        recipe=args.recipe,
        batch_size=args.batch_size,
        runs_dir=args.runs_dir,
    )
    return 0
