"""Capturing a model: the tracers, and the tiers that each turn one kind of capture into a VAE."""
