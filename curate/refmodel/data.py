"""A release's clips as LiveCC-style streams: per second, that second's visual
token, then the words whose end time falls in that second.

Visual tokens come from the filter stage's frame embeddings (the side table
``frame_embeddings`` of the fingerprint the release was built from); clips
with none stored are embedded again from their sampled frames with the
filter's CLIP model. A second with no frame of its own repeats the latest
earlier frame (the stream shows what was last seen).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np

from ..catalog.compact import view_files
from ..catalog.layout import Catalog
from ..catalog.sql_text import parquet_scan

BOS, QUESTION, ANSWER, UNK = "[BOS]", "[Q]", "[A]", "[UNK]"
SPECIALS = [BOS, QUESTION, ANSWER, UNK]
VISUAL = -1  # token id placeholder of a visual slot


@dataclass
class Clip:
    clip_id: str
    video_id: str
    split: str
    start_s: float
    end_s: float
    words: list[dict]  # {start_s, end_s, text, prob}
    vis: np.ndarray | None = None  # (seconds, dim) float32


@dataclass
class Question:
    clip_id: str
    question: str
    options: list[str]
    answer: int


@dataclass
class ReleaseData:
    release: Path
    clips: list[Clip]
    questions: list[Question] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def read_clips(release: Path) -> list[Clip]:
    """Every clip of the release's ``clips`` config, with its split (from the file name)."""
    files = sorted(str(p) for p in (release / "data" / "clips").glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{release}: no data/clips/*.parquet (not a curate release?)")
    rows = duckdb.connect().execute(
        f"SELECT clip_id, video_id, regexp_extract(filename, '/([a-z0-9_]+)-\\d{{5}}-of', 1) AS split, "
        f"start_s, end_s, words FROM {parquet_scan(files, ', filename = true')} ORDER BY video_id, start_s, clip_id"
    ).fetchall()
    return [Clip(c, v, s, float(a), float(b), list(w or [])) for c, v, s, a, b, w in rows]


def read_questions(release: Path, clip_ids: set[str]) -> list[Question]:
    """Multiple-choice questions of the release's ``qa`` config about these clips."""
    files = sorted(str(p) for p in (release / "data" / "qa").glob("*.parquet"))
    if not files:
        return []
    out = []
    for clip_id, output in duckdb.connect().execute(
            f"SELECT clip_id, output FROM {parquet_scan(files)} ORDER BY clip_id, annotation_id").fetchall():
        if clip_id not in clip_ids:
            continue
        try:
            doc = json.loads(output)
        except (TypeError, ValueError):
            continue
        for mc in doc.get("multiple_choice") or []:
            options, answer = mc.get("options"), mc.get("answer_index")
            if (isinstance(options, list) and len(options) >= 2 and isinstance(answer, int)
                    and 0 <= answer < len(options) and all(isinstance(o, str) for o in options)):
                out.append(Question(clip_id, str(mc.get("question") or ""), options, answer))
    return out


def _catalog_of(release: Path) -> tuple[Catalog, dict]:
    """The catalog a release was built from (``<catalog>/releases/<version>``) and its fingerprints."""
    manifest = json.loads((release / "manifest.json").read_text())
    return Catalog(release.resolve().parent.parent), manifest.get("fingerprints") or {}


def stored_embeddings(release: Path) -> dict[str, list[tuple[float, np.ndarray]]]:
    """clip_id -> [(t, embedding)] from the filter stage's side table, in time order."""
    catalog, fps = _catalog_of(release)
    if not fps.get("filter"):
        return {}
    sd = catalog.stage_dir("filter", fps["filter"])
    if not sd.path.is_dir():
        return {}
    files = view_files(sd).sides.get("frame_embeddings", [])
    if not files:
        return {}
    out: dict[str, list[tuple[float, np.ndarray]]] = {}
    table = duckdb.connect().sql(
        f"SELECT clip_id, t, embedding FROM {parquet_scan(files)} ORDER BY clip_id, t").to_arrow_table()
    ids, ts = table["clip_id"].to_pylist(), table["t"].to_pylist()
    emb = np.asarray(table["embedding"].to_pylist(), dtype=np.float32) if ids else np.zeros((0, 0), np.float32)
    for i, clip_id in enumerate(ids):
        out.setdefault(clip_id, []).append((float(ts[i]), emb[i]))
    return out


def recompute_embeddings(release: Path, clip_ids: list[str]) -> dict[str, list[tuple[float, np.ndarray]]]:
    """Frame embeddings of clips the side table lacks, from the segment stage's sampled frames,
    with the CLIP model the release's recipe gave the filter stage."""
    import cv2
    import pyarrow as pa
    import yaml

    from ..vision.clip_encoder import ClipEncoder

    catalog, fps = _catalog_of(release)
    recipe = yaml.safe_load((release / "recipe.yaml").read_text()) or {}
    fcfg = ((recipe.get("stages") or {}).get("filter") or {})
    if not fps.get("segment") or not clip_ids:
        return {}
    sd = catalog.stage_dir("segment", fps["segment"])
    files = [str(sd.shard_path(s)) for s in sd.done_shards()]
    if not files:
        return {}
    con = duckdb.connect()
    con.register("wanted", pa.table({"clip_id": clip_ids}))
    rows = con.execute(f"SELECT clip_id, frames FROM {parquet_scan(files)} WHERE clip_id IN (SELECT clip_id FROM wanted)"
                       ).fetchall()
    encoder = ClipEncoder(fcfg.get("clip_model", "ViT-B-32"), fcfg.get("clip_pretrained", "openai"))
    out = {}
    for clip_id, frames in rows:
        frames = [f for f in (frames or []) if f.get("path")]
        images = [cv2.imread(str(catalog.root / f["path"]), cv2.IMREAD_COLOR) for f in frames]
        keep = [(f["t"], img) for f, img in zip(frames, images) if img is not None]
        if keep:
            emb = encoder.encode_frames([img for _, img in keep])
            out[clip_id] = [(float(t), emb[i]) for i, (t, _) in enumerate(keep)]
    return out


def per_second(clip: Clip, frames: list[tuple[float, np.ndarray]], dim: int, max_seconds: int) -> np.ndarray:
    """(seconds, dim): the mean frame of each second of the clip; a second without a frame
    repeats the last one seen (the first frame before any is seen); zeros with no frames at all."""
    n = max(1, min(max_seconds, int(np.ceil(clip.end_s - clip.start_s - 1e-6))))
    out = np.zeros((n, dim), np.float32)
    if not frames:
        return out
    last = frames[0][1]
    for k in range(n):
        lo, hi = clip.start_s + k, clip.start_s + k + 1
        inside = [e for t, e in frames if lo <= t < hi]
        if inside:
            last = np.mean(inside, axis=0)
        out[k] = last
    return out


def words_by_second(clip: Clip, n_seconds: int) -> list[list[str]]:
    """The clip's words grouped by the second their end time falls in (the last second takes the rest)."""
    out: list[list[str]] = [[] for _ in range(n_seconds)]
    full = max(1, int(np.ceil(clip.end_s - clip.start_s - 1e-6)))
    for w in clip.words:
        k = min(max(0, int(np.floor(float(w["end_s"]) - clip.start_s))), full - 1)
        if k < n_seconds:  # else cut by max_seconds
            out[k].append(str(w["text"]))
    return out


def load(release: Path, max_seconds: int, console=None) -> ReleaseData:
    """Clips with their per-second visual tokens, and the multiple-choice questions."""
    release = Path(release)
    clips = read_clips(release)
    notes = []
    stored = stored_embeddings(release)
    missing = [c.clip_id for c in clips if c.clip_id not in stored]
    if missing:
        if console is not None:
            console.print(f"{len(missing)} clip(s) have no stored frame embeddings: embedding their frames")
        stored.update(recompute_embeddings(release, missing))
        notes.append(f"{len(missing)} clip(s) had no stored frame embeddings; recomputed from sampled frames")
    dim = next((len(f[0][1]) for f in stored.values() if f), 0)
    if dim == 0:
        raise ValueError(f"{release}: no frame embeddings stored or computable (was the filter stage run?)")
    blind = 0
    for c in clips:
        c.vis = per_second(c, stored.get(c.clip_id, []), dim, max_seconds)
        blind += c.clip_id not in stored
    if blind:
        notes.append(f"{blind} clip(s) have no frames at all (visual tokens are zeros)")
    questions = read_questions(release, {c.clip_id for c in clips})
    return ReleaseData(release, clips, questions, notes)


def clip_seed(seed: int, clip_id: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(clip_id.encode())) % (2**32)


def shuffled_order(n: int, seed: int, clip_id: str) -> np.ndarray:
    """The clip's seconds in a fixed random order (the same in training and scoring)."""
    order = np.random.default_rng(clip_seed(seed, clip_id)).permutation(n)
    return order


# ---------------------------------------------------------------- tokens


class WordTokenizer:
    """Word text -> token ids, for the tiny backbone (BPE trained here) or a Hugging Face tokenizer."""

    def __init__(self, encode, vocab_size: int, bos: int, question: int, answer: int):
        self._encode, self.vocab_size = encode, vocab_size
        self.bos, self.question, self.answer = bos, question, answer
        self._cache: dict[str, list[int]] = {}

    def word(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is None:
            ids = self._cache[text] = list(self._encode(text))
        return ids

    @classmethod
    def train_bpe(cls, texts: list[str], vocab_size: int) -> tuple["WordTokenizer", str]:
        """A BPE tokenizer trained on ``texts`` (the release's training words); returns it and its JSON."""
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE(unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False)
        tok.train_from_iterator(texts, trainer=trainer)
        return cls.from_json(tok.to_str()), tok.to_str()

    @classmethod
    def from_json(cls, text: str) -> "WordTokenizer":
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(text)
        return cls(lambda w: tok.encode(w).ids or [tok.token_to_id(UNK)], tok.get_vocab_size(),
                   *(tok.token_to_id(s) for s in (BOS, QUESTION, ANSWER)))

    @classmethod
    def from_hf(cls, tokenizer) -> "WordTokenizer":
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        q = tokenizer(" Question:", add_special_tokens=False).input_ids
        a = tokenizer(" Answer:", add_special_tokens=False).input_ids
        wt = cls(lambda w: tokenizer(" " + w, add_special_tokens=False).input_ids, len(tokenizer), bos, q[-1], a[-1])
        return wt


@dataclass
class Stream:
    """One clip as model input: ids (VISUAL at visual slots), the second each visual slot shows,
    and for each position the index of the word it belongs to (-1: not a word token)."""

    ids: np.ndarray
    second: np.ndarray
    word: np.ndarray
    n_words: int


def stream(clip: Clip, tok: WordTokenizer, max_tokens: int) -> Stream:
    n = len(clip.vis)
    ids, second, word = [tok.bos], [-1], [-1]
    n_words = 0
    for k, words in enumerate(words_by_second(clip, n)):
        if len(ids) + 1 > max_tokens:
            break
        ids.append(VISUAL), second.append(k), word.append(-1)
        for text in words:
            piece = tok.word(text)
            if len(ids) + len(piece) > max_tokens:
                break
            ids += piece
            second += [-1] * len(piece)
            word += [n_words] * len(piece)
            n_words += 1
    return Stream(np.asarray(ids, np.int64), np.asarray(second, np.int64), np.asarray(word, np.int64), n_words)


def option_stream(base: Stream, q: Question, option: str, tok: WordTokenizer, max_tokens: int) -> Stream:
    """The clip's stream, then the question, then one option: the option's tokens are scored."""
    ids, second, word = list(base.ids), list(base.second), [-1] * len(base.ids)
    prompt = [tok.question] + [i for w in q.question.split() for i in tok.word(w)] + [tok.answer]
    answer = [i for w in option.split() for i in tok.word(w)] or [tok.answer]
    room = max_tokens - len(prompt) - len(answer)
    if room < 2:
        prompt = prompt[-max(1, max_tokens // 2):]
        answer = answer[:max(1, max_tokens // 4)]
        room = max_tokens - len(prompt) - len(answer)
    ids, second, word = ids[:room], second[:room], word[:room]
    ids += prompt + answer
    second += [-1] * (len(prompt) + len(answer))
    word += [-1] * len(prompt) + [0] * len(answer)
    return Stream(np.asarray(ids, np.int64), np.asarray(second, np.int64), np.asarray(word, np.int64), 1)
