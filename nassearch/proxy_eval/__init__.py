"""Proxy evaluation: score one sampled architecture by a short training (the search's reward),
as a Ray Tune trial, with its data, feature cache and re-scoring jobs."""
