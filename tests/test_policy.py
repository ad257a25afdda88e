"""LSTM policy: masks give exactly zero probability, log-probs against a hand-written unroll and
log-softmax, temperature / tanh clipping, sampling frequencies, and legality of 1,000 samples
on every real space."""

import math

import numpy as np
import pytest
import torch

from nassearch.controllers.policy import LSTMPolicy
from nassearch.errors import NasSearchError
from nassearch.search_spaces import get_space

SPACES = {
    "nasfpn": ("nasfpn", {}),
    "nasfcos-fpn": ("nasfcos", {"part": "fpn"}),
    "nasfcos-head": ("nasfcos", {"part": "head"}),
    "nasfcos-both": ("nasfcos", {"part": "both"}),
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=list(SPACES))
def space(request):
    name, options = SPACES[request.param]
    return get_space(name, **options)


def make_policy(space, seed=0, init_range=1.0, **kwargs):
    """A policy with large random weights, so that logits are far from uniform."""
    gen = torch.Generator().manual_seed(seed)
    return LSTMPolicy(space, init_range=init_range, generator=gen, **kwargs)


def sample(policy, n, seed=0):
    with torch.no_grad():
        return policy.sample(n, torch.Generator().manual_seed(seed))


def reference_unroll(policy, actions):
    """Independent unroll: start token, LSTM stack, per-kind head, then the previous choice's
    embedding (autoregressive) or the next position's."""
    space = policy.space
    kinds = list(space.kinds())
    out = []  # per sequence, per step: transformed logits (1-D tensors)
    for seq in actions:
        state = [(torch.zeros(1, policy.hidden_size), torch.zeros(1, policy.hidden_size))] * len(
            policy.cells
        )
        x = policy.start.view(1, -1)
        steps = []
        for decision, action in zip(space.decisions, seq, strict=True):
            k = kinds.index(decision.kind)
            for i, cell in enumerate(policy.cells):
                state[i] = cell(x, state[i])
                x = state[i][0]
            raw = policy.heads[k](x)[0] / policy.temperature
            if policy.tanh_constant is not None:
                raw = policy.tanh_constant * torch.tanh(raw / policy.tanh_constant)
            steps.append(raw)
            t = len(steps) - 1
            if policy.autoregressive:
                x = policy.embeddings[k](torch.tensor([action]))
            elif t + 1 < len(seq):
                x = policy.positions[t].view(1, -1)
        out.append(steps)
    return out


def masked_log_softmax(logits, legal):
    """log p over the legal choices, in float64 with plain math."""
    values = [float(v) for v in logits]
    top = max(values[i] for i in range(len(values)) if legal[i])
    norm = top + math.log(sum(math.exp(values[i] - top) for i in range(len(values)) if legal[i]))
    return [values[i] - norm if legal[i] else -math.inf for i in range(len(values))]


# ------------------------------------------------------------------------------------- masks


@pytest.mark.parametrize("autoregressive", [True, False])
def test_illegal_choices_have_exactly_zero_probability(space, autoregressive):
    policy = make_policy(space, autoregressive=autoregressive)
    actions, _, _ = sample(policy, 24)
    with torch.no_grad():
        for t in range(len(space.decisions)):
            prefixes = [seq[:t] for seq in actions]
            probs = policy.next_probs(prefixes)
            for p, prefix in zip(probs, prefixes, strict=True):
                legal = torch.tensor(space.mask(prefix))
                assert torch.all(p[~legal] == 0.0)
                assert torch.all(p[legal] > 0.0)
                assert abs(float(p.sum()) - 1.0) < 1e-5


