"""`nassearch run`: a Ray Tune experiment in which a controller proposes architectures and trials score them.

The driver validates everything before the first trial (space, controller, data, resources,
storage), trains the configured baselines first under the same proxy, then runs a `tune.Tuner`
whose searcher is the controller. It is the only writer of `<storage>/<name>/architectures.jsonl`
(one fsynced line per finished architecture) and prints one concise line per architecture and a
final top-5 table.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from nassearch.cluster import check_address, connect, warn_if_storage_not_shared
from nassearch.config import ExperimentConfig, check_unchanged, save_config
from nassearch.console import silent
from nassearch.controller_log import (
    CONTROLLER_LOG,
    ControllerLog,
    read_controller_log,
    reward_trend,
)
from nassearch.controllers import build_controller
from nassearch.controllers.tune_searcher import ControllerSearcher
from nassearch.device import torch_threads
from nassearch.errors import NasSearchError
from nassearch.jsonl import JsonlWriter
from nassearch.proxy_eval.proxy_data import proxy_data, proxy_datasets, uses_feature_cache
from nassearch.proxy_eval.proxy_task import evaluate_repeated, repeat_seed, rung_metric
from nassearch.proxy_eval.rescore import ScoreJob, run_score_jobs
from nassearch.proxy_eval.trial import proxy_trial
from nassearch.proxy_result import ProxyResult
from nassearch.ranking import REEVALUATION_FILE, rank_records, read_reevaluations
from nassearch.records import RECORD_FILE, ArchitectureRecord, RecordWriter, read_records
from nassearch.search_spaces import approx_count, get_space, named_genotypes
from nassearch.signal_check import FIRST_REWARDS, no_signal_warning, pooled_seed_std
from nassearch.status import Status
from nassearch.trial_spec import TrialSpec

CONFIG_FILE = "config.yaml"
TUNE_DIR = "tune"
FEATURE_CACHE_DIR = "feature_cache"
WARNINGS_FILE = "warnings.jsonl"


def experiment_dir(cfg: ExperimentConfig, storage: str | None = None) -> Path:
    return (Path(storage) if storage else Path(cfg.output_dir)).expanduser().resolve() / cfg.name


def check_search(cfg: ExperimentConfig, exp_dir: Path, *, resume: bool = False):
    """Everything that can be checked before a trial starts; returns (space, baseline genotypes)."""
    search = cfg.search
    if search.progressive:
        if search.space != "nasfcos":
            raise NasSearchError(
                f"search.progressive: NAS-FCOS's progressive search needs space nasfcos, not {search.space}"
            )
        if "part" in search.space_options or "fpn" in search.space_options:
            raise NasSearchError(
                "search.space_options: a progressive search sets `part` (and the fixed `fpn`) itself"
            )
    elif search.head_architectures is not None:
        raise NasSearchError("search.head_architectures: only used with search.progressive: true")
    try:
        space = get_space(search.space, **first_stage(cfg).space_options)
        if search.progressive:  # the head stage's options must work too (with PAPER's FPN)
            get_space(search.space, **{**search.space_options, "part": "head"})
    except TypeError as exc:
        raise NasSearchError(f"search.space_options: {exc}") from None
    named = named_genotypes(search.space)
    baselines = {}
    for name in search.baselines:
        if name not in named:
            raise NasSearchError(
                f"search.baselines: {name!r} is not a named {search.space} genotype ({', '.join(named)})"
            )
        baselines[name] = named[name]
    try:  # unknown hyper-parameters fail here, not in the middle of a search
        make_controller(cfg, space)
    except NasSearchError as exc:
        raise NasSearchError(f"search.controller_options: {exc}") from None
    if resume:
        if not (exp_dir / CONFIG_FILE).is_file():
            raise NasSearchError(
                f"{exp_dir}: no experiment to resume (no {CONFIG_FILE}); start it without --resume"
            )
    elif exp_dir.exists() and any(exp_dir.iterdir()):
        raise NasSearchError(
            f"{exp_dir}: already holds an experiment; continue it with --resume, or choose "
            "another --name or --storage"
        )
    try:
        exp_dir.mkdir(parents=True, exist_ok=True)
        probe = exp_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise NasSearchError(f"--storage {exp_dir.parent}: not writable ({exc.strerror})") from None
    return space, baselines


def check_resume_config(cfg: ExperimentConfig, exp_dir: Path) -> None:
    """A resumed search runs with its saved settings; a config that changes them is an error."""
    # Where the experiment lives may change (a moved folder); what it searches may not.
    check_unchanged(cfg, exp_dir / CONFIG_FILE, free=("name", "output_dir"), what="experiment")


@dataclass(frozen=True)
class Stage:
    """One Tune experiment of a search; NAS-FCOS's progressive search runs two (fpn, then head)."""

    name: str | None  # None for a single-stage search
    space_options: dict[str, Any]
    num_architectures: int

    @property
    def tune_dir(self) -> str:
        return TUNE_DIR if self.name is None else f"{TUNE_DIR}-{self.name}"

    @property
    def tensorboard_dir(self) -> str:
        return "tensorboard" if self.name is None else f"tensorboard/{self.name}"


