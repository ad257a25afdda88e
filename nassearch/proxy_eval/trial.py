"""The Ray Tune trainable of a search: one trial proxy-trains and scores one architecture.

The searcher (`ControllerSearcher`) puts the genotype into the trial's config; the experiment
config travels once through Ray's object store (`tune.with_parameters`). Every epoch is reported
with `tune.report` (reward NaN until the end, so Tune's metric check is satisfied and a crash
mid-trial reads as a failure) together with a `tune.Checkpoint` of the trainer state (at most one
per `proxy.checkpoint_every_s` seconds), then the final `ProxyResult` with the reward and the
seconds of each phase (`ProxyResult.timings`).

Resuming (`nassearch run --resume` restores the Tuner): a trial the driver already recorded in
`architectures.jsonl` re-reports that record without training, and an unfinished trial continues
from its last epoch checkpoint, so no finished architecture is trained twice. With
`proxy.repeats` > 1 the checkpoint also holds the repeats already scored (`repeats.json`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from nassearch.config import validate_config
from nassearch.device import follow_ray_threads
from nassearch.proxy_eval.proxy_data import proxy_data
from nassearch.proxy_eval.proxy_task import evaluate_repeated
from nassearch.proxy_result import ProxyResult
from nassearch.records import read_records
from nassearch.search_spaces import genotype_from_dict
from nassearch.trial_spec import TrialSpec

CHECKPOINT_FILE = "last.pth"
REPEATS_FILE = "repeats.json"


def recorded_result(
    records_path: str | os.PathLike | None,
    trial_id: str,
    spec: TrialSpec | None = None,
    stage: str | None = None,
) -> ProxyResult | None:
    """The final result of this trial rebuilt from the driver's record, if the driver wrote one.

    A record matches by trial id, or (with `spec`) by the candidate: the same controller
    candidate id and architecture in the same `stage`. The second case is a trial that finished
    and was recorded just before a killed driver's last snapshot: the resumed searcher hands the
    same candidate out again under a new trial id, and it is not trained twice.
    """
    if records_path is None or not Path(records_path).is_file():
        return None
    with warnings.catch_warnings():  # a torn last line is the driver's business, not the trial's
        warnings.simplefilter("ignore")
        records = read_records(records_path)
    for record in records:
        if record.baseline:
            continue
        if record.trial_id == trial_id or (
            spec is not None
            and spec.candidate_id is not None
            and (record.stage, record.candidate_id, record.key)
            == (stage, spec.candidate_id, spec.genotype_key)
        ):
            return record.to_result()
    return None


def proxy_trial(
    config: dict[str, Any],
    experiment: dict[str, Any],
    records_path: str | None = None,
    feature_cache: str | None = None,
    stage: str | None = None,
) -> None:
    """Tune function trainable: `config["genotype"]` from the searcher, `experiment` the resolved config.

    `records_path` is the experiment's architectures.jsonl (read only); `feature_cache` the
    experiment's feature cache folder, which the driver built (opened and checked here); `stage`
    the progressive search's stage the trial belongs to (None otherwise). With
    `proxy.trial_checkpoints` off there are no per-epoch checkpoints (less disk for big models;
    an interrupted trial then restarts from scratch).
    """
    import ray
    from ray import tune

    entered = time.time()
    follow_ray_threads()
    context = tune.get_context()
    spec = TrialSpec.from_config(config)
    done = recorded_result(records_path, context.get_trial_id(), spec, stage)
    if done is not None:
        tune.report({**done.to_report(), "final": True, "from_record": True})
        return
    node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    cfg = validate_config(experiment, "search config", check_space=False)
    # Tune's own TensorBoard logger already receives every report; no second writer per trial.
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"tensorboard": False})})
    genotype = genotype_from_dict(spec.genotype)
    checkpoints = cfg.proxy.trial_checkpoints
    datasets = proxy_data(cfg, feature_cache, progress=False, checked=True)
    timings = {"setup": time.time() - entered}
    if spec.suggested_at is not None:
        timings = {"start": max(0.0, entered - spec.suggested_at), **timings}

    with tempfile.TemporaryDirectory(prefix="nassearch-trial-") as work_dir:
        done, resume = _restore_checkpoint(tune.get_checkpoint(), Path(work_dir))

        def on_epoch_end(epoch: int, info: dict[str, Any]) -> None:
            metrics = {
                "reward": math.nan,
                "final": False,
                "node_id": node_id,  # where it trained (multi-node clusters; Tune logs it)
                "repeat": len(done),
                "epoch": epoch,
                "iteration": info["iteration"],
                "lr": info["lr"],
                **{k: v for k, v in info.items() if k.startswith("loss")},
                **{k: v for k, v in info.items() if k.startswith("epoch_")},  # rung metric
            }
            last = _last_path(Path(work_dir), len(done))
            # The trainer wrote last.pth this epoch when proxy.checkpoint_every_s allowed.
            if not (checkpoints and info.get("checkpointed") and last.is_file()):
                tune.report(metrics)
                return
            with tempfile.TemporaryDirectory(prefix="nassearch-ckpt-") as out:
                shutil.copy2(last, Path(out) / CHECKPOINT_FILE)
                _write_repeats(Path(out), done)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(out))

        def on_repeat_end(finished: list[ProxyResult]) -> None:
            done[:] = finished

        result = evaluate_repeated(
            genotype,
            cfg,
            datasets=datasets,
            work_dir=work_dir if checkpoints else None,
            on_epoch_end=on_epoch_end,
            resume=resume,
            done=done,
            on_repeat_end=on_repeat_end,
        )
    result.timings = {**timings, **result.timings}
    tune.report({**result.to_report(), "final": True, "reported_at": time.time()})


def _last_path(work_dir: Path, repeat: int) -> Path:
    # evaluate_repeated gives repeat r the work folder work_dir/repeat-r.
    return work_dir / f"repeat-{repeat}" / "checkpoints" / CHECKPOINT_FILE


def _write_repeats(folder: Path, done: list[ProxyResult]) -> None:
    (folder / REPEATS_FILE).write_text(json.dumps([r.to_dict() for r in done]))


def _restore_checkpoint(checkpoint: Any, work_dir: Path) -> tuple[list[ProxyResult], bool]:
    """The repeats a restored trial had scored, and whether its next one resumes mid-training."""
    if checkpoint is None:
        return [], False
    with checkpoint.as_directory() as folder:
        repeats = Path(folder) / REPEATS_FILE
        done = (
            [ProxyResult(**r) for r in json.loads(repeats.read_text())] if repeats.is_file() else []
        )
        source = Path(folder) / CHECKPOINT_FILE
        if not source.is_file():
            return done, False
        last = _last_path(work_dir, len(done))
        last.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, last)
    return done, True
