"""Language of a clip's text, offline: py3langid (langid.py's model, shipped in the wheel).

Used where Whisper's language detection did not run (the words came from a
caption track, whose declared language can be wrong). Chosen over
lingua-language-detector after measuring both (docs/quality.md): both label
the test sentences right, py3langid is 4.5 MB and loads in ~1.5 s, lingua is
96 MB and ~60 s to preload every language on a busy 2-core machine.
"""

from __future__ import annotations


class LanguageIdentifier:
    """``identify(text) -> (ISO 639-1 code, probability)``; one model per worker."""

    def __init__(self, languages: list[str] | None = None):
        from py3langid.langid import MODEL_FILE, LanguageIdentifier as _Identifier

        self._model = _Identifier.from_model_file(MODEL_FILE, norm_probs=True)
        if languages:  # restrict the choice (a closed set is more accurate)
            self._model.set_languages(languages)

    def identify(self, text: str) -> tuple[str, float]:
        lang, prob = self._model.classify(text)
        return str(lang), float(prob)
