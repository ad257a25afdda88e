"""COCO-format datasets, transforms and the embedded synthetic dataset."""
