"""The training engine shared by proxy evaluation and full training: the train loop, optimiser
and schedule, checkpoints, and COCO evaluation. It knows detectors only as `nn.Module`s."""
