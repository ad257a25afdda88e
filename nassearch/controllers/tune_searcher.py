"""Ray Tune adapter for the ask/tell controllers: `suggest()` = ask, `on_trial_complete()` = tell.

Every trial config carries one candidate (`genotype` as a plain dict, `genotype_key`,
`controller_step`, `candidate_id`); the trainable reports the reward under `metric`. With the
controller's deduplication on, no architecture is trained twice: a candidate whose architecture was
already evaluated is told its cached reward at once, and one whose architecture is being trained by
a running trial waits for that trial's reward. The searcher state (the controller's full
`state_dict`, the trial -> candidate mapping, counters) is saved with Tune's experiment state, so
`tune.Tuner.restore(path, trainable)` continues the same search: the controller's step count, RNG
and pending candidates carry on, and the trials that were running resume under the same ids.
Restore with `resume_unfinished=True` (the default): the candidates of unfinished trials stay
pending in the controller until their trials report.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from ray.tune.search import Searcher
from ray.tune.search.sample import Domain

from nassearch.controllers.base import Candidate, Controller, ControllerUpdate
from nassearch.controllers.rung_reward import rung_quantile, stopped_reward
from nassearch.errors import NasSearchError
from nassearch.trial_spec import TrialSpec

__all__ = ["ControllerSearcher"]

logger = logging.getLogger(__name__)

STATE_VERSION = 2


class ControllerSearcher(Searcher):
    """A `ray.tune.search.Searcher` that draws every trial's architecture from a `Controller`.

    `mode="min"` negates the metric before telling it (controllers maximise). A missing,
    non-numeric, NaN or infinite metric and errored trials are told as None, i.e. the controller's
    failure reward. `max_candidates` ends the search after that many trials were suggested;
    `max_duplicates_in_a_row` ends it when the controller keeps proposing known architectures
    (a converged policy or an exhausted space). Controller statistics go to TensorBoard in
    `tensorboard_dir`, written from the driver only; every controller update (`ControllerUpdate`)
    goes to TensorBoard under `update/` and to `on_update` (e.g. a `ControllerLog`).

    With early stopping, `rung_metric` names the per-epoch metric (`rung_mode` min or max) reported
    under `rung_time`: a trial that completes without a final result (`final` not true) but with
    that metric was stopped at a rung, and is told the reward of its rung standing mapped onto
    the finished trials' rewards (`rung_reward`); while no trial has finished, its tell waits.
    """

    def __init__(
        self,
        controller: Controller,
        *,
        metric: str = "reward",
        mode: str = "max",
        max_candidates: int | None = None,
        tensorboard_dir: str | Path | None = None,
        max_duplicates_in_a_row: int = 1000,
        on_update: Callable[[ControllerUpdate], None] | None = None,
        rung_metric: str | None = None,
        rung_time: str = "epoch",
        rung_mode: str = "min",
    ) -> None:
        if mode not in ("max", "min"):
            raise NasSearchError(f"searcher mode: {mode!r} is not one of max, min")
        if max_candidates is not None and max_candidates < 1:
            raise NasSearchError(f"max_candidates: must be >= 1, got {max_candidates!r}")
        if max_duplicates_in_a_row < 1:
            raise NasSearchError(
                f"max_duplicates_in_a_row: must be >= 1, got {max_duplicates_in_a_row!r}"
            )
        super().__init__(metric=metric, mode=mode)
        self.controller = controller
        self.max_candidates = max_candidates
        self.max_duplicates_in_a_row = max_duplicates_in_a_row
        self.tensorboard_dir = None if tensorboard_dir is None else str(tensorboard_dir)
        self.on_update = on_update
        self.updates_reported = 0  # controller updates handed to on_update / TensorBoard
        self.trials: dict[str, tuple[int, str]] = {}  # trial id -> (candidate id, genotype key)
        self.inflight: dict[str, str] = {}  # genotype key -> id of the trial training it
        self.waiting: dict[str, list[int]] = {}  # genotype key -> candidate ids awaiting its reward
        self.num_suggested = 0  # trials handed to Tune
        self.num_deduplicated = 0  # candidates resolved without training (cached or in flight)
        self.num_completed = 0  # trials told (including failures)
        self.num_failed = 0  # trials told the failure reward
        self.rung_metric, self.rung_time = rung_metric, rung_time
        self.rung_lower_is_better = rung_mode == "min"
        self.rungs: dict[int, dict[str, float]] = {}  # epoch -> trial id -> rung metric
        self.finished_rewards: list[float] = []  # rewards of trials that trained to the end
        # Stopped trials not told yet: (trial id, candidate id, genotype key, rung quantile).
        self.deferred: list[tuple[str, int, str, float]] = []
        self.num_stopped = 0
        self._writer = None

    # ---------------------------------------------------------------------------- Tune hooks

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        """Take metric/mode from `tune.TuneConfig`; `param_space` must hold fixed values only."""
        if mode is not None and mode not in ("max", "min"):
            raise NasSearchError(f"searcher mode: {mode!r} is not one of max, min")
        path = _first_domain(config or {})
        if path is not None:
            raise NasSearchError(
                f"param_space: {path} is a Tune search domain; the controller chooses "
                "architectures, so param_space may only hold fixed values"
            )
        if metric:
            self._metric = metric
        if mode:
            self._mode = mode
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """One new candidate as a trial config; None while a synchronous batch waits for results."""
        if self.max_candidates is not None and self.num_suggested >= self.max_candidates:
            return Searcher.FINISHED
        for _ in range(self.max_duplicates_in_a_row + 1):
            asked = self.controller.ask(1) or self._ask_after_releasing_orphans()
            if not asked:
                return None
            cand = asked[0]
            if not self._resolve_duplicate(cand):
                return self._hand_out(trial_id, cand)
        logger.warning(
            "controller proposed %d known architectures in a row; ending the search "
            "(converged policy or exhausted space)",
            self.max_duplicates_in_a_row + 1,
        )
        return Searcher.FINISHED

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Keep every trial's per-epoch rung metric (early stopping ranks stopped trials by it)."""
        found = self._rung_value(result) if trial_id in self.trials else None
        if found is not None:
            self.rungs.setdefault(found[0], {})[trial_id] = found[1]

    def _rung_value(self, result: Mapping[str, Any] | None) -> tuple[int, float] | None:
        """(epoch, finite rung metric) of a per-epoch result, or None."""
        if self.rung_metric is None or not result:
            return None
        value, when = result.get(self.rung_metric), result.get(self.rung_time)
        numbers = isinstance(value, (int, float)) and isinstance(when, (int, float))
        return (int(when), float(value)) if numbers and math.isfinite(value) else None

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """Tell the controller the trial's reward (failure reward for errors and bad metrics)."""
        entry = self.trials.pop(trial_id, None)
        if entry is None:
            logger.debug("trial %s is not one of this searcher's trials; ignored", trial_id)
            return
        cid, key = entry
        self.num_completed += 1
        quantile = None if error else self._stopped_quantile(trial_id, result)
        if quantile is not None:
            self.num_stopped += 1
            # Its key stays in flight until told, so a duplicate waits instead of training.
            self.deferred.append((trial_id, cid, key, quantile))
            self._tell_deferred()
            return
        reward = None if error else self.reward_from_result(result)
        self.num_failed += reward is None
        self._tell(cid, reward, force_log=True)
        if reward is not None:
            self.finished_rewards.append(reward)
        self._finish_key(trial_id, key, reward)
        self._tell_deferred()

    def _finish_key(self, trial_id: str, key: str, reward: float | None) -> None:
        if self.inflight.get(key) == trial_id:
            del self.inflight[key]
        waiting = self.waiting.pop(key, [])
        if waiting:
            # The key now has a clean reward in the controller's table (it dedups).
            cached = self.controller.evaluated.get(key, reward)
            for other in waiting:
                self._tell(other, cached)

    def _stopped_quantile(self, trial_id: str, result: Mapping[str, Any] | None) -> float | None:
        """Its rung standing if the trial was stopped at a rung (no final result), else None."""
        found = None if result is None or result.get("final") is True else self._rung_value(result)
        if found is None:
            return None
        when, value = found
        peers = self.rungs.setdefault(when, {})
        peers[trial_id] = value
        return rung_quantile(value, list(peers.values()), lower_is_better=self.rung_lower_is_better)

    def _tell_deferred(self) -> None:
        """Tell the stopped trials their mapped reward once a finished reward exists."""
        if not self.finished_rewards:
            return
        deferred, self.deferred = self.deferred, []
        for trial_id, cid, key, quantile in deferred:
            reward = stopped_reward(quantile, self.finished_rewards)
            self._tell(cid, reward, force_log=True)
            self._finish_key(trial_id, key, reward)

    def reward_from_result(self, result: Mapping[str, Any] | None) -> float | None:
        """The reward to tell for a final result: the metric (negated for `min`), or None."""
        if not result or self.metric not in result:
            return None
        try:
            value = float(result[self.metric])
        except (TypeError, ValueError):
            return None
        if not math.isfinite(value):
            return None
        return value if self.mode == "max" else -value

    # --------------------------------------------------------------------------------- state

    def save(self, checkpoint_path: str) -> None:
        """Write the controller state, trial mapping and counters (called by Tune with its state)."""
        torch.save(self.get_state(), checkpoint_path)
        self._flush()

    def restore(self, checkpoint_path: str) -> None:
        """Load what `save` wrote; the controller continues where it stopped."""
        # Not weights_only: controller states may hold numpy RNG states and plain objects, and
        # the file sits in the experiment directory that Tune itself unpickles on restore.
        self.set_state(torch.load(checkpoint_path, map_location="cpu", weights_only=False))

    def get_state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "metric": self.metric,
            "mode": self.mode,
            "controller": self.controller.state_dict(),
            "trials": {tid: [cid, key] for tid, (cid, key) in self.trials.items()},
            "inflight": dict(self.inflight),
            "waiting": {key: list(cids) for key, cids in self.waiting.items()},
            "rungs": {str(t): dict(peers) for t, peers in self.rungs.items()},
            "finished_rewards": list(self.finished_rewards),
            "deferred": [list(d) for d in self.deferred],
            "counters": {
                "num_stopped": self.num_stopped,
                "num_suggested": self.num_suggested,
                "num_deduplicated": self.num_deduplicated,
                "num_completed": self.num_completed,
                "num_failed": self.num_failed,
                "updates_reported": self.updates_reported,
            },
        }

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("version") == 1:  # written before early stopping: no rung fields
            state = {**state, "rungs": {}, "finished_rewards": [], "deferred": []}
        elif state.get("version") != STATE_VERSION:
            raise NasSearchError(
                f"searcher state: version {state.get('version')!r} is not {STATE_VERSION}"
            )
        self._metric = state["metric"]
        self._mode = state["mode"]
        self.controller.load_state_dict(state["controller"])
        self.trials = {tid: (int(cid), str(key)) for tid, (cid, key) in state["trials"].items()}
        self.inflight = dict(state["inflight"])
        self.waiting = {key: [int(c) for c in cids] for key, cids in state["waiting"].items()}
        self.rungs = {int(t): dict(peers) for t, peers in state["rungs"].items()}
        self.finished_rewards = [float(r) for r in state["finished_rewards"]]
        self.deferred = [(str(t), int(c), str(k), float(q)) for t, c, k, q in state["deferred"]]
        for name, value in state["counters"].items():
            setattr(self, name, int(value))

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the searcher with the experiment; a SummaryWriter holds threads and files.
        state = self.__dict__.copy()
        state["_writer"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A searcher pickled before early stopping existed (an experiment's tuner.pkl, read back
        # by `Tuner.restore`) has no rung fields: it searched without early stopping.
        defaults = {
            "rung_metric": None,
            "rung_time": "epoch",
            "rung_lower_is_better": True,
            "rungs": {},
            "finished_rewards": [],
            "deferred": [],
            "num_stopped": 0,
        }
        self.__dict__.update({**defaults, **state})

    # ------------------------------------------------------------------------------- helpers

    def _hand_out(self, trial_id: str, cand: Candidate) -> dict[str, Any]:
        self.trials[trial_id] = (cand.id, cand.key)
        if self.controller.dedup:
            self.inflight[cand.key] = trial_id
        self.num_suggested += 1
        return TrialSpec(
            genotype=cand.genotype.to_dict(),
            genotype_key=cand.key,
            controller_step=cand.step,
            candidate_id=cand.id,
            suggested_at=time.time(),
        ).to_config()

    def _ask_after_releasing_orphans(self) -> list[Candidate]:
        """Fail the candidates no trial will report, then ask again, so the search cannot deadlock.

        The controller waits for pending candidates although none of this searcher's trials is
        running: its state came from elsewhere (or a resume dropped unfinished trials). Tune would
        otherwise poll `suggest` forever.
        """
        if self.trials or not self.controller.pending:
            return []
        orphans = sorted(self.controller.pending)
        logger.warning(
            "controller waits for %d candidate(s) no trial owns (%s); telling them the failure "
            "reward",
            len(orphans),
            ", ".join(map(str, orphans)),
        )
        self.inflight.clear()
        self.waiting.clear()
        self.deferred.clear()  # stopped trials with nothing finished to compare them with
        for cid in orphans:
            self._tell(cid, None)
        return self.controller.ask(1)

    def _resolve_duplicate(self, cand: Candidate) -> bool:
        """Tell or park a candidate whose architecture needs no training; False if it does."""
        if cand.cached_reward is not None:
            self.num_deduplicated += 1
            self._tell(cand.id, cand.cached_reward)
            return True
        if self.controller.dedup and cand.key in self.inflight:
            self.num_deduplicated += 1
            self.waiting.setdefault(cand.key, []).append(cand.id)
            return True
        return False

    def _tell(self, cid: int, reward: float | None, *, force_log: bool = False) -> None:
        step = self.controller.step
        self.controller.tell(cid, reward)
        if force_log or self.controller.step != step:
            self._log(reward)
        for update in self.controller.updates[self.updates_reported :]:
            self._report_update(update)
        self.updates_reported = len(self.controller.updates)

    def _report_update(self, update: ControllerUpdate) -> None:
        if self.on_update is not None:
            self.on_update(update)
        writer = self._tensorboard()
        if writer is None:
            return
        for name in ("batch_reward_mean", "batch_reward_max", "baseline", "entropy"):
            value = getattr(update, name)
            if value is not None and math.isfinite(value):
                writer.add_scalar(f"update/{name}", value, global_step=update.update)
        if update.best_probability is not None:
            writer.add_scalar("update/best_probability", update.best_probability, update.update)

    def _log(self, reward: float | None) -> None:
        """Controller statistics at global step = results told so far (monotone across resumes)."""
        writer = self._tensorboard()
        if writer is None:
            return
        told = len(self.controller.rewards)
        scalars = {f"controller/{k}": v for k, v in self.controller.stats().items()}
        scalars.update(
            {
                "controller/policy_version": self.controller.step,
                "search/reward": self.controller.clean_reward(reward),
                "search/suggested": self.num_suggested,
                "search/completed": self.num_completed,
                "search/failed": self.num_failed,
                "search/deduplicated": self.num_deduplicated,
            }
        )
        for tag, value in scalars.items():
            value = float(value)
            if math.isfinite(value):
                writer.add_scalar(tag, value, global_step=told)
        writer.flush()

    def _tensorboard(self):
        """The driver-side SummaryWriter (created on first use), or None without a folder."""
        if self.tensorboard_dir is None:
            return None
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(self.tensorboard_dir)
        return self._writer

    def _flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()


def _first_domain(config: Mapping[str, Any], prefix: str = "") -> str | None:
    """Dotted path of the first Tune search domain (tune.uniform, ...) inside `config`, if any."""
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Domain):
            return path
        if isinstance(value, Mapping):
            found = _first_domain(value, f"{path}.")
            if found is not None:
                return found
    return None
