"""ControllerSearcher: ask/tell mapping without Ray, then real Tune runs (plain, interrupted + resumed)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ray import cloudpickle, tune
from ray.tune.search import Searcher

from nassearch.controllers import build_controller
from nassearch.controllers.base import Controller
from nassearch.controllers.tune_searcher import ControllerSearcher
from nassearch.errors import NasSearchError
from nassearch.search_spaces import get_space
from nassearch.search_spaces.base import Decision, Genotype, SearchSpace

# ------------------------------------------------------------------------ test space/controller


@dataclass(frozen=True)
class TinyGenotype(Genotype):
    space = "tiny"
    actions: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"space": "tiny", "actions": list(self.actions)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TinyGenotype:
        return cls(tuple(int(a) for a in data["actions"]))


class TinySpace(SearchSpace):
    """`length` decisions of `choices` options each, all legal: choices ** length architectures."""

    name = "tiny"

    def __init__(self, length: int = 2, choices: int = 3) -> None:
        self.length, self.choices = length, choices

    @property
    def decisions(self) -> list[Decision]:
        return [Decision(f"d{i}", "d", self.choices) for i in range(self.length)]

    def mask(self, prefix) -> list[bool]:
        return [True] * self.choices

    def decode(self, actions) -> TinyGenotype:
        self.validate_actions(actions)
        return TinyGenotype(tuple(int(a) for a in actions))

    def encode(self, genotype: Genotype) -> list[int]:
        return list(genotype.actions)

    def genotype_from_dict(self, data: dict[str, Any]) -> TinyGenotype:
        return TinyGenotype.from_dict(data)

    def size(self) -> int:
        return self.choices**self.length


class ScriptedController(Controller):
    """Proposes `script` in order (then random), synchronous batches of `batch_size`; step = updates."""

    name = "scripted"

    def __init__(self, space, seed=0, *, script=(), batch_size=1000, **base) -> None:
        super().__init__(space, seed, **base)
        self.script = [list(a) for a in script]
        self.batch_size = batch_size
        self.handed = 0
        self.in_batch = 0
        self.observed: list[tuple[int, float]] = []

    def _propose(self, n):
        n = min(n, self.batch_size - self.handed)
        out = []
        for _ in range(max(n, 0)):
            index = self.next_id + len(out)
            actions = (
                self.script[index]
                if index < len(self.script)
                else self.space.sample_actions(self.rng)
            )
            out.append((actions, {}))
        self.handed += len(out)
        return out

    def _observe(self, candidate, reward, shaped):
        self.observed.append((candidate.id, reward))
        self.in_batch += 1
        if self.in_batch == self.batch_size:
            self.step += 1
            self.in_batch = self.handed = 0

    def state_dict(self):
        state = super().state_dict()
        state.update(handed=self.handed, in_batch=self.in_batch, observed=list(self.observed))
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.handed, self.in_batch = state["handed"], state["in_batch"]
        self.observed = [tuple(o) for o in state["observed"]]


def scripted(script=(), **kw) -> ScriptedController:
    return ScriptedController(TinySpace(), seed=0, script=script, failure_reward=-1.0, **kw)


def hash_reward(genotype: dict[str, Any]) -> float:
    """A deterministic surrogate: a reward in [0, 1) from the genotype's canonical JSON."""
    blob = json.dumps(genotype, sort_keys=True).encode()
    return int(hashlib.sha256(blob).hexdigest()[:8], 16) / 2**32


def trainable(config: dict[str, Any]) -> None:
    tune.report({"reward": hash_reward(config["genotype"])})


A, B, C = [0, 0], [1, 1], [2, 2]

# Ray workers cannot import this test module, so ship its functions (the trainable) by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

# ----------------------------------------------------------------------------- without Ray


