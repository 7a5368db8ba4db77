"""Filter stage: CLIP similarity between each clip's frames and its words.

Frames come from the JPEGs the segment stage wrote (no second decode). One
model per worker, frames embedded in batches while the next batch's JPEGs
are read in a background thread. Frame embeddings go to the side table
``frame_embeddings``; each clip keeps its mean embedding for dedup.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from .. import schemas, status
from .base import Params, Resources, Stage, existing_path


_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".gz", ".npz")


class FilterParams(Params):
    # open_clip architecture, chosen explicitly (no default: nothing is fetched from a
    # hub, and the offline 'curate-demo-clip' knows only the demo's shapes and colours).
    clip_model: str
    # A local checkpoint file, or an open_clip weights tag (e.g. 'openai') whose weights
    # are already in the local cache; null with 'curate-demo-clip' = the shipped demo weights.
    clip_pretrained: str | None = None
    # Clips whose score is below this are 'filtered'; null = score only.
    min_similarity: float | None = Field(0.2, ge=-1, le=1)
    score: Literal["mean", "max"] = "mean"  # which similarity min_similarity applies to
    use_title: bool = False  # also score frames against the video title (kept as title_sim)
    batch_size: int = Field(64, ge=1, le=4096)
    # auto: a GPU when the worker sees one (resources.gpus reserves it), else the CPU.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto: fp16 on a GPU, fp32 on the CPU (fp16 asked for on a CPU is switched off).
    precision: Literal["auto", "fp16", "fp32"] = "auto"

    @field_validator("clip_pretrained")
    @classmethod
    def _checkpoint_exists(cls, value: str | None) -> str | None:
        """A path (not a tag) must exist now, read from the recipe's folder, so a
        typo fails at validation rather than in a worker."""
        if value is None or not ("/" in value or value.endswith(_CHECKPOINT_SUFFIXES)):
            return value
        try:
            return str(existing_path(value))
        except ValueError as exc:
            raise ValueError(f"stages.filter.clip_model weights: {exc}") from None


class FilterStage(Stage):
    name = "filter"
    version = "3"  # 2: time columns start_s/end_s (no SQL quoting), float64 word times; 3: frames' sim
    Params = FilterParams
    inputs = ("segment",)
    input_key = "clip_id"
    row_key = "clip_id"
    resources = Resources(cpus=2, memory_gb=2)

    @classmethod
    def fingerprint_params(cls, params: FilterParams, recipe_dir: Path) -> dict:
        # Where the model runs is not what it computes: moving to a GPU reuses the table
        # (an explicit precision is kept: fp16 and fp32 embeddings differ in the last digits).
        return params.model_dump(mode="json", exclude={"device"} | ({"precision"} if params.precision == "auto" else set()))

    @classmethod
    def preflight(cls, params: FilterParams, recipe_dir: Path) -> list[str]:
        from .. import devices
        from ..vision.clip_encoder import weights_problem

        problem = weights_problem(params.clip_model, params.clip_pretrained)
        return ([problem] if problem else []) + devices.preflight(params.device, "stages.filter.device")

    def setup(self) -> None:
        from .. import devices
        from ..vision.clip_encoder import ClipEncoder

        p = self.params
        device = devices.resolve(p.device, "stages.filter.device")
        self.encoder = ClipEncoder(p.clip_model, p.clip_pretrained, threads=max(1, int(self.resources.cpus)),
                                   batch_size=p.batch_size, device=device, precision=p.precision)
        self.model_label = f"{p.clip_model}/{p.clip_pretrained or 'demo'}"

    def process(self, table: pa.Table) -> list[dict]:
        if getattr(self, "encoder", None) is None:
            self.setup()
        clips = table.to_pylist()
        frames = [(k, f) for k, clip in enumerate(clips) for f in (clip.get("frames") or [])]
        frame_emb, missing = self._embed_frames([f["path"] for _, f in frames])
        per_clip: dict[int, list[int]] = {}
        for row, (k, _) in enumerate(frames):
            per_clip.setdefault(k, []).append(row)
        texts = self.encoder.encode_texts([c.get("text") or "" for c in clips]) if clips else None
        titles = (self.encoder.encode_texts([c.get("title") or "" for c in clips])
                  if clips and self.params.use_title else None)

        rows, side = [], []
        for k, clip in enumerate(clips):
            idx = per_clip.get(k, [])
            bad = [frames[i][1]["path"] for i in idx if i in missing]
            base = {"clip_id": clip["clip_id"], "video_id": clip["video_id"], "start_s": clip.get("start_s"),
                    "end_s": clip.get("end_s"), "model": self.model_label, "n_frames": len(idx)}
            if bad:
                rows.append({**base, **status.failed("filter.frame_missing",
                                                     f"{len(bad)} frame(s) unreadable, e.g. {bad[0]}")})
                continue
            if not idx:
                rows.append({**base, **status.failed("filter.no_frames", "the clip has no sampled frames")})
                continue
            emb = frame_emb[idx]
            mean_emb = emb.mean(0)
            mean_emb /= np.linalg.norm(mean_emb) or 1.0
            has_text = bool((clip.get("text") or "").strip())
            sims = emb @ texts[k] if has_text else None  # each frame against the clip's words
            side += [{"clip_id": clip["clip_id"], "video_id": clip["video_id"], "t": frames[i][1]["t"],
                      "path": frames[i][1]["path"], "embedding": frame_emb[i].astype(np.float16),
                      "sim": float(sims[j]) if sims is not None else None,
                      "model": self.model_label, **status.ok()} for j, i in enumerate(idx)]
            row = {**base, "embedding": mean_emb.astype(np.float16)}
            if titles is not None:
                row["title_sim"] = float((emb @ titles[k]).mean())
            if not has_text:
                verdict = (status.ok() if self.params.min_similarity is None
                           else status.filtered("filter.no_text", "the clip has no words to compare with"))
                rows.append({**row, **verdict})
                continue
            row.update(sim_mean=float(sims.mean()), sim_max=float(sims.max()))
            rows.append({**row, **self._verdict(row)})
        self._write_side_table(side)
        return rows

    def _verdict(self, row: dict) -> dict:
        p = self.params
        value = row["sim_mean"] if p.score == "mean" else row["sim_max"]
        if p.min_similarity is not None and value < p.min_similarity:
            return status.filtered("filter.low_similarity",
                                   f"{p.score} similarity {value:.3f} < min_similarity {p.min_similarity}")
        return status.ok()

    def _embed_frames(self, paths: list[str]) -> tuple[np.ndarray, set[int]]:
        """Embeddings for every path (zeros where unreadable) and the unreadable indices."""
        out = np.zeros((len(paths), self.encoder.dim), np.float32)
        missing: set[int] = set()
        for start, ok, batch in self._read_batches(paths):
            missing.update(start + i for i in range(len(paths[start:start + self.params.batch_size])) if i not in ok)
            if ok:
                out[[start + i for i in ok]] = self.encoder.embed_images(batch)
        return out, missing

    def _read_batches(self, paths: list[str]) -> Iterator[tuple[int, list[int], "np.ndarray | None"]]:
        """(start, readable indices, model-ready batch): JPEGs are decoded, resized and
        normalised in a background thread while the previous batch is embedded, so a
        GPU is not left waiting on the CPU work."""
        import cv2

        root = self.ctx.catalog_root
        bs = self.params.batch_size

        def read(start: int):
            images = [cv2.imread(str(root / p), cv2.IMREAD_COLOR) for p in paths[start:start + bs]]
            ok = [i for i, img in enumerate(images) if img is not None]
            return ok, (self.encoder.preprocess([images[i] for i in ok]) if ok else None)

        starts = list(range(0, len(paths), bs))
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="filter-read") as pool:
            pending = pool.submit(read, starts[0]) if starts else None
            for n, start in enumerate(starts):
                ok, batch = pending.result()
                pending = pool.submit(read, starts[n + 1]) if n + 1 < len(starts) else None
                yield start, ok, batch

    def _write_side_table(self, rows: list[dict]) -> None:
        """Write this shard's frame embeddings. A partial redo (the runner reuses
        finished rows) keeps the earlier rows of clips not processed this time."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        path = self.ctx.side_table_path("frame_embeddings")
        path.parent.mkdir(parents=True, exist_ok=True)
        schema = schemas.table_schema("frame_embeddings")
        table = schemas.from_rows(rows, schema)
        if path.exists():
            old = pq.read_table(path, schema=schema)
            fresh = pa.array(sorted({r["clip_id"] for r in rows}), pa.string())
            table = pa.concat_tables([old.filter(pc.invert(pc.is_in(old["clip_id"], fresh))), table])
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        pq.write_table(table, tmp)
        os.replace(tmp, path)

    def teardown(self) -> None:
        self.encoder = None
