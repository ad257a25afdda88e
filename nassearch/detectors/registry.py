"""Name -> class registries of the parts a detector is assembled from (timm's `register_model`).

A neck registers under its `model.neck.type` (`fpn`, or the search space it builds), a searched
head under the name of the space that searches it. A new search space is then one description
file under `search_spaces/` plus one module file that registers its neck, and no builder changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from nassearch.errors import NasSearchError

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """Classes by name, filled by the `register(name)` decorator where each class is defined."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(cls: T) -> T:
            if self._classes.get(name, cls) is not cls:
                raise NasSearchError(f"{self.kind} {name!r} is registered twice")
            self._classes[name] = cls
            return cls

        return add

    def unregister(self, name: str) -> None:
        """Forget `name` (a plugin unloaded, a test cleaning up)."""
        self._classes.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def get(self, name: str) -> T:
        if name not in self._classes:
            raise NasSearchError(
                f"unknown {self.kind} {name!r} (registered: {', '.join(sorted(self._classes))})"
            )
        return self._classes[name]

    def names(self) -> list[str]:
        return sorted(self._classes)


NECKS: Registry = Registry("neck")
SEARCHED_HEADS: Registry = Registry("searched head")
