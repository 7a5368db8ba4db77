"""LLM access for the annotate stage: client, cache, budget, tasks, local server."""
