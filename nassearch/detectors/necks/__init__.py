"""Necks: backbone features C* -> the P3..P7 pyramid. Each registers under its `model.neck.type`
in `detectors.registry.NECKS` and builds itself with `from_config(cfg, in_channels, genotype)`.

Importing this package registers the built-in necks; a neck defined elsewhere registers itself
when its module is imported.
"""

from nassearch.detectors.necks import fpn, nasfcos, nasfpn  # noqa: F401  (registration)