def test_suggest_maps_trials_to_candidates_and_tells_rewards():
    ctrl = scripted([A, B])
    searcher = ControllerSearcher(ctrl)
    before = time.time()
    cfg_a, cfg_b = searcher.suggest("ta"), searcher.suggest("tb")
    # When it was handed out (the trial measures its Ray start from it).
    assert before <= cfg_a.pop("suggested_at") <= cfg_b.pop("suggested_at") <= time.time()
    assert cfg_a == {
        "genotype": {"space": "tiny", "actions": A},
        "genotype_key": TinyGenotype(tuple(A)).key(),
        "controller_step": 0,
        "candidate_id": 0,
    }
    assert cfg_b["candidate_id"] == 1 and cfg_b["genotype"]["actions"] == B
    searcher.on_trial_complete("tb", {"reward": 0.25})
    searcher.on_trial_complete("ta", {"reward": 0.75, "other": 1})
    assert ctrl.observed == [(1, 0.25), (0, 0.75)]
    assert ctrl.evaluated == {cfg_a["genotype_key"]: 0.75, cfg_b["genotype_key"]: 0.25}
    assert searcher.trials == {} and searcher.num_completed == 2 and searcher.num_failed == 0
    searcher.on_trial_complete("unknown-trial", {"reward": 1.0})  # ignored, not told
    assert len(ctrl.observed) == 2


@pytest.mark.parametrize(
    ("result", "error"),
    [
        ({"reward": 0.5}, True),
        ({"reward": float("nan")}, False),
        ({"reward": float("inf")}, False),
        ({"reward": "n/a"}, False),
        ({"loss": 0.1}, False),
        (None, False),
    ],
    ids=["error", "nan", "inf", "non-numeric", "missing-metric", "no-result"],
)
def test_failed_or_bad_results_become_the_failure_reward(result, error):
    ctrl = scripted([A])
    searcher = ControllerSearcher(ctrl)
    searcher.suggest("t")
    searcher.on_trial_complete("t", result, error=error)
    assert ctrl.observed == [(0, -1.0)]
    assert searcher.num_failed == 1


def test_mode_min_negates_and_metric_comes_from_tune_config():
    ctrl = scripted([A])
    searcher = ControllerSearcher(ctrl, metric="reward", mode="max")
    assert searcher.set_search_properties("val_loss", "min", {"proxy": {"epochs": 1}}) is True
    searcher.suggest("t")
    searcher.on_trial_complete("t", {"val_loss": 0.4, "reward": 9.0})
    assert ctrl.observed == [(0, -0.4)]


def test_search_domains_in_param_space_are_rejected():
    searcher = ControllerSearcher(scripted())
    with pytest.raises(NasSearchError, match="proxy.lr"):
        searcher.set_search_properties(None, None, {"proxy": {"lr": tune.uniform(0, 1)}})
    with pytest.raises(NasSearchError, match="mode"):
        ControllerSearcher(scripted(), mode="maximise")


def test_suggest_returns_none_while_a_synchronous_batch_waits():
    ctrl = scripted([A, B, C], batch_size=2)
    searcher = ControllerSearcher(ctrl)
    assert searcher.suggest("t0")["controller_step"] == 0
    assert searcher.suggest("t1")["controller_step"] == 0
    assert searcher.suggest("t2") is None
    searcher.on_trial_complete("t0", {"reward": 0.1})
    assert searcher.suggest("t2") is None  # one result of the batch is still missing
    searcher.on_trial_complete("t1", {"reward": 0.2})
    cfg = searcher.suggest("t2")
    assert (cfg["controller_step"], cfg["candidate_id"], ctrl.step) == (1, 2, 1)
    assert searcher.num_suggested == 3


def test_candidates_no_trial_owns_are_failed_instead_of_deadlocking():
    ctrl = scripted([A, B, C], batch_size=2)
    orphans = ctrl.ask(2)  # drawn outside the searcher (e.g. a state whose trials were dropped)
    searcher = ControllerSearcher(ctrl)
    cfg = searcher.suggest("t0")
    assert ctrl.observed == [(0, -1.0), (1, -1.0)] and [c.id for c in orphans] == [0, 1]
    assert (cfg["candidate_id"], cfg["controller_step"]) == (2, 1)
    assert searcher.suggest("t1")["candidate_id"] == 3
    assert searcher.suggest("t2") is None  # a batch waiting for its own trials is left alone
    assert len(ctrl.observed) == 2


