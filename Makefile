# The two commands a new user needs (see README.md).
.PHONY: demo test setup

demo: setup
	.venv/bin/curate demo

test: setup
	.venv/bin/python -m pytest

setup:
	@bash scripts/setup.sh
