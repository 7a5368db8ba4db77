"""Releases: immutable dataset versions built from a recipe's tables.

``build`` runs it (temp folder, gate, rename); ``tables`` joins the stage
tables into the release's ``clips`` and annotation configs; ``splits`` assigns
videos to splits and applies the decontamination list; ``gate`` runs
qa_checks/*.sql; ``exports`` writes the stream and sft JSONL; ``card``,
``plots`` and ``croissant`` describe the release.
"""
