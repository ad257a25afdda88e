"""An autoregressive LSTM policy over any search space (Zoph & Le 2017; ENAS, Pham et al. 2018).

The policy sees a space only through `decisions`, `kinds()` and `mask(prefix)`, so NAS-FPN,
NAS-FCOS or any later space works without space-specific code:

- step 0 reads a learned start token; step t > 0 reads, when `autoregressive`, the embedding of
  the previous decision's choice (from the embedding table of that decision's kind, as in ENAS),
  otherwise a learned embedding of position t. Without autoregression the logits do not depend
  on earlier choices (only the masks do): decisions are independent given the masks. That is the
  controllers' default, because it learns faster at search budgets of 100-1,000 samples: with
  autoregression every choice that departs from the sequences the policy was trained on changes
  the LSTM's input, and the rest of the sequence is drawn from states it never learned from
  (scripts/bench_controller.py, README);
- a stack of LSTM cells carries the state across steps;
- one linear softmax head per decision kind (shared by all cells) gives the logits, which are
  divided by `temperature` and then, when `tanh_constant` c is set, squashed to c * tanh(x / c)
  (ENAS-style logit clipping keeps the policy from collapsing early);
- illegal choices (from `space.mask(prefix)`) get logit -inf, so their probability is exactly 0.

Sampling, teacher forcing and greedy decoding share one unroll, so `log_prob(actions)` returns
bit-for-bit what `sample` returned for the same sequences in the same batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from nassearch.errors import NasSearchError
from nassearch.search_spaces.base import SearchSpace

__all__ = ["LSTMPolicy"]


class LSTMPolicy(nn.Module):
    """Masked autoregressive categorical policy: one embedding table and one head per decision kind."""

    def __init__(
        self,
        space: SearchSpace,
        hidden_size: int = 100,
        num_layers: int = 1,
        embedding_dim: int | None = None,
        temperature: float = 1.0,
        tanh_constant: float | None = None,
        autoregressive: bool = True,
        init_range: float = 0.1,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        _check_positive_int("hidden_size", hidden_size)
        _check_positive_int("num_layers", num_layers)
        embedding_dim = hidden_size if embedding_dim is None else embedding_dim
        _check_positive_int("embedding_dim", embedding_dim)
        if not _positive_float(temperature):
            raise NasSearchError(f"policy temperature: must be > 0, got {temperature!r}")
        if tanh_constant is not None and not _positive_float(tanh_constant):
            raise NasSearchError(
                f"policy tanh_constant: must be > 0 or null, got {tanh_constant!r}"
            )
        self.space = space
        kinds = space.kinds()
        self.kind_names = list(kinds)
        self.kind_choices = [kinds[k] for k in self.kind_names]
        self.step_kinds = [self.kind_names.index(d.kind) for d in space.decisions]
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.embedding_dim = embedding_dim
        self.temperature = float(temperature)
        self.tanh_constant = None if tanh_constant is None else float(tanh_constant)
        self.autoregressive = bool(autoregressive)

        self.start = nn.Parameter(torch.empty(embedding_dim))
        if self.autoregressive:
            self.embeddings = nn.ModuleList(
                nn.Embedding(c, embedding_dim) for c in self.kind_choices
            )
        else:
            self.positions = nn.Parameter(torch.empty(len(self.step_kinds) - 1, embedding_dim))
        self.cells = nn.ModuleList(
            nn.LSTMCell(embedding_dim if i == 0 else hidden_size, hidden_size)
            for i in range(num_layers)
        )
        self.heads = nn.ModuleList(nn.Linear(hidden_size, c) for c in self.kind_choices)
        self.reset_parameters(init_range, generator)

    @torch.no_grad()
    def reset_parameters(
        self, init_range: float = 0.1, generator: torch.Generator | None = None
    ) -> None:
        """Uniform(-r, r) for every weight (as ENAS), drawn from `generator` for reproducibility."""
        for p in self.parameters():
            noise = torch.rand(p.shape, generator=generator, dtype=p.dtype, device="cpu")
            p.copy_((noise * 2 - 1) * init_range)

    # ----------------------------------------------------------------------------- public API

    def sample(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[list[list[int]], Tensor, Tensor]:
        """Draw `n` action sequences in parallel -> (actions, log_prob [n], entropy [n])."""
        actions, log_prob, entropy, _ = self._unroll(n, mode="sample", generator=generator)
        return actions, log_prob, entropy

    def log_prob(self, actions: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
        """Teacher-forced (log_prob [n], entropy [n]) of given sequences (for PPO ratios and losses)."""
        _, log_prob, entropy, _ = self._unroll(len(actions), mode="teacher", actions=actions)
        return log_prob, entropy

    def greedy(self) -> list[int]:
        """The most probable choice at every step (argmax decode; not the most probable sequence)."""
        actions, _, _, _ = self._unroll(1, mode="greedy")
        return actions[0]

    def step_logits(self, actions: Sequence[Sequence[int]]) -> list[Tensor]:
        """Per step, the logits [n, C_kind] after temperature and tanh but before masking."""
        _, _, _, logits = self._unroll(len(actions), mode="teacher", actions=actions, record=True)
        return logits

    def next_probs(self, prefixes: Sequence[Sequence[int]]) -> Tensor:
        """Masked probabilities [n, C] of the decision that follows each (equal-length) prefix."""
        lengths = {len(p) for p in prefixes}
        if len(lengths) != 1 or not 0 <= next(iter(lengths)) < len(self.step_kinds):
            raise NasSearchError(
                "policy: next_probs needs equal-length prefixes shorter than the space"
            )
        steps = lengths.pop() + 1
        _, _, _, logits = self._unroll(
            len(prefixes), mode="prefix", actions=prefixes, record=True, steps=steps
        )
        mask = torch.tensor(
            [self.space.mask(p) for p in prefixes], dtype=torch.bool, device=logits[-1].device
        )
        return torch.softmax(logits[-1].masked_fill(~mask, -math.inf), dim=-1)

    def transform_logits(self, raw: Tensor) -> Tensor:
        """Head output -> logits: divide by the temperature, then c * tanh(x / c) when c is set."""
        logits = raw / self.temperature
        if self.tanh_constant is not None:
            logits = self.tanh_constant * torch.tanh(logits / self.tanh_constant)
        return logits

    # --------------------------------------------------------------------------------- unroll

    def _unroll(
        self,
        n: int,
        mode: str,
        actions: Sequence[Sequence[int]] | None = None,
        generator: torch.Generator | None = None,
        record: bool = False,
        steps: int | None = None,
    ) -> tuple[list[list[int]], Tensor, Tensor, list[Tensor]]:
        """Run the policy for `steps` decisions (all by default).

        mode: `sample` (draw from `generator`), `greedy` (argmax), `teacher` (follow `actions`) or
        `prefix` (follow `actions` while they last, then argmax).
        """
        decisions = self.space.decisions
        if mode == "teacher":
            for seq in actions:
                if len(seq) != len(decisions):
                    raise NasSearchError(
                        f"policy: expected {len(decisions)} actions per sequence, got {len(seq)}"
                    )
        device = self.start.device
        # Without autoregression the LSTM's inputs do not depend on the choices: one row serves
        # every sequence, and only the masks differ.
        width = n if self.autoregressive else 1
        state = [
            (
                self.start.new_zeros(width, self.hidden_size),
                self.start.new_zeros(width, self.hidden_size),
            )
            for _ in self.cells
        ]
        inp = self.start.unsqueeze(0).expand(width, -1)
        prefixes: list[list[int]] = [[] for _ in range(n)]
        log_prob = self.start.new_zeros(n)
        entropy = self.start.new_zeros(n)
        recorded: list[Tensor] = []
        rows = torch.arange(n, device=device)
        for t, kind in enumerate(self.step_kinds[:steps]):
            x = inp
            for i, cell in enumerate(self.cells):
                state[i] = cell(x, state[i])
                x = state[i][0]
            logits = self.transform_logits(self.heads[kind](x)).expand(n, -1)
            if record:
                recorded.append(logits)
            mask = torch.tensor(
                [self.space.mask(p) for p in prefixes], dtype=torch.bool, device=device
            )
            logp = torch.log_softmax(logits.masked_fill(~mask, -math.inf), dim=-1)
            if mode == "sample":
                choice = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(1)
            elif mode == "greedy" or (mode == "prefix" and t >= len(actions[0])):
                choice = logp.argmax(dim=-1)
            else:
                choice = torch.tensor([int(seq[t]) for seq in actions], device=device)
                bad = (
                    ~mask[rows, choice.clamp(0, mask.shape[1] - 1)]
                    | (choice < 0)
                    | (choice >= mask.shape[1])
                )
                if bool(bad.any()):
                    j = int(bad.nonzero()[0, 0])
                    raise NasSearchError(
                        f"policy: sequence {j} has illegal {decisions[t].name} = {int(choice[j])}"
                    )
            log_prob = log_prob + logp[rows, choice]
            # Masked entries have p = 0 and log p = -inf; count them as 0 * 0.
            entropy = entropy - (logp.exp() * logp.masked_fill(~mask, 0.0)).sum(dim=-1)
            for p, c in zip(prefixes, choice.tolist(), strict=True):
                p.append(int(c))
            if self.autoregressive:
                inp = self.embeddings[kind](choice)
            elif t + 1 < len(self.step_kinds):
                inp = self.positions[t].unsqueeze(0)
        return prefixes, log_prob, entropy, recorded


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise NasSearchError(f"policy {name}: must be a positive integer, got {value!r}")


def _positive_float(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )
