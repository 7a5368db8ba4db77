"""Transcribe: every spoken word with its time, from closed captions or ASR.

Per video: parse the caption tracks crawl downloaded (LiveCC's rules per caption kind, see
``curate.speech.captions``), extract 16 kHz mono audio once (kept for later stages),
run ASR when ``prefer`` needs it, choose the word stream, then apply the
filters as row statuses (nothing is deleted): words per second, language,
minimum words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from .. import status
from ..speech.asr import DEFAULT_MODEL, AsrResult, normalized_wer
from ..media.released import released_reason
from ..media.audio import AUDIO_FILENAME, AudioDecodeError, NoAudioTrack, extract_audio, is_silent
from ..speech.captions import CaptionParseError, parse_caption_file, words_text
from .base import Params, Resources, Stage

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_LANG = r"^[a-z]{2,3}$"
_FORMAT_RANK = {"json3": 0, "vtt": 1, "srt": 2}  # json3 carries per-word offsets
PAUSE_BRIDGE_S = 1.0  # a pause shorter than this still counts as speaking


class TranscribeParams(Params):
    backend: Literal["faster_whisper", "whisperx"] = "faster_whisper"
    model: str = Field(DEFAULT_MODEL, min_length=1,
                       description="faster-whisper model name already cached, or a local CTranslate2 folder")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compute_type: Literal["auto", "int8", "int8_float16", "int8_float32", "float16", "bfloat16", "float32"] = "auto"
    batch_size: int = Field(8, ge=1, le=256)
    beam_size: int = Field(5, ge=1, le=20)
    cpu_threads: int = Field(0, ge=0, le=256, description="0 = the stage's declared CPUs")
    language: str | None = Field(None, pattern=_LANG, description="None = detect")
    prefer: Literal["captions", "asr", "best"] = "captions"
    max_caption_wer: float = Field(0.3, ge=0.0, le=1.0, description="prefer=best: auto captions kept under this WER vs ASR")
    words_per_second: tuple[float, float] = (1.0, 4.0)
    languages: list[str] | None = Field(None, description="allowed languages (ISO 639-1); None = any")
    min_language_prob: float = Field(0.0, ge=0.0, le=1.0)
    min_words: int = Field(1, ge=0)
    alignment_model: str | None = Field(None, description="whisperx only: wav2vec2 model name or local folder")

    @field_validator("words_per_second")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not 0 <= lo <= hi:
            raise ValueError(f"words_per_second must be [min, max] with 0 <= min <= max, got {list(v)}")
        return v

    @field_validator("languages")
    @classmethod
    def _codes(cls, v: list[str] | None) -> list[str] | None:
        for code in v or []:
            if not re.match(_LANG, code):
                raise ValueError(f"languages: {code!r} is not an ISO 639-1 code such as 'en'")
        return v

    @model_validator(mode="after")
    def _whisperx_only(self) -> "TranscribeParams":
        if self.alignment_model and self.backend != "whisperx":
            raise ValueError("alignment_model applies to backend: whisperx only")
        return self


@dataclass
class _Transcript:
    words: list[dict]
    source: str  # captions_manual | captions_auto | asr
    language: str | None
    language_prob: float | None = None


class TranscribeStage(Stage):
    name = "transcribe"
    # 2: time columns start_s/end_s (no SQL quoting), float64 word times
    # 3: audio (so ASR word times) on the container's clock; audio_16k_v2.wav;
    #    caption rules per kind (manual | auto), no zero-length or interleaved words
    # 4: every word says where its time came from (time_source: caption | asr | aligned | interpolated)
    version = "4"
    Params = TranscribeParams
    inputs = ("crawl",)
    input_key = "video_id"
    row_key = "video_id"
    resources = Resources(cpus=2, memory_gb=2)
    reads_media = frozenset({"video"})

    @classmethod
    def preflight(cls, params: TranscribeParams, recipe_dir: Path) -> list[str]:
        from ..speech.asr import ModelUnavailable, resolve_model

        from .. import devices

        try:
            resolve_model(params.model, recipe_dir)
        except ModelUnavailable as exc:
            return [str(exc)]
        return devices.preflight(params.device, "stages.transcribe.device", backend="ctranslate2")

    def setup(self) -> None:
        from .. import devices

        p: TranscribeParams = self.params
        kwargs = dict(device=devices.resolve(p.device, "stages.transcribe.device", backend="ctranslate2"), compute_type=p.compute_type, batch_size=p.batch_size,
                      beam_size=p.beam_size, language=p.language,
                      # as many threads as CPUs Ray gives this worker: more would oversubscribe
                      cpu_threads=p.cpu_threads or int(self.resources.cpus),
                      base_dir=self.ctx.recipe_dir)
        if p.backend == "whisperx":
            from ..speech.asr_whisperx import WhisperXASR

            self.asr = WhisperXASR(p.model, alignment_model=p.alignment_model, **kwargs)
        else:
            from ..speech.asr import FasterWhisperASR

            self.asr = FasterWhisperASR(p.model, **kwargs)

    def teardown(self) -> None:
        self.asr = None

    def process(self, table: pa.Table) -> list[dict]:
        if getattr(self, "asr", None) is None:
            self.setup()
        return [self._one(row) for row in table.to_pylist()]

    # -- one video -------------------------------------------------------

    def _one(self, row: dict) -> dict:
        video_id = row["video_id"]
        out = {"video_id": video_id}
        if not _SAFE_ID.match(video_id or ""):
            return out | status.failed("asr.bad_video_id", f"video_id {video_id!r} is not safe to use as a folder name")
        p: TranscribeParams = self.params

        captions, caption_error = self._read_captions(row.get("captions") or [])
        samples, audio_path, audio_error = self._audio(row)
        if audio_path:
            out["audio_path"] = audio_path

        asr: AsrResult | None = None
        if samples is not None and (p.prefer != "captions" or captions is None):
            asr, asr_status = self._run_asr(samples)
            if asr_status:
                return out | asr_status
            out["model"], out["model_version"] = self.asr.model_name, self.asr.model_version
        if captions is not None and asr is not None and asr.words:
            out["caption_asr_wer"] = normalized_wer(words_text(captions.words), words_text(asr.words))

        chosen, why_not_captions = self._choose(captions, asr, out.get("caption_asr_wer"))
        caption_error = caption_error or why_not_captions
        if caption_error and (chosen is None or chosen.source == "asr"):
            out["caption_error"] = caption_error
        if chosen is None:
            if audio_error:
                return out | audio_error
            if caption_error:
                return out | status.failed("asr.caption_parse", caption_error)
            return out | status.filtered("asr.no_audio", "no usable captions and no audio to transcribe")
        return out | self._describe(chosen) | self._filter(chosen)

    def _run_asr(self, samples) -> tuple[AsrResult | None, dict | None]:
        """(result, None), or (None, a transient status) when the device ran out of memory."""
        if is_silent(samples):  # nothing to hear: spare the model
            return AsrResult([], None, None, 0.0), None
        try:
            return self.asr.transcribe(samples), None
        except (MemoryError, RuntimeError) as exc:
            if isinstance(exc, RuntimeError) and "out of memory" not in str(exc).lower():
                raise  # a bug, not this video's fault
            return None, status.transient("asr.out_of_memory", f"ASR ran out of memory: {exc}")

    def _read_captions(self, tracks: list[dict]) -> tuple[_Transcript | None, str | None]:
        """The best caption track that parses to words, and why others failed."""
        wanted = self.params.languages or ([self.params.language] if self.params.language else None)
        usable = [t for t in tracks if t.get("path") and t.get("format") in _FORMAT_RANK
                  and (wanted is None or _base_lang(t.get("lang")) in wanted)]
        usable.sort(key=lambda t: (t.get("kind") != "manual",
                                   wanted.index(_base_lang(t.get("lang"))) if wanted else 0,
                                   _FORMAT_RANK[t["format"]]))
        errors = []
        for track in usable:
            try:
                words = parse_caption_file(self._catalog_path(track["path"]), track["format"],
                                           "manual" if track.get("kind") == "manual" else "auto")
            except (CaptionParseError, FileNotFoundError) as exc:
                errors.append(f"{track['path']}: {exc}")
                continue
            if not words:
                errors.append(f"{track['path']}: no words in caption file")
                continue
            source = "captions_manual" if track.get("kind") == "manual" else "captions_auto"
            return _Transcript(words, source, _base_lang(track.get("lang"))), None
        return None, ("; ".join(errors) or None)

    def _audio(self, row: dict):
        """(samples, relative audio path, error status) for the row's video."""
        if row.get("has_audio") is False:
            return None, None, status.filtered("asr.no_audio", "the video has no audio track")
        if not row.get("video_path"):
            return None, None, status.failed("asr.decode", "crawl row has no video_path")
        released = released_reason(self.ctx.catalog_root, row["video_id"], "video")
        if released and not (self.ctx.catalog_root / row["video_path"]).exists():
            return None, None, status.failed("media.released", released)
        rel = Path("media") / row["video_id"] / AUDIO_FILENAME
        try:
            samples = extract_audio(self._catalog_path(row["video_path"]), self.ctx.catalog_root / rel)
        except NoAudioTrack as exc:
            return None, None, status.filtered("asr.no_audio", str(exc))
        except (AudioDecodeError, FileNotFoundError) as exc:
            return None, None, status.failed("asr.decode", str(exc))
        return samples, rel.as_posix(), None

    def _catalog_path(self, rel: str) -> Path:
        if Path(rel).is_absolute():  # a local file crawled in place (local_media: in_place)
            return Path(rel)
        path = (self.ctx.catalog_root / rel).resolve()
        if not path.is_relative_to(self.ctx.catalog_root.resolve()):
            raise FileNotFoundError(f"{rel!r} points outside the catalog")
        return path

    def _choose(self, captions: _Transcript | None, asr: AsrResult | None,
                wer: float | None) -> tuple[_Transcript | None, str | None]:
        """Apply ``prefer``; returns the chosen transcript and why captions lost, if they did."""
        asr_t = None if asr is None else _Transcript(asr.words, "asr", asr.language, asr.language_prob)
        prefer = self.params.prefer
        if captions is None:
            return asr_t, None
        if asr_t is None or prefer == "captions":
            return captions, None
        if prefer == "asr":
            return asr_t, None
        # best: manual captions, else auto captions close enough to what ASR heard, else ASR
        if captions.source == "captions_manual":
            return captions, None
        if not asr_t.words:
            return captions, None
        if wer is not None and wer <= self.params.max_caption_wer:
            return captions, None
        return asr_t, f"auto captions WER {wer:.2f} vs ASR is over max_caption_wer {self.params.max_caption_wer}"

    def _describe(self, t: _Transcript) -> dict:
        speech = speech_seconds(t.words)
        return {
            "words": t.words, "source": t.source, "language": t.language, "language_prob": t.language_prob,
            "speech_s": speech, "n_words": len(t.words),
            "words_per_second": (len(t.words) / speech) if speech > 0 else None,
        }

    def _filter(self, t: _Transcript) -> dict:
        p: TranscribeParams = self.params
        n = len(t.words)
        if n == 0:
            return status.filtered("asr.no_speech", "no speech found (silent or no words recognised)")
        if n < p.min_words:
            return status.filtered("asr.too_few_words", f"{n} words < min_words {p.min_words}")
        if p.languages and _base_lang(t.language) not in p.languages:
            return status.filtered("asr.language", f"language {t.language!r} not in {p.languages}")
        if t.language_prob is not None and t.language_prob < p.min_language_prob:
            return status.filtered("asr.language",
                                   f"language {t.language!r} probability {t.language_prob:.2f} < {p.min_language_prob}")
        speech = speech_seconds(t.words)
        lo, hi = p.words_per_second
        if speech > 0 and not lo <= n / speech <= hi:
            return status.filtered("asr.speech_rate", f"{n / speech:.2f} words/s outside [{lo}, {hi}]")
        return status.ok()


def _base_lang(code: str | None) -> str | None:
    """'en-US' / 'en-orig' -> 'en'."""
    return code.split("-")[0].split("_")[0].lower() if code else None


def speech_seconds(words: list[dict], bridge_s: float = PAUSE_BRIDGE_S) -> float:
    """Time covered by the words, counting pauses shorter than ``bridge_s`` as speech."""
    total, span_start, span_end = 0.0, None, None
    for w in sorted(words, key=lambda w: w["start_s"]):
        if span_end is not None and w["start_s"] - span_end < bridge_s:
            span_end = max(span_end, w["end_s"])
            continue
        if span_end is not None:
            total += span_end - span_start
        span_start, span_end = w["start_s"], w["end_s"]
    if span_end is not None:
        total += span_end - span_start
    return round(total, 3)
