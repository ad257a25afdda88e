"""Search spaces: NAS-FPN merging cells and NAS-FCOS decoder/head graphs, behind one interface.

`get_space(name, **options)` returns a `SearchSpace` (see `base.py`): a fixed-length sequence of
masked categorical decisions that decode to a `Genotype`. Spaces describe architectures only; the
modules are built by `nassearch.detectors` from a genotype.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from nassearch.errors import NasSearchError, first_line
from nassearch.search_spaces import nasfcos, nasfpn  # noqa: F401  (registration)
from nassearch.search_spaces.base import Decision, Genotype, SearchSpace, approx_count
from nassearch.search_spaces.registry import (
    register_space,
    space_class,
    space_names,
    unregister_space,
)

__all__ = [
    "Decision",
    "approx_count",
    "Genotype",
    "SearchSpace",
    "genotype_from_dict",
    "get_space",
    "inferred_options",
    "named_genotypes",
    "register_space",
    "resolve_genotype",
    "space_names",
    "unregister_space",
]


def get_space(name: str, **options: Any) -> SearchSpace:
    """The search space called `name` (`nasfpn`, `nasfcos`, or any registered one), configured by
    `options`."""
    return space_class(name)(**options)


def genotype_from_dict(data: dict[str, Any], **space_options: Any) -> Genotype:
    """Parse a genotype written as plain data; its `space` field picks the space that validates it."""
    if not isinstance(data, dict) or "space" not in data:
        raise NasSearchError(
            f"genotype: expected a mapping with a `space` field ({' or '.join(space_names())})"
        )
    options = {**inferred_options(data), **space_options}
    return get_space(data["space"], **options).genotype_from_dict(data)


def inferred_options(data: dict[str, Any]) -> dict[str, Any]:
    """Space options a genotype mapping implies: its number of cells (reduced spaces build too)."""
    return space_class(data.get("space")).options_from_genotype(data)


def named_genotypes(space: str) -> dict[str, Genotype]:
    """The published architectures a space ships as module constants (PAPER, FPN, ...)."""
    module = sys.modules[space_class(space).__module__]
    return {
        name: value
        for name, value in vars(module).items()
        if name.isupper() and isinstance(value, Genotype)
    }


def resolve_genotype(value: str | dict[str, Any], space: str) -> Genotype:
    """A genotype from a config value: a named genotype, a genotype mapping, or an arch YAML/JSON file.

    An exported `arch-k.yaml` holds the genotype under its `genotype` key; a bare genotype mapping
    may omit `space` (the neck type names it).
    """
    if isinstance(value, str):
        if Path(value).suffix.lower() in (".yaml", ".yml", ".json"):
            value = _read_genotype_file(Path(value))
        else:
            named = named_genotypes(space)
            if value not in named:
                raise NasSearchError(
                    f"unknown genotype {value!r} for space {space} (named ones: {', '.join(named)}; "
                    "or give a mapping or an arch YAML file)"
                )
            return named[value]
    if not isinstance(value, dict):
        raise NasSearchError(f"genotype: expected a name, a mapping or a file, got {value!r}")
    data = {"space": space, **value}
    if data["space"] != space:
        raise NasSearchError(f"genotype: is for space {data['space']!r}, but the neck is {space!r}")
    return get_space(space, **inferred_options(data)).genotype_from_dict(data)


def _read_genotype_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise NasSearchError(f"{path}: genotype file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise NasSearchError(f"{path}: cannot read genotype ({first_line(exc)})") from exc
    if isinstance(data, dict) and isinstance(data.get("genotype"), dict):
        data = data["genotype"]
    if not isinstance(data, dict):
        raise NasSearchError(f"{path}: expected a genotype mapping")
    return data
