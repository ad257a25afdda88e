"""Where progress lines go: a `Log` is any callable taking one line (`print` by default), and
`silent` is the one way to say "no output" (worker ranks, trials, tests)."""

from __future__ import annotations

from collections.abc import Callable

Log = Callable[[str], None]


def silent(_line: str) -> None:
    """A `Log` that drops every line."""
