"""speech: see docs/architecture.md."""
