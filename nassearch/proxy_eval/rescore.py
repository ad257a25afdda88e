"""Re-scoring recorded architectures as a Ray Tune job: more seeds, or another (reference) recipe.

`search.reevaluate_top` and `nassearch fidelity` both hand a list of `ScoreJob`s (architecture,
seed, which config) to `run_score_jobs`, which runs them as parallel Tune trials and appends one
`Score` line per finished job to a JSONL file. The file is the job's state: run again, the jobs it
already holds are skipped, so an interrupted re-scoring resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ray import tune

from nassearch.config import ExperimentConfig, validate_config
from nassearch.console import Log, silent
from nassearch.device import follow_ray_threads
from nassearch.jsonl import JsonlWriter, read_jsonl
from nassearch.proxy_eval.proxy_data import proxy_data, uses_feature_cache
from nassearch.status import Status


@dataclass(frozen=True)
class ScoreJob:
    """One proxy evaluation to run: `genotype` trained under config `config` with `seed`."""

    job_id: str
    key: str
    genotype: dict[str, Any]
    seed: int
    config: str  # a name of the `configs` mapping given to run_score_jobs
    label: str = ""  # how progress lines name the architecture (e.g. "#2")


@dataclass(frozen=True)
class Score:
    """One finished ScoreJob, as a line of the scores file."""

    job_id: str
    key: str
    seed: int
    config: str
    reward: float | None
    status: str
    message: str = ""
    ap: float | None = None
    ap50: float | None = None
    val_loss: float | None = None
    params: int | None = None
    macs: int | None = None
    train_seconds: float | None = None

    @classmethod
    def from_line(cls, line: dict[str, Any]) -> Score:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in line.items() if k in names})

    @property
    def ok(self) -> bool:
        return self.status == Status.OK and self.reward is not None and math.isfinite(self.reward)


def read_scores(path: str | Path) -> list[Score]:
    """Every well-formed line of a scores file (none if it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    with warnings.catch_warnings():  # a torn last line is rewritten by the next run
        warnings.simplefilter("ignore")
        return [Score.from_line(line) for line in read_jsonl(path) if "job_id" in line]


def score_trial(
    config: dict[str, Any],
    configs: dict[str, dict[str, Any]],
    caches: dict[str, str],
) -> None:
    """Tune function trainable: run `config["job"]` (a ScoreJob as a mapping) and report its score."""

    from nassearch.proxy_eval.proxy_task import evaluate_candidate
    from nassearch.search_spaces import genotype_from_dict

    follow_ray_threads()
    job = ScoreJob(**config["job"])
    cfg = validate_config(configs[job.config], f"{job.config} config", check_space=False)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"tensorboard": False})})
    datasets = proxy_data(cfg, caches.get(job.config), progress=False)
    result = evaluate_candidate(
        genotype_from_dict(job.genotype), cfg, datasets=datasets, seed=job.seed
    )
    report = result.to_dict()
    report.pop("metrics")
    report.pop("scores")
    tune.report({**report, "final": True})


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class ScoreCallback(tune.Callback):
    """Tune callback (driver side): one Score line and one progress line per finished job."""

    def __init__(self, path: Path, jobs: Sequence[ScoreJob], done: int, total: int, log) -> None:
        self.path, self.done, self.total, self.log = Path(path), done, total, log or silent
        self.jobs = {j.job_id: j for j in jobs}
        self.written: set[str] = set()

    def _write(self, trial, result: dict[str, Any]) -> None:
        job = self.jobs[trial.config["job"]["job_id"]]
        if job.job_id in self.written:
            return
        score = Score(
            job_id=job.job_id,
            key=job.key,
            seed=job.seed,
            config=job.config,
            reward=_finite(result.get("reward")),
            status=result.get("status", Status.ERROR),
            message=result.get("message", ""),
            **{
                name: _finite(result.get(name))
                for name in ("ap", "ap50", "val_loss", "params", "macs", "train_seconds")
            },
        )
        with JsonlWriter(self.path) as writer:
            writer.append(asdict(score))
        self.written.add(job.job_id)
        self.done += 1
        reward = "nan" if score.reward is None else f"{score.reward:.4f}"
        self.log(
            f"[{self.done}/{self.total}] {job.label or job.key} {job.config} seed {job.seed}: "
            f"{score.status} reward {reward}  {score.train_seconds or 0:.0f}s"
        )

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._write(trial, trial.last_result or {})

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._write(trial, {"status": Status.ERROR, "message": "the trial process failed"})


def score_dirname(trial) -> str:
    """`score_<id>`: Tune's default folder name would spell out the whole job, genotype included."""
    return f"score_{trial.trial_id}"


def run_score_jobs(
    jobs: Sequence[ScoreJob],
    configs: dict[str, ExperimentConfig],
    scores_path: str | Path,
    *,
    storage: str | Path,
    name: str,
    resources: dict[str, float],
    max_concurrent: int,
    log: Log | None = print,
) -> list[Score]:
    """Run every job not yet in `scores_path` as a Tune trial; returns the scores of all `jobs`.

    `storage/name` holds Tune's folder (rebuilt on each call), `storage/feature_cache-<config>`
    the feature caches of frozen-backbone configs, built here in the driver before any trial.
    Ray must already be initialised.
    """
    scores_path = Path(scores_path)
    storage = Path(storage).resolve()  # Tune takes a relative storage path for a URI
    ids = {j.job_id for j in jobs}
    if len(ids) != len(jobs):
        raise ValueError("run_score_jobs: job ids must be unique")
    recorded = {s.job_id for s in read_scores(scores_path)}
    pending = [j for j in jobs if j.job_id not in recorded]
    if pending:
        caches: dict[str, str] = {}
        for config_name in dict.fromkeys(j.config for j in pending):
            cfg = configs[config_name]
            if uses_feature_cache(cfg):
                cache_dir = storage / f"feature_cache-{config_name}"
                proxy_data(cfg, cache_dir)  # built once here, opened by the trials
                caches[config_name] = str(cache_dir)
        tune_dir = storage / name
        if tune_dir.exists():
            shutil.rmtree(tune_dir)  # resuming goes by the scores file, not by Tune's state
        trainable = tune.with_resources(
            tune.with_parameters(
                score_trial,
                configs={k: json.loads(c.model_dump_json()) for k, c in configs.items()},
                caches=caches,
            ),
            resources,
        )
        tuner = tune.Tuner(
            trainable,
            param_space={"job": tune.grid_search([asdict(j) for j in pending])},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=max_concurrent,
                trial_dirname_creator=score_dirname,
                reuse_actors=True,  # as in a search: no worker start per job
            ),
            run_config=tune.RunConfig(
                storage_path=str(storage),
                name=name,
                verbose=0,
                callbacks=[
                    ScoreCallback(scores_path, pending, len(jobs) - len(pending), len(jobs), log)
                ],
            ),
        )
        tuner.fit()
    by_id = {s.job_id: s for s in read_scores(scores_path)}
    return [by_id[j.job_id] for j in jobs if j.job_id in by_id]
