"""The no-signal warning: equal first rewards, or a spread below the measured seed noise."""

from types import SimpleNamespace

import pytest

from nassearch.jsonl import read_jsonl
from nassearch.search import WARNINGS_FILE, RecordCallback
from nassearch.search_spaces.nasfpn import FPN
from nassearch.signal_check import no_signal_warning, pooled_seed_std


def test_equal_rewards_warn_with_advice():
    message = no_signal_warning([0.0] * 8, None, reward="ap")
    assert "all 0" in message and "neg_loss" in message
    assert "neg_loss" not in no_signal_warning([-1.5] * 8, None, reward="neg_loss")


def test_spread_below_seed_noise_warns_and_above_does_not():
    rewards = [0.030, 0.031, 0.029, 0.030]
    assert no_signal_warning(rewards, None, reward="ap") is None  # noise unknown: no claim
    assert "seed noise" in no_signal_warning(rewards, 0.01, reward="ap")
    assert no_signal_warning(rewards, 0.0001, reward="ap") is None
    assert no_signal_warning([0.5], None, reward="ap") is None


def test_pooled_seed_std():
    assert pooled_seed_std([[1.0], [2.0]]) is None
    # Squares 0.5 + 2.0 over 1 + 1 degrees of freedom.
    assert pooled_seed_std([[1.0, 2.0], [4.0, 6.0], [9.0]]) == pytest.approx(1.25**0.5)


def finish(callback, index, reward, scores=None):
    record = {
        "reward": reward,
        "status": "ok",
        "ap": reward,
        "scores": scores or [reward],
        "genotype_key": f"k{index}",
    }
    trial = SimpleNamespace(
        trial_id=f"t{index}", config={"genotype": FPN.to_dict(), "genotype_key": f"k{index}"}
    )
    callback.on_trial_complete(0, [], SimpleNamespace(**vars(trial), last_result=record))


def test_the_search_warns_once_after_its_first_rewards(tmp_path, capsys):
    path = tmp_path / "architectures.jsonl"
    callback = RecordCallback(path, total=10, quiet=True, reward="ap")
    callback.setup()
    for i in range(7):
        finish(callback, i, 0.0)
    assert not (tmp_path / WARNINGS_FILE).exists()  # waits for 8 rewards
    finish(callback, 7, 0.0)
    finish(callback, 8, 0.0)
    assert capsys.readouterr().out.count("warning: the first 8 rewards are all 0") == 1
    [line] = read_jsonl(tmp_path / WARNINGS_FILE)
    assert line["kind"] == "no_signal" and "neg_loss" in line["message"]


def test_repeats_noise_above_the_spread_warns(tmp_path, capsys):
    callback = RecordCallback(tmp_path / "architectures.jsonl", total=3, quiet=True)
    callback.setup()
    for i, scores in enumerate(([0.1, 0.3], [0.15, 0.35], [0.2, 0.0])):
        finish(callback, i, sum(scores) / 2, scores)
    assert "less than their seed noise" in capsys.readouterr().out


def test_a_reward_with_signal_does_not_warn(tmp_path, capsys):
    callback = RecordCallback(tmp_path / "architectures.jsonl", total=3, quiet=True)
    callback.setup()
    for i, reward in enumerate((0.1, 0.2, 0.3)):
        finish(callback, i, reward)
    assert "warning" not in capsys.readouterr().out
    assert not (tmp_path / WARNINGS_FILE).exists()
