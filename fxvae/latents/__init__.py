"""What the latent becomes: the Gaussian posterior, the quantisers, their codebooks and tokens."""
