"""Dedup stage (global): exact duplicates by video sha256, near duplicates by
cosine similarity of clip mean CLIP embeddings, across and within videos.

The runner hands this stage every shard's ``ok`` filter rows in one table,
with crawl's columns (``video_sha256``, ``fetched_at``) joined on video_id.
The earlier clip is kept; the later one is ``filtered`` with ``duplicate_of``.

Everything runs on Arrow columns and numpy views of their buffers (no row
dicts): 200k clips of 512-d embeddings fit in well under 2 GB. Near duplicates
are found greedily in blocks: each block is searched against an index of the
clips kept so far (exact below ``exact_max_clips``, else a FAISS HNSW graph:
n log n), then against its own earlier kept clips exactly.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from .base import Params, Resources, Stage


class DedupParams(Params):
    cosine_threshold: float = Field(0.95, ge=0, le=1)  # >= this counts as a near duplicate
    within_video: bool = True  # also compare clips of the same video (static talking heads repeat)
    exact_by_sha256: bool = True
    # Up to this many clips with an embedding the search is exact (same verdicts as
    # comparing every pair); above it, approximate (HNSW), recall printed by bench/dedup_bench.py.
    exact_max_clips: int = Field(10_000, ge=0)
    # Memory for the index's vectors: float32 while they fit, else 8-bit (4x smaller).
    index_memory_gb: float = Field(1.0, gt=0)
    neighbours: int = Field(16, ge=1, le=1024)  # candidates per clip from the index


class DedupStage(Stage):
    name = "dedup"
    version = "1"
    Params = DedupParams
    inputs = ("filter", "crawl")
    input_key = "clip_id"
    row_key = "clip_id"
    scope = "global"
    max_workers = 1
    resources = Resources(cpus=1, memory_gb=2)

    @classmethod
    def fingerprint_params(cls, params: DedupParams, recipe_dir) -> dict:
        # How the search runs is not what it decides (the exact/ANN switch aside).
        return params.model_dump(mode="json", exclude={"index_memory_gb"})

    def process(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        order = _order(table)
        table = table.take(order)
        video = pc.dictionary_encode(table.column("video_id").combine_chunks())
        video_code = video.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        dup_of = np.full(n, -1, np.int64)  # row of the clip each row duplicates
        kind = np.zeros(n, np.int8)  # 0 ok, 1 exact, 2 near
        exact_video = np.full(n, -1, np.int64)  # exact: the kept video (row of its first clip)
        nearest = np.full(n, np.nan, np.float64)
        if self.params.exact_by_sha256 and "video_sha256" in table.column_names:
            _exact_duplicates(table, video_code, dup_of, kind, exact_video, nearest)
        emb, has = _embeddings(table)
        rows = np.flatnonzero(has & (kind == 0))
        if len(rows):
            self._near_duplicates(emb, rows, video_code, dup_of, kind, nearest)
        return _verdicts(table, dup_of, kind, exact_video, nearest, self.params.cosine_threshold)

    def _near_duplicates(self, emb, rows, video_code, dup_of, kind, nearest) -> None:
        """Greedy over ``rows`` (in order): a row is a near duplicate of its most similar
        earlier kept row when that cosine reaches the threshold, else kept."""
        p = self.params
        d = emb.shape[1]
        index = _Index(d, len(rows), exact=len(rows) <= p.exact_max_clips, memory_gb=p.index_memory_gb)
        kept_rows = np.empty(len(rows), np.int64)
        n_kept = 0
        block = 512
        for a in range(0, len(rows), block):
            r = rows[a:a + block]
            x = _unit(emb[r])
            if index.exact and index.size:  # every kept row: one matrix product, the best by argmax
                sims = x @ index.vectors[:index.size].T
                if not p.within_video:
                    sims[video_code[r][:, None] == video_code[kept_rows[:n_kept]][None, :]] = -np.inf
                best = np.argmax(sims, axis=1)
                best_sim = sims[np.arange(len(r)), best]
                best_row = kept_rows[best]
            elif index.size:  # the index's nearest candidates (others of the same video skipped)
                k = min(index.size, p.neighbours if p.within_video else 4 * p.neighbours)
                sims, ids = index.search(x, k)
                cand_rows = np.where(ids >= 0, kept_rows[np.maximum(ids, 0)], -1)
                if not p.within_video:
                    same = (cand_rows >= 0) & (video_code[np.maximum(cand_rows, 0)] == video_code[r][:, None])
                    sims = np.where(same, -np.inf, sims)
                sims = np.where(cand_rows >= 0, sims, -np.inf)
                best = np.argmax(sims, axis=1)
                best_sim = sims[np.arange(len(r)), best]
                best_row = cand_rows[np.arange(len(r)), best]
            else:
                best_sim = np.full(len(r), -np.inf)
                best_row = np.full(len(r), -1, np.int64)
            inner = x @ x.T  # the block against itself: earlier kept rows of the block count too
            if not p.within_video:
                inner[video_code[r][:, None] == video_code[r][None, :]] = -np.inf
            kept_here = np.zeros(len(r), bool)
            for i in range(len(r)):
                sim, twin = best_sim[i], best_row[i]
                if i and kept_here[:i].any():
                    earlier = np.where(kept_here[:i], inner[i, :i], -np.inf)
                    j = int(np.argmax(earlier))
                    if earlier[j] > sim or (earlier[j] == sim and twin < 0):
                        sim, twin = earlier[j], r[j]
                if twin >= 0 and np.isfinite(sim):
                    nearest[r[i]] = sim
                    if sim >= p.cosine_threshold:
                        dup_of[r[i]], kind[r[i]] = twin, 2
                        continue
                kept_here[i] = True
            kept = np.flatnonzero(kept_here)
            if len(kept):
                index.add(x[kept])
                kept_rows[n_kept:n_kept + len(kept)] = r[kept]
                n_kept += len(kept)


class _Index:
    """The kept clips' unit vectors: a plain array searched exactly while small, else
    a FAISS HNSW graph (float32 vectors, or 8-bit ones past ``memory_gb``)."""

    def __init__(self, d: int, n: int, exact: bool, memory_gb: float):
        self.exact, self.size = exact, 0
        if exact:
            self.vectors = np.empty((n, d), np.float32)
            return
        import faiss

        if n * d * 4 <= memory_gb * 2**30:
            self.index = faiss.IndexHNSWFlat(d, 16, faiss.METRIC_INNER_PRODUCT)
        else:
            self.index = faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_8bit, 16, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = 40
        self.index.hnsw.efSearch = 48

    def add(self, x: np.ndarray) -> None:
        if self.exact:
            self.vectors[self.size:self.size + len(x)] = x
        else:
            if not self.index.is_trained:  # 8-bit: unit vectors' components lie in [-1, 1]
                bounds = np.vstack([-np.ones((1, x.shape[1])), np.ones((1, x.shape[1]))]).astype(np.float32)
                self.index.train(bounds)
            self.index.add(np.ascontiguousarray(x, np.float32))
        self.size += len(x)

    def search(self, x: np.ndarray, k: int):
        return self.index.search(np.ascontiguousarray(x, np.float32), k)


def _unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _embeddings(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(an n x d view of the embedding column's values, which rows have one). No copy
    of the Arrow buffer when every row has one; rows without are zero."""
    n = table.num_rows
    if "embedding" not in table.column_names or not n:
        return np.zeros((n, 1), np.float32), np.zeros(n, bool)
    col = table.column("embedding").combine_chunks()
    has = col.is_valid().to_numpy(zero_copy_only=False)
    lengths = pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False)
    d = int(lengths.max()) if len(lengths) else 0
    if not d:
        return np.zeros((n, 1), np.float32), np.zeros(n, bool)
    if np.any(lengths[has] != d):
        raise ValueError(f"dedup: embeddings of different lengths ({sorted(set(lengths[has].tolist()))[:4]})")
    values = col.flatten().to_numpy(zero_copy_only=False)  # the valid rows' values, in order
    if has.all():
        return values.reshape(n, d), has
    emb = np.zeros((n, d), values.dtype)
    emb[has] = values.reshape(-1, d)
    return emb, has