def first_stage(cfg: ExperimentConfig) -> Stage:
    search = cfg.search
    if not search.progressive:
        return Stage(None, dict(search.space_options), search.num_architectures)
    return Stage("fpn", {**search.space_options, "part": "fpn"}, search.num_architectures)


def head_stage(cfg: ExperimentConfig, records: list[ArchitectureRecord]) -> Stage:
    """Stage 2 of a progressive search: the head, on the best FPN stage 1 found (paper Sec. 3.3)."""
    found = rank_records(r for r in records if r.stage == "fpn")
    if not found:
        raise NasSearchError(
            "search.progressive: stage 1 found no successful FPN, so there is no FPN to search a "
            "head for (see the statuses in architectures.jsonl)"
        )
    best = found[0].record
    search = cfg.search
    options = {**search.space_options, "part": "head", "fpn": best.genotype["fpn"]}
    options.pop("num_cells", None)  # the fixed FPN brings its own cells
    return Stage("head", options, search.head_architectures or search.num_architectures)


def make_controller(cfg: ExperimentConfig, space):
    options = dict(cfg.search.controller_options)
    options.setdefault("failure_reward", cfg.proxy.failure_reward)
    return build_controller(cfg.search.controller, space, seed=cfg.seed, **options)


def check_resources(cfg: ExperimentConfig) -> None:
    have = ray.cluster_resources()
    for key, want in (("CPU", cfg.search.cpus_per_trial), ("GPU", cfg.search.gpus_per_trial)):
        if want > have.get(key, 0):
            name = "cpus_per_trial" if key == "CPU" else "gpus_per_trial"
            raise NasSearchError(
                f"search.{name}: {want:g} per trial, but the Ray cluster has {have.get(key, 0):g} {key}s"
            )


def format_line(record: ArchitectureRecord, rewards: list[float], total: int) -> str:
    """`[done/total] status reward rank key seconds` for one finished architecture."""
    done = len(rewards)
    reward = record.reward
    rank = 1 + sum(r > reward for r in rewards) if reward is not None else done
    tag = f"baseline {record.name}" if record.baseline else f"{done}/{total}"
    if record.status == Status.STOPPED:
        partial = ", ".join(f"{k} {v:.4f}" for k, v in record.metrics.items() if v is not None)
        return f"[{tag}] stopped at epoch {record.rung} ({partial})  key {record.key}"
    return (
        f"[{tag}] {record.status:<7} reward {reward if reward is not None else math.nan:.4f} "
        f"rank {rank}/{done}  key {record.key}  {record.train_seconds or 0:.0f}s"
    )


