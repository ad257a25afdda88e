"""Training loop (proxy and full training) and COCO evaluation."""