def _order(table: pa.Table) -> pa.Array:
    """Row order: fetched_at (unknown last), video_id, start_s, clip_id."""
    n = table.num_rows
    cols = {"video_id": table.column("video_id"), "clip_id": table.column("clip_id")}
    fetched = table.column("fetched_at") if "fetched_at" in table.column_names else pa.nulls(n, pa.timestamp("us"))
    fetched = pc.cast(fetched, pa.int64()) if pa.types.is_timestamp(fetched.type) else pa.nulls(n, pa.int64())
    cols["fetched"] = pc.fill_null(fetched, np.iinfo(np.int64).max)  # unknown: last
    start = table.column("start_s") if "start_s" in table.column_names else pa.nulls(n, pa.float64())
    cols["start"] = pc.fill_null(pc.cast(start, pa.float64()), 0.0)
    keys = pa.table(cols)
    return pc.sort_indices(keys, sort_keys=[("fetched", "ascending"), ("video_id", "ascending"),
                                           ("start", "ascending"), ("clip_id", "ascending")])


def _ms(table: pa.Table, name: str) -> pa.Array:
    if name not in table.column_names:
        return pa.nulls(table.num_rows, pa.int64())
    return pc.cast(pc.round(pc.multiply(pc.cast(table.column(name), pa.float64()), 1000.0)), pa.int64())


