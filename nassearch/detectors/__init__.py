"""Detectors: ResNet backbones, FPN neck, RetinaNet and FCOS, box ops and losses."""
