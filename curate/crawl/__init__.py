"""The crawl wing: what a source names (sources.py: URLs, paths, manifests, buckets),
videos that are files already (files.py) and yt-dlp's errors as row statuses
(errors.py). ``curate.stages.crawl`` is the stage over them; nothing here imports it."""