def test_max_candidates_finishes_the_search():
    searcher = ControllerSearcher(scripted([A, B, C]), max_candidates=2)
    assert searcher.suggest("t0") is not None and searcher.suggest("t1") is not None
    assert searcher.suggest("t2") == Searcher.FINISHED


def test_known_architecture_is_told_its_cached_reward_not_trained():
    ctrl = scripted([A, B, A, C])
    searcher = ControllerSearcher(ctrl)
    searcher.suggest("ta")
    searcher.on_trial_complete("ta", {"reward": 0.3})
    assert searcher.suggest("tb")["genotype"]["actions"] == B
    cfg = searcher.suggest("tc")  # candidate 2 is A again: told 0.3 at once, C handed out
    assert cfg["genotype"]["actions"] == C and cfg["candidate_id"] == 3
    assert ctrl.observed == [(0, 0.3), (2, 0.3)]
    assert searcher.num_deduplicated == 1 and set(searcher.trials) == {"tb", "tc"}


def test_architecture_in_flight_waits_for_the_running_trial():
    ctrl = scripted([A, A, B])
    searcher = ControllerSearcher(ctrl)
    searcher.suggest("t1")
    assert searcher.suggest("t2")["genotype"]["actions"] == B  # candidate 1 (A) waits
    assert searcher.waiting == {TinyGenotype(tuple(A)).key(): [1]}
    searcher.on_trial_complete("t1", {"reward": float("nan")})
    assert ctrl.observed == [(0, -1.0), (1, -1.0)]  # the waiting copy gets the same (clean) reward
    assert searcher.waiting == {} and searcher.inflight == {TinyGenotype(tuple(B)).key(): "t2"}


def test_without_dedup_duplicates_are_trained():
    ctrl = scripted([A, A], dedup=False)
    searcher = ControllerSearcher(ctrl)
    searcher.suggest("t1")
    searcher.on_trial_complete("t1", {"reward": 0.5})
    assert searcher.suggest("t2")["genotype"]["actions"] == A
    assert searcher.num_deduplicated == 0


def test_exhausted_space_ends_the_search():
    space = TinySpace(length=1, choices=3)
    ctrl = ScriptedController(space, seed=1)
    searcher = ControllerSearcher(ctrl, max_duplicates_in_a_row=20)
    trained = []
    while (cfg := searcher.suggest(f"t{len(trained)}")) != Searcher.FINISHED:
        trained.append(cfg["genotype_key"])
        searcher.on_trial_complete(f"t{len(trained) - 1}", {"reward": 1.0})
    assert sorted(trained) == sorted({space.decode([a]).key() for a in range(3)})
    assert searcher.num_deduplicated >= 21
    assert len(ctrl.rewards) == 3 + searcher.num_deduplicated


def test_save_restore_continues_the_search_exactly(tmp_path):
    def fresh():
        return ControllerSearcher(
            ScriptedController(TinySpace(3, 4), seed=5, batch_size=3, failure_reward=-1.0)
        )

    first = fresh()
    for i in range(4):
        first.suggest(f"t{i}")
        if i < 3:
            first.on_trial_complete(f"t{i}", {"reward": 0.1 * i})
    first.suggest("t4")  # t3 and t4 are running at the checkpoint
    path = tmp_path / "searcher.pkl"
    first.save(str(path))

    second = fresh()
    second.restore(str(path))
    assert second.controller.step == first.controller.step == 1
    assert second.trials == first.trials and second.num_suggested == 5
    for s in (first, second):
        s.on_trial_complete("t4", {"reward": 0.9})
        s.on_trial_complete("t3", error=True)
    # identical RNG, pending table and counters: the same next candidates and observations
    for s in (first, second):
        assert s.suggest("t5")["candidate_id"] == 5
        assert s.suggest("t6") is None  # batch 2 (candidates 3, 4, 5) is full
        s.on_trial_complete("t5", {"reward": 0.5})
    for i in range(6, 10):
        mine, theirs = first.suggest(f"t{i}"), second.suggest(f"t{i}")
        if mine is not None and theirs is not None:  # the hand-out times differ, nothing else
            assert mine.pop("suggested_at") <= theirs.pop("suggested_at")
        assert mine == theirs
    assert second.controller.observed == first.controller.observed
    assert second.controller.observed[3:6] == [(4, 0.9), (3, -1.0), (5, 0.5)]
    assert second.controller.step == first.controller.step >= 2
    assert (second.num_failed, second.num_completed) == (1, 6)


