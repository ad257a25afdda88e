"""The one norm-layer factory of the detectors: BatchNorm, GroupNorm or none, chosen by name."""

from __future__ import annotations

import math

from torch import nn

from nassearch.errors import NasSearchError

GN_GROUPS = 32  # Wu & He (2018); what every detection codebase defaults to


def norm_layer(
    norm: str | None,
    channels: int,
    gn_groups: int = GN_GROUPS,
    *,
    fit_groups: bool = False,
    allow_none: bool = True,
    where: str = "norm",
) -> nn.Module:
    """`bn` -> BatchNorm2d, `gn` -> GroupNorm(gn_groups), None -> Identity (when `allow_none`).

    GroupNorm needs `gn_groups` to divide `channels`; with `fit_groups` it takes gcd(gn_groups,
    channels) groups instead (RetinaNet's head at narrow proxy widths), otherwise it is refused
    with a message naming `where`.
    """
    if norm == "bn":
        return nn.BatchNorm2d(channels)
    if norm == "gn":
        if fit_groups:
            return nn.GroupNorm(math.gcd(gn_groups, channels), channels)
        if gn_groups <= 0 or channels % gn_groups:
            raise NasSearchError(
                f"{where} 'gn': gn_groups={gn_groups} must divide the {channels} channels"
            )
        return nn.GroupNorm(gn_groups, channels)
    if norm is None and allow_none:
        return nn.Identity()
    names = "'bn', 'gn' or None" if allow_none else "'bn' or 'gn'"
    raise NasSearchError(f"{where}: unknown norm {norm!r} (use {names})")