class RecordCallback(tune.Callback):
    """Tune callback (driver side): one record and one console line per finished trial.

    At setup it reads what the file already holds (a resumed search), so ranks continue and a
    trial that finishes again after a resume (it re-reports its record) is not written twice.
    """

    # A callback pickled by an earlier version (Tune restores callbacks with an interrupted
    # experiment) has no such attribute: it ran without early stopping.
    rung_metric: str | None = None

    def __init__(
        self,
        path: Path,
        total: int,
        quiet: bool,
        stage: str | None = None,
        reward: str = "ap",
        rung_metric: str | None = None,
    ) -> None:
        self.path, self.total, self.quiet, self.stage = Path(path), total, quiet, stage
        self.rung_metric = rung_metric  # search.scheduler asha: trials may be stopped
        self.reward = reward  # proxy.reward, for the no-signal warning's advice
        self.rewards: list[float] = []  # searched architectures' rewards so far, for the rank
        self.scores: list[list[float]] = []  # their repeats' scores (proxy.repeats)
        self.recorded: set[str] = set()  # trial ids already in the file
        # (candidate id, architecture) of this stage's records: a candidate recorded under
        # another trial id (see proxy_eval.trial.recorded_result) is not written twice.
        self.recorded_candidates: set[tuple[int, str]] = set()

    def setup(self, **info: Any) -> None:
        self.rewards, self.scores, self.recorded = [], [], set()
        self.recorded_candidates = set()
        if self.path.is_file():
            for record in read_records(self.path):
                self.recorded.add(record.trial_id)
                if not record.baseline and record.stage == self.stage:
                    self._count(record)
                    if record.candidate_id is not None:
                        self.recorded_candidates.add((record.candidate_id, record.key))

    def _count(self, record: ArchitectureRecord) -> None:
        self.rewards.append(math.nan if record.reward is None else record.reward)
        if record.successful:
            self.scores.append(record.all_scores)

    def _check_signal(self) -> None:
        """After the stage's first rewards, warn once if they carry no signal (warnings.jsonl)."""
        if len(self.rewards) != min(FIRST_REWARDS, self.total):
            return
        first = [r for r in self.rewards if math.isfinite(r)]
        message = no_signal_warning(first, pooled_seed_std(self.scores), reward=self.reward)
        if message is None:
            return
        with JsonlWriter(self.path.parent / WARNINGS_FILE) as writer:
            writer.append({"stage": self.stage, "kind": "no_signal", "message": message})
        print(f"warning: {message}", flush=True)

    def _write(self, trial, result: dict[str, Any]) -> None:
        spec = TrialSpec.from_config(trial.config)
        candidate = (spec.candidate_id, spec.genotype_key)
        if trial.trial_id in self.recorded or candidate in self.recorded_candidates:
            return
        proxy_result, rung = ProxyResult.from_report(result), None
        key = self.rung_metric
        if key is not None and result.get("final") is not True and key in result:
            # Cut at a rung by ASHA: the partial metric of its last epoch, no reward.
            rung = int(result.get("epoch", 0))
            proxy_result.status = Status.STOPPED
            proxy_result.metrics = {key: float(result[key])}
            if key == "epoch_val_loss":
                proxy_result.val_loss = float(result[key])
            proxy_result.message = (
                f"stopped by early stopping after {rung} epoch(s), {key} {result[key]:.4f}"
            )
        elif result.get("final") is not True and "status" not in result:
            proxy_result.message = (
                f"ended after epoch {result.get('epoch', 0)} without its final report "
                "(search.time_budget_s ran out, or Tune stopped it)"
            )
        if isinstance(result.get("reported_at"), float) and not result.get("from_record"):
            # From the trial's final report to its record: Tune's result path to the driver.
            proxy_result.timings["record"] = max(0.0, time.time() - result["reported_at"])
        record = ArchitectureRecord.from_result(
            proxy_result, spec, trial_id=trial.trial_id, stage=self.stage, rung=rung
        )
        with RecordWriter(self.path) as writer:
            writer.append(record)
        self.recorded.add(trial.trial_id)
        if spec.candidate_id is not None:
            self.recorded_candidates.add(candidate)
        self._count(record)
        if not self.quiet:
            print(format_line(record, self.rewards, self.total), flush=True)
        self._check_signal()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._write(trial, trial.last_result or {})

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._write(trial, {"status": Status.ERROR, "message": "the trial process failed"})


def trial_dirname(trial) -> str:
    """`trial_<id>`: Tune's default folder name spells out the whole genotype."""
    return f"trial_{trial.trial_id}"


