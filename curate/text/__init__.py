"""Text quality measures of clip transcripts: language-model loss, language identity."""
