"""curate: build and curate training datasets for video language models."""

__version__ = "0.2.0"
