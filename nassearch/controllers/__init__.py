"""Search strategies with one ask/tell interface: REINFORCE and PPO on an LSTM policy, random search,
regularised evolution. `build_controller(name, space, seed=..., **hparams)` makes one."""

from __future__ import annotations

import importlib
from typing import Any

from nassearch.controllers.base import Candidate, Controller
from nassearch.errors import NasSearchError
from nassearch.search_spaces.base import SearchSpace

# name -> (module, class); imported lazily so `random` does not pull in torch's LSTM code.
CONTROLLERS = {
    "reinforce": ("nassearch.controllers.reinforce", "ReinforceController"),
    "ppo": ("nassearch.controllers.ppo", "PPOController"),
    "random": ("nassearch.controllers.random_search", "RandomController"),
    "evolution": ("nassearch.controllers.evolution", "EvolutionController"),
}

__all__ = ["CONTROLLERS", "Candidate", "Controller", "build_controller"]


def build_controller(name: str, space: SearchSpace, seed: int = 0, **hparams: Any) -> Controller:
    """The strategy called `name` over `space`; unknown names or hyper-parameters are one-line errors."""
    if name not in CONTROLLERS:
        raise NasSearchError(
            f"unknown controller {name!r} (expected one of {', '.join(CONTROLLERS)})"
        )
    module, cls_name = CONTROLLERS[name]
    cls = getattr(importlib.import_module(module), cls_name)
    try:
        return cls(space, seed=seed, **hparams)
    except TypeError as exc:
        raise NasSearchError(f"controller {name}: {exc}") from None
