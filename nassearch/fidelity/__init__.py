"""Proxy fidelity: how noisy the search's reward is, and how well it ranks like longer training."""
