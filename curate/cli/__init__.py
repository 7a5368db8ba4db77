"""The `curate` command line (docs/architecture.md, "What may import what": nothing imports it)."""

from .parser import build_parser, main

__all__ = ["build_parser", "main"]
