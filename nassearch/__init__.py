"""nassearch: neural architecture search for object detection."""

__version__ = "0.1.0"
