"""The search spaces by name: each space class registers itself with `@register_space`.

A new space is one module under `search_spaces/` (or anywhere: a plugin or a test) with a
registered `SearchSpace` subclass and its named genotypes as upper-case module constants, plus one
neck module registered under the same name in `detectors.registry.NECKS`.
"""

from __future__ import annotations

from typing import TypeVar

from nassearch.errors import NasSearchError
from nassearch.search_spaces.base import SearchSpace

S = TypeVar("S", bound=type[SearchSpace])

_SPACES: dict[str, type[SearchSpace]] = {}


def register_space(cls: S) -> S:
    """Class decorator: make `cls` available as `get_space(cls.name)`."""
    if _SPACES.get(cls.name, cls) is not cls:
        raise NasSearchError(f"search space {cls.name!r} is registered twice")
    _SPACES[cls.name] = cls
    return cls


def unregister_space(name: str) -> None:
    """Forget a registered space (a plugin unloaded, a test cleaning up)."""
    _SPACES.pop(name, None)


def space_names() -> list[str]:
    """Names of the registered search spaces, in registration order."""
    return list(_SPACES)


def space_class(name: str) -> type[SearchSpace]:
    if name not in _SPACES:
        raise NasSearchError(
            f"unknown search space {name!r} (expected one of {', '.join(_SPACES)})"
        )
    return _SPACES[name]
