# The two commands a new user needs (see README.md).
.PHONY: demo test setup

demo: setup
	.venv/bin/curate demo

test:
	@bash scripts/setup.sh --with-browser
	.venv/bin/python -m pytest

setup:
	@bash scripts/setup.sh