def _exact_duplicates(table, video_code, dup_of, kind, exact_video, nearest) -> None:
    """Clips of every video whose file sha256 matches an earlier video's (rows in order)."""
    n = table.num_rows
    pos = pa.array(np.arange(n, dtype=np.int64))
    sha = table.column("video_sha256")
    keyed = pa.table({"sha": sha, "pos": pos})
    keyed = keyed.filter(pc.is_valid(keyed.column("sha")))
    if not keyed.num_rows:
        return
    first = keyed.group_by("sha").aggregate([("pos", "min")])  # the earliest row of each file
    at = pc.index_in(sha, value_set=first.column("sha").combine_chunks())
    first_pos = first.column("pos_min").combine_chunks().take(at).fill_null(-1).to_numpy(zero_copy_only=False)
    dup = (first_pos >= 0) & (video_code[np.maximum(first_pos, 0)] != video_code)
    rows = np.flatnonzero(dup)
    if not len(rows):
        return
    kind[rows] = 1
    exact_video[rows] = first_pos[rows]
    # The twin: the kept video's clip with the same span (the last such clip in order).
    spans = pa.table({"video": pa.array(video_code), "start": _ms(table, "start_s"), "end": _ms(table, "end_s"),
                      "pos": pos})
    last = spans.group_by(["video", "start", "end"]).aggregate([("pos", "max")])
    want = pa.table({"video": pa.array(video_code[first_pos[rows]]), "start": spans.column("start").take(rows),
                     "end": spans.column("end").take(rows), "row": pa.array(rows)})
    found = want.join(last, ["video", "start", "end"], join_type="left outer")
    row = found.column("row").to_numpy(zero_copy_only=False)
    twin = found.column("pos_max").fill_null(-1).to_numpy(zero_copy_only=False)
    dup_of[row] = twin
    nearest[row[twin >= 0]] = 1.0


def _verdicts(table, dup_of, kind, exact_video, nearest, threshold) -> pa.Table:
    """The output columns; messages are written for the dropped rows only."""
    n = table.num_rows
    clip_id, video_id = table.column("clip_id"), table.column("video_id")
    status_col = np.where(kind == 0, "ok", "filtered").astype(object)
    code = np.full(n, None, object)
    msg = np.full(n, None, object)
    dup_clip = np.full(n, None, object)
    dup_video = np.full(n, None, object)
    near = np.flatnonzero(kind == 2)
    exact = np.flatnonzero(kind == 1)
    if len(near):
        twins = clip_id.take(pa.array(dup_of[near])).to_pylist()
        code[near] = "dedup.near_duplicate"
        dup_clip[near] = twins
        dup_video[near] = video_id.take(pa.array(dup_of[near])).to_pylist()
        msg[near] = [f"cosine {c:.3f} >= {threshold} with {t}" for c, t in zip(nearest[near], twins)]
    if len(exact):
        code[exact] = "dedup.exact_duplicate"
        kept = video_id.take(pa.array(exact_video[exact])).to_pylist()
        dup_video[exact] = kept
        has_twin = dup_of[exact] >= 0
        twin_rows = pa.array(np.where(has_twin, dup_of[exact], 0))
        dup_clip[exact] = [t if h else None for t, h in zip(clip_id.take(twin_rows).to_pylist(), has_twin)]
        shas = table.column("video_sha256").take(pa.array(exact)).to_pylist()
        msg[exact] = [f"same file (sha256 {s[:12]}…) as video {v}" for s, v in zip(shas, kept)]
    return pa.table({
        "clip_id": clip_id, "video_id": video_id,
        "duplicate_of": pa.array(dup_clip, pa.string()), "duplicate_video": pa.array(dup_video, pa.string()),
        "nearest_cosine": pa.array(nearest, pa.float64(), mask=np.isnan(nearest)),
        "status": pa.array(status_col, pa.string()), "error_code": pa.array(code, pa.string()),
        "error_msg": pa.array(msg, pa.string())})