def test_tensorboard_gets_controller_statistics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ctrl = scripted([A, B, C, A, [0, 1]], batch_size=2)
    searcher = ControllerSearcher(ctrl, tensorboard_dir=tmp_path / "tb")
    for trial, reward in (("t0", 0.2), ("t1", 0.6), ("t2", 0.4)):
        searcher.suggest(trial)
        searcher.on_trial_complete(trial, {"reward": reward})
    # candidate 3 is A again: told 0.2 at once, which completes batch 2 (step 2); [0, 1] goes out
    assert searcher.suggest("t3")["genotype"]["actions"] == [0, 1]
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()

    def series(tag):
        events = acc.Scalars(tag)
        return [e.step for e in events], [e.value for e in events]

    # global step = results told; one point per completed trial and per policy update
    assert series("controller/policy_version") == ([1, 2, 3, 4], [0.0, 1.0, 1.0, 2.0])
    assert series("search/reward")[1] == pytest.approx([0.2, 0.6, 0.4, 0.2])
    assert series("controller/reward_max")[1][-1] == pytest.approx(0.6)
    assert series("controller/unique_architectures")[1] == [1.0, 2.0, 3.0, 3.0]
    assert series("search/deduplicated")[1] == [0.0, 0.0, 0.0, 1.0]
    assert series("search/completed")[1] == [1.0, 2.0, 3.0, 3.0]
    assert pickle.loads(pickle.dumps(searcher))._writer is None  # Tune pickles the searcher


# ------------------------------------------------------------------------------- with Ray


def make_tuner(searcher, storage: Path, name: str, num_samples: int, callbacks=()):
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=num_samples,
            max_concurrent_trials=2,
            reuse_actors=True,
            time_budget_s=120,  # a broken resume must fail the test, not hang it
        ),
        run_config=tune.RunConfig(
            storage_path=str(storage), name=name, verbose=0, callbacks=list(callbacks)
        ),
    )


def saved_searcher(experiment_dir: Path, make_controller) -> ControllerSearcher:
    """The searcher state Tune saved last in `experiment_dir`, loaded into a fresh searcher."""
    searcher = ControllerSearcher(make_controller())
    searcher.restore_from_dir(str(experiment_dir))
    return searcher


@pytest.mark.slow
def test_tuner_run_with_reinforce_on_nasfpn(ray_session, tmp_path):
    space = get_space("nasfpn")

    def make_controller():
        return build_controller("reinforce", space, seed=3, batch_size=4, hidden_size=16)

    searcher = ControllerSearcher(make_controller(), tensorboard_dir=tmp_path / "tb")
    results = make_tuner(searcher, tmp_path, "plain", num_samples=12).fit()

    assert len(results) == 12 and not results.errors
    configs = sorted((r.config for r in results), key=lambda c: c["candidate_id"])
    assert [c["candidate_id"] for c in configs] == list(range(12))  # nasfpn: no duplicates
    # synchronous batches of 4: candidate i was drawn by policy version i // 4
    assert [c["controller_step"] for c in configs] == [i // 4 for i in range(12)]
    for r in results:
        genotype = space.genotype_from_dict(r.config["genotype"])
        assert genotype.key() == r.config["genotype_key"]
        assert r.metrics["reward"] == hash_reward(r.config["genotype"])

    final = saved_searcher(Path(results.experiment_path), make_controller)
    ctrl = final.controller
    assert (ctrl.step, len(ctrl.rewards), final.num_completed, final.trials) == (3, 12, 12, {})
    assert ctrl.evaluated == {r.config["genotype_key"]: r.metrics["reward"] for r in results}
    assert not ctrl.pending
    assert list(Path(tmp_path / "tb").glob("events.out.tfevents.*"))


class InterruptAfter(tune.Callback):
    """Interrupts the driver (as Ctrl+C would) once `n` trials completed, once per marker file."""

    def __init__(self, n: int, marker: Path) -> None:
        self.n, self.marker, self.done = n, marker, 0

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.done += 1
        if self.done >= self.n and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGUSR1)  # Tune's graceful stop: saves, then returns


