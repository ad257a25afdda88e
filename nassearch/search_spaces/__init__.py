"""Search spaces: NAS-FPN merging cells and NAS-FCOS decoder/head graphs, behind one interface.

`get_space(name, **options)` returns a `SearchSpace` (see `base.py`): a fixed-length sequence of
masked categorical decisions that decode to a `Genotype`, plus builders for the modules it names.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml

from nassearch.errors import NasSearchError
from nassearch.search_spaces.base import Decision, Genotype, SearchSpace

SPACE_NAMES = ("nasfpn", "nasfcos")

__all__ = [
    "SPACE_NAMES",
    "Decision",
    "Genotype",
    "SearchSpace",
    "genotype_from_dict",
    "get_space",
    "inferred_options",
    "named_genotypes",
    "resolve_genotype",
]


def get_space(name: str, **options: Any) -> SearchSpace:
    """The search space called `name` (`nasfpn`, `nasfcos`), configured by `options`."""
    if name == "nasfpn":
        from nassearch.search_spaces.nasfpn import NASFPNSpace

        return NASFPNSpace(**options)
    if name == "nasfcos":
        from nassearch.search_spaces.nasfcos import NASFCOSSpace

        return NASFCOSSpace(**options)
    raise NasSearchError(
        f"unknown search space {name!r} (expected one of {', '.join(SPACE_NAMES)})"
    )


def genotype_from_dict(data: dict[str, Any], **space_options: Any) -> Genotype:
    """Parse a genotype written as plain data; its `space` field picks the space that validates it."""
    if not isinstance(data, dict) or "space" not in data:
        raise NasSearchError(
            "genotype: expected a mapping with a `space` field (nasfpn or nasfcos)"
        )
    options = {**inferred_options(data), **space_options}
    return get_space(data["space"], **options).genotype_from_dict(data)


def inferred_options(data: dict[str, Any]) -> dict[str, Any]:
    """Space options a genotype mapping implies: its number of cells (reduced spaces build too)."""
    cells = data.get("cells") if data.get("space") == "nasfpn" else data.get("fpn")
    return {"num_cells": len(cells)} if isinstance(cells, list) and cells else {}


def named_genotypes(space: str) -> dict[str, Genotype]:
    """The published architectures a space ships as module constants (PAPER, FPN, ...)."""
    if space not in SPACE_NAMES:
        raise NasSearchError(
            f"unknown search space {space!r} (expected one of {', '.join(SPACE_NAMES)})"
        )
    module = importlib.import_module(f"nassearch.search_spaces.{space}")
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
        raise NasSearchError(f"{path}: cannot read genotype ({str(exc).splitlines()[0]})") from exc
    if isinstance(data, dict) and isinstance(data.get("genotype"), dict):
        data = data["genotype"]
    if not isinstance(data, dict):
        raise NasSearchError(f"{path}: expected a genotype mapping")
    return data