def test_masked_entries_give_finite_gradients():
    space = get_space("nasfpn")
    policy = make_policy(space)
    actions, _, _ = sample(policy, 6)
    log_prob, entropy = policy.log_prob(actions)
    (log_prob.sum() + entropy.sum()).backward()
    grads = [p.grad for p in policy.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


# --------------------------------------------------------------------------------- log-probs


@pytest.mark.parametrize("autoregressive", [True, False])
def test_sample_log_prob_equals_teacher_forcing(space, autoregressive):
    policy = make_policy(space, seed=1, autoregressive=autoregressive)
    with torch.no_grad():
        actions, lp_sample, ent_sample = policy.sample(16, torch.Generator().manual_seed(3))
        lp_teacher, ent_teacher = policy.log_prob(actions)
    assert torch.allclose(lp_sample, lp_teacher, atol=1e-5, rtol=0)
    assert torch.allclose(ent_sample, ent_teacher, atol=1e-5, rtol=0)
    # Teacher forcing one sequence at a time gives the same numbers as the batch.
    for i in (0, 7):
        with torch.no_grad():
            one, _ = policy.log_prob([actions[i]])
        assert abs(float(one[0]) - float(lp_teacher[i])) < 1e-4


@pytest.mark.parametrize(("num_layers", "autoregressive"), [(1, True), (2, True), (2, False)])
def test_log_prob_is_sum_of_masked_log_softmax(space, num_layers, autoregressive):
    policy = make_policy(
        space,
        seed=2,
        num_layers=num_layers,
        hidden_size=12,
        embedding_dim=7,
        tanh_constant=2.5,
        autoregressive=autoregressive,
    )
    actions, _, _ = sample(policy, 5, seed=4)
    with torch.no_grad():
        log_prob, entropy = policy.log_prob(actions)
        logits = policy.step_logits(actions)
        reference = reference_unroll(policy, actions)
    for i, seq in enumerate(actions):
        expected_lp = 0.0
        expected_ent = 0.0
        for t, action in enumerate(seq):
            assert torch.allclose(logits[t][i], reference[i][t], atol=1e-5)
            logp = masked_log_softmax(reference[i][t], space.mask(seq[:t]))
            expected_lp += logp[action]
            expected_ent -= sum(math.exp(v) * v for v in logp if v > -math.inf)
        assert abs(float(log_prob[i]) - expected_lp) < 1e-3
        assert abs(float(entropy[i]) - expected_ent) < 1e-3


def test_temperature_and_tanh_transform_logits():
    space = get_space("nasfcos", part="both")
    base = make_policy(space, seed=5, init_range=2.0)
    actions, _, _ = sample(base, 4)

    def logits_of(**kwargs):
        policy = LSTMPolicy(space, **kwargs)
        policy.load_state_dict(base.state_dict())
        with torch.no_grad():
            return torch.cat(policy.step_logits(actions), dim=1)

    raw = logits_of()
    assert raw.abs().max() > 3.0  # large enough for the clipping to matter
    assert torch.allclose(logits_of(temperature=2.5), raw / 2.5, atol=1e-6)
    clipped = logits_of(tanh_constant=1.5)
    assert torch.allclose(clipped, 1.5 * torch.tanh(raw / 1.5), atol=1e-6)
    assert clipped.abs().max() <= 1.5
    both = logits_of(temperature=2.0, tanh_constant=1.5)
    assert torch.allclose(both, 1.5 * torch.tanh(raw / 2.0 / 1.5), atol=1e-6)

    # A hotter policy is closer to uniform: its entropy is higher on the same sequences.
    cold = LSTMPolicy(space)
    cold.load_state_dict(base.state_dict())
    hot = LSTMPolicy(space, temperature=4.0)
    hot.load_state_dict(base.state_dict())
    with torch.no_grad():
        assert torch.all(hot.log_prob(actions)[1] > cold.log_prob(actions)[1])


# ---------------------------------------------------------------------------------- sampling


def test_thousand_samples_are_legal_and_decode(space):
    policy = make_policy(space, seed=6, init_range=0.1)
    actions, log_prob, entropy = sample(policy, 1000, seed=7)
    assert len(actions) == 1000
    keys = set()
    for seq in actions:
        space.validate_actions(seq)
        keys.add(space.decode(seq).key())
    assert len(keys) > 900  # near-uniform initial policy over huge spaces: few repeats
    assert torch.isfinite(log_prob).all() and torch.isfinite(entropy).all()
    assert torch.all(log_prob < 0) and torch.all(entropy > 0)


def test_sampling_frequencies_follow_the_probabilities():
    space = get_space("nasfpn")
    policy = make_policy(space, seed=8, init_range=1.0)
    n = 4000
    actions, _, _ = sample(policy, n, seed=9)
    with torch.no_grad():
        probs = policy.next_probs([[]])[0].double()
        # Second step, conditioned on the most frequent first choice.
        first = np.bincount([seq[0] for seq in actions], minlength=len(probs))
        top = int(first.argmax())
        probs2 = policy.next_probs([[top]])[0].double()
    counts = torch.tensor(first, dtype=torch.float64)
    assert probs.max() > 0.35  # far from uniform over the 5 legal inputs
    sigma = torch.sqrt(n * probs * (1 - probs)) + 1e-9
    assert torch.all((counts - n * probs).abs() <= 5 * sigma + 1)
    second = [seq[1] for seq in actions if seq[0] == top]
    counts2 = torch.tensor(np.bincount(second, minlength=len(probs2)), dtype=torch.float64)
    m = len(second)
    sigma2 = torch.sqrt(m * probs2 * (1 - probs2)) + 1e-9
    assert counts2[top] == 0  # the second input must differ from the first
    assert torch.all((counts2 - m * probs2).abs() <= 5 * sigma2 + 1)


def test_sampling_is_deterministic_for_a_generator_seed():
    space = get_space("nasfcos", part="both")
    policy = make_policy(space, seed=10)
    a1, lp1, _ = sample(policy, 8, seed=11)
    a2, lp2, _ = sample(policy, 8, seed=11)
    a3, _, _ = sample(policy, 8, seed=12)
    assert a1 == a2 and torch.equal(lp1, lp2)
    assert a1 != a3
    # Weight initialisation follows the generator too.
    other = make_policy(space, seed=10)
    assert all(
        torch.equal(p, q) for p, q in zip(policy.parameters(), other.parameters(), strict=True)
    )


def test_greedy_takes_the_argmax_of_every_step(space):
    policy = make_policy(space, seed=13)
    with torch.no_grad():
        best = policy.greedy()
        space.validate_actions(best)
        for t, action in enumerate(best):
            probs = policy.next_probs([best[:t]])[0]
            assert action == int(probs.argmax())


def test_bad_input_is_a_one_line_error():
    space = get_space("nasfpn")
    policy = make_policy(space)
    actions, _, _ = sample(policy, 1)
    seq = list(actions[0])
    seq[1] = seq[0]  # the second input must differ from the first
    with pytest.raises(NasSearchError, match="cell1.input2"):
        policy.log_prob([seq])
    with pytest.raises(NasSearchError, match="expected 28 actions"):
        policy.log_prob([seq[:-1]])
    with pytest.raises(NasSearchError, match="temperature"):
        LSTMPolicy(space, temperature=0.0)
    with pytest.raises(NasSearchError, match="hidden_size"):
        LSTMPolicy(space, hidden_size=0)
