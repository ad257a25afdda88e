"""Layers the necks and heads are built from: one norm factory, resampling, separable and
deformable convolutions, and the NAS-FCOS op vocabulary's modules."""