def run_search(
    cfg: ExperimentConfig,
    *,
    storage: str | None = None,
    address: str | None = None,
    resume: bool = False,
    log=print,
) -> list[ArchitectureRecord]:
    """Run the search `cfg` describes (or continue it with `resume`); returns every record.

    A resumed search skips the baselines already recorded, restores the Tuner (trial states and
    the controller) from `<experiment>/tune` and continues unfinished trials from their last
    epoch checkpoint.
    """
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Tune snapshots trial states and the searcher at most every 10 s by default; a shorter
    # period narrows what a killed driver forgets (an unfinished trial resumes from its checkpoint).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    # Every per-epoch trial checkpoint forces a snapshot (num_to_keep=1): wanted, so not warned
    # about; Tune's own banner and table give way to one line per architecture.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # ASHA's metric is a per-epoch one; a trial's final report (the reward) carries none.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    if address is not None and not ray.is_initialized():
        check_address(address)  # before any folder is made or data read: a quick error
    exp_dir = experiment_dir(cfg, storage)
    new_folder = not exp_dir.exists()
    space, baselines = check_search(cfg, exp_dir, resume=resume)
    if resume:
        check_resume_config(cfg, exp_dir)
    cache_dir = exp_dir / FEATURE_CACHE_DIR if uses_feature_cache(cfg) else None
    try:
        # Data errors surface here, before Ray starts; synthetic data is generated once.
        datasets = proxy_datasets(cfg)
        connect(address, checked=True)
        check_resources(cfg)
        warn_if_storage_not_shared(exp_dir, log)
        if cache_dir is not None:
            log(
                f"frozen backbone: trials train neck and head on features cached in {cache_dir} "
                "(computed once, reused on resume; no augmentation)"
            )
            datasets = proxy_data(cfg, cache_dir)
    except BaseException:
        if not resume:  # leave no half-made experiment behind (it would block a new attempt)
            shutil.rmtree(
                exp_dir if new_folder else exp_dir / FEATURE_CACHE_DIR, ignore_errors=True
            )
        raise
    if not resume:
        save_config(cfg, exp_dir / CONFIG_FILE)
    records = exp_dir / RECORD_FILE
    done = {r.trial_id for r in read_records(records)} if records.is_file() else set()
    log(
        f"search {cfg.name}: {cfg.search.controller} over {cfg.search.space} ({approx_count(space.size())} architectures), "
        f"{cfg.search.num_architectures} to evaluate; "
        f"{'resuming' if resume else 'writing'} {exp_dir}"
    )

    for name, genotype in baselines.items():
        if f"baseline-{name}" in done:
            continue
        # The driver trains baselines itself, with a trial's threads, so that their latency and
        # training time compare with the trials' (Ray gives each OMP_NUM_THREADS = its CPUs).
        with torch_threads(max(1, int(cfg.search.cpus_per_trial))):
            result = evaluate_repeated(genotype, cfg, datasets=datasets)
        record = ArchitectureRecord.from_result(
            result,
            TrialSpec(genotype=genotype.to_dict(), genotype_key=genotype.key()),
            trial_id=f"baseline-{name}",
            baseline=True,
        )
        with RecordWriter(records) as writer:
            writer.append(record)
        log(format_line(record, [math.nan if record.reward is None else record.reward], 1))

    stage = first_stage(cfg)
    total = stage.num_architectures
    fit_stage(
        make_tuner(cfg, space, exp_dir, stage, quiet=log is None, resume=resume), exp_dir, stage
    )
    if cfg.search.progressive:
        stage = head_stage(cfg, read_records(records))
        total += stage.num_architectures
        space = get_space(cfg.search.space, **stage.space_options)
        log(
            f"stage 2: searching the head on stage 1's best FPN ({space.size():,} heads), "
            f"{stage.num_architectures} to evaluate"
        )
        fit_stage(
            make_tuner(cfg, space, exp_dir, stage, quiet=log is None, resume=resume), exp_dir, stage
        )
    if cfg.search.reevaluate_top is not None:
        reevaluate_top(cfg, exp_dir, read_records(records), log=log)
    all_records = read_records(records)
    log(format_top(all_records, exp_dir, read_reevaluations(exp_dir / REEVALUATION_FILE)))
    for line in learning_lines(cfg, exp_dir):
        log(line)
    searched = sum(1 for r in all_records if not r.baseline)
    if searched < total:
        log(
            f"the search stopped after {searched} of {total} architectures "
            f"(interrupted, time budget, or the controller kept proposing known ones); "
            f"`nassearch run {exp_dir} --resume` continues it"
        )
    return all_records


