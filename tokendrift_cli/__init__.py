"""tokendrift: train, sample, evaluate and probe discrete diffusion language models."""

__version__ = "0.1.0"
