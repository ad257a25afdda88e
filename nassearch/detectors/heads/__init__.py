"""Searched heads, registered in `detectors.registry.SEARCHED_HEADS` under the search space that
searches them. The stock RetinaNet and FCOS heads sit beside their detectors.
"""

from nassearch.detectors.heads import nasfcos  # noqa: F401  (registration)