def fit_stage(tuner: tune.Tuner, exp_dir: Path, stage: Stage) -> None:
    """Run one stage's Tuner, then remove the folders of trials its experiment state never held.

    Such a folder is what a driver killed between a trial's start and Tune's next snapshot leaves:
    the restored experiment does not know the trial, the restored searcher hands its candidate
    out again under a new id, and the old folder (its partial epochs) would count it twice.
    """
    grid = tuner.fit()
    known = {Path(result.path).name for result in grid if result.path}
    for folder in (exp_dir / stage.tune_dir).glob("trial_*"):
        if folder.is_dir() and folder.name not in known:
            shutil.rmtree(folder, ignore_errors=True)


def make_tuner(
    cfg: ExperimentConfig, space, exp_dir: Path, stage: Stage, *, quiet: bool, resume: bool
) -> tune.Tuner:
    """A new Tuner for one stage of the search, or the interrupted one restored from its folder."""
    records = exp_dir / RECORD_FILE
    experiment = json.loads(cfg.model_dump_json())
    cache_dir = exp_dir / FEATURE_CACHE_DIR if uses_feature_cache(cfg) else None
    trainable = tune.with_resources(
        tune.with_parameters(
            proxy_trial,
            experiment=experiment,
            records_path=str(records),
            feature_cache=None if cache_dir is None else str(cache_dir),
            stage=stage.name,
        ),
        {"cpu": cfg.search.cpus_per_trial, "gpu": cfg.search.gpus_per_trial},
    )
    tune_dir = exp_dir / stage.tune_dir
    if resume and tune.Tuner.can_restore(str(tune_dir)):
        # The searcher (controller state, pending candidates) and the callbacks come back from
        # Tune's snapshot; RecordCallback.setup re-reads the records.
        return tune.Tuner.restore(
            str(tune_dir), trainable=trainable, resume_unfinished=True, resume_errored=False
        )
    if tune_dir.exists():
        # Killed before Tune wrote its first state: no trial ever ran, nothing to keep.
        shutil.rmtree(tune_dir)
    asha = cfg.search.scheduler == "asha"
    searcher = ControllerSearcher(
        make_controller(cfg, space),
        max_candidates=stage.num_architectures,
        tensorboard_dir=exp_dir / stage.tensorboard_dir,
        on_update=ControllerLog(exp_dir / CONTROLLER_LOG, stage.name),
        rung_metric=rung_metric(cfg)[0] if asha else None,
        rung_mode=rung_metric(cfg)[1],
    )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=stage.num_architectures,
            max_concurrent_trials=cfg.search.max_concurrent,
            time_budget_s=cfg.search.time_budget_s,
            trial_dirname_creator=trial_dirname,
            # One worker process serves trial after trial (every trial asks for the same
            # resources): no process start, torch import or first-use import per architecture.
            # A reused worker starts its next trial at once, so a driver killed before Tune's
            # next snapshot can forget a trial that already reported: `fit_stage` removes such
            # a trial's folder and `recorded_result` keeps its candidate from training twice.
            reuse_actors=True,
            scheduler=make_scheduler(cfg),
        ),
        run_config=tune.RunConfig(
            storage_path=str(exp_dir),
            name=stage.tune_dir,
            verbose=0,
            callbacks=[
                RecordCallback(
                    records,
                    stage.num_architectures,
                    quiet=quiet,
                    stage=stage.name,
                    reward=cfg.proxy.reward,
                    rung_metric=rung_metric(cfg)[0] if asha else None,
                )
            ],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=cfg.search.max_retries),
        ),
    )


def make_scheduler(cfg: ExperimentConfig) -> ASHAScheduler | None:
    """`search.scheduler: asha`: Ray Tune's asynchronous successive halving on the per-epoch
    validation loss; None (FIFO) otherwise. The last epoch is never cut (`stop_last_trials`
    off): a trial that trained to the end is scored."""
    search = cfg.search
    if search.scheduler != "asha":
        return None
    metric, mode = rung_metric(cfg)
    return ASHAScheduler(
        time_attr="epoch",
        metric=metric,
        mode=mode,
        max_t=int(cfg.train.epochs),
        grace_period=search.grace_epochs,
        reduction_factor=search.reduction_factor,
        stop_last_trials=False,
    )


