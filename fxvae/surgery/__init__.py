"""Changing a captured model: the rewrite at the latent, the encoder/decoder split, calibration."""