@pytest.mark.slow
def test_interrupted_search_resumes_with_tuner_restore(ray_session, tmp_path):
    space = TinySpace(length=2, choices=3)  # 9 architectures: duplicates are certain

    def make_controller():
        return build_controller("reinforce", space, seed=0, batch_size=4, hidden_size=16)

    searcher = ControllerSearcher(make_controller(), max_duplicates_in_a_row=200)
    marker = tmp_path / "interrupted"
    first = make_tuner(
        searcher, tmp_path, "resume", num_samples=20, callbacks=[InterruptAfter(4, marker)]
    ).fit()
    experiment = Path(first.experiment_path)
    assert marker.exists()
    done_first = {
        r.metrics["trial_id"]: (r.config, r.metrics["reward"])
        for r in first
        if r.metrics and "reward" in r.metrics
    }
    assert 4 <= len(done_first) < 9
    at_stop = saved_searcher(experiment, make_controller)
    assert at_stop.num_completed == len(done_first)  # each completed trial told exactly once
    step_at_stop, next_id_at_stop = at_stop.controller.step, at_stop.controller.next_id

    second = tune.Tuner.restore(str(experiment), trainable).fit()
    assert not second.errors
    done = {r.metrics["trial_id"]: (r.config, r.metrics["reward"]) for r in second}
    for trial_id, (config, reward) in done_first.items():  # nothing completed is lost or redone
        assert done[trial_id] == (config, reward)
    keys = [config["genotype_key"] for config, _ in done.values()]
    assert sorted(keys) == sorted({space.decode([a, b]).key() for a in range(3) for b in range(3)})
    ids = [config["candidate_id"] for config, _ in done.values()]
    assert len(set(ids)) == len(ids)  # a reset controller would hand out ids 0, 1, ... again
    for trial_id, (config, _) in done.items():
        if trial_id not in at_stop.trials and trial_id not in done_first:  # drawn after the resume
            assert config["candidate_id"] >= next_id_at_stop
            assert config["controller_step"] >= step_at_stop

    final = saved_searcher(experiment, make_controller)
    ctrl = final.controller
    assert final.num_completed == 9 and final.num_deduplicated > 200
    assert len(ctrl.rewards) == 9 + final.num_deduplicated
    assert ctrl.step == len(ctrl.rewards) // 4 > step_at_stop
    for config, reward in done.values():
        assert math.isclose(ctrl.evaluated[config["genotype_key"]], reward)


# ------------------------------------------------------------------- early stopping (ASHA)


def epochs(searcher, trial_id, losses):
    for epoch, loss in enumerate(losses, start=1):
        searcher.on_trial_result(trial_id, {"epoch": epoch, "epoch_val_loss": loss, "final": False})


