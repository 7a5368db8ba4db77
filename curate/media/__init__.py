"""Media helpers: one decode pass per video (see ``curate.media.decode``)."""
