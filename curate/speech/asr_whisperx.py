"""Optional ASR backend: whisperx (batched faster-whisper + its VAD + wav2vec2 alignment).

Imported only when a recipe says ``backend: whisperx``. whisperx 3.8.6 pins
``torch~=2.8``, so it lives in its own environment (docs/transcribe.md), not
in curate's default one. Its pyannote VAD weights ship in its wheel; the
wav2vec2 alignment model does not: give ``alignment_model`` as a local folder
(or a name already in the Hugging Face cache) to align offline.
"""

from __future__ import annotations

import numpy as np

from .. import devices
from .asr import DEVICE_KEY, AsrResult, pick_compute_type, resolve_model
from .clips import INTERPOLATED

ALIGN_KEY = "stages.transcribe.alignment_model"


class BackendUnavailable(RuntimeError):
    """The whisperx package cannot be imported in this environment."""


def _import_whisperx():
    try:
        import whisperx
    except Exception as exc:  # ImportError, or a torch ABI clash inside whisperx
        raise BackendUnavailable(
            f"stages.transcribe.backend is 'whisperx' but whisperx cannot be imported here "
            f"({type(exc).__name__}: {exc}). whisperx 3.8.6 pins torch~=2.8, so it needs its own "
            f"environment: see docs/transcribe.md ('whisperx backend'). "
            f"Or use backend: faster_whisper, which runs in the default environment."
        ) from exc
    return whisperx


class WhisperXASR:
    """Same interface as :class:`curate.speech.asr.FasterWhisperASR`."""

    def __init__(self, model: str, *, device: str = "auto", compute_type: str = "auto", batch_size: int = 8,
                 beam_size: int = 5, language: str | None = None, cpu_threads: int = 0,
                 alignment_model: str | None = None, base_dir=None):
        whisperx = _import_whisperx()
        resolved = resolve_model(model, base_dir)
        self.device = devices.resolve(device, DEVICE_KEY, backend="ctranslate2")
        self.compute_type = pick_compute_type(compute_type, self.device)
        self.pipeline = whisperx.load_model(
            resolved.path, self.device, compute_type=self.compute_type, language=language,
            asr_options={"beam_size": beam_size}, local_files_only=True, threads=cpu_threads or 4,
        )
        self.whisperx = whisperx
        self.batch_size = batch_size
        self.alignment_model = alignment_model
        self._aligners: dict[str, tuple] = {}
        self.model_name = model
        self.model_version = (f"{resolved.version}; whisperx {getattr(whisperx, '__version__', '?')}; "
                              f"{self.device}/{self.compute_type}; align={alignment_model or 'none'}")

    def _aligner(self, language: str):
        if language not in self._aligners:
            try:
                self._aligners[language] = self.whisperx.load_align_model(
                    language_code=language, device=self.device, model_name=self.alignment_model)
            except Exception as exc:
                raise RuntimeError(
                    f"alignment model {self.alignment_model!r} ({ALIGN_KEY}) cannot be loaded offline: {exc}. "
                    f"Give a local wav2vec2 folder, or leave {ALIGN_KEY} unset to keep Whisper's segment times."
                ) from exc
        return self._aligners[language]

    def transcribe(self, audio: np.ndarray) -> AsrResult:
        result = self.pipeline.transcribe(audio, batch_size=self.batch_size)
        segments, language = result["segments"], result.get("language")
        if self.alignment_model and segments:
            model_a, metadata = self._aligner(language)
            segments = self.whisperx.align(segments, model_a, metadata, audio, self.device,
                                           return_char_alignments=False)["segments"]
        words = []
        for seg in segments:
            words.extend(_segment_words(seg))
        speech_s = float(sum(s["end"] - s["start"] for s in result["segments"]))
        return AsrResult(words=words, language=language, language_prob=None, speech_s=speech_s)


def _segment_words(seg: dict) -> list[dict]:
    """The segment's words: ``aligned`` where wav2vec2 alignment timed them; the
    rest (no alignment model, or a word alignment could not place, such as a
    number) share the gap between their timed neighbours evenly and are marked
    ``interpolated``: nothing measured them."""
    aligned = seg.get("words") or []
    if not aligned:  # no alignment: only the segment's span was measured
        aligned = [{"word": t} for t in seg["text"].split()]
    words = [w for w in aligned if str(w.get("word", "")).strip()]
    out: list[dict] = []
    k = 0
    while k < len(words):
        w = words[k]
        if "start" in w and "end" in w:
            out.append({"start_s": round(float(w["start"]), 3), "end_s": round(float(w["end"]), 3),
                        "text": w["word"].strip(), "prob": w.get("score"), "time_source": "aligned"})
            k += 1
            continue
        run_end = k  # words[k:run_end] have no times
        while run_end < len(words) and not ("start" in words[run_end] and "end" in words[run_end]):
            run_end += 1
        lo = out[-1]["end_s"] if out else float(seg["start"])
        hi = float(words[run_end]["start"]) if run_end < len(words) else float(seg["end"])
        hi = max(hi, lo)
        step = (hi - lo) / (run_end - k)
        for i, t in enumerate(words[k:run_end]):
            out.append({"start_s": round(lo + i * step, 3), "end_s": round(lo + (i + 1) * step, 3),
                        "text": t["word"].strip(), "prob": None, "time_source": INTERPOLATED})
        k = run_end
    return out