def learning_lines(cfg: ExperimentConfig, exp_dir: Path) -> list[str]:
    """Per stage: did the controller's batch mean reward rise over its updates (controller.jsonl)?"""
    updates = read_controller_log(exp_dir / CONTROLLER_LOG)
    if not updates:
        return [f"learning: {reward_trend([]).describe(cfg.search.controller)}"]
    lines = []
    for stage in dict.fromkeys(u["stage"] for u in updates):
        means = [u["batch_reward_mean"] for u in updates if u["stage"] == stage]
        label = (
            cfg.search.controller
            if not cfg.search.progressive
            else f"{cfg.search.controller} ({stage})"
        )
        lines.append(f"learning: {reward_trend(means).describe(label)}")
    return lines


def reevaluate_top(
    cfg: ExperimentConfig, exp_dir: Path, records: list[ArchitectureRecord], *, log=print
) -> None:
    """`search.reevaluate_top`: re-score the best k with more seeds (reevaluation.jsonl).

    The seeds continue after the repeats' (cfg.seed + proxy.repeats, + 1, ...), so no score is
    a copy of one already recorded. Resumable: scores already in the file are kept.
    """
    option = cfg.search.reevaluate_top
    best = rank_records(records)[: option.k]
    if not best:
        return
    seeds = [repeat_seed(cfg, cfg.proxy.repeats + j) for j in range(option.seeds)]
    jobs = [
        ScoreJob(
            job_id=f"{a.key}-seed{seed}",
            key=a.key,
            genotype=a.record.genotype,
            seed=seed,
            config="proxy",
            label=f"#{rank}",
        )
        for rank, a in enumerate(best, start=1)
        for seed in seeds
    ]
    log = log or silent
    log(
        f"re-evaluating the best {len(best)} with {option.seeds} more seed(s) each: {len(jobs)} runs"
    )
    run_score_jobs(
        jobs,
        {"proxy": cfg},
        exp_dir / REEVALUATION_FILE,
        storage=exp_dir,
        name=f"{TUNE_DIR}-reevaluate",
        resources={"cpu": cfg.search.cpus_per_trial, "gpu": cfg.search.gpus_per_trial},
        max_concurrent=cfg.search.max_concurrent,
        log=log,
    )


def format_top(
    records: list[ArchitectureRecord],
    exp_dir: Path,
    reevaluations: dict[str, list[float]] | None = None,
    k: int = 5,
) -> str:
    """The k best architectures (one row per key, see `ranking`) and every baseline, as a table.

    With several scores (repeats, re-evaluation) the reward column is `mean ± std (n=…)`.
    """
    ranked = rank_records(records, reevaluations)
    rows = [(f"#{i}", a.record, a.describe()) for i, a in enumerate(ranked[:k], start=1)]
    rows += [
        (r.name, r, f"{r.reward:.4f}" if r.reward is not None else "nan")
        for r in records
        if r.baseline
    ]
    width = max([8] + [len(text) for _, _, text in rows])
    lines = [
        f"{'':<10}{'key':<18}{'reward':>{width}}{'AP':>7}{'AP50':>7}{'params':>11}{'GMACs':>8}"
        "  status"
    ]
    for name, r, reward_text in rows:
        ap = r.ap if r.ap is not None else math.nan
        ap50 = r.ap50 if r.ap50 is not None else math.nan
        lines.append(
            f"{name:<10}{r.key or '':<18}{reward_text:>{width}}{ap:>7.3f}{ap50:>7.3f}"
            f"{(r.params or 0):>11,}{(r.macs or 0) / 1e9:>8.2f}  {r.status}"
        )
    searched = [r for r in records if not r.baseline and r.successful]
    stopped = sum(1 for r in records if r.status == Status.STOPPED)
    failed = sum(1 for r in records if not r.successful) - stopped
    stopped_text = f", {stopped} stopped early" if stopped else ""
    reevaluated = (
        f"; best {sum(1 for a in ranked if a.reevaluated)} re-evaluated" if reevaluations else ""
    )
    lines.append(
        f"{len(searched)} searched architectures evaluated ({len(ranked)} unique), {failed} failed"
        f"{stopped_text}"
        f"{reevaluated}; records in {exp_dir / RECORD_FILE}, TensorBoard in {exp_dir}"
    )
    return "\n".join(lines)
