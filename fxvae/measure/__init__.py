"""Measuring models: likelihoods, evaluation, densities on codes, sample quality, fidelity, downstream use, speed."""