def test_a_stopped_trial_is_told_its_rung_standing_on_the_finished_rewards_scale():
    """Constructed: five trials reach epoch 1 with losses 1..5; three finish with rewards 0.2,
    0.5, 0.8; the two stopped at epoch 1 (losses 4 and 5) get the quantiles 0.75 and 1.0 of
    their rung, i.e. the finished rewards' 0.25 and 0.0 quantiles: on the reward scale, at the
    bottom, not the failure reward (-1)."""
    D, E = [0, 1], [0, 2]
    ctrl = scripted([A, B, C, D, E])
    searcher = ControllerSearcher(ctrl, rung_metric="epoch_val_loss")
    ids = [f"t{i}" for i in range(5)]
    configs = [searcher.suggest(t) for t in ids]
    for t, loss in zip(ids, [1.0, 2.0, 3.0, 4.0, 5.0], strict=True):
        epochs(searcher, t, [loss])
    for t, reward in zip(ids[:3], [0.2, 0.5, 0.8], strict=True):
        epochs(searcher, t, [0.5, 0.4])
        searcher.on_trial_complete(t, {"reward": reward, "final": True})
    searcher.on_trial_complete("t3", {"epoch": 1, "epoch_val_loss": 4.0, "final": False})
    searcher.on_trial_complete("t4", {"epoch": 1, "epoch_val_loss": 5.0, "final": False})
    told = dict(ctrl.observed)
    assert [told[c["candidate_id"]] for c in configs[:3]] == [0.2, 0.5, 0.8]
    assert told[configs[3]["candidate_id"]] == pytest.approx(0.2 + 0.25 * 2 * (0.5 - 0.2))
    assert told[configs[4]["candidate_id"]] == pytest.approx(0.2)
    assert min(told.values()) >= 0.2 and searcher.num_stopped == 2 and searcher.num_failed == 0


def test_a_stopped_trial_waits_for_a_finished_reward_and_its_key_is_not_trained_again():
    ctrl = scripted([A, B, A])
    searcher = ControllerSearcher(ctrl, rung_metric="epoch_val_loss")
    first, second = searcher.suggest("t0"), searcher.suggest("t1")
    epochs(searcher, "t0", [2.0])
    epochs(searcher, "t1", [1.0])
    searcher.on_trial_complete("t0", {"epoch": 1, "epoch_val_loss": 2.0, "final": False})
    assert ctrl.observed == [] and searcher.deferred  # nothing finished to compare it with yet
    # A's key is still in flight: a new proposal of A waits instead of training.
    third = searcher.suggest("t2")  # parks A's candidate (id 2), hands out a new architecture
    assert third["genotype_key"] != first["genotype_key"]
    assert searcher.waiting == {first["genotype_key"]: [2]}
    # Round trip through the searcher's state while the tell is deferred.
    restored = ControllerSearcher(scripted([A, B, A]), rung_metric="epoch_val_loss")
    restored.set_state(searcher.get_state())
    assert restored.deferred == searcher.deferred and restored.rungs == searcher.rungs
    for s in (searcher, restored):
        epochs(s, "t1", [1.0, 0.5])
        s.on_trial_complete("t1", {"reward": 0.7, "final": True})
    for c in (ctrl, restored.controller):
        told = dict(c.observed)
        # Worst of a rung of two (quantile 1): the lowest finished reward; the duplicate too.
        assert told == {first["candidate_id"]: 0.7, second["candidate_id"]: 0.7, 2: 0.7}


def test_a_searcher_pickled_before_early_stopping_restores_and_completes_trials():
    """Tuner.restore unpickles the searcher an earlier version saved in tuner.pkl."""
    searcher = ControllerSearcher(scripted([A, B]))
    config = searcher.suggest("t0")
    old = searcher.__getstate__()
    for name in ("rung_metric", "rung_time", "rung_lower_is_better", "rungs",
                 "finished_rewards", "deferred", "num_stopped"):  # fmt: skip
        del old[name]
    restored = ControllerSearcher.__new__(ControllerSearcher)
    restored.__setstate__(old)
    restored.on_trial_result("t0", {"epoch": 1, "loss": 1.0})
    restored.on_trial_complete("t0", {"reward": 0.4, "final": True})
    assert dict(restored.controller.observed) == {config["candidate_id"]: 0.4}
    assert restored.finished_rewards == [0.4] and restored.num_stopped == 0
